"""What the test modules share (as stumpy's ``tests/conftest.py``): tolerances and the lists
of names parametrised over, the error measures, central differences, parameter-vector and
GridResult helpers, the compiled loops over :mod:`simcore.fastmath`, and the CUDA simulator's
set-up. The plain NumPy references are in ``naive.py``.

pytest imports this module in every session, before any test module. It therefore imports
neither numba.cuda nor simcore.grid.cuda and sets no environment variable: the CUDA simulator
is chosen by ``NUMBA_ENABLE_CUDASIM=1`` in the environment before numba is first imported (the
Makefile runs ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda_sim.py tests/test_cuda_sim_training.py`` as a session
of its own), and only ``cuda_status()``, called by the CUDA tests, imports numba.cuda.

Errors, both over the whole flattened vector so that entries that are zero in theory and come
out as +-1e-17 do not dominate:

    rel_err(a, b)     = ||a - b||_2 / max(||a||_2, ||b||_2, 1e-300)
    max_rel_err(a, b) = max|a - b| / max(max|b|, 1e-300)          (b the reference)

Central differences: ``(F(x + h e_i) - F(x - h e_i)) / (2 h)`` with ``h = H = 1e-6`` in float64;
truncation error O(h^2) ~ 1e-12 and rounding error O(eps / h) ~ 1e-10, both far below
``FD_TOL = 1e-6``.
"""
import warnings

import numpy as np
import pandas as pd
import pytest
from numba import njit

import simcore
from naive import FASTMATH_REFS
from simcore import fastmath as fm

DTYPES = [np.float32, np.float64]
ACTS = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus"]
LOSSES = ["mse", "mse_sigmoid", "bce", "ce"]
INITS = ["glorot", "he", "lecun", "normal", "uniform"]
H = 1e-6
FD_TOL = 1e-6


# --- errors and central differences ---------------------------------------------------------

def rel_err(a, b):
    """Norm-wise relative error, symmetric in a and b (see the module docstring)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)


def max_rel_err(a, b):
    """Largest entry-wise error relative to the largest entry of the reference b."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(b).max(initial=0.0), 1e-300)
    return np.abs(a - b).max(initial=0.0) / scale


def central_diff(f, x, h=H):
    """dF/dx at x (float64 array, any shape) by central differences: x.shape for a scalar F,
    x.shape + F(x).shape for an array-valued one (a Jacobian, the derivatives along axis 0 of
    x's flattened entries)."""
    x = np.array(x, dtype=np.float64)
    flat_x = x.reshape(-1)
    cols = []
    for i in range(flat_x.size):
        old = flat_x[i]
        flat_x[i] = old + h
        fp = np.array(f(x), np.float64)
        flat_x[i] = old - h
        fm_ = np.array(f(x), np.float64)
        flat_x[i] = old
        cols.append((fp - fm_) / (2 * h))
    return np.stack(cols).reshape(x.shape + cols[0].shape)


def central_diff_pointwise(f, z, h=H):
    """f'(z) entry by entry for an elementwise f, by central differences."""
    return (f(z + h) - f(z - h)) / (2 * h)


# --- parameters and GridResults -------------------------------------------------------------

def flat(params, skip_bn_bias=False):
    """All parameters of one network as one vector (layer by layer, keys sorted); optionally
    without the biases of layers followed by batch norm (their gradient is zero in theory and
    rounding noise in practice, which Adam normalises into O(lr) steps of either sign)."""
    return np.concatenate([np.asarray(p[k]).ravel() for p in params for k in sorted(p)
                           if not (skip_bn_bias and k == "b" and "gamma" in p)])


def network(res, g):
    """Parameters of network g of a GridResult (stacked for one MLP, a list for a list)."""
    if isinstance(res.params[0], dict):
        return [{k: v[g] for k, v in p.items()} for p in res.params]
    return res.params[g]


def assert_same_result(a, b, ga=None, gb=None):
    """Two GridResults (or networks ga of a and gb of b) are bitwise identical."""
    if ga is None:
        assert np.array_equal(a.final_loss, b.final_loss, equal_nan=True)
        assert np.array_equal(a.diverged_at, b.diverged_at)
        assert np.array_equal(a.record_steps, b.record_steps)
        for g in range(len(a.final_loss)):
            assert np.array_equal(flat(network(a, g)), flat(network(b, g)))
        pd.testing.assert_frame_equal(a.history(), b.history(), check_exact=True)
        return
    assert np.array_equal(a.final_loss[ga], b.final_loss[gb], equal_nan=True)
    assert a.diverged_at[ga] == b.diverged_at[gb]
    assert np.array_equal(flat(network(a, ga)), flat(network(b, gb)))
    ha = a.history().query("network == @ga").drop(columns="network").reset_index(drop=True)
    hb = b.history().query("network == @gb").drop(columns="network").reset_index(drop=True)
    pd.testing.assert_frame_equal(ha, hb, check_exact=True)


