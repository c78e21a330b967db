"""The single-network API (``MLP.loss_and_grad``, ``MLP.predict``), the perceptron, and the
compile latency a user sees in a fresh process."""
import json
import os
import subprocess
import sys

import simcore

from .common import DTYPES, Benchmark, normal, rng, w1

# name: (sizes, activation, loss, batch); the two workloads of benchmarks/mlp_speed.py
WORKLOADS = {
    "2-16-16-1 bce b256": ([2, 16, 16, 1], "tanh", "bce", 256),
    "64-256-256-10 ce b1024": ([64, 256, 256, 10], "tanh", "ce", 1024),
}


class MLPLossAndGrad(Benchmark):
    """Mean loss and gradient of one network (training mode), and its prediction."""
    params = [list(WORKLOADS), [False, True], DTYPES]
    param_names = ["workload", "batchnorm", "dtype"]

    def setup(self, workload, batchnorm, dtype):
        sizes, act, loss, n = WORKLOADS[workload]
        self.net = simcore.MLP(sizes, activation=act, loss=loss, batchnorm=batchnorm, dtype=dtype)
        self.params = self.net.init(seed=0)
        self.X = normal((n, sizes[0]), dtype, seed=0)
        self.y = rng(1).integers(0, sizes[-1] if loss == "ce" else 2, n)
        self.net.loss_and_grad(self.params, self.X, self.y)
        self.net.predict(self.params, self.X)

    def time_loss_and_grad(self, workload, batchnorm, dtype):
        self.net.loss_and_grad(self.params, self.X, self.y)

    def time_predict(self, workload, batchnorm, dtype):
        self.net.predict(self.params, self.X)


class Perceptron(Benchmark):
    """Rosenblatt's rule to convergence on linearly separable blobs with a set margin."""
    params = [[1_000, 10_000], [2, 20]]
    param_names = ["n", "d"]

    def setup(self, n, d):
        X, y = simcore.datasets.blobs_margin(n, d=d, margin=0.05, seed=0)
        self.X, self.y = X, simcore.datasets.to_pm1(y)
        simcore.perceptron.train(self.X, self.y, lr=1.0, max_epochs=1000, seed=0)

    def time_train(self, n, d):
        simcore.perceptron.train(self.X, self.y, lr=1.0, max_epochs=1000, seed=0)

    def track_epochs(self, n, d):
        return simcore.perceptron.train(self.X, self.y, lr=1.0, max_epochs=1000, seed=0).epochs
    track_epochs.unit = "epochs"


# Runs in a fresh interpreter; prints seconds of `import simcore` + the first loss_and_grad.
_CHILD = r"""
import sys, time
t0 = time.perf_counter()
import numpy as np
import simcore
net = simcore.MLP([2, 16, 16, 1], activation="tanh", loss="bce", dtype=sys.argv[1])
params = net.init(seed=0)
X, y = simcore.datasets.moons(256, noise=0.2, seed=0)
net.loss_and_grad(params, X, y)
print(time.perf_counter() - t0)
"""


def _child_seconds(dtype, cache):
    env = dict(os.environ, SIMCORE_CACHE="1" if cache else "0")
    out = subprocess.run([sys.executable, "-c", _CHILD, dtype], env=env, capture_output=True,
                         text=True, check=True, timeout=600).stdout
    return float(out.split()[-1])


class CompileTime(Benchmark):
    """Seconds from a fresh interpreter to the first ``loss_and_grad`` on W1's network:
    ``import simcore`` + MLP + the first call, in a subprocess.

    ``cold``: ``SIMCORE_CACHE=0`` (numba compiles every kernel the call needs). ``cached``:
    numba's on-disk cache in the installed package, warmed by one run in ``setup``.
    """
    params = [["cold", "cached"], ["float64"]]
    param_names = ["cache", "dtype"]
    timeout = 600

    def setup(self, cache, dtype):
        if cache == "cached":
            _child_seconds(dtype, cache=True)  # fills the cache if this install has none yet

    def track_seconds(self, cache, dtype):
        return _child_seconds(dtype, cache=cache == "cached")
    track_seconds.unit = "s"


class W1SingleNetwork(Benchmark):
    """One W1 gradient step (loss_and_grad + gd update) through the single-network API, for
    comparison with the grid engine's per-network rate."""
    params = [DTYPES]
    param_names = ["dtype"]

    def setup(self, dtype):
        self.net, self.X, self.y = w1(dtype)
        self.params = self.net.init(seed=0)
        self.opt = simcore.Optimizer("gd", eta=0.1)
        self.step()

    def step(self):
        _, grads = self.net.loss_and_grad(self.params, self.X, self.y)
        self.opt.step(self.params, grads)

    def time_step(self, dtype):
        self.step()
