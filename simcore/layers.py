r"""Layers: the dense (fully connected) map and batch normalisation, forward and backward.

Rows are samples. For layer :math:`l` with input activations :math:`a_{l-1}` (n, fan_in):

Dense
    :math:`z = a_{l-1} W + b`; backward, from :math:`\delta = \partial L/\partial z`:
    :math:`\nabla_W = a_{l-1}^T \delta`, :math:`\nabla_b = \sum_i \delta_i`,
    :math:`\partial L/\partial a_{l-1} = \delta W^T`.

Batch normalisation (Ioffe & Szegedy 2015), per unit over the batch, as
``torch.nn.BatchNorm1d`` (eps = 1e-5, momentum = 0.1):

    training: :math:`\mu = \frac{1}{n}\sum_i z_i`, :math:`\sigma^2 = \frac{1}{n}\sum_i (z_i-\mu)^2`
    (biased), :math:`\hat z = (z - \mu)/\sqrt{\sigma^2 + \epsilon}`, :math:`y = \gamma \hat z + \beta`;
    running statistics :math:`r_\mu \leftarrow (1-m) r_\mu + m \mu` and
    :math:`r_{\sigma^2} \leftarrow (1-m) r_{\sigma^2} + m \frac{n}{n-1}\sigma^2` (unbiased).
    eval: :math:`y = \gamma (z - r_\mu)/\sqrt{r_{\sigma^2} + \epsilon} + \beta`.
    backward: :math:`\nabla_\beta = \sum_i \partial y_i`, :math:`\nabla_\gamma = \sum_i \partial y_i \hat z_i`,
    :math:`\partial z = \frac{\gamma}{n\sqrt{\sigma^2+\epsilon}}(n\,\partial y - \nabla_\beta - \hat z \nabla_\gamma)`.

The ``*_kernel`` functions are compiled, write into arrays they are given and assume valid
input (the network and the grid engine call them); the plain names validate and allocate.
"""
import math

import numpy as np

from . import _validate
from ._jit import cpu_kernel

#: Batch norm's :math:`\epsilon` in :math:`\hat z = (z - \mu)/\sqrt{\sigma^2 + \epsilon}`.
BN_EPS = 1e-5
#: The running statistics' update :math:`r \leftarrow (1 - m) r + m \cdot \text{batch}` (PyTorch's convention).
BN_MOMENTUM = 0.1


# --- batch normalisation's per-unit formulas: the single network, the CPU grid and the GPU grid
# call these, so each is written once (docs/architecture.md, *Write the math once*); compiled
# without reassociation, as the grid kernels that inline them (simcore._jit.cpu_kernel) ---------

@cpu_kernel(ordered=True, inline=True)
def bn_inv_std(var, eps):
    r""":math:`1/\sqrt{\sigma^2 + \epsilon}` from the biased batch variance."""
    return 1.0 / math.sqrt(var + eps)


@cpu_kernel(ordered=True, inline=True)
def bn_normalize(z, mu, inv_std):
    r""":math:`\hat z = (z - \mu) / \sqrt{\sigma^2 + \epsilon}`."""
    return (z - mu) * inv_std


@cpu_kernel(ordered=True, inline=True)
def bn_affine(gamma, xhat, beta):
    r""":math:`y = \gamma \hat z + \beta`."""
    return gamma * xhat + beta


@cpu_kernel(ordered=True, inline=True)
def bn_input_grad(dy, xhat, gamma, inv_std, n, sum_dy, sum_dy_xhat):
    r""":math:`\partial z = \frac{\gamma}{n\sqrt{\sigma^2+\epsilon}}(n\,\partial y - \nabla_\beta
    - \hat z \nabla_\gamma)`, with :math:`\nabla_\beta = \sum_i \partial y_i` (``sum_dy``) and
    :math:`\nabla_\gamma = \sum_i \partial y_i \hat z_i` (``sum_dy_xhat``) over the n samples."""
    return (gamma * inv_std / n) * (n * dy - sum_dy - xhat * sum_dy_xhat)


# --- compiled kernels ----------------------------------------------------------------------

@cpu_kernel
def dense_forward_kernel(a_prev, W, b, z):
    """z = a_prev @ W + b (BLAS GEMM, then the bias row by row)."""
    np.dot(a_prev, W, z)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            z[i, j] += b[j]


@cpu_kernel
def dense_backward_kernel(a_prev, W, delta, dW, db, da_prev, want_da):
    """dW = a_prev^T delta, db = column sums of delta, and (if want_da) da_prev = delta W^T."""
    np.dot(a_prev.T, delta, dW)
    n, m = delta.shape
    acc = np.zeros(m)  # float64 sums whatever the dtype
    for i in range(n):
        for j in range(m):
            acc[j] += delta[i, j]
    for j in range(m):
        db[j] = acc[j]
    if want_da:
        np.dot(delta, W.T, da_prev)