def cpu_kernel_args(net, X, y, steps, record_every):
    """The arguments of the CPU grid kernel for one network (G = 1) as train_grid passes them,
    all but the last one (the stop flag): gd at lr 0.1 from ``net.init(seed=0)``."""
    from simcore.grid.core import NQ, OPT_CODE
    from simcore.grid.cpu import LANES
    from simcore.grid.schedule import LRSchedule
    from simcore.losses import encode_targets
    theta = np.ascontiguousarray(net.pack(net.init(seed=0))[:, None])
    Y = encode_targets(net.loss, y, X.shape[0], net.sizes[-1], net.dtype)
    R = -(-steps // record_every) + 1   # records at 0, record_every, ... and the last step
    Xv, Yv = np.empty((0, X.shape[1]), X.dtype), np.empty((0, Y.shape[1]), Y.dtype)  # no held-out set
    # after opt: no weight decay, no clipping, the constant schedule, no target, a new training
    training = (np.zeros(1), np.zeros(1), LRSchedule().encode(steps), np.full(1, np.nan), False, 0,
                np.zeros_like(theta), np.zeros_like(theta), np.full(1, -1, np.int64))
    return (theta, net.layout, net.act_code, net.loss_code, X, Y, Xv, Yv, np.empty((R, 3, 1)),
            np.empty((3, 1)), np.zeros(1, np.uint64), np.full(1, 0.1),
            np.zeros(1), np.full(1, -1.0), OPT_CODE["gd"]) + training + (steps, X.shape[0], record_every,
            np.empty((R, 1)), np.empty((R, net.n_layers, NQ, 1)), np.full(1, -1, np.int64),
            np.empty(1), 0, 1, LANES)


# --- simcore.fastmath in compiled loops -----------------------------------------------------

FASTMATH_NAMES = list(FASTMATH_REFS)


def make_loop(func, **jit_options):
    """``out[i] = func(x[i])`` compiled, as simcore uses the functions: a plain loop over an
    array (by default no fastmath and numba's default error_model -- the functions carry their
    own flags). Never cached, so numba can show its IR."""
    @njit(**jit_options)
    def loop(x, out):
        for i in range(x.size):
            out[i] = func(x[i])
    return loop


# one loop per function, shared by the float64 and float32 tests (each signature compiles once)
LOOPS = {name: make_loop(getattr(fm, name)) for name in FASTMATH_NAMES}


def apply_loop(name, x):
    """simcore.fastmath's ``name`` over the array x, in its compiled loop."""
    out = np.empty_like(x)
    LOOPS[name](x, out)
    return out


# --- the CUDA backend: a GPU or numba's CUDA simulator --------------------------------------

CUDA_TPB = 4          # threads per block in the CUDA tests: small, so a batch spans several threads
CUDA_MAX_BLOCKS = 2   # at most 2 blocks: a grid of G > 2 networks loops over networks per block


def cuda_status():
    """(available, why): whether numba.cuda runs kernels here (a GPU, or the simulator when
    NUMBA_ENABLE_CUDASIM=1 was set before numba was imported), and if it cannot be imported,
    why. Imports numba.cuda: call it from the CUDA tests only."""
    try:
        from numba import cuda
        return bool(cuda.is_available()), ""
    except Exception as exc:  # numba-cuda not installed, or a broken driver
        return False, f" (numba.cuda: {exc})"


@pytest.fixture
def small_cuda_launches(monkeypatch):
    """CUDA launches of CUDA_TPB threads a block and at most CUDA_MAX_BLOCKS blocks, so that
    under the simulator (every thread a Python thread, hence tiny sizes) each grid still spans
    several blocks and each thread several samples; the simulator's NumPy warnings silenced."""
    monkeypatch.setattr(simcore.config, "CUDA_THREADS", CUDA_TPB)
    monkeypatch.setattr(simcore.config, "CUDA_MAX_BLOCKS", CUDA_MAX_BLOCKS)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # the simulator runs the uint64 RNG in NumPy scalars (wrap-around warnings) and the
        # diverging network in NumPy floats (overflow warnings); neither happens on a GPU
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@pytest.fixture(scope="module")
def gc():
    """simcore.grid.cuda, the CUDA backend; skips where numba.cuda cannot run kernels."""
    if not cuda_status()[0]:
        pytest.skip("no CUDA")
    from simcore.grid import cuda as module
    return module


@pytest.fixture(scope="module")
def cb():
    """tests/cuda_blocks.py: the CUDA engine's device functions one at a time, from NumPy;
    skips where numba.cuda cannot run kernels."""
    if not cuda_status()[0]:
        pytest.skip("no CUDA")
    import cuda_blocks
    return cuda_blocks
