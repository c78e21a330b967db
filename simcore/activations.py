"""Activation functions over arrays: a = f(z) and the backward product dz = da * f'(z).

The formulas live once in :mod:`simcore.scalar`, and so does the map from an activation's code
to its formula (:func:`simcore.scalar.act_value`, :func:`simcore.scalar.act_deriv`, which the GPU
engine calls too); this module lays them over arrays. ``forward`` and ``backward`` hold one
loop per activation and pick one by integer code outside the loop, so every loop stays
branch-free and vectorises. The loops are written out in one function rather
than generated as one compiled function each: every separately compiled function is optimised
on its own and again inside each caller, so six pairs of separate functions would lengthen the
grid engine's first call (docs/benchmarks.md, "Measurements behind the code's choices").

Examples
--------
>>> import numpy as np, simcore
>>> simcore.activations.apply("sigmoid", np.array([-1e4, 0.0, 1e4]))
array([0. , 0.5, 1. ])
"""
import numpy as np

from . import _validate
from ._jit import cpu_kernel
from .scalar import ACT_CODE, ACTIVATIONS, act_deriv, act_value

NAMES = tuple(ACTIVATIONS)


@cpu_kernel
def forward(code, z, a):
    """a = f(z) elementwise on flat (1-D, contiguous) arrays; ``code`` from ``ACT_CODE``."""
    n = z.size
    # One loop per code, unswitched by hand: inside each, the compiler knows ``code`` (so no
    # branch may be a bare else) and folds act_value's dispatch away; every loop is branch-free.
    if code == 0:
        for i in range(n):
            a[i] = act_value(code, z[i])
    elif code == 1:
        for i in range(n):
            a[i] = act_value(code, z[i])
    elif code == 2:
        for i in range(n):
            a[i] = act_value(code, z[i])
    elif code == 3:
        for i in range(n):
            a[i] = act_value(code, z[i])
    elif code == 4:
        for i in range(n):
            a[i] = act_value(code, z[i])
    elif code == 5:
        for i in range(n):
            a[i] = act_value(code, z[i])
    else:
        raise ValueError("unknown activation code")


@cpu_kernel
def backward(code, z, a, da, dz):
    """dz = da * f'(z) elementwise on flat arrays, with a = f(z) already known (unswitched by
    code as :func:`forward`)."""
    n = z.size
    if code == 0:
        for i in range(n):
            dz[i] = da[i] * act_deriv(code, z[i], a[i])
    elif code == 1:
        for i in range(n):
            dz[i] = da[i] * act_deriv(code, z[i], a[i])
    elif code == 2:
        for i in range(n):
            dz[i] = da[i] * act_deriv(code, z[i], a[i])
    elif code == 3:
        for i in range(n):
            dz[i] = da[i] * act_deriv(code, z[i], a[i])
    elif code == 4:
        for i in range(n):
            dz[i] = da[i] * act_deriv(code, z[i], a[i])
    elif code == 5:
        for i in range(n):
            dz[i] = da[i] * act_deriv(code, z[i], a[i])
    else:
        raise ValueError("unknown activation code")


def apply(name, z):
    """f(z) elementwise for an array of any shape.

    Parameters
    ----------
    name : str
        One of ``NAMES``: identity, sigmoid, tanh, relu, leaky_relu, softplus.
    z : array_like of float
        Pre-activations (float32 stays float32, anything else becomes float64). inf is allowed.

    Returns
    -------
    ndarray, same shape and dtype as ``z``.
    """
    _validate.choice("name", name, ACT_CODE)
    z = _validate.array("z", z, finite=False, min_rows=0)
    flat = z.reshape(-1)
    out = np.empty_like(flat)
    forward(ACT_CODE[name], flat, out)
    return out.reshape(z.shape)


def derivative(name, z):
    """f'(z) elementwise for an array of any shape (same conventions as :func:`apply`)."""
    a = apply(name, z)
    z = np.asarray(z, dtype=a.dtype).reshape(-1)
    out = np.empty_like(z)
    backward(ACT_CODE[name], z, a.reshape(-1), np.ones_like(z), out)
    return out.reshape(a.shape)


def _named(name):
    def fn(z):
        return apply(name, z)

    def grad(z):
        return derivative(name, z)

    fn.__name__, grad.__name__ = name, name + "_grad"
    fn.__doc__ = f"{name}(z) elementwise; see :func:`simcore.scalar.{name}` for the formula."
    grad.__doc__ = f"{name}'(z) elementwise; see :func:`simcore.scalar.{name}_grad`."
    return fn, grad


identity, identity_grad = _named("identity")
sigmoid, sigmoid_grad = _named("sigmoid")
tanh, tanh_grad = _named("tanh")
relu, relu_grad = _named("relu")
leaky_relu, leaky_relu_grad = _named("leaky_relu")
softplus, softplus_grad = _named("softplus")
