"""The held-out evaluation of ``train_grid(validation=...)`` on the CUDA backend against the CPU
backend (val_loss, accuracy, val_accuracy in the history and the final values), at tiny sizes.

Runs on a GPU or under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` before numba is
imported; ``make test`` runs this file so), with the small launches of ``conftest.py``; skips
elsewhere, as tests/test_cuda_sim.py does.
"""
import numpy as np
import pytest

import simcore
from conftest import cuda_status, rel_err
from simcore import MLP, train_grid

AVAILABLE, WHY = cuda_status()
pytestmark = [pytest.mark.usefixtures("small_cuda_launches"),
              pytest.mark.skipif(not AVAILABLE, reason="no CUDA GPU and NUMBA_ENABLE_CUDASIM is not 1: "
                                 "make test runs this file under the simulator" + WHY)]
TOL = 1e-10
VAL = ("val_loss", "accuracy", "val_accuracy")


def assert_held_out_agree(gpu, cpu):
    for name in ("final_val_loss", "final_accuracy", "final_val_accuracy"):
        a, b = getattr(gpu, name), getattr(cpu, name)
        assert np.array_equal(np.isnan(a), np.isnan(b)), name
        assert rel_err(a[~np.isnan(b)], b[~np.isnan(b)]) <= TOL, name
    hg, hc = gpu.history(), cpu.history()
    assert len(hg) == len(hc)
    for col in ("loss",) + VAL:
        a, b = hg[col].to_numpy(np.float64), hc[col].to_numpy(np.float64)
        assert np.array_equal(np.isnan(a), np.isnan(b)), col
        assert rel_err(a[~np.isnan(b)], b[~np.isnan(b)]) <= TOL, col


@pytest.mark.parametrize("loss, batchnorm, batch_size", [("bce", False, None), ("ce", True, 6),
                                                         ("mse", False, None)])
def test_held_out_values_match_the_cpu(loss, batchnorm, batch_size):
    """A held-out set larger than the training set (the per-sample buffers' stride is the
    larger count), minibatches, batch norm, lr 1e4 (the mse network diverges at step 1), mse's NaN
    accuracies: the GPU's values are the CPU's to 1e-10."""
    if loss == "ce":
        X, y = simcore.datasets.spirals(12, n_classes=3, seed=0)
        Xv, yv = simcore.datasets.spirals(15, n_classes=3, seed=1)
        net = MLP([2, 3, 3], activation="tanh", loss="ce", batchnorm=batchnorm)
    else:
        X, y = simcore.datasets.moons(10, seed=0)
        Xv, yv = simcore.datasets.moons(13, seed=1)
        net = MLP([2, 3, 1], activation="tanh", loss=loss, batchnorm=batchnorm)
    kw = dict(lr=[0.3, 1e4, 0.05], steps=5, record_every=2, batch_size=batch_size, validation=(Xv, yv))
    gpu = train_grid(net, X, y, backend="cuda", **kw)
    cpu = train_grid(net, X, y, **kw)
    assert_held_out_agree(gpu, cpu)
    if loss == "mse":
        assert np.isnan(gpu.history()["accuracy"]).all() and gpu.diverged[1]
    else:
        assert np.isfinite(gpu.final_val_accuracy).all()


def test_without_validation_the_held_out_columns_are_nan():
    X, y = simcore.datasets.moons(8, seed=0)
    net = MLP([2, 3, 1], activation="tanh", loss="bce")
    gpu = train_grid(net, X, y, lr=[0.1, 0.2], steps=3, backend="cuda")
    cpu = train_grid(net, X, y, lr=[0.1, 0.2], steps=3)
    assert_held_out_agree(gpu, cpu)
    assert np.isnan(gpu.final_val_loss).all() and np.isfinite(gpu.final_accuracy).all()