@cpu_kernel
def batchnorm_forward_kernel(z, gamma, beta, y, xhat, inv_std, running_mean, running_var,
                             update_running, momentum, eps):
    """Training-mode batch norm: y, xhat and 1/sqrt(var + eps) from batch statistics.

    If ``update_running``, also moves the running statistics by ``momentum`` (unbiased var).
    """
    n, m = z.shape
    mu = np.zeros(m)
    var = np.zeros(m)
    for i in range(n):
        for j in range(m):
            mu[j] += z[i, j]
    for j in range(m):
        mu[j] /= n
    for i in range(n):
        for j in range(m):
            d = z[i, j] - mu[j]
            var[j] += d * d
    for j in range(m):
        var[j] /= n
        inv_std[j] = bn_inv_std(var[j], eps)
    for i in range(n):
        for j in range(m):
            xhat[i, j] = bn_normalize(z[i, j], mu[j], inv_std[j])
            y[i, j] = bn_affine(gamma[j], xhat[i, j], beta[j])
    if update_running:
        unbias = n / (n - 1.0) if n > 1 else 1.0
        for j in range(m):
            running_mean[j] = (1.0 - momentum) * running_mean[j] + momentum * mu[j]
            running_var[j] = (1.0 - momentum) * running_var[j] + momentum * var[j] * unbias


@cpu_kernel
def batchnorm_eval_kernel(z, gamma, beta, running_mean, running_var, eps, y):
    """Eval-mode batch norm with running statistics."""
    n, m = z.shape
    for j in range(m):
        scale = gamma[j] / math.sqrt(running_var[j] + eps)
        shift = beta[j] - running_mean[j] * scale
        for i in range(n):
            y[i, j] = z[i, j] * scale + shift


@cpu_kernel
def batchnorm_backward_kernel(dy, xhat, inv_std, gamma, dz, dgamma, dbeta):
    """Backward of training-mode batch norm (the batch statistics depend on z)."""
    n, m = dy.shape
    sum_dy = np.zeros(m)
    sum_dy_xhat = np.zeros(m)
    for i in range(n):
        for j in range(m):
            sum_dy[j] += dy[i, j]
            sum_dy_xhat[j] += dy[i, j] * xhat[i, j]
    for j in range(m):
        dbeta[j] = sum_dy[j]
        dgamma[j] = sum_dy_xhat[j]
    for i in range(n):
        for j in range(m):
            dz[i, j] = bn_input_grad(dy[i, j], xhat[i, j], gamma[j], inv_std[j], n, sum_dy[j],
                                     sum_dy_xhat[j])


# --- validated, allocating versions for NumPy users ----------------------------------------

def _matrix(name, x, dtype=None):
    return _validate.array(name, x, ndim=2, dtype=dtype)


def _vector(name, x, length, dtype):
    v = _validate.array(name, x, ndim=1, dtype=dtype, min_rows=0)
    if v.shape[0] != length:
        raise ValueError(f"{name} must have shape ({length},), got {v.shape}")
    return v


def dense_forward(a_prev, W, b):
    """Dense layer forward, :math:`z = a_{prev} W + b`.

    Parameters
    ----------
    a_prev : (n, fan_in) array
    W : (fan_in, fan_out) array
    b : (fan_out,) array

    Returns
    -------
    z : (n, fan_out) array, dtype of ``a_prev``.
    """
    a_prev = _matrix("a_prev", a_prev)
    W = _matrix("W", W, a_prev.dtype)
    if W.shape[0] != a_prev.shape[1]:
        raise ValueError(f"W must have shape ({a_prev.shape[1]}, fan_out), got {W.shape}")
    b = _vector("b", b, W.shape[1], a_prev.dtype)
    z = np.empty((a_prev.shape[0], W.shape[1]), a_prev.dtype)
    dense_forward_kernel(a_prev, W, b, z)
    return z


def dense_backward(a_prev, W, delta):
    """Dense layer backward from ``delta`` = dL/dz (n, fan_out).

    Returns
    -------
    dW : (fan_in, fan_out), db : (fan_out,), da_prev : (n, fan_in)
    """
    a_prev = _matrix("a_prev", a_prev)
    W = _matrix("W", W, a_prev.dtype)
    delta = _matrix("delta", delta, a_prev.dtype)
    if W.shape[0] != a_prev.shape[1]:
        raise ValueError(f"W must have shape ({a_prev.shape[1]}, fan_out), got {W.shape}")
    if delta.shape != (a_prev.shape[0], W.shape[1]):
        raise ValueError(f"delta must have shape {(a_prev.shape[0], W.shape[1])}, got {delta.shape}")
    dW = np.empty_like(W)
    db = np.empty(W.shape[1], a_prev.dtype)
    da = np.empty_like(a_prev)
    dense_backward_kernel(a_prev, W, delta, dW, db, da, True)
    return dW, db, da


