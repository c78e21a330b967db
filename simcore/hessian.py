r"""Sharpness: the largest eigenvalue :math:`\lambda_{\max}` of the loss Hessian, for many networks
in one compiled call.

Why: gradient descent with step :math:`\eta` on a quadratic is stable only while
:math:`\eta < 2/\lambda_{\max}`; on networks, full-batch training drives :math:`\lambda_{\max}`
up to about :math:`2/\eta` and hovers there, the *edge of stability* (Cohen et al. 2021). The
learning-rate studies compare :math:`2/\lambda_{\max}` with the measured divergence threshold and
track :math:`\lambda_{\max}` during training, so it is needed for every network of a grid.

How, for network :math:`g` with parameters :math:`\theta` and unit vector :math:`v`:

Hessian-vector product by central differences of the gradient (the same compiled
:func:`simcore.mlp.loss_and_grad_kernel` that training uses, batch statistics from the batch and
nothing updated, i.e. ``TRAIN_NO_UPDATE``):

.. math::
    Hv \approx \frac{\nabla L(\theta + h v) - \nabla L(\theta - h v)}{2h},\qquad
    h = \sqrt{\epsilon_{64}}\,(1 + \lVert\theta\rVert),\ \epsilon_{64} = 2^{-52}.

The truncation error of the central difference is :math:`O(h^2)` (relative size about
:math:`\epsilon_{64}`), the rounding error :math:`O(\epsilon_{64}/h)` (relative size about
:math:`\sqrt{\epsilon_{64}} \approx 1.5\cdot 10^{-8}`). The larger step :math:`\epsilon^{1/3}`
would balance the two for smooth losses, but a step that small keeps piecewise-linear activations
(relu, leaky_relu) almost surely inside one linear piece: a kink crossed inside
:math:`[\theta - hv, \theta + hv]` would add an error of order (gradient jump)/h. So the
result is the almost-everywhere Hessian, as autograd computes it, to about 8 digits.

Everything is computed in float64, also for float32 networks: the kernel copies the network's
float32 parameters, and the float32 data, to float64. The result is the Hessian of the
network's function *at its float32 parameters* evaluated exactly enough; differencing float32
gradients instead would leave about 3 significant digits (:math:`\sqrt{\epsilon_{32}} \approx
3\cdot 10^{-4}`).

Power iteration on the Hessian finds the eigenvalue of largest *magnitude*; the sharpness is the
largest *algebraic* eigenvalue, and at initialisation (or near a saddle) negative curvature can
dominate. So two phases:

1. Power iteration on :math:`H`: :math:`w = Hv`, Rayleigh quotient :math:`r = v^T w`,
   :math:`v \leftarrow w / \lVert w \rVert`, until the relative change of :math:`r` is below
   ``tol`` (or ``iters`` products). :math:`s = \lVert Hv \rVert` estimates the spectral radius
   :math:`\rho = \max_i |\lambda_i|`.
2. Power iteration on :math:`H + sI`. Its eigenvalues :math:`\lambda_i + s \ge 0`, so its
   dominant eigenvalue is :math:`\lambda_{\max} + s` whatever the signs, and
   :math:`\lambda_{\max} = r_2 - s`. If phase 1 ended on a positive :math:`r` (the usual case:
   the top eigenvector is already found) phase 2 starts from phase 1's vector and confirms it in
   two or three products; if it ended on a negative one it restarts from the random vector.
   Phase 2 also repairs a phase 1 stuck between eigenvalues :math:`\pm\rho` of equal magnitude,
   where the Rayleigh quotient settles on a meaningless mixture.

Phase 2 stops when the relative change of its Rayleigh quotient :math:`r_2 = \lambda_{\max} + s`
is below ``tol``; so when a negative eigenvalue dominates, the error of :math:`\lambda_{\max}` is
about ``tol`` times the spectral radius, not times :math:`\lambda_{\max}`. Power iteration
converges like :math:`(\lambda_2/\lambda_1)^{2k}`; a ``tol`` much below about ``1e-9`` is under
the noise of the finite differences and runs to ``iters``.

The starting vector is drawn from the counter-based generator keyed by the network's ``seed``
only (:func:`simcore.scalar.stream_key`), so a network's value depends on its parameters, the
data and its seed, never on its position in the stack or the number of threads. A network
whose loss or gradient is not finite at a point of the iteration (a diverged network) gets NaN.
"""
import math

