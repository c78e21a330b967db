"""The CUDA engine's device functions driven one at a time from NumPy, for the tests: each
launches the very device function :mod:`simcore.grid.cuda` trains with, on one block (or a few,
for elementwise ones), and returns NumPy arrays to compare with the CPU kernels. Test code, so
it lives with the tests and not in the library. Import it only where numba.cuda can run
(``conftest.cb``)."""
import numpy as np
from numba import cuda, float64 as nb_float64

from simcore._jit import gpu_kernel
from simcore.grid.core import adam_corrections
from simcore.grid.cuda import (_act_deriv, _act_value, _batch_order, _bn_backward, _bn_forward,
                               _dense_backward_data, _dense_forward, _dense_grad, _loss_block,
                               _normal, _optimizer_step, _stream_key, _uniform, require_gpu,
                               threads_per_block)

_KERNELS = {}


def _unit_major(x):
    """(n, w) array -> its flat unit-major copy (w * n,)."""
    return np.ascontiguousarray(np.asarray(x).T).reshape(-1)


def _from_unit_major(flat, n, w):
    return np.ascontiguousarray(flat.reshape(w, n).T)


def _small_kernel(name, body):
    if name not in _KERNELS:
        _KERNELS[name] = gpu_kernel(body)
    return _KERNELS[name]


def _k_dense_forward(a, th, fi, fo, z, n):
    _dense_forward(a, 0, th, 0, fi * fo, fi, fo, z, 0, n, n)


def _k_dense_backward(a, th, fi, fo, delta, gr, da, n):
    _dense_grad(a, 0, delta, 0, gr, 0, fi * fo, fi, fo, n, n)
    # identity activation code 0: f' = 1, so da = delta W^T exactly
    _dense_backward_data(th, 0, fi, fo, delta, 0, 0, a, 0, a, 0, da, 0, n, n)


def _k_bn_forward(z, th, fo, y, xh, istd, st, n):
    _bn_forward(z, 0, th, 0, fo, fo, y, 0, xh, 0, istd, 0, st, n, n)


def _k_bn_backward(dy, xh, istd, th, fo, gr, dz, st, n):
    _bn_backward(dy, 0, xh, 0, istd, 0, th, 0, fo, fo, gr, dz, 0, st, n, n)


def _k_loss(code, z, Y, sidx, delta, K, n, out):
    red = cuda.shared.array(1024, nb_float64)
    value = _loss_block(code, z, 0, Y, sidx, delta, 0, K, n, n, red)
    if cuda.threadIdx.x == 0:
        out[0] = value


def _k_act_forward(code, z, a):
    for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
        a[i] = _act_value(code, z[i])


def _k_act_backward(code, z, a, da, dz):
    for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
        dz[i] = da[i] * _act_deriv(code, z[i], a[i])


def _k_opt(opt, th, gr, v, m, lr, mu, c1, c2):
    for i in range(cuda.grid(1), th.shape[0], cuda.gridsize(1)):
        step, nv, nm = _optimizer_step(opt, gr[i], v[i], m[i], mu, c1, c2)
        th[i] = th[i] - lr * step
        v[i] = nv
        m[i] = nm


def _k_fill(seed, stream, scale, normal, out):
    key = _stream_key(seed, stream)
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        if normal:
            out[i] = scale * _normal(key, i)
        else:
            out[i] = scale * (2.0 * _uniform(key, i) - 1.0)


def _k_batch_order(seed, epoch, n, out):
    if cuda.grid(1) == 0:
        _batch_order(seed, epoch, n, out)


def _launch(name, body, blocks, *args):
    require_gpu()
    tpb = threads_per_block()
    _small_kernel(name, body)[blocks, tpb](*args)


