"""The grid engine: ``train_grid`` on W1 (G networks 2-16-16-1, tanh, BCE, 256 two-moons
samples, full-batch GD, lr geomspace(1e-2, 3, G)), 50 steps with telemetry every 10, so each case
stays well under a second; ``SIMCORE_BENCH_SLOW=1`` adds G = 2560.

``track_trainings_per_second`` counts 500-step trainings (the README's unit: the 50-step rate
scaled), ``track_gflops`` the useful arithmetic of W1 (``common.W1_FLOPS_PER_STEP``); both take
the best of three calls.
"""
import time

import simcore

from .common import (DTYPES, W1_FLOPS_PER_STEP, W1_TRAINING_STEPS, Benchmark, w1, w1_lr,
                     with_slow)

STEPS = 50


class TrainGrid(Benchmark):
    params = [with_slow([32, 256], [2560]), DTYPES]
    param_names = ["G", "dtype"]

    def setup(self, G, dtype):
        self.net, self.X, self.y = w1(dtype)
        self.lr = w1_lr(G)
        simcore.train_grid(self.net, self.X, self.y, lr=self.lr[:2], steps=1)  # compile or load

    def train(self):
        return simcore.train_grid(self.net, self.X, self.y, lr=self.lr, steps=STEPS, record_every=10)

    def best_seconds(self, rounds=3):
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            self.train()
            best = min(best, time.perf_counter() - t0)
        return best

    def time_train_grid(self, G, dtype):
        self.train()

    def peakmem_train_grid(self, G, dtype):
        self.train()

    def track_trainings_per_second(self, G, dtype):
        return G * STEPS / W1_TRAINING_STEPS / self.best_seconds()
    track_trainings_per_second.unit = "trainings/s"

    def track_gflops(self, G, dtype):
        return W1_FLOPS_PER_STEP * STEPS * G / self.best_seconds() / 1e9
    track_gflops.unit = "GFLOP/s"


class TrainGridOptimizers(Benchmark):
    """W1 at G = 256 with each update rule and with minibatches of 32 (float64)."""
    params = [["gd", "momentum", "adam"], [None, 32]]
    param_names = ["optimizer", "batch_size"]

    def setup(self, optimizer, batch_size):
        self.net, self.X, self.y = w1("float64")
        self.kw = dict(lr=w1_lr(256) / (30 if optimizer == "adam" else 1), optimizer=optimizer,
                       batch_size=batch_size)  # momentum: its default 0.9
        simcore.train_grid(self.net, self.X, self.y, steps=1, **self.kw)

    def time_train_grid(self, optimizer, batch_size):
        simcore.train_grid(self.net, self.X, self.y, steps=STEPS, **self.kw)
