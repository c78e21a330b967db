"""Activation functions over arrays: a = f(z) and the backward product dz = da * f'(z).

The formulas live once in :mod:`simcore.scalar`; this module lays them over arrays. For each
activation a pair of compiled loops is generated from its scalar pair (``_forward_loops`` and
``_backward_loops``); ``forward`` and ``backward`` pick one by integer code outside the loop, so
every loop stays branch-free and vectorises.

Examples
--------
>>> import numpy as np, simcore
>>> simcore.activations.apply("sigmoid", np.array([-1e4, 0.0, 1e4]))
array([0. , 0.5, 1. ])
"""
import numpy as np

from . import _validate
from ._jit import cpu_kernel
from .scalar import ACT_CODE, ACTIVATIONS

NAMES = tuple(ACTIVATIONS)


def _make_forward(f):
    @cpu_kernel
    def loop(z, a):
        for i in range(z.size):
            a[i] = f(z[i])
    return loop


def _make_backward(df):
    @cpu_kernel
    def loop(z, a, da, dz):
        for i in range(z.size):
            dz[i] = da[i] * df(z[i], a[i])
    return loop


_f0, _f1, _f2, _f3, _f4, _f5 = (_make_forward(ACTIVATIONS[n][1]) for n in NAMES)
_b0, _b1, _b2, _b3, _b4, _b5 = (_make_backward(ACTIVATIONS[n][2]) for n in NAMES)
assert [ACT_CODE[n] for n in NAMES] == list(range(6))


@cpu_kernel
def forward(code, z, a):
    """a = f(z) elementwise on flat (1-D, contiguous) arrays; ``code`` from ``ACT_CODE``."""
    if code == 0:
        _f0(z, a)
    elif code == 1:
        _f1(z, a)
    elif code == 2:
        _f2(z, a)
    elif code == 3:
        _f3(z, a)
    elif code == 4:
        _f4(z, a)
    else:
        _f5(z, a)


@cpu_kernel
def backward(code, z, a, da, dz):
    """dz = da * f'(z) elementwise on flat arrays, with a = f(z) already known."""
    if code == 0:
        _b0(z, a, da, dz)
    elif code == 1:
        _b1(z, a, da, dz)
    elif code == 2:
        _b2(z, a, da, dz)
    elif code == 3:
        _b3(z, a, da, dz)
    elif code == 4:
        _b4(z, a, da, dz)
    else:
        _b5(z, a, da, dz)


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
