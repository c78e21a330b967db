"""Size guards: a call whose buffers would pass simcore.config.MAX_GIB is refused with a
ValueError naming the argument, before anything is allocated (the grid engine's own guard is
tested in test_grid.py)."""
import pytest

import simcore
from simcore import MLP, datasets


def test_a_limit_set_at_run_time_is_checked(monkeypatch):
    X, y = datasets.moons(16, seed=0)
    net = MLP([2, 3, 1], activation="tanh", loss="bce")
    for bad in (float("nan"), -1.0, "4"):
        monkeypatch.setattr(simcore.config, "MAX_GIB", bad)
        with pytest.raises(ValueError, match="MAX_GIB"):
            simcore.train_grid(net, X, y, lr=0.1, steps=2)


def test_perceptron_epochs_past_the_limit_are_refused():
    with pytest.raises(ValueError, match=r"max_epochs=1000000000 .* GiB"):
        simcore.perceptron.train([[0.0, 1.0], [1.0, 0.0]], [1, -1], max_epochs=10**9)