import numpy as np

from . import _validate
from ._jit import cpu_kernel
from .interrupt import run_ranges, stop_requested
from .losses import encode_targets
from .mlp import MLP, TRAIN_NO_UPDATE, loss_and_grad_kernel
from .scalar import normal, stream_key

__all__ = ["sharpness", "sharpness_kernel"]

H_REL = math.sqrt(2.0 ** -52)  # finite-difference step per unit of (1 + ||theta||)
START_STREAM = 0x5348415250    # random stream of the starting vectors ("SHARP")


@cpu_kernel
def _hvp(theta, v, h, layout, act, loss_code, X, Y, running, tp, tm, gp, gm, out):
    """out = (grad L(theta + h v) - grad L(theta - h v)) / (2h); False if anything is not finite."""
    P = theta.shape[0]
    for p in range(P):
        tp[p] = theta[p] + h * v[p]
        tm[p] = theta[p] - h * v[p]
    lp = loss_and_grad_kernel(tp, layout, act, loss_code, X, Y, gp, running, TRAIN_NO_UPDATE)
    lm = loss_and_grad_kernel(tm, layout, act, loss_code, X, Y, gm, running, TRAIN_NO_UPDATE)
    if not (np.isfinite(lp) and np.isfinite(lm)):
        return False
    inv = 0.5 / h
    ok = True
    for p in range(P):
        out[p] = (gp[p] - gm[p]) * inv
        ok = ok and np.isfinite(out[p])
    return ok


@cpu_kernel
def _power(theta, h, shift, v, w, layout, act, loss_code, X, Y, running, tp, tm, gp, gm, iters, tol,
           stop):
    """Power iteration on H + shift I from the unit vector v (overwritten by the last iterate).

    Returns (Rayleigh quotient r of H + shift I, ||(H + shift I) v||, products used, converged,
    finite); a non-zero ``stop[0]`` (Ctrl-C) ends it as not finite."""
    P = theta.shape[0]
    r_prev = 0.0
    r = 0.0
    nw = 0.0
    for k in range(1, iters + 1):
        if stop_requested(stop):
            return np.nan, np.nan, k, False, False
        if not _hvp(theta, v, h, layout, act, loss_code, X, Y, running, tp, tm, gp, gm, w):
            return np.nan, np.nan, k, False, False
        r = 0.0
        nw = 0.0
        for p in range(P):
            w[p] += shift * v[p]
            r += v[p] * w[p]
            nw += w[p] * w[p]
        nw = math.sqrt(nw)
        if nw == 0.0:  # v in the null space of H + shift I: nothing to iterate on
            return r, nw, k, True, True
        if k > 1 and abs(r - r_prev) <= tol * abs(r):
            return r, nw, k, True, True
        r_prev = r
        inv = 1.0 / nw
        for p in range(P):
            v[p] = w[p] * inv
    return r, nw, iters, False, True


@cpu_kernel
def _start_vector(seed, v):
    key = stream_key(seed, START_STREAM)
    s = 0.0
    for p in range(v.shape[0]):
        v[p] = normal(key, p)
        s += v[p] * v[p]
    inv = 1.0 / math.sqrt(s)
    for p in range(v.shape[0]):
        v[p] *= inv