def _elementwise_blocks(size):
    return max(1, min(-(-size // threads_per_block()), 1024))


def dense_forward(a_prev, W, b):
    """z = a_prev W + b on the GPU (one block, threads over samples)."""
    a_prev, W, b = (np.asarray(x) for x in (a_prev, W, b))
    n, fi = a_prev.shape
    fo = W.shape[1]
    z = np.zeros(fo * n, a_prev.dtype)
    th = np.concatenate([W.reshape(-1), b]).astype(a_prev.dtype)
    _launch("dense_forward", _k_dense_forward, 1, _unit_major(a_prev), th, fi, fo, z, n)
    return _from_unit_major(z, n, fo)


def dense_backward(a_prev, W, delta):
    """(dW, db, da_prev) on the GPU: threads over parameters for dW, db; over samples for da."""
    a_prev, W, delta = (np.asarray(x) for x in (a_prev, W, delta))
    n, fi = a_prev.shape
    fo = W.shape[1]
    th = np.concatenate([W.reshape(-1), np.zeros(fo)]).astype(a_prev.dtype)
    gr = np.zeros(fi * fo + fo, a_prev.dtype)
    da = np.zeros(fi * n, a_prev.dtype)
    _launch("dense_backward", _k_dense_backward, 1, _unit_major(a_prev), th, fi, fo,
            _unit_major(delta), gr, da, n)
    return gr[:fi * fo].reshape(fi, fo), gr[fi * fo:], _from_unit_major(da, n, fi)


def batchnorm_forward(z, gamma, beta):
    """Training-mode batch norm on the GPU: (y, xhat, inv_std) (no running statistics: the
    grid engine keeps none)."""
    z = np.asarray(z)
    n, fo = z.shape
    th = np.concatenate([gamma, beta]).astype(z.dtype)
    y = np.zeros(fo * n, z.dtype)
    xh = np.zeros(fo * n, z.dtype)
    istd = np.zeros(fo, z.dtype)
    st = np.zeros(2 * fo)
    _launch("bn_forward", _k_bn_forward, 1, _unit_major(z), th, fo, y, xh, istd, st, n)
    return _from_unit_major(y, n, fo), _from_unit_major(xh, n, fo), istd


def batchnorm_backward(dy, xhat, inv_std, gamma):
    """(dz, dgamma, dbeta) of training-mode batch norm on the GPU."""
    dy = np.asarray(dy)
    n, fo = dy.shape
    th = np.concatenate([gamma, np.zeros(fo)]).astype(dy.dtype)
    gr = np.zeros(2 * fo, dy.dtype)
    dz = np.zeros(fo * n, dy.dtype)
    st = np.zeros(2 * fo)
    _launch("bn_backward", _k_bn_backward, 1, _unit_major(dy), _unit_major(xhat),
            np.ascontiguousarray(inv_std, dy.dtype), th, fo, gr, dz, st, n)
    return _from_unit_major(dz, n, fo), gr[:fo], gr[fo:]


def activation_forward(code, z):
    """f(z) elementwise on the GPU for activation ``code`` (flat arrays)."""
    z = np.ascontiguousarray(z).reshape(-1)
    a = np.zeros_like(z)
    _launch("act_forward", _k_act_forward, _elementwise_blocks(z.size), int(code), z, a)
    return a


def activation_backward(code, z, a, da):
    """da * f'(z) elementwise on the GPU (flat arrays)."""
    z, a, da = (np.ascontiguousarray(x).reshape(-1) for x in (z, a, da))
    dz = np.zeros_like(z)
    _launch("act_backward", _k_act_backward, _elementwise_blocks(z.size), int(code), z, a, da, dz)
    return dz


def loss_grad(code, z, y):
    """(mean loss, dL/dz) of logits z (n, K) against encoded targets y (n, K) on the GPU."""
    z = np.asarray(z)
    n, K = z.shape
    delta = np.zeros(K * n, z.dtype)
    out = np.zeros(1)
    _launch("loss", _k_loss, 1, int(code), _unit_major(z), np.ascontiguousarray(y, z.dtype),
            np.arange(n, dtype=np.int64), delta, K, n, out)
    return float(out[0]), _from_unit_major(delta, n, K)


def optimizer_step(opt, theta, grad, v, m, t, eta, mu=0.0):
    """One step of optimizer ``opt`` (0 gd, 1 momentum, 2 nesterov, 3 adam; t counts from 1) on
    flat arrays, updated in place on the GPU (copies back into theta, v, m)."""
    c1, c2 = adam_corrections(t - 1)
    th, vv, mm = (np.ascontiguousarray(x) for x in (theta, v, m))
    _launch("opt", _k_opt, _elementwise_blocks(th.size), int(opt), th, np.ascontiguousarray(grad),
            vv, mm, float(eta), float(mu), c1, c2)
    theta[...] = th
    v[...] = vv
    m[...] = mm


def fill_normal(seed, stream, std, out):
    """out[i] = std * N(0, 1) from the counter-based stream (seed, stream), drawn on the GPU."""
    buf = np.zeros(out.size)
    _launch("fill", _k_fill, _elementwise_blocks(out.size), np.uint64(seed), np.uint64(stream),
            float(std), True, buf)
    out[...] = buf.reshape(out.shape)


def fill_uniform(seed, stream, limit, out):
    """out[i] = U[-limit, limit] from the counter-based stream (seed, stream), on the GPU."""
    buf = np.zeros(out.size)
    _launch("fill", _k_fill, _elementwise_blocks(out.size), np.uint64(seed), np.uint64(stream),
            float(limit), False, buf)
    out[...] = buf.reshape(out.shape)


def batch_order_gpu(seed, epoch, n):
    """The order of the n samples in epoch ``epoch`` of a network with ``seed``, on the GPU."""
    out = np.zeros(n, np.int64)
    _launch("batch_order", _k_batch_order, 1, np.uint64(seed), int(epoch), int(n), out)
    return out
