"""What every benchmark shares: the base class, fixed-seed data, W1, the slow-case flag.

Conventions (as NumPy's and SciPy's suites): data is built in ``setup`` from fixed seeds, every
``setup`` calls the kernel once so numba's compilation (or loading from its on-disk cache) stays
out of the timings, and ``time_*`` bodies are one line. Larger cases are added to ``params``
only when ``SIMCORE_BENCH_SLOW=1``, so the default suite stays short.
"""
import os

import numpy as np

import simcore

#: ``SIMCORE_BENCH_SLOW=1`` adds the slow cases (big arrays, big grids) to ``params``.
SLOW = os.environ.get("SIMCORE_BENCH_SLOW", "0").strip().lower() not in ("", "0", "false", "no", "off")

#: ``SIMCORE_BENCH_SMOKE=1`` (set by tests/test_asv_suite.py): the costliest cases run one step
#: once, so the test that every benchmark still runs stays short; the timings then mean nothing.
SMOKE = os.environ.get("SIMCORE_BENCH_SMOKE", "0").strip().lower() not in ("", "0", "false", "no", "off")

DTYPES = ["float64", "float32"]

# W1 (README, benchmarks/peers.py): MLP 2-16-16-1, tanh, BCE from logits, 256 two-moons samples,
# full-batch gradient descent, lr[g] = geomspace(1e-2, 3, G)[g].
W1_N, W1_H = 256, 16
#: forward + backward of one full-batch step of one W1 network: 3 passes x 2 flops per
#: multiply-add x n samples x (2H + H*H + H) weights.
W1_FLOPS_PER_STEP = 3 * 2 * W1_N * (2 * W1_H + W1_H * W1_H + W1_H)
#: trainings/s counts W1 trainings of this many steps (the README's figure); benchmarks run fewer
#: steps and scale.
W1_TRAINING_STEPS = 500


def with_slow(fast, slow):
    """``fast`` parameter values, plus ``slow`` ones when ``SIMCORE_BENCH_SLOW=1``."""
    return list(fast) + (list(slow) if SLOW else [])


def rng(seed=0):
    """A fresh generator with a fixed seed (each benchmark draws its own data)."""
    return np.random.default_rng(seed)


def normal(shape, dtype, seed=0, scale=1.0):
    """Standard normal draws times ``scale``, C-contiguous, in ``dtype``."""
    return np.ascontiguousarray(rng(seed).standard_normal(shape) * scale, dtype=dtype)


def w1(dtype="float64"):
    """W1's network and data: ``(net, X, y)``."""
    X, y = simcore.datasets.moons(W1_N, noise=0.2, seed=0)
    net = simcore.MLP([2, W1_H, W1_H, 1], activation="tanh", loss="bce", dtype=dtype)
    return net, X.astype(dtype), y


def w1_lr(G):
    """W1's per-network learning rates."""
    return np.geomspace(1e-2, 3.0, G)


class Benchmark:
    """Base class of every benchmark (asv reads these attributes through inheritance).

    Each timing takes 3 to 10 samples and stops after about 2 s, so a full run (``asv run``,
    ``make bench-history``) stays a few minutes per commit on a small machine.
    """
    repeat = (3, 10, 2.0)
    warmup_time = 0.05
    timeout = 300  # a cold start compiles the kernels in setup (about 15 s each for the biggest)