@cpu_kernel
def sharpness_kernel(theta, layout, act, loss_code, X, Y, running, iters, tol, seeds,
                     out_lambda, out_iters, out_converged, first, end, stop):
    r"""Largest Hessian eigenvalue of networks ``first <= g < end`` (columns of theta (P, G)).

    ``X`` and ``Y`` (encoded targets) are float64; ``running`` (float64, the net's
    ``n_running``) is only a placeholder, batch statistics come from the batch. Writes
    :math:`\lambda_{\max}` (NaN where the loss or gradient is not finite), the number of
    Hessian-vector products used (two gradients each) and whether the last phase met ``tol``.
    See the module docstring for the method. A non-zero ``stop[0]`` (Ctrl-C, see
    :mod:`simcore.interrupt`) makes it return within one Hessian-vector product.
    """
    P = theta.shape[0]
    th = np.empty(P)
    v = np.empty(P)
    w = np.empty(P)
    tp = np.empty(P)
    tm = np.empty(P)
    gp = np.empty(P)
    gm = np.empty(P)
    for g in range(first, end):
        if stop_requested(stop):
            return
        norm = 0.0
        finite = True
        for p in range(P):
            th[p] = theta[p, g]
            norm += th[p] * th[p]
            finite = finite and np.isfinite(th[p])
        out_converged[g] = False
        if not finite:
            out_lambda[g] = np.nan
            out_iters[g] = 0
            continue
        h = (1.0 + math.sqrt(norm)) * H_REL
        _start_vector(seeds[g], v)
        r1, s, k1, conv1, ok = _power(th, h, 0.0, v, w, layout, act, loss_code, X, Y, running,
                                      tp, tm, gp, gm, iters, tol, stop)
        if not ok:
            out_lambda[g] = np.nan
            out_iters[g] = k1
            continue
        if not r1 > 0.0:  # negative (or zero) curvature dominates: restart from the random vector
            _start_vector(seeds[g], v)
        r2, n2, k2, conv2, ok = _power(th, h, s, v, w, layout, act, loss_code, X, Y, running,
                                       tp, tm, gp, gm, iters, tol, stop)
        out_lambda[g] = r2 - s if ok else np.nan
        out_iters[g] = k1 + k2
        out_converged[g] = conv2 and ok


def _theta(net, params):
    """theta (P, G) from one network's params (G = 1, stacked False) or stacked params (leading
    G axis). Non-finite values are allowed (those networks get NaN)."""
    n = len(net.slots)
    if not isinstance(params, (list, tuple)) or len(params) != n:
        raise ValueError(f"params must be a list of {n} per-layer dicts (one network's, as "
                         f"MLP.init returns, or stacked with a leading axis of G networks)")
    p0 = params[0]
    if not isinstance(p0, dict) or "W" not in p0:
        raise ValueError(f"params[0] must be a dict with keys {sorted(net.slots[0])}")
    ndim = np.ndim(p0["W"])
    if ndim == 2:
        stacked, G = False, 1
    elif ndim == 3:
        stacked, G = True, int(np.shape(p0["W"])[0])
        if G < 1:
            raise ValueError("params must hold at least one network (leading axis G >= 1)")
    else:
        raise ValueError(f"params[0]['W'] must have shape {net.slots[0]['W'][2]} (one network) "
                         f"or (G,) + {net.slots[0]['W'][2]} (stacked), got {np.shape(p0['W'])}")
    lead = (G,) if stacked else ()
    theta = np.empty((net.n_params, G), net.dtype)
    for l, (p, slots) in enumerate(zip(params, net.slots)):
        if not isinstance(p, dict) or p.keys() != slots.keys():
            got = sorted(p) if isinstance(p, dict) else type(p).__name__
            raise ValueError(f"params[{l}] must be a dict with keys {sorted(slots)}, got {got}")
        for key, (o, size, shape) in slots.items():
            arr = np.asarray(p[key])
            if arr.shape != lead + shape:
                raise ValueError(f"params[{l}][{key!r}] must have shape {lead + shape}, got {arr.shape}")
            if arr.dtype.kind not in "iuf":
                raise ValueError(f"params[{l}][{key!r}] must hold real numbers, got {arr.dtype}")
            theta[o:o + size] = arr.reshape(G, size).T
    return theta, stacked


