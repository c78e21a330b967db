r"""Losses computed from the output layer's pre-activation ``z`` (logits), value and gradient.

Each loss is a pair, as in Nielsen's ``network2.py``: the value :math:`L` and
:math:`\delta = \partial L / \partial z`, computed in one pass by :func:`loss_grad`.
Conventions follow PyTorch's defaults (means, not sums):

===============  ===========================================================  =============================================================
name             value                                                        :math:`\partial L / \partial z`
===============  ===========================================================  =============================================================
``mse``          :math:`\frac{1}{nk}\sum (z - y)^2`                           :math:`\frac{2}{nk}(z - y)`
``mse_sigmoid``  :math:`\frac{1}{nk}\sum (\sigma(z) - y)^2`                   :math:`\frac{2}{nk}(\sigma - y)\sigma(1-\sigma)`
``bce``          :math:`\frac{1}{nk}\sum \log(1+e^{z}) - y z`                 :math:`\frac{1}{nk}(\sigma(z) - y)`
``ce``           :math:`\frac{1}{n}\sum_i \log\sum_j e^{z_{ij}} - z_{i y_i}`  :math:`\frac{1}{n}(\mathrm{softmax}(z) - \mathrm{onehot}(y))`
===============  ===========================================================  =============================================================

``mse_sigmoid`` carries :math:`\sigma'(z)` in its gradient: the learning slowdown of
Nielsen's chapter 3, which ``bce`` avoids. ``bce`` uses
:math:`\max(z,0) - yz + \log(1 + e^{-|z|})` and ``ce`` the log-sum-exp trick, so neither
overflows for any finite logit.
"""
import math

import numpy as np

from . import _validate
from ._jit import cpu_kernel
from .scalar import exp, sigmoid, sigmoid_grad, softplus

# the codes compiled kernels switch on (LOSSES below maps each name to its code and formula)
MSE, MSE_SIGMOID, BCE, CE = 0, 1, 2, 3


# --- per-unit formulas: (value, d value / dz) of one output unit, before the mean's 1/(n k).
# Every kernel (the single network's, the CPU grid's lanes and per-network strategies, the GPU
# engine) calls these; the softmax cross-entropy couples a row's units and is written per row.
# Compiled without reassociation, as the grid kernels that inline them (simcore._jit.cpu_kernel).

@cpu_kernel(ordered=True, inline=True)
def mse_unit(z, y):
    r""":math:`(z - y)^2` and :math:`2 (z - y)`."""
    r = z - y
    return r * r, 2.0 * r


@cpu_kernel(ordered=True, inline=True)
def mse_sigmoid_unit(z, y):
    r""":math:`(\sigma(z) - y)^2` and :math:`2 (\sigma(z) - y) \sigma'(z)`: the gradient carries
    :math:`\sigma'`, the learning slowdown of a saturated output."""
    a = sigmoid(z)
    r = a - y
    return r * r, 2.0 * r * sigmoid_grad(z, a)


@cpu_kernel(ordered=True, inline=True)
def bce_unit(z, y):
    r""":math:`\mathrm{softplus}(z) - y z = -y \log\sigma(z) - (1 - y) \log(1 - \sigma(z))` and
    :math:`\sigma(z) - y`, from the logit (no overflow for any finite z)."""
    return softplus(z) - y * z, sigmoid(z) - y


@cpu_kernel(ordered=True, inline=True)
def unit_loss(code, z, y):
    """(value, d value / dz) of one output unit for loss ``code`` 0, 1 or 2 (see LOSSES)."""
    if code == MSE:
        return mse_unit(z, y)
    if code == MSE_SIGMOID:
        return mse_sigmoid_unit(z, y)
    return bce_unit(z, y)


# --- the softmax cross-entropy couples a row's k units; each kernel runs the row's loop (the lanes
# kernel across networks, the GPU across samples) around these two formulas -------------------

@cpu_kernel(ordered=True, inline=True)
def ce_row_loss(zmax, total, zy):
    r"""One row's :math:`\log \sum_j e^{z_j} - \sum_j y_j z_j` by the log-sum-exp trick, from
    :math:`z_{max}`, ``total`` :math:`= \sum_j e^{z_j - z_{max}}` and ``zy`` :math:`= \sum_j y_j z_j`."""
    return zmax + math.log(total) - zy


