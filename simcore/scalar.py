"""Scalar math, written once: activations with their derivatives, stable log-exp helpers,
and a counter-based random number generator.

Each formula is a plain Python function compiled by ``simcore._jit.scalar``; the array
kernels (:mod:`simcore.activations`, :mod:`simcore.layers`, the grid engine) call them inside
their loops, where LLVM inlines and vectorises them. A formula stands next to its derivative;
``ACTIVATIONS`` maps a name to the pair.

Derivatives take both the pre-activation ``z`` and the activation ``a = f(z)`` so each one uses
the cheaper form (``tanh'(z) = 1 - a^2`` needs no second exponential), as PyTorch's autograd does.

Stability: ``exp`` is only ever called on ``-|z|`` (never overflows); every activation and
derivative is finite for finite ``z`` of any size, in float32 and float64.

Precision: a float32 ``z`` is computed in float32 (the exp/tanh/log1p of
:mod:`simcore.fastmath` return its type, and the constants 0 and 1 below follow it), so float32
loops vectorise at twice the float64 width; float64 is computed in float64.
"""
import math

import numpy as np

from ._jit import scalar
from .fastmath import exp, log1p, tanh as _tanh

LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default negative slope

# 0 and 1 as int8, so that they take the float type of the other operand: numba (CPU and CUDA)
# and NumPy promote int8 with float32 to float32 and with float64 or a Python float to float64,
# exactly.  A literal 1.0 is a float64 and would widen float32 work to float64 (for sigmoid,
# half the SIMD width; docs/benchmarks.md, "Measurements behind the code's choices").  np.float32 constants would do for
# numba but not in the CUDA simulator, where NumPy makes np.float32 + (Python float) a float32
# and would round float64 results.
_ZERO = np.int8(0)
_ONE = np.int8(1)


# --- activations: f(z) and f'(z) given a = f(z) ------------------------------------------

@scalar
def identity(z):
    r""":math:`f(z) = z`."""
    return z


@scalar
def identity_grad(z, a):
    r""":math:`f'(z) = 1`."""
    return 1.0


@scalar
def sigmoid(z):
    r""":math:`\sigma(z) = 1 / (1 + e^{-z})`, evaluated through :math:`e^{-|z|}` so it never overflows."""
    e = exp(-abs(z))
    r = _ONE / (_ONE + e)
    return r if z >= _ZERO else e * r


@scalar
def sigmoid_grad(z, a):
    r""":math:`\sigma'(z) = \sigma(z)(1 - \sigma(z)) \le 1/4`."""
    return a * (_ONE - a)


@scalar
def tanh(z):
    r""":math:`\tanh z = (e^{z} - e^{-z}) / (e^{z} + e^{-z})`."""
    return _tanh(z)


@scalar
def tanh_grad(z, a):
    r""":math:`\tanh'(z) = 1 - \tanh^2 z`."""
    return _ONE - a * a


@scalar
def relu(z):
    r""":math:`\max(z, 0)`."""
    return 0.0 if z <= 0 else z  # NaN falls through and propagates, as in torch


@scalar
def relu_grad(z, a):
    r""":math:`1` for :math:`z > 0`, else :math:`0` (PyTorch's convention at 0)."""
    return 1.0 if z > 0 else 0.0


@scalar
def leaky_relu(z):
    r""":math:`z` for :math:`z > 0`, else :math:`0.01 z`."""
    return z if z > 0 else LEAKY_SLOPE * z


@scalar
def leaky_relu_grad(z, a):
    r""":math:`1` for :math:`z > 0`, else :math:`0.01`."""
    return 1.0 if z > 0 else LEAKY_SLOPE


@scalar
def softplus(z):
    r""":math:`\log(1 + e^{z}) = \max(z, 0) + \log(1 + e^{-|z|})`."""
    return max(z, _ZERO) + log1p(exp(-abs(z)))


@scalar
def softplus_grad(z, a):
    r""":math:`\mathrm{softplus}'(z) = \sigma(z)`."""
    return sigmoid(z)


# name -> (code, f, f'); the code is what compiled kernels switch on.
ACTIVATIONS = {
    "identity": (0, identity, identity_grad),
    "sigmoid": (1, sigmoid, sigmoid_grad),
    "tanh": (2, tanh, tanh_grad),
    "relu": (3, relu, relu_grad),
    "leaky_relu": (4, leaky_relu, leaky_relu_grad),
    "softplus": (5, softplus, softplus_grad),
}
#: Activation name -> the integer code compiled kernels take instead of the name.
ACT_CODE = {name: entry[0] for name, entry in ACTIVATIONS.items()}
# the codes act_value and act_deriv branch on, in ACTIVATIONS' order
assert ACT_CODE == {"identity": 0, "sigmoid": 1, "tanh": 2, "relu": 3, "leaky_relu": 4, "softplus": 5}


# The one map from a code to its formula, for every kernel that picks an activation at run time
# (the CPU array loops of simcore.activations, the GPU engine). ``* 1.0`` gives every branch the
# type float64 for float64 input, as the CUDA simulator needs; on the CPU, inlined into a loop
# over float32, the widening and the narrowing store fold away (both are exact).
@scalar
def act_value(code, z):
    """f(z) of activation ``code`` (``ACT_CODE``)."""
    if code == 0:
        return identity(z) * 1.0
    elif code == 1:
        return sigmoid(z)
    elif code == 2:
        return tanh(z) * 1.0
    elif code == 3:
        return relu(z) * 1.0
    elif code == 4:
        return leaky_relu(z) * 1.0
    return softplus(z)


@scalar
def act_deriv(code, z, a):
    """f'(z) of activation ``code`` given a = f(z)."""
    if code == 0:
        return identity_grad(z, a) * 1.0
    elif code == 1:
        return sigmoid_grad(z, a) * 1.0
    elif code == 2:
        return tanh_grad(z, a) * 1.0
    elif code == 3:
        return relu_grad(z, a) * 1.0
    elif code == 4:
        return leaky_relu_grad(z, a) * 1.0
    return softplus_grad(z, a) * 1.0


# --- counter-based random numbers ---------------------------------------------------------
# SplitMix64 (Steele, Lea & Flood 2014): the k-th number of stream `key` is a pure function
# mix64(key + k * golden), so any (seed, stream, index) can be drawn independently, in any
# order, on any thread, on the CPU or the GPU, and gives the same bits (docs/architecture.md, *Reproducible by construction*).

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TWO_M53 = 1.0 / 9007199254740992.0  # 2^-53


@scalar
def mix64(x):
    """SplitMix64's finaliser: a bijective avalanche of a 64-bit word."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


@scalar
def stream_key(seed, stream):
    """The 64-bit key of random stream ``stream`` (a layer, tensor or epoch) under ``seed``."""
    return mix64(mix64(np.uint64(seed) + _GOLDEN) ^ (np.uint64(stream) * _M2))


@scalar
def uniform(key, index):
    """The ``index``-th uniform number in (0, 1) of stream ``key`` (53 random bits)."""
    bits = mix64(key + (np.uint64(index) + np.uint64(1)) * _GOLDEN)
    return ((bits >> _S11) + 0.5) * _TWO_M53


@scalar
def normal(key, index):
    r"""The ``index``-th standard normal of stream ``key`` (Box-Muller on two uniforms).

    :math:`\sqrt{-2 \ln u_1} \cos(2 \pi u_2)`; ``u_1 > 0`` always, so the value is finite.
    """
    u1 = uniform(key, 2 * index)
    u2 = uniform(key, 2 * index + 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