def batchnorm_forward(z, gamma, beta, running_mean=None, running_var=None, training=True,
                      momentum=BN_MOMENTUM, eps=BN_EPS):
    """Batch normalisation forward, as ``torch.nn.BatchNorm1d``.

    Parameters
    ----------
    z : (n, m) array
        Pre-activations; training mode needs n >= 2.
    gamma, beta : (m,) arrays
        Learnable scale and shift.
    running_mean, running_var : (m,) float arrays, optional
        Updated in place in training mode (give both or neither); read in eval mode (then
        required).
    training : bool
        Batch statistics (True) or running statistics (False).

    Returns
    -------
    y : (n, m) array, and in training mode also a ``cache`` tuple (xhat, inv_std) for
    :func:`batchnorm_backward`.
    """
    if not isinstance(training, (bool, np.bool_)):
        raise ValueError(f"training must be True or False, got {training!r}")
    z = _matrix("z", z)
    m = z.shape[1]
    gamma = _vector("gamma", gamma, m, z.dtype)
    beta = _vector("beta", beta, m, z.dtype)
    momentum = _validate.real("momentum", momentum, 0.0, 1.0)
    eps = _validate.real("eps", eps, 0.0, strict_minimum=True)
    y = np.empty_like(z)
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean and running_var are required when training=False")
        rm = _vector("running_mean", running_mean, m, z.dtype)
        rv = _vector("running_var", running_var, m, z.dtype)
        if (rv < 0).any():
            raise ValueError("running_var must be >= 0")
        batchnorm_eval_kernel(z, gamma, beta, rm, rv, eps, y)
        return y
    if z.shape[0] < 2:
        raise ValueError(f"z must have at least 2 rows in training mode, got {z.shape[0]}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (both or neither)")
    update = running_mean is not None
    for name, arr in (("running_mean", running_mean), ("running_var", running_var)):
        if arr is not None and not (isinstance(arr, np.ndarray) and arr.dtype == z.dtype
                                    and arr.shape == (m,) and arr.flags.c_contiguous):
            raise ValueError(f"{name} must be a contiguous {z.dtype} array of shape ({m},) "
                             "(it is updated in place)")
    rm = running_mean if update else np.zeros(m, z.dtype)
    rv = running_var if update else np.ones(m, z.dtype)
    xhat = np.empty_like(z)
    inv_std = np.empty(m, z.dtype)
    batchnorm_forward_kernel(z, gamma, beta, y, xhat, inv_std, rm, rv, update, momentum, eps)
    return y, (xhat, inv_std)


def _check_cache(cache):
    """Check the (xhat, inv_std) cache of :func:`batchnorm_forward`; return it C-contiguous."""
    if not isinstance(cache, (tuple, list)) or len(cache) != 2:
        raise ValueError("cache must be the (xhat, inv_std) pair returned by batchnorm_forward, "
                         f"got {type(cache).__name__}")
    xhat, inv_std = cache
    if not (isinstance(xhat, np.ndarray) and xhat.ndim == 2
            and xhat.dtype in (np.float32, np.float64)):
        raise ValueError("cache[0] (xhat) must be a 2-D float32 or float64 array, got "
                         f"{type(xhat).__name__} {getattr(xhat, 'shape', '')}")
    m = xhat.shape[1]
    if not (isinstance(inv_std, np.ndarray) and inv_std.dtype == xhat.dtype
            and inv_std.shape == (m,)):
        raise ValueError(f"cache[1] (inv_std) must be a {xhat.dtype} array of shape ({m},), got "
                         f"{type(inv_std).__name__} {getattr(inv_std, 'shape', '')}")
    if not (np.isfinite(xhat).all() and np.isfinite(inv_std).all() and (inv_std > 0).all()):
        raise ValueError("cache must hold finite values with inv_std > 0")
    return np.ascontiguousarray(xhat), np.ascontiguousarray(inv_std)


def batchnorm_backward(dy, cache, gamma):
    """Batch normalisation backward (training mode) from ``dy`` = dL/dy (n, m).

    ``cache`` is the (xhat, inv_std) pair returned by :func:`batchnorm_forward`.

    Returns
    -------
    dz : (n, m), dgamma : (m,), dbeta : (m,)
    """
    xhat, inv_std = _check_cache(cache)
    dy = _matrix("dy", dy, xhat.dtype)
    if dy.shape != xhat.shape:
        raise ValueError(f"dy must have shape {xhat.shape}, got {dy.shape}")
    gamma = _vector("gamma", gamma, dy.shape[1], dy.dtype)
    dz = np.empty_like(dy)
    dgamma = np.empty(dy.shape[1], dy.dtype)
    dbeta = np.empty(dy.shape[1], dy.dtype)
    batchnorm_backward_kernel(dy, xhat, inv_std, gamma, dz, dgamma, dbeta)
    return dz, dgamma, dbeta