@cpu_kernel(ordered=True, inline=True)
def ce_delta(e, inv_total, y):
    r""":math:`\partial / \partial z_j` of one row's loss: :math:`p_j - y_j`, with
    :math:`p_j = e_j / \sum_i e_i` (``e`` :math:`= e^{z_j - z_{max}}`, ``inv_total`` the row's
    :math:`1/\sum_i e^{z_i - z_{max}}`)."""
    return e * inv_total - y


@cpu_kernel(ordered=True, inline=True)
def softmax_shift(row):
    r"""The shift :math:`z_{max} = \max_j z_j` and the normaliser :math:`\sum_j e^{z_j - z_{max}}`
    of one row of logits (any 1-D view: a row, a strided column of lanes or of a unit-major
    buffer), summed in the order j = 0, 1, ...: :math:`\mathrm{softmax}_j = e^{z_j - z_{max}} / \sum`."""
    zmax = row[0]
    for j in range(1, row.size):
        zmax = max(zmax, row[j])
    total = np.float64(0.0)  # float64 in the CUDA simulator too, where 0.0 + float32 stays float32
    for j in range(row.size):
        total += exp(row[j] - zmax)
    return zmax, total


@cpu_kernel(ordered=True, inline=True)
def output_unit(code, z, zmax, total):
    r"""The network's output for one unit from its logit ``z``, for loss ``code``: z itself
    (``mse``), :math:`\sigma(z)` (``mse_sigmoid``, ``bce``), or
    :math:`e^{z - z_{max}} / \sum_j e^{z_j - z_{max}}` (``ce``; ``zmax`` and ``total`` from
    :func:`softmax_shift` of its row, unused otherwise)."""
    if code == MSE:
        return z * 1.0
    if code == CE:
        return exp(z - zmax) / total
    return sigmoid(z) * 1.0


@cpu_kernel(ordered=True, inline=True)
def output_grad(code, z, out):
    r"""The diagonal derivative :math:`\partial\,\mathrm{out}_j / \partial z_j` of the network's
    output function for loss ``code``, given out = that output: 1 (identity, ``mse``),
    :math:`\sigma'(z)` (``mse_sigmoid``, ``bce``), :math:`p_j (1 - p_j)` (softmax, ``ce``). The
    telemetry's output-layer saturation reads it."""
    if code == MSE:
        return 1.0
    if code == CE:
        return out * (1.0 - out)
    return sigmoid_grad(z, out)


# --- accuracy: the classification rule of bce and ce, counted once for every kernel ------------

@cpu_kernel(ordered=True, inline=True)
def correct_units(code, z, zo, zs, Y, r, yo, ys, K):
    r"""How many of one sample's predictions are right: its logits are ``z[zo + j * zs]`` and its
    encoded targets ``Y[r, yo + j * ys]``, j = 0..K-1 (strides let every kernel pass its own
    buffers).

    ``bce``: each of the K units predicts class 1 where :math:`z_j > 0` (that is
    :math:`\sigma(z_j) > 1/2`); the count of units with :math:`[z_j > 0] = y_j` (0..K).
    ``ce``: the predicted class is :math:`\arg\max_j z_j` (ties to the first); 1 if the
    one-hot target holds it, else 0. Accuracy is the sum over samples divided by
    :func:`accuracy_units` times their number. Other losses: 0 (accuracy is not defined)."""
    if code == CE:
        best = 0
        for j in range(1, K):
            if z[zo + j * zs] > z[zo + best * zs]:
                best = j
        return 1.0 if Y[r, yo + best * ys] > 0.5 else 0.0
    count = 0.0
    if code == BCE:
        for j in range(K):
            count += 1.0 if (z[zo + j * zs] > 0.0) == (Y[r, yo + j * ys] > 0.5) else 0.0
    return count


@cpu_kernel(ordered=True, inline=True)
def accuracy_units(code, K):
    """Predictions :func:`correct_units` counts per sample: K for ``bce`` (one per unit), 1 for
    ``ce``, 0 for ``mse`` and ``mse_sigmoid`` (no accuracy: the kernels record NaN)."""
    if code == BCE:
        return K
    return 1 if code == CE else 0


#: Loss name -> (code, per-unit formula; None for ce, whose softmax couples a row). The code is
#: what compiled kernels switch on.
LOSSES = {"mse": (MSE, mse_unit), "mse_sigmoid": (MSE_SIGMOID, mse_sigmoid_unit), "bce": (BCE, bce_unit),
          "ce": (CE, None)}
