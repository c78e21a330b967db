"""simcore: Numba-compiled kernels for the fundamentals of neural networks.

The public API: :class:`MLP` (single networks), :func:`train_grid` (many networks),
:mod:`perceptron`, :mod:`datasets`, the kernel modules :mod:`activations`, :mod:`losses`,
:mod:`layers`, :mod:`optim`, and :func:`hessian.sharpness` (the largest Hessian eigenvalue of
many networks, compiled).
"""
from . import activations, datasets, hessian, layers, losses, optim, perceptron, scalar
from .grid import GridResult, train_grid
from .mlp import MLP
from .optim import Optimizer

__all__ = ["MLP", "Optimizer", "GridResult", "train_grid", "activations", "datasets", "hessian", "layers",
           "losses", "optim", "perceptron", "scalar"]
__version__ = "0.1.0"
