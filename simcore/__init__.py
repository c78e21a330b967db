"""simcore: Numba-compiled kernels for the fundamentals of neural networks.

The public API: :class:`MLP` (single networks), :func:`train_grid` (many networks),
:mod:`~simcore.perceptron`, :mod:`~simcore.datasets`, the kernel modules
:mod:`~simcore.activations`, :mod:`~simcore.losses`, :mod:`~simcore.layers`, :mod:`~simcore.optim`,
and :func:`hessian.sharpness` (the largest Hessian eigenvalue of many networks, compiled), and
files: :func:`save_params` / :func:`load_params`
(:mod:`simcore.io`; a grid's :meth:`GridResult.save` / :meth:`GridResult.load`). PyTorch
conversion is :mod:`simcore.interop` (imported on demand: simcore never imports torch).
"""
from . import activations, datasets, hessian, layers, losses, optim, perceptron, scalar
from . import io  # noqa: F401  (simcore.io, kept out of __all__: see there)
from .grid import GridResult, LRSchedule, train_grid
from .io import load_params, save_params
from .mlp import MLP
from .optim import Optimizer

# simcore.io stays out of __all__: ``from simcore import *`` must not shadow the standard io
__all__ = ["MLP", "Optimizer", "GridResult", "LRSchedule", "train_grid", "save_params", "load_params", "activations",
           "datasets", "hessian", "layers", "losses", "optim", "perceptron", "scalar"]
__version__ = "0.1.0"
