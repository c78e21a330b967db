r"""Optimizers as update kernels on flat parameter arrays, with PyTorch's conventions.

=============  ====================================================================================
gd / sgd       :math:`\theta \leftarrow \theta - \eta g`
momentum       :math:`v \leftarrow \mu v + g`, :math:`\theta \leftarrow \theta - \eta v` (heavy ball, Polyak 1964)
nesterov       :math:`v \leftarrow \mu v + g`, :math:`\theta \leftarrow \theta - \eta (g + \mu v)` (Sutskever et al. 2013)
adam           :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`, :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2`,
               :math:`\theta \leftarrow \theta - \eta \hat m / (\sqrt{\hat v} + \epsilon)` with
               :math:`\hat m = m / (1-\beta_1^t)`, :math:`\hat v = v/(1-\beta_2^t)` (Kingma & Ba 2015)
=============  ====================================================================================

The ``*_step`` kernels update 1-D arrays in place. :class:`Optimizer` applies them to the
list-of-dicts parameters of :class:`simcore.MLP`.
"""
import math

import numpy as np

from . import _validate
from ._jit import cpu_kernel

NAMES = ("gd", "sgd", "momentum", "nesterov", "adam")
# the code each rule has in the compiled kernels (sgd is gd on minibatches: the same rule); the
# kernels compare with these names (numba reads them as compile-time constants)
GD, MOMENTUM, NESTEROV, ADAM = 0, 1, 2, 3
OPT_CODE = {"gd": GD, "sgd": GD, "momentum": MOMENTUM, "nesterov": NESTEROV, "adam": ADAM}
assert tuple(OPT_CODE) == NAMES
# Each hyperparameter, the optimizers that use it and its default. The one rule, for Optimizer,
# train_grid and the studies' TOML grids alike: left out (None) it takes its default; given to
# an optimizer that does not use it, it is an error (it would silently change nothing).
DEFAULT_MOMENTUM = 0.9
DEFAULT_BETAS = (0.9, 0.999)
DEFAULT_EPS = 1e-8
USED_BY = {"momentum": ("momentum", "nesterov"), "betas": ("adam",), "eps": ("adam",)}


def check_used(optimizer, **given):
    """ValueError for a hyperparameter given (not None) to an optimizer that ignores it."""
    for key, value in given.items():
        if value is not None and optimizer not in USED_BY[key]:
            users = " and ".join(repr(o) for o in USED_BY[key])
            shown = repr(value) if np.size(value) <= 4 else f"<{np.size(value)} values>"
            raise ValueError(f"{key} is used only by optimizer {users}; optimizer {optimizer!r} "
                             f"would ignore {key}={shown} (leave it out)")


@cpu_kernel(ordered=True, inline=True)  # its sums and divisions must not be reassociated
def parameter_step(opt, g, v, m, mu, c1, c2, beta1, beta2, eps):
    """The rule of every optimizer for one parameter with gradient ``g``: returns
    (step, new v, new m), and the parameter moves by theta <- theta - eta * step. ``opt`` from
    ``OPT_CODE``: gradient descent (step = g); momentum (v <- mu v + g, step = v); Nesterov
    (step = g + mu v); Adam (m, v the moving averages of g and g^2, step = m_hat / (sqrt(v_hat)
    + eps), with c1, c2 the bias corrections 1 - beta^t of :func:`adam_corrections`). The
    single-network kernels below and both grid engines call this one function."""
    if opt == GD:
        return g, v, m
    if opt == MOMENTUM or opt == NESTEROV:
        vk = mu * v + g
        return (g + mu * vk if opt == NESTEROV else vk), vk, m
    mk = beta1 * m + (1.0 - beta1) * g
    vk = beta2 * v + (1.0 - beta2) * g * g
    return (mk / c1) / (math.sqrt(vk / c2) + eps), vk, mk


@cpu_kernel(ordered=True, inline=True)
def adam_corrections(t, beta1, beta2):
    """Adam's bias corrections after t steps (t counts from 1): 1 - beta1^t, 1 - beta2^t."""
    return 1.0 - beta1 ** t, 1.0 - beta2 ** t


@cpu_kernel
def gd_step(theta, grad, eta):
    """theta -= eta * grad (:func:`parameter_step`, code 0)."""
    for i in range(theta.size):
        step, _, _ = parameter_step(GD, grad[i], 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0)
        theta[i] -= eta * step


@cpu_kernel
def momentum_step(theta, grad, v, eta, mu, nesterov):
    """Heavy-ball (or Nesterov) momentum, velocity ``v`` updated in place (:func:`parameter_step`)."""
    opt = NESTEROV if nesterov else MOMENTUM
    for i in range(theta.size):
        step, v[i], _ = parameter_step(opt, grad[i], v[i], 0.0, mu, 1.0, 1.0, 0.0, 0.0, 0.0)
        theta[i] -= eta * step


@cpu_kernel
def adam_step(theta, grad, m, v, t, eta, beta1, beta2, eps):
    """One Adam step (t counts from 1), moments ``m`` and ``v`` updated in place
    (:func:`parameter_step`)."""
    c1, c2 = adam_corrections(t, beta1, beta2)
    for i in range(theta.size):
        step, v[i], m[i] = parameter_step(ADAM, grad[i], v[i], m[i], 0.0, c1, c2, beta1, beta2, eps)
        theta[i] -= eta * step