def sharpness(net, params, X, y, iters=100, tol=1e-6, seed=0, return_info=False):
    r"""Largest eigenvalue :math:`\lambda_{\max}` of the Hessian of the mean training loss on
    (X, y), for one network or a stack of networks, in one compiled call.

    Power iteration on Hessian-vector products by central differences of the gradient,
    :math:`Hv \approx (\nabla L(\theta + hv) - \nabla L(\theta - hv)) / 2h` with
    :math:`h = \sqrt{\epsilon}(1 + \lVert\theta\rVert)`, in float64 for every network dtype,
    then a second power iteration on :math:`H + \rho I` (:math:`\rho` the spectral radius from
    the first) so the result is the largest *algebraic* eigenvalue even where negative curvature
    dominates. Batch norm uses the batch's statistics (training mode, nothing updated). See
    :mod:`simcore.hessian` for the accuracy. ``2 / sharpness`` is the learning rate at which
    gradient descent stops being stable along the top eigenvector.

    Parameters
    ----------
    net : MLP
    params : list of dict
        One network's parameters (as :meth:`simcore.MLP.init` returns), or stacked parameters with a
        leading axis of G networks (as ``train_grid(...).params``). Non-finite values are
        allowed; such a network gets NaN.
    X : (n, sizes[0]) array
    y : targets, as for :meth:`simcore.MLP.loss_and_grad`.
    iters : int >= 1
        Most Hessian-vector products per phase (each costs two gradients).
    tol : float > 0
        Stop a phase when the relative change of its Rayleigh quotient is at most ``tol``.
    seed : int or (G,) array of int >= 0
        Key of each network's random starting vector.
    return_info : bool
        Also return the number of Hessian-vector products used and whether ``tol`` was met.

    Returns
    -------
    float for one network's params, (G,) float64 array for stacked params; NaN where the loss
    or gradient is not finite. With ``return_info``: ``(lam, n_hvp, converged)``.

    Raises
    ------
    ValueError
        Naming the argument: params of the wrong structure or shapes, X of the wrong shape, y
        not matching X or the loss, iters < 1, tol <= 0 or not finite, a bad seed.

    Examples
    --------
    >>> import simcore
    >>> from simcore.hessian import sharpness
    >>> X, y = simcore.datasets.moons(64, seed=0)
    >>> net = simcore.MLP([2, 8, 1], activation="tanh", loss="bce")
    >>> lam = sharpness(net, net.init(seed=0), X, y)
    """
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an MLP, got {type(net).__name__}")
    iters = _validate.integer("iters", iters, minimum=1)
    tol = _validate.real("tol", tol, 0.0, strict_minimum=True)
    if not isinstance(return_info, (bool, np.bool_)):
        raise ValueError(f"return_info must be True or False, got {return_info!r}")
    theta, stacked = _theta(net, params)
    G = theta.shape[1]
    seeds = np.asarray(seed)
    if seeds.ndim > 1 or (seeds.ndim == 1 and seeds.size not in (1, G)):
        raise ValueError(f"seed must be an integer or a 1-D array of length G={G}, got shape {seeds.shape}")
    if seeds.dtype.kind not in "iu" or (seeds < 0).any():
        raise ValueError(f"seed must hold integers >= 0, got {seed!r}")
    seeds = np.broadcast_to(seeds.reshape(-1), (G,)).astype(np.uint64)
    X = net.check_X(X)
    Y = encode_targets(net.loss, y, X.shape[0], net.sizes[-1], net.dtype)
    # float32 nets: the float32 data, promoted; the Hessian is computed in float64
    X = np.ascontiguousarray(X, dtype=np.float64)
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    running = np.zeros(net.n_running)
    lam = np.empty(G)
    n_hvp = np.empty(G, np.int64)
    converged = np.empty(G, np.bool_)
    args = (theta, net.layout, net.act_code, net.loss_code, X, Y, running, iters, tol, seeds, lam, n_hvp,
            converged)
    run_ranges(sharpness_kernel, args, G)  # one range of networks per thread; Ctrl-C stops them
    if not stacked:
        lam, n_hvp, converged = float(lam[0]), int(n_hvp[0]), bool(converged[0])
    return (lam, n_hvp, converged) if return_info else lam
