"""GPU benchmarks: ``train_grid(..., backend="cuda")`` on W1 at G = 4,096 and 65,536 (the GPU
issue's sizes), float32 and float64, 50 steps with telemetry every 10; the same units as
``bench_grid.TrainGrid``. Every case is skipped (asv shows n/a) where there is no CUDA device
or numba-cuda is missing: ``setup`` raising ``NotImplementedError`` is asv's way to skip. The
timed body includes copying the results back to the host (``train_grid`` returns NumPy arrays).
"""
import time

import simcore

from .common import DTYPES, W1_FLOPS_PER_STEP, W1_TRAINING_STEPS, Benchmark, w1, w1_lr

STEPS = 50


def cuda_available():
    """True when numba's CUDA target (numba-cuda) is importable and sees a device."""
    try:
        from simcore.grid import cuda
    except ImportError:
        return False
    try:
        return bool(cuda.available())
    except Exception:  # a broken driver or toolkit counts as no GPU
        return False


class TrainGridCUDA(Benchmark):
    params = [[4096, 65536], DTYPES]
    param_names = ["G", "dtype"]

    def setup(self, G, dtype):
        if not cuda_available():
            raise NotImplementedError("no CUDA device (or numba-cuda missing)")
        self.net, self.X, self.y = w1(dtype)
        self.lr = w1_lr(G)
        simcore.train_grid(self.net, self.X, self.y, lr=self.lr[:2], steps=1, backend="cuda")

    def train(self):
        return simcore.train_grid(self.net, self.X, self.y, lr=self.lr, steps=STEPS, record_every=10,
                                  backend="cuda")

    def best_seconds(self, rounds=3):
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            self.train()
            best = min(best, time.perf_counter() - t0)
        return best

    def time_train_grid(self, G, dtype):
        self.train()

    def track_trainings_per_second(self, G, dtype):
        return G * STEPS / W1_TRAINING_STEPS / self.best_seconds()
    track_trainings_per_second.unit = "trainings/s"

    def track_gflops(self, G, dtype):
        return W1_FLOPS_PER_STEP * STEPS * G / self.best_seconds() / 1e9
    track_gflops.unit = "GFLOP/s"
