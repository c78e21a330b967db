"""The grid engine's two CPU strategies, "lanes" (simcore.grid.cpu) and "gemm"
(simcore.grid.cpu_gemm): each on its own against the single-network API, deterministic and
independent of threads and of the split of a grid into calls (test_grid.py's tests, run with the
strategy forced), the two against each other, and the choice train_grid(strategy="auto") makes."""
import functools

import numpy as np
import pandas as pd
import pytest

import simcore
from conftest import assert_same_result
from simcore import MLP, train_grid
from simcore.grid import LANES, choose_strategy

import test_grid as tg  # its tests, rerun below with the strategy forced

STRATEGIES = ["lanes", "gemm"]


@pytest.fixture(params=STRATEGIES)
def strategy(request, monkeypatch):
    """Run a test of test_grid.py with train_grid's strategy forced."""
    monkeypatch.setattr(tg, "train_grid", functools.partial(train_grid, strategy=request.param))
    return request.param


# --- each strategy on its own: test_grid.py's contract --------------------------------------------

@pytest.mark.parametrize("case", tg.CASES)
@pytest.mark.parametrize("optimizer", tg.OPTIMIZERS)
def test_full_batch_matches_single_network_api(strategy, case, optimizer):
    tg.test_full_batch_matches_single_network_api(case, optimizer)


@pytest.mark.parametrize("case", tg.CASES)
@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_minibatch_matches_single_network_api(strategy, case, optimizer):
    tg.test_minibatch_matches_single_network_api(case, optimizer)


def test_float32_matches_single_network_api(strategy, moons):
    tg.test_float32_matches_single_network_api(moons)


def test_deterministic_when_run_twice(strategy, moons):
    tg.test_deterministic_when_run_twice(moons)


def test_independent_of_split_into_calls(strategy, moons):
    tg.test_independent_of_split_into_calls(moons)


def test_independent_of_numba_threads_in_process(strategy, moons):
    tg.test_independent_of_numba_threads_in_process(moons)


def test_divergence_is_data(strategy):
    tg.test_divergence_is_data()


def test_overflow_to_inf_is_data(strategy, moons):
    tg.test_overflow_to_inf_is_data(moons)


@pytest.mark.parametrize("case", tg.CASES + ["sigmoid"])
def test_telemetry_matches_manual_forward(strategy, case):
    tg.test_telemetry_matches_manual_forward(case)


def test_minibatch_telemetry_is_of_the_batch(strategy, moons):
    tg.test_minibatch_telemetry_is_of_the_batch(moons)


@pytest.mark.parametrize("batch_size", [None, 10])
def test_mixed_architectures_equal_training_alone(strategy, moons, batch_size):
    tg.test_mixed_architectures_equal_training_alone(moons, batch_size)


def test_divergence_ref_sets_the_divergence_test(strategy):
    tg.test_divergence_ref_sets_the_divergence_test()


@pytest.fixture(scope="module")
def moons():
    return simcore.datasets.moons(40, seed=0)


# --- the two strategies against each other ----------------------------------------------------

# widths that are not whole vectors (8 float64, 16 float32): padding in every layer
WIDE_CASES = {
    "tanh-bce": (lambda: simcore.datasets.moons(50, seed=1), [2, 9, 17, 1], "tanh", "bce", False),
    "relu-ce": (lambda: simcore.datasets.spirals(60, n_classes=3, seed=2), [2, 20, 33, 3], "relu", "ce", False),
    "sigmoid-mse": (lambda: simcore.datasets.teacher_student(40, d_in=3, d_out=2, seed=3), [3, 12, 2],
                    "sigmoid", "mse", False),
    "softplus-bn": (lambda: simcore.datasets.moons(48, seed=4), [2, 11, 7, 1], "softplus", "bce", True),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", WIDE_CASES)
@pytest.mark.parametrize("optimizer, batch_size", [("gd", None), ("nesterov", 16), ("adam", None)])
def test_strategies_agree(case, dtype, optimizer, batch_size):
    """Both strategies sum every quantity in the same order, so they agree bitwise here (the
    contract promises 1e-12 in float64: a future strategy may sum in another order); with
    divergence, telemetry and NaN records the same (large learning rates make some diverge)."""
    data, sizes, act, loss, bn = WIDE_CASES[case]
    X, y = data()
    net = MLP(sizes, activation=act, loss=loss, batchnorm=bn, dtype=dtype)
    G = 11
    lr = np.geomspace(0.01, 1e8 if optimizer != "adam" else 30.0, G)
    kw = dict(lr=lr, steps=30, seeds=np.arange(G) + 7, optimizer=optimizer, **tg.momentum_of(optimizer, 0.5),
              batch_size=batch_size, record_every=7, bias_scale=0.1)
    a = train_grid(net, X, y, strategy="lanes", **kw)
    b = train_grid(net, X, y, strategy="gemm", **kw)
    assert not a.diverged.all()
    assert (a.config["strategy"] == "lanes").all() and (b.config["strategy"] == "gemm").all()
    assert_same_result(a, b)


def test_a_strategy_never_changes_a_network(moons):
    """A network trained in a grid served by lanes equals the same network alone, served by gemm
    under "auto" (a grid of one), bitwise: the choice by G never changes a result."""
    X, y = moons
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce")
    kw = tg._big_grid_kwargs()
    whole = train_grid(net, X, y, **kw)
    assert (whole.config["strategy"] == "lanes").all()
    for g in (0, 33, 69):
        one = train_grid(net, X, y, **tg._big_grid_kwargs(g, g + 1))
        assert one.config["strategy"].iloc[0] == "gemm"
        assert_same_result(whole, one, g, 0)


# --- the choice --------------------------------------------------------------------------------

def test_auto_picks_lanes_for_narrow_full_grids_and_gemm_otherwise():
    import numba
    threads = numba.get_num_threads()
    narrow = MLP([2, 16, 16, 1], activation="tanh", loss="bce")
    wide = MLP([2, 128, 128, 1], activation="tanh", loss="bce")
    assert choose_strategy(narrow, 256) == "lanes"
    assert choose_strategy(wide, 256) == "gemm"
    assert choose_strategy(MLP([64, 100, 100, 100, 10], activation="sigmoid", loss="ce"), 32) == "gemm"
    assert choose_strategy(narrow, 1) == "gemm"  # a block of one network costs as much as LANES
    assert choose_strategy(narrow, threads * LANES) == "lanes"
    assert choose_strategy(MLP([3, 1], loss="mse"), 1000) == "lanes"
    # the width threshold, 5 vectors: 40 float64 or 80 float32 units (README, "Which strategy runs when")
    for dtype, edge in (("float64", 40), ("float32", 80)):
        assert choose_strategy(MLP([2, edge - 1, 1], dtype=dtype), 256) == "lanes"
        assert choose_strategy(MLP([2, edge, 1], dtype=dtype), 256) == "gemm"


def test_strategy_is_validated(moons):
    X, y = moons
    net = MLP([2, 4, 1], activation="tanh", loss="bce")
    for bad in ("fast", "LANES", None, 1):
        with pytest.raises(ValueError, match="strategy"):
            train_grid(net, X, y, lr=0.1, steps=2, strategy=bad)
    with pytest.raises(ValueError, match="strategy must be 'auto' with backend='cuda'"):
        train_grid(net, X, y, lr=0.1, steps=2, strategy="gemm", backend="cuda")
