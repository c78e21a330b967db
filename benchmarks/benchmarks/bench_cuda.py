"""GPU benchmarks: none yet. simcore has no GPU backend (``simcore.grid.BACKENDS`` is
``("cpu",)``), so this module benchmarks nothing today: every case is skipped (asv shows n/a).

It is here so the suite's structure is ready: when a ``"cuda"`` backend exists,
``TrainGridCUDA`` times ``train_grid(..., backend="cuda")`` on W1 on machines with a GPU and
skips cleanly elsewhere (``setup`` raising ``NotImplementedError`` is asv's way to skip). The
timed body must include copying results back to the host (synchronisation).
"""
import simcore

from .common import Benchmark, w1, w1_lr


def cuda_available():
    """True when numba's CUDA target (numba-cuda) is importable and sees a device."""
    try:
        from numba import cuda
    except ImportError:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver or toolkit counts as no GPU
        return False


class TrainGridCUDA(Benchmark):
    params = [[256, 2560]]
    param_names = ["G"]

    def setup(self, G):
        if "cuda" not in simcore.grid.BACKENDS:
            raise NotImplementedError("simcore has no CUDA backend yet")
        if not cuda_available():
            raise NotImplementedError("no CUDA device (or numba-cuda missing)")
        self.net, self.X, self.y = w1("float64")
        self.lr = w1_lr(G)
        simcore.train_grid(self.net, self.X, self.y, lr=self.lr[:2], steps=1, backend="cuda")

    def time_train_grid(self, G):
        simcore.train_grid(self.net, self.X, self.y, lr=self.lr, steps=50, backend="cuda")
