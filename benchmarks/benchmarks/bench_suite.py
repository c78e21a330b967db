"""The peers suite's workloads (``benchmarks/workloads.py``: W1, W1 with batch norm, the width
sweep, the digits network) in simcore alone, and the grid engine's two CPU strategies on the
same networks, so the dashboard shows each commit's speed where ``make bench-peers`` measures it
against JAX. Each case runs a tenth of its workload's steps (at least 5), so it stays around a
second; ``track_*`` scale to the workload's full trainings. ``make bench-compare BASE=REV`` runs
this module with ``asv continuous`` between REV and HEAD.

On a commit whose ``train_grid`` has no ``strategy`` argument, "auto" runs without it and the
forced strategies are skipped (asv shows n/a).
"""
import inspect
import os
import sys
import time

import numpy as np

import simcore

from .common import DTYPES, SMOKE, Benchmark

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import workloads  # noqa: E402  (benchmarks/workloads.py, shared with peers.py)

HAS_STRATEGY = "strategy" in inspect.signature(simcore.train_grid).parameters


class _Workload(Benchmark):
    def _setup(self, name, dtype, strategy):
        if strategy != "auto" and not HAS_STRATEGY:
            raise NotImplementedError("this commit's train_grid has no strategy argument")
        w = workloads.WORKLOADS[name]
        self.w, self.G = w, w["G"]
        self.steps = 1 if SMOKE else max(5, w["S"] // 10)
        X, y = workloads.data(w)
        self.n = X.shape[0]
        net = simcore.MLP(w["sizes"], activation=w["activation"], loss=w["loss"], dtype=dtype,
                          batchnorm=w["batchnorm"])
        kw = {"strategy": strategy} if HAS_STRATEGY else {}
        P = workloads.init_params(w, self.G, np.dtype(dtype).type)
        self.call = lambda steps: simcore.train_grid(net, X, y, lr=workloads.lrs(w, self.G), steps=steps,
                                                     params0=P, record_every=steps, **kw)
        self.call(1)  # compile or load

    def _best(self, rounds=3):
        best = float("inf")
        for _ in range(1 if SMOKE else rounds):
            t0 = time.perf_counter()
            self.call(self.steps)
            best = min(best, time.perf_counter() - t0)
        return best

    def _trainings_per_s(self):
        return self.G * self.steps / self.w["S"] / self._best()

    def _gflops(self):
        return workloads.flops(self.w, self.n, self.steps) * self.G / self._best() / 1e9


# the smoke run (tests/test_asv_suite.py) keeps one workload per code path of the engine: lanes,
# lanes with batch norm, gemm (and, in float32, lanes at 4 vectors), gemm with the softmax
# cross-entropy; the other widths add cases, not code
SMOKE_WORKLOADS = ["W1", "W1-bn", "H64", "digits"]


class Suite(_Workload):
    """Every workload of the peers suite, both dtypes, the strategy train_grid picks."""
    params = [SMOKE_WORKLOADS if SMOKE else list(workloads.WORKLOADS), DTYPES]
    param_names = ["workload", "dtype"]

    def setup(self, name, dtype):
        self._setup(name, dtype, "auto")

    def time_train(self, name, dtype):
        self.call(self.steps)

    def track_trainings_per_second(self, name, dtype):
        return self._trainings_per_s()
    track_trainings_per_second.unit = "trainings/s"

    def track_gflops(self, name, dtype):
        return self._gflops()
    track_gflops.unit = "GFLOP/s"


class Strategies(_Workload):
    """Both CPU strategies forced, on a narrow and a wide width of the sweep (float64)."""
    params = [["lanes", "gemm"], ["H16", "H64"]]
    param_names = ["strategy", "workload"]

    def setup(self, strategy, name):
        self._setup(name, "float64", strategy)

    def time_train(self, strategy, name):
        self.call(self.steps)

    def track_gflops(self, strategy, name):
        return self._gflops()
    track_gflops.unit = "GFLOP/s"
