"""GPU benchmarks: ``train_grid(..., backend="cuda")`` on W1 at G = 4,096 and 65,536 (the GPU
issue's sizes), float32 and float64, 50 steps with telemetry every 10; the same units as
``bench_grid.TrainGrid``. Every case is skipped (asv shows n/a) where there is no CUDA device
or numba-cuda is missing: ``setup`` raising ``NotImplementedError`` is asv's way to skip. The
timed body includes copying the results back to the host (``train_grid`` returns NumPy arrays).
"""
import simcore

from . import bench_grid   # the module, not its class: asv would find an imported class twice
from .common import DTYPES, w1, w1_lr


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


class TrainGridCUDA(bench_grid.TrainGrid):
    """``bench_grid.TrainGrid`` (time, peak host memory, trainings/s, GFLOP/s) on the GPU."""
    params = [[4096, 65536], DTYPES]
    param_names = ["G", "dtype"]

    def setup(self, G, dtype):
        if not cuda_available():
            raise NotImplementedError("no CUDA device (or numba-cuda missing)")
        self.net, self.X, self.y = w1(dtype)
        self.lr = w1_lr(G)
        simcore.train_grid(self.net, self.X, self.y, lr=self.lr[:2], steps=1, backend="cuda")

    def train(self):
        return simcore.train_grid(self.net, self.X, self.y, lr=self.lr, steps=bench_grid.STEPS, record_every=10,
                                  backend="cuda")