#: Loss name -> its code in :data:`LOSSES`.
LOSS_CODE = {name: entry[0] for name, entry in LOSSES.items()}
NAMES = tuple(LOSS_CODE)
assert list(LOSS_CODE.values()) == list(range(len(LOSSES))), "codes must be 0, 1, ... in order"


@cpu_kernel
def loss_grad(code, z, y, dz):
    """Mean loss of logits ``z`` (n, k) against encoded targets ``y`` (n, k); writes dL/dz.

    Targets are encoded by :func:`encode_targets` (one-hot rows for ``ce``). Sums run in
    float64 whatever the dtype of ``z``.
    """
    n, k = z.shape
    total = 0.0
    if code == CE:  # softmax + categorical cross-entropy, per row with log-sum-exp
        inv_n = 1.0 / n
        for i in range(n):
            zmax = z[i, 0]
            for j in range(1, k):
                zmax = max(zmax, z[i, j])
            s = 0.0
            zy = 0.0
            for j in range(k):
                e = exp(z[i, j] - zmax)
                dz[i, j] = e
                s += e
                zy += y[i, j] * z[i, j]
            total += ce_row_loss(zmax, s, zy)
            inv_s = 1.0 / s
            for j in range(k):
                dz[i, j] = ce_delta(dz[i, j], inv_s, y[i, j]) * inv_n
        return total * inv_n
    inv_m = 1.0 / (n * k)
    for i in range(n):
        for j in range(k):
            value, d = unit_loss(code, z[i, j], y[i, j])
            total += value
            dz[i, j] = d * inv_m
    return total * inv_m


@cpu_kernel
def output(code, z, out):
    """The network's output from its logits (n, k): :func:`output_unit` of every unit."""
    n, k = z.shape
    for i in range(n):
        zmax, total = z[i, 0], 1.0
        if code == CE:
            zmax, total = softmax_shift(z[i])
        for j in range(k):
            out[i, j] = output_unit(code, z[i, j], zmax, total)


def encode_targets(loss, y, n, k, dtype):
    """Check ``y`` for ``loss`` and return it as a float (n, k) array the kernels read.

    ``bce``: (n,) or (n, k) of 0/1. ``ce``: (n,) integer labels in [0, k). ``mse`` and
    ``mse_sigmoid``: (n,) when k == 1, or (n, k), finite reals.

    Raises
    ------
    ValueError
        Naming ``y`` and what was expected.
    """
    if loss == "ce":
        if k < 2:
            raise ValueError(f"loss 'ce' needs an output layer of width >= 2, got {k}")
        labels = _validate.labels("y", y, n, n_classes=k).astype(np.int64)
        onehot = np.zeros((n, k), dtype=dtype)
        onehot[np.arange(n), labels] = 1.0
        return onehot
    arr = np.asarray(y)
    shape_ok = arr.shape == (n, k) or (k == 1 and arr.shape == (n,))
    if not shape_ok:
        want = f"({n},) or ({n}, {k})" if k == 1 else f"({n}, {k})"
        raise ValueError(f"y must have shape {want} for loss {loss!r}, got {arr.shape}")
    if loss == "bce":
        flat = _validate.labels("y", arr.reshape(-1), arr.size, values=(0, 1))
        return np.ascontiguousarray(flat.reshape(n, k), dtype=dtype)
    return _validate.array("y", arr, dtype=dtype, min_rows=0).reshape(n, k)


def _public(name):
    code = LOSS_CODE[name]

    def fn(z, y):
        z = _validate.array("z", z, ndim=(1, 2))
        if name == "ce" and (z.ndim != 2 or z.shape[1] < 2):
            raise ValueError(f"z must have shape (n, k) with k >= 2 for loss 'ce', got {z.shape}")
        z2 = z.reshape(z.shape[0], -1)
        target = encode_targets(name, y, z2.shape[0], z2.shape[1], z.dtype)
        dz = np.empty_like(z2)
        value = loss_grad(code, z2, target, dz)
        return float(value), dz.reshape(z.shape)

    fn.__name__ = name
    fn.__doc__ = (f"``{name}`` loss of logits ``z`` ((n,) or (n, k)) against ``y``: returns "
                  f"(mean loss, dL/dz shaped like z). See the module docstring for the formula.")
    return fn


mse = _public("mse")
mse_sigmoid = _public("mse_sigmoid")
bce = _public("bce")
ce = _public("ce")
