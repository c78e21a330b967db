r"""Weight initialisation, drawn from the counter-based generator of :mod:`simcore.scalar`.

Layer :math:`l` (0-based) draws its weights from stream :math:`2l` and its biases from stream
:math:`2l + 1` of the network's seed, so the same seed gives the same numbers here, in the grid
engine, on any thread count and in any chunking of a grid (docs/architecture.md, *Reproducible by construction*). Numbers are
drawn in float64 and rounded to the network's dtype.

==========  ===================================================  ========================
name        distribution of :math:`W_{ij}`                       source
==========  ===================================================  ========================
glorot      :math:`N(0, 2/(n_{in} + n_{out}))`                   Glorot & Bengio 2010
he          :math:`N(0, 2/n_{in})`                               He et al. 2015
lecun       :math:`N(0, 1/n_{in})`                               LeCun et al. 1998
normal      :math:`N(0, 1/n_{in})` (scale = :math:`\sigma_w`)    mean-field papers
uniform     :math:`U[-1/\sqrt{n_{in}}, 1/\sqrt{n_{in}}]`         PyTorch's Linear default
==========  ===================================================  ========================

``scale`` multiplies the standard deviation of :math:`W` (for ``normal`` it is
:math:`\sigma_w`, so :math:`W \sim N(0, \sigma_w^2/n_{in})`); biases are
:math:`N(0, \text{bias\_scale}^2)`, zero by default; batch-norm :math:`\gamma = 1`, :math:`\beta = 0`.
"""
import math

import numpy as np

from ._jit import cpu_kernel
from .scalar import normal, stream_key, uniform

INITS = ("glorot", "he", "lecun", "normal", "uniform")


@cpu_kernel
def fill_normal(seed, stream, std, out):
    """out[i] = std * N(0, 1), the i-th normal of ``stream`` under ``seed`` (out is 1-D)."""
    key = stream_key(seed, stream)
    for i in range(out.size):
        out[i] = std * normal(key, i)


@cpu_kernel
def fill_uniform(seed, stream, limit, out):
    """out[i] = U[-limit, limit], the i-th uniform of ``stream`` under ``seed``."""
    key = stream_key(seed, stream)
    for i in range(out.size):
        out[i] = limit * (2.0 * uniform(key, i) - 1.0)


def weight_std(init, fan_in, fan_out):
    """Standard deviation of the weights of a (fan_in, fan_out) layer under ``init``."""
    if init == "glorot":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if init == "he":
        return math.sqrt(2.0 / fan_in)
    if init in ("lecun", "normal"):
        return math.sqrt(1.0 / fan_in)
    if init == "uniform":
        return 1.0 / math.sqrt(3.0 * fan_in)  # the std of U[-1/sqrt(fan_in), 1/sqrt(fan_in)]
    raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")


def unit_spread(init, fan_in, fan_out):
    """The spread of a (fan_in, fan_out) layer's weights at scale 1: the half-width
    1/sqrt(fan_in) of ``uniform``'s interval, else the normal's standard deviation."""
    if init == "uniform":
        return 1.0 / math.sqrt(fan_in)
    return weight_std(init, fan_in, fan_out)


@cpu_kernel
def fill_layer(seed, layer, uniform_init, spread, bias_scale, W, b):
    """One layer's draws, written into the flat W and b: W from stream 2 layer
    (U[-spread, spread] when ``uniform_init``, else spread * N(0, 1)), b from stream 2 layer + 1
    (bias_scale * N(0, 1); zero when bias_scale is 0). :func:`draw_layer` and the grid engine
    both draw through this."""
    if uniform_init:
        fill_uniform(seed, 2 * layer, spread, W)
    else:
        fill_normal(seed, 2 * layer, spread, W)
    if bias_scale == 0.0:
        b[:] = 0.0
    else:
        fill_normal(seed, 2 * layer + 1, bias_scale, b)


def draw_layer(init, fan_in, fan_out, layer, seed, scale, bias_scale):
    """Float64 (W, b) of layer ``layer`` for one network; see the module docstring."""
    W = np.empty(fan_in * fan_out)
    b = np.empty(fan_out)
    fill_layer(seed, layer, init == "uniform", scale * unit_spread(init, fan_in, fan_out),
               bias_scale, W, b)
    return W.reshape(fan_in, fan_out), b