class Optimizer:
    """Apply an update rule to :class:`simcore.MLP` parameters in place.

    Parameters
    ----------
    name : {"gd", "sgd", "momentum", "nesterov", "adam"}
    eta : float
        Learning rate, >= 0.
    momentum : float, optional
        :math:`\\mu` for momentum/nesterov, in [0, 1); default 0.9.
    betas : (float, float), optional
        Adam's :math:`\\beta_1, \\beta_2`, each in [0, 1); default (0.9, 0.999).
    eps : float, optional
        Adam's :math:`\\epsilon` > 0; default 1e-8.

    A hyperparameter given to an optimizer that does not use it (``momentum`` with "adam",
    ``betas`` with "gd", ...) is a ValueError (:func:`check_used`).

    Examples
    --------
    >>> opt = Optimizer("adam", eta=1e-3)
    >>> loss, grads = net.loss_and_grad(params, X, y)   # doctest: +SKIP
    >>> opt.step(params, grads)                         # doctest: +SKIP
    """

    def __init__(self, name="gd", eta=0.1, momentum=None, betas=None, eps=None):
        self.name = _validate.choice("name", name, NAMES)
        check_used(self.name, momentum=momentum, betas=betas, eps=eps)
        momentum = DEFAULT_MOMENTUM if momentum is None else momentum
        betas = DEFAULT_BETAS if betas is None else betas
        eps = DEFAULT_EPS if eps is None else eps
        self.eta = _validate.real("eta", eta, 0.0)
        self.momentum = _validate.real("momentum", momentum, 0.0)
        if self.momentum >= 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        try:
            pair = tuple(betas)
        except TypeError:  # None, a single number, ...
            pair = ()
        if len(pair) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = tuple(_validate.real(f"betas[{i}]", b, 0.0) for i, b in enumerate(pair))
        if max(self.betas) >= 1.0:
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        self.eps = _validate.real("eps", eps, 0.0, strict_minimum=True)
        self.t = 0
        self._state = {}

    def step(self, params, grads):
        """Update ``params`` (list of dicts of arrays) in place from ``grads`` (same layout)."""
        pairs = self._check(params, grads)  # everything is checked before anything is updated
        self.t += 1
        for l, key, flat, grad in pairs:
            if self.name in ("gd", "sgd"):
                gd_step(flat, grad, self.eta)
            elif self.name in ("momentum", "nesterov"):
                v = self._slot((l, key, "v"), flat)
                momentum_step(flat, grad, v, self.eta, self.momentum, self.name == "nesterov")
            else:
                m = self._slot((l, key, "m"), flat)
                v = self._slot((l, key, "v"), flat)
                adam_step(flat, grad, m, v, self.t, self.eta, self.betas[0], self.betas[1],
                          self.eps)

    def _check(self, params, grads):
        """Check every parameter and gradient; return (layer, key, flat theta, flat grad) tuples."""
        if not isinstance(params, (list, tuple)):
            raise ValueError(f"params must be a list of per-layer dicts, got {type(params).__name__}")
        if not isinstance(grads, (list, tuple)) or len(grads) != len(params):
            got = len(grads) if isinstance(grads, (list, tuple)) else type(grads).__name__
            raise ValueError(f"grads must be a list of {len(params)} per-layer dicts like params, "
                             f"got {got}")
        pairs = []
        for l, (p, g) in enumerate(zip(params, grads)):
            if not isinstance(p, dict):
                raise ValueError(f"params[{l}] must be a dict of arrays, got {type(p).__name__}")
            if not isinstance(g, dict):
                raise ValueError(f"grads[{l}] must be a dict of arrays, got {type(g).__name__}")
            for key, theta in p.items():
                if not (isinstance(theta, np.ndarray) and theta.dtype in (np.float32, np.float64)
                        and theta.flags.c_contiguous and theta.flags.writeable):
                    raise ValueError(f"params[{l}][{key!r}] must be a writeable C-contiguous "
                                     "float32 or float64 array (it is updated in place)")
                for slot in ("m", "v"):
                    buf = self._state.get((l, key, slot))
                    if buf is not None and (buf.size, buf.dtype) != (theta.size, theta.dtype):
                        raise ValueError(f"params[{l}][{key!r}] must keep the size and dtype it "
                                         f"had at earlier steps ({buf.size}, {buf.dtype})")
                if key not in g:
                    raise ValueError(f"grads[{l}] must have the key {key!r} like params[{l}]")
                grad = _validate.array(f"grads[{l}][{key!r}]", g[key], dtype=theta.dtype,
                                       min_rows=0)
                if grad.shape != theta.shape:
                    raise ValueError(f"grads[{l}][{key!r}] must have shape {theta.shape}, "
                                     f"got {grad.shape}")
                pairs.append((l, key, theta.reshape(-1), grad.reshape(-1)))
        return pairs

    def _slot(self, key, like):
        if key not in self._state:
            self._state[key] = np.zeros_like(like)
        return self._state[key]
