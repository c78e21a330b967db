r"""The single-network API: a multilayer perceptron trained by backpropagation.

Forward, for layers :math:`l = 1..L` (rows are samples, :math:`a_0 = X`):

.. math::
    z_l = a_{l-1} W_l + b_l, \quad y_l = \mathrm{BN}(z_l) \text{ (hidden layers, optional)},
    \quad a_l = f(y_l) \text{ (hidden layers)}, \quad \text{output logits } z_L.

Backward by the chain rule (Rumelhart, Hinton & Williams 1986; Nielsen ch. 2):
:math:`\delta_L = \partial L/\partial z_L` from the loss, then
:math:`\nabla_{W_l} = a_{l-1}^T \delta_l`, :math:`\nabla_{b_l} = \sum_i \delta_{l,i}`,
:math:`\delta_{l-1} = (\delta_l W_l^T) \odot f'(y_{l-1})`, passed back through batch norm
where it is on.

Parameters live in one flat array per network; :attr:`MLP.layout` gives each tensor's offset.
One compiled kernel serves every architecture of a dtype (no recompilation per shape).
"""
from collections import namedtuple

import numpy as np

from . import _validate
from . import init as _init
from ._jit import cpu_kernel
from .activations import backward as act_backward, forward as act_forward
from .layers import (BN_EPS, BN_MOMENTUM, batchnorm_backward_kernel, batchnorm_eval_kernel,
                     batchnorm_forward_kernel, dense_backward_kernel, dense_forward_kernel)
from .losses import LOSS_CODE, encode_targets, loss_grad, output as loss_output
from .layout import FAN_IN, FAN_OUT, N_COLUMNS, OFF_B, OFF_BETA, OFF_GAMMA, OFF_RUN, OFF_W  # noqa: F401
from .scalar import ACT_CODE
TRAIN, TRAIN_NO_UPDATE, EVAL = 0, 1, 2  # batch-norm modes of the forward pass


@cpu_kernel
def forward_kernel(theta, layout, act, X, running, mode):
    """Forward pass of one network; returns the per-layer arrays backprop needs.

    Returns (acts, pre, post, xhats, inv_stds): ``acts[l]`` is the input of layer l
    (``acts[0]`` is X), ``pre[l]`` its dense output z, ``post[l]`` the activation's input
    (``pre[l]`` itself without batch norm); the last ``post`` holds the logits.
    """
    n_layers = layout.shape[0]
    n = X.shape[0]
    acts = [X]
    pre = []
    post = []
    xhats = []
    inv_stds = []
    for l in range(n_layers):
        fi, fo = layout[l, FAN_IN], layout[l, FAN_OUT]
        ow, ob, og, obeta, orun = (layout[l, OFF_W], layout[l, OFF_B], layout[l, OFF_GAMMA],
                                   layout[l, OFF_BETA], layout[l, OFF_RUN])
        z = np.empty((n, fo), theta.dtype)
        dense_forward_kernel(acts[l], theta[ow:ow + fi * fo].reshape((fi, fo)), theta[ob:ob + fo], z)
        pre.append(z)
        if og >= 0:
            y = np.empty_like(z)
            gamma, beta = theta[og:og + fo], theta[obeta:obeta + fo]
            rmean, rvar = running[orun:orun + fo], running[orun + fo:orun + 2 * fo]
            if mode == EVAL:
                batchnorm_eval_kernel(z, gamma, beta, rmean, rvar, BN_EPS, y)
                xhat = np.empty((0, 0), theta.dtype)
                inv_std = np.empty(0, theta.dtype)
            else:
                xhat = np.empty_like(z)
                inv_std = np.empty(fo, theta.dtype)
                batchnorm_forward_kernel(z, gamma, beta, y, xhat, inv_std, rmean, rvar,
                                         mode == TRAIN, BN_MOMENTUM, BN_EPS)
        else:
            y = z
            xhat = np.empty((0, 0), theta.dtype)
            inv_std = np.empty(0, theta.dtype)
        post.append(y)
        xhats.append(xhat)
        inv_stds.append(inv_std)
        if l < n_layers - 1:
            a = np.empty_like(y)
            act_forward(act, y.reshape(y.size), a.reshape(a.size))
            acts.append(a)
    return acts, pre, post, xhats, inv_stds


@cpu_kernel
def loss_and_grad_kernel(theta, layout, act, loss_code, X, Y, grad, running, mode):
    """Mean loss of one network on (X, Y) and its gradient, written into ``grad`` (like theta)."""
    acts, pre, post, xhats, inv_stds = forward_kernel(theta, layout, act, X, running, mode)
    n_layers = layout.shape[0]
    logits = post[n_layers - 1]
    delta = np.empty_like(logits)
    loss = loss_grad(loss_code, logits, Y, delta)
    for l in range(n_layers - 1, -1, -1):
        fi, fo = layout[l, FAN_IN], layout[l, FAN_OUT]
        ow, ob, og, obeta = layout[l, OFF_W], layout[l, OFF_B], layout[l, OFF_GAMMA], layout[l, OFF_BETA]
        if og >= 0:  # delta is dL/dy here; carry it back through batch norm to dL/dz
            dz = np.empty_like(delta)
            batchnorm_backward_kernel(delta, xhats[l], inv_stds[l], theta[og:og + fo], dz,
                                      grad[og:og + fo], grad[obeta:obeta + fo])
            delta = dz
        a_prev = acts[l]
        da_prev = np.empty_like(a_prev) if l > 0 else np.empty((0, 0), a_prev.dtype)
        dense_backward_kernel(a_prev, theta[ow:ow + fi * fo].reshape((fi, fo)), delta,
                              grad[ow:ow + fi * fo].reshape((fi, fo)), grad[ob:ob + fo], da_prev,
                              l > 0)
        if l > 0:
            below = post[l - 1]
            delta = np.empty_like(da_prev)
            act_backward(act, below.reshape(below.size), a_prev.reshape(a_prev.size),
                         da_prev.reshape(da_prev.size), delta.reshape(delta.size))
    return loss


@cpu_kernel
def predict_kernel(theta, layout, act, loss_code, X, running, mode):
    """The network's output (probabilities for bce/ce, values for mse) for each row of X."""
    acts, pre, post, xhats, inv_stds = forward_kernel(theta, layout, act, X, running, mode)
    logits = post[layout.shape[0] - 1]
    out = np.empty_like(logits)
    loss_output(loss_code, logits, out)
    return out


class Forward(namedtuple("Forward", ["z", "y", "a", "mean", "var", "logits"])):
    """What :meth:`simcore.MLP.forward` returns, one entry per hidden layer ``l`` in each list.

    Attributes
    ----------
    z : list of (n, sizes[l]) arrays
        The dense outputs :math:`z_l = a_{l-1} W_l + b_l`, before batch norm.
    y : list of (n, sizes[l]) arrays
        The activation's inputs: batch-normalised :math:`z_l`, or :math:`z_l` itself without
        batch norm (what :meth:`simcore.MLP.activation_inputs` returns).
    a : list of (n, sizes[l]) arrays
        The activations :math:`a_l = f(y_l)`, the next layer's input.
    mean, var : lists of (sizes[l],) arrays
        The statistics batch norm normalised :math:`z_l` with: the batch's (biased variance)
        in training mode, the running statistics in eval mode; empty lists without batch norm.
    logits : (n, sizes[-1]) array
        The output layer's :math:`z_L`, before the output function.
    """

    __slots__ = ()

    def state(self):
        """``mean`` and ``var`` as a batch-norm state (the list :meth:`simcore.MLP.init_state`
        makes): pass it to :meth:`simcore.MLP.forward` or :meth:`simcore.MLP.predict` to normalise other data with
        these statistics (eval mode). Empty dicts without batch norm."""
        out = [{} for _ in range(len(self.z) + 1)]
        for l, (mu, var) in enumerate(zip(self.mean, self.var)):
            out[l] = {"running_mean": mu.copy(), "running_var": var.copy()}
        return out


class MLP:
    """A multilayer perceptron: dense layers, an activation on hidden layers, a loss on logits.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``[n_in, hidden..., n_out]``, at least two, each >= 1.
    activation : str
        Hidden-layer activation, one of ``simcore.activations.NAMES``.
    loss : {"mse", "mse_sigmoid", "bce", "ce"}
        See :mod:`simcore.losses`. ``bce`` expects y (n,) of 0/1 (or (n, n_out)); ``ce``
        integer labels (n,) in [0, n_out); ``mse``/``mse_sigmoid`` (n,) or (n, n_out).
    batchnorm : bool
        Batch norm after the linear map and before the activation, on hidden layers only.
    init : {"glorot", "he", "lecun", "uniform", "normal"}
        Weight initialisation, see :mod:`simcore.init`.
    dtype : {"float64", "float32"}

    Attributes
    ----------
    layout : (n_layers, N_COLUMNS) int64 array
        Each layer's widths and tensor offsets in the flat parameter array (:mod:`simcore.layout`).
    n_params : int
        Length of the flat parameter array ``theta``.
    slots : list of dict
        Per layer, ``{name: (offset, size, shape)}`` of its tensors in ``theta`` (``"W"``,
        ``"b"``, and ``"gamma"``, ``"beta"`` with batch norm), in the flat order.
    act_code, loss_code : int
        The activation's code (:data:`simcore.scalar.ACT_CODE`) and the loss's
        (:data:`simcore.losses.LOSS_CODE`): what the compiled kernels take instead of names.

    Examples
    --------
    >>> import simcore
    >>> X, y = simcore.datasets.moons(256, seed=0)
    >>> net = simcore.MLP([2, 16, 16, 1], activation="tanh", loss="bce")
    >>> params = net.init(seed=0)
    >>> loss, grads = net.loss_and_grad(params, X, y)
    >>> grads[0]["W"].shape
    (2, 16)
    """

    def __init__(self, sizes, activation="tanh", loss="bce", batchnorm=False, init="glorot",
                 dtype="float64"):
        try:
            sizes = list(sizes)
        except TypeError:
            raise ValueError(f"sizes must be a sequence of layer widths, got {sizes!r}") from None
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least an input and an output width, got {sizes}")
        self.sizes = [_validate.integer(f"sizes[{i}]", s, minimum=1) for i, s in enumerate(sizes)]
        self.activation = _validate.choice("activation", activation, ACT_CODE)
        self.loss = _validate.choice("loss", loss, LOSS_CODE)
        if not isinstance(batchnorm, (bool, np.bool_)):
            raise ValueError(f"batchnorm must be True or False, got {batchnorm!r}")
        self.batchnorm = bool(batchnorm)
        self.init_name = _validate.choice("init", init, _init.INITS)
        self.dtype = _validate.dtype_of("dtype", dtype)
        if self.loss == "ce" and self.sizes[-1] < 2:
            raise ValueError(f"loss 'ce' needs an output width >= 2, got sizes[-1]={self.sizes[-1]}")
        self.act_code = ACT_CODE[self.activation]
        self.loss_code = LOSS_CODE[self.loss]
        self.layout, self.n_params, self.n_running = self._make_layout()
        # per layer: {name: (offset, size, shape)} in plain Python ints, so packing and
        # unpacking cost no numpy scalar arithmetic on the per-call path
        self.slots = []
        for l, row in enumerate(self.layout.tolist()):
            fi, fo = row[FAN_IN], row[FAN_OUT]
            d = {"W": (row[OFF_W], fi * fo, (fi, fo)), "b": (row[OFF_B], fo, (fo,))}
            if row[OFF_GAMMA] >= 0:
                d["gamma"] = (row[OFF_GAMMA], fo, (fo,))
                d["beta"] = (row[OFF_BETA], fo, (fo,))
            self.slots.append(d)
        # pack concatenates the tensors in slot order, so that must be their order in theta
        offset = 0
        for d in self.slots:
            for o, size, _ in d.values():
                assert o == offset, "slots out of flat order"
                offset += size
        assert offset == self.n_params
        # unpack's plan per layer: (key, slice, shape or None for a 1-D tensor: no reshape)
        self._unpack_plan = [[(key, slice(o, o + size), shape if len(shape) > 1 else None)
                              for key, (o, size, shape) in d.items()] for d in self.slots]
        # without batch norm the kernels never touch ``running``: one shared empty array
        self._no_running = np.empty(0, self.dtype) if self.n_running == 0 else None

    # --- layout ------------------------------------------------------------------------------
    @property
    def n_layers(self):
        """Number of dense layers (hidden layers + output)."""
        return len(self.sizes) - 1

    def _has_bn(self, l):
        return self.batchnorm and l < self.n_layers - 1

    def _make_layout(self):
        rows, off, run = [], 0, 0
        for l, (fi, fo) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            ow, ob = off, off + fi * fo
            off = ob + fo
            og = obeta = orun = -1
            if self._has_bn(l):
                og, obeta, orun = off, off + fo, run
                off += 2 * fo
                run += 2 * fo
            rows.append((fi, fo, ow, ob, og, obeta, orun))
        return np.array(rows, dtype=np.int64).reshape(-1, N_COLUMNS), off, run

    def param_shapes(self):
        """[{name: shape}] per layer, in the order the flat vector stores them."""
        return [{key: shape for key, (_, _, shape) in d.items()} for d in self.slots]

    def pack(self, params, name="params"):
        """Check ``params`` and return them as one flat C-contiguous array in this net's dtype."""
        if not isinstance(params, (list, tuple)) or len(params) != len(self.slots):
            raise ValueError(f"{name} must be a list of {len(self.slots)} per-layer dicts")
        tensors = []
        for l, (p, slots) in enumerate(zip(params, self.slots)):
            if not isinstance(p, dict) or p.keys() != slots.keys():
                got = sorted(p) if isinstance(p, dict) else type(p).__name__
                raise ValueError(f"{name}[{l}] must be a dict with keys {sorted(slots)}, got {got}")
            for key, (_, _, shape) in slots.items():
                arr = np.asarray(p[key])
                if arr.shape != shape:
                    raise ValueError(f"{name}[{l}][{key!r}] must have shape {shape}, got {arr.shape}")
                if arr.dtype.kind not in "iuf":
                    raise ValueError(f"{name}[{l}][{key!r}] must hold real numbers, got {arr.dtype}")
                tensors.append(arr)
        # one C call copies (and casts: the same rounding as an assignment) every tensor into
        # a fresh flat array, in slot order, which is the flat order (checked in __init__);
        # cheaper than one slice assignment per tensor. "same_kind" allows every int/uint/float
        # kind checked above.
        theta = np.concatenate(tensors, axis=None, dtype=self.dtype, casting="same_kind")
        # checked after the cast, so a float64 value that overflows float32 is caught too
        if not _validate.all_finite(theta):
            raise ValueError(f"{name} must be finite (no NaN or inf)")
        return theta

    def unpack(self, theta):
        """The list-of-dicts view of a flat parameter vector (arrays are views into ``theta``)."""
        # plain loops over the plan made in __init__: cheaper than nested comprehensions
        out = []
        for plan in self._unpack_plan:
            layer = {}
            for key, sl, shape in plan:
                view = theta[sl]
                layer[key] = view if shape is None else view.reshape(shape)
            out.append(layer)
        return out

    # --- the API -----------------------------------------------------------------------------
    def init(self, seed=0, scale=1.0, bias_scale=0.0):
        """Initial parameters: list of per-layer dicts ``W`` (fan_in, fan_out), ``b`` (fan_out,),
        plus ``gamma`` and ``beta`` on hidden layers with batch norm.

        Parameters
        ----------
        seed : int >= 0
            Key of the counter-based generator (see :mod:`simcore.init`).
        scale : float >= 0
            Multiplies the standard deviation of every W (sigma_w for ``init="normal"``).
        bias_scale : float >= 0
            Standard deviation of the biases.
        """
        seed = _validate.integer("seed", seed, minimum=0, maximum=2**63 - 1)
        scale = _validate.real("scale", scale, 0.0)
        bias_scale = _validate.real("bias_scale", bias_scale, 0.0)
        theta = np.empty(self.n_params, self.dtype)
        for l, row in enumerate(self.layout):
            fi, fo = int(row[FAN_IN]), int(row[FAN_OUT])
            W, b = _init.draw_layer(self.init_name, fi, fo, l, seed, scale, bias_scale)
            theta[row[OFF_W]:row[OFF_W] + fi * fo] = W.reshape(-1)
            theta[row[OFF_B]:row[OFF_B] + fo] = b
            if row[OFF_GAMMA] >= 0:
                theta[row[OFF_GAMMA]:row[OFF_GAMMA] + fo] = 1.0
                theta[row[OFF_BETA]:row[OFF_BETA] + fo] = 0.0
        return self.unpack(theta)

    def init_state(self):
        """Batch-norm running statistics: per layer ``{"running_mean", "running_var"}`` (zeros and
        ones, as torch) on hidden layers with batch norm, ``{}`` elsewhere."""
        state = []
        for l in range(self.n_layers):
            fo = self.sizes[l + 1]
            state.append({"running_mean": np.zeros(fo, self.dtype),
                          "running_var": np.ones(fo, self.dtype)} if self._has_bn(l) else {})
        return state

    def _pack_state(self, state, update):
        """Check ``state`` and return its running statistics as one flat array.

        With ``update`` the statistics are written back after the pass (:meth:`_unpack_state`),
        so each must be a writeable C-contiguous array of this net's dtype and shape (fo,).
        """
        running = np.empty(self.n_running, self.dtype)
        if not isinstance(state, (list, tuple)) or len(state) != self.n_layers:
            raise ValueError(f"state must be a list of {self.n_layers} dicts from init_state()")
        dtype_name = np.dtype(self.dtype).name
        for l, row in enumerate(self.layout):
            if row[OFF_RUN] < 0:
                continue
            fo = int(row[FAN_OUT])
            s = state[l]
            for j, key in enumerate(("running_mean", "running_var")):
                name = f"state[{l}][{key!r}]"
                value = s.get(key) if isinstance(s, dict) else None
                if update and not (isinstance(value, np.ndarray) and value.dtype == self.dtype
                                   and value.shape == (fo,) and value.flags.c_contiguous
                                   and value.flags.writeable):
                    raise ValueError(f"{name} must be a writeable C-contiguous {dtype_name} array "
                                     f"of shape ({fo},) (it is updated in place)")
                arr = _validate.array(name, value, dtype=self.dtype, min_rows=0)
                if arr.shape != (fo,):
                    raise ValueError(f"{name} must be a finite array of shape ({fo},), "
                                     f"got {arr.shape}")
                running[row[OFF_RUN] + j * fo:row[OFF_RUN] + (j + 1) * fo] = arr
        if (running[self._var_mask()] < 0).any():
            raise ValueError("state running_var must be >= 0")
        return running

    def _var_mask(self):
        mask = np.zeros(self.n_running, bool)
        for row in self.layout:
            if row[OFF_RUN] >= 0:
                fo = row[FAN_OUT]
                mask[row[OFF_RUN] + fo:row[OFF_RUN] + 2 * fo] = True
        return mask

    def _unpack_state(self, running, state):
        for l, row in enumerate(self.layout):
            if row[OFF_RUN] >= 0:
                fo = int(row[FAN_OUT])
                state[l]["running_mean"][...] = running[row[OFF_RUN]:row[OFF_RUN] + fo]
                state[l]["running_var"][...] = running[row[OFF_RUN] + fo:row[OFF_RUN] + 2 * fo]

    def _scratch_running(self):
        """``running`` for a pass without state: scratch space the batch-norm kernels may
        write (fresh per call, so threads sharing this net do not race), or the shared empty
        array when there is no batch norm (nothing reads or writes it)."""
        if self._no_running is not None:
            return self._no_running
        return np.empty(self.n_running, self.dtype)

    def check_X(self, X):
        """``X`` as a C-contiguous (n, sizes[0]) array of the network's dtype, or a ValueError
        naming X (and, with batch norm, asking for at least 2 rows)."""
        X = _validate.array("X", X, ndim=2, dtype=self.dtype)
        if X.shape[1] != self.sizes[0]:
            raise ValueError(f"X must have shape (n, {self.sizes[0]}), got {X.shape}")
        if self.batchnorm and X.shape[0] < 2:
            raise ValueError(f"X must have at least 2 rows with batchnorm=True (batch statistics), "
                             f"got {X.shape[0]}")
        return X

    def loss_and_grad(self, params, X, y, state=None):
        """Mean loss on (X, y) in training mode and its gradient with respect to every parameter.

        Parameters
        ----------
        params : list of dict
            As returned by :meth:`init`.
        X : (n, sizes[0]) array
        y : targets, see the class docstring.
        state : list of dict, optional
            Batch-norm running statistics from :meth:`init_state`, updated in place (momentum 0.1).

        Returns
        -------
        loss : float
        grads : list of dict, shaped like ``params``.
        """
        theta = self.pack(params)
        X = self.check_X(X)
        Y = encode_targets(self.loss, y, X.shape[0], self.sizes[-1], self.dtype)
        running = (self._pack_state(state, update=True) if state is not None
                   else self._scratch_running())
        mode = TRAIN if state is not None else TRAIN_NO_UPDATE
        grad = np.empty_like(theta)
        loss = loss_and_grad_kernel(theta, self.layout, self.act_code, self.loss_code, X, Y, grad, running, mode)
        if state is not None:
            self._unpack_state(running, state)
        return float(loss), self.unpack(grad)

    def _inference_args(self, params, X, state):
        """Checked (theta, X, running, mode) of a forward pass without updates: eval mode with
        ``state``, the batch's own statistics without it."""
        theta = self.pack(params)
        X = _validate.array("X", X, ndim=2, dtype=self.dtype)
        if X.shape[1] != self.sizes[0]:
            raise ValueError(f"X must have shape (n, {self.sizes[0]}), got {X.shape}")
        if self.batchnorm and state is None and X.shape[0] < 2:
            raise ValueError("X must have at least 2 rows when batchnorm=True and no state is given")
        running = (self._pack_state(state, update=False) if state is not None
                   else self._scratch_running())
        return theta, X, running, (EVAL if state is not None else TRAIN_NO_UPDATE)

    def predict(self, params, X, state=None):
        """The network's output: probabilities for ``bce`` (sigmoid) and ``ce`` (softmax rows),
        sigmoid outputs for ``mse_sigmoid``, values for ``mse``.

        With batch norm, ``state`` (running statistics) selects eval mode; without it the batch's
        own statistics are used (training-mode normalisation, nothing updated).

        Returns
        -------
        (n,) array when the output width is 1, else (n, sizes[-1]).
        """
        theta, X, running, mode = self._inference_args(params, X, state)
        out = predict_kernel(theta, self.layout, self.act_code, self.loss_code, X, running, mode)
        return out[:, 0] if out.shape[1] == 1 else out

    def activation_inputs(self, params, X, state=None):
        """The input of each hidden layer's activation function, :math:`y_l` (the batch-normalised
        :math:`z_l` with batch norm, :math:`z_l` without): one (n, sizes[l]) array per hidden
        layer. Batch-norm modes as in :meth:`predict`. Ioffe and Szegedy track these (their
        Figure 1: a last-hidden-layer sigmoid input over training)."""
        theta, X, running, mode = self._inference_args(params, X, state)
        acts, pre, post, xhats, inv_stds = forward_kernel(theta, self.layout, self.act_code, X, running, mode)
        return [np.asarray(post[l]) for l in range(self.n_layers - 1)]

    def forward(self, params, X, state=None):
        r"""The forward pass of one network, every layer's values, as the kernels compute them.

        .. math::
            z_l = a_{l-1} W_l + b_l, \quad
            y_l = \gamma_l \frac{z_l - \mu_l}{\sqrt{\sigma^2_l + \epsilon}} + \beta_l
            \text{ (batch norm; else } y_l = z_l), \quad a_l = f(y_l)

        for the hidden layers, then the logits :math:`z_L = a_{L-1} W_L + b_L`. Without ``state``,
        :math:`\mu_l` and :math:`\sigma^2_l` are the batch statistics of :math:`z_l` over the
        rows of X (biased variance: training-mode normalisation, nothing updated); with
        ``state`` they are its running statistics (eval mode).

        Parameters
        ----------
        params : list of dict
            As returned by :meth:`init`.
        X : (n, sizes[0]) array
            At least 2 rows with batch norm and no ``state``.
        state : list of dict, optional
            Running statistics (:meth:`init_state`, or :meth:`simcore.mlp.Forward.state` of another pass);
            read, never updated.

        Returns
        -------
        Forward
            ``z``, ``y``, ``a`` (per hidden layer), ``mean``, ``var`` (per hidden layer with
            batch norm) and ``logits``; see :class:`simcore.mlp.Forward`.

        Raises
        ------
        ValueError
            Naming ``params``, ``X`` or ``state`` when they do not fit the network.

        Examples
        --------
        >>> import numpy as np, simcore
        >>> net = simcore.MLP([2, 4, 1], batchnorm=True)
        >>> X = np.random.default_rng(0).normal(size=(8, 2))
        >>> fw = net.forward(net.init(seed=0), X)
        >>> [z.shape for z in fw.z], fw.logits.shape, fw.mean[0].shape
        ([(8, 4)], (8, 1), (4,))
        """
        theta, X, running, mode = self._inference_args(params, X, state)
        batch_stats = self.batchnorm and state is None
        if batch_stats:
            # the kernel's running update from zero, momentum * mu and momentum * var * n/(n-1),
            # carries its own batch statistics out; divided back they are within a few ulps
            running = np.zeros(self.n_running, self.dtype)
            mode = TRAIN
        acts, pre, post, _, _ = forward_kernel(theta, self.layout, self.act_code, X, running, mode)
        hidden = range(self.n_layers - 1)
        mean, var = [], []
        if self.batchnorm:
            unbias = X.shape[0] / (X.shape[0] - 1.0)
            for l in hidden:
                o, fo = int(self.layout[l, OFF_RUN]), int(self.layout[l, FAN_OUT])
                mu, v = running[o:o + fo].copy(), running[o + fo:o + 2 * fo].copy()
                if batch_stats:
                    mu, v = mu / BN_MOMENTUM, v / unbias / BN_MOMENTUM
                mean.append(mu)
                var.append(v)
        return Forward([np.asarray(pre[l]) for l in hidden], [np.asarray(post[l]) for l in hidden],
                       [np.asarray(acts[l + 1]) for l in hidden], mean, var,
                       np.asarray(post[self.n_layers - 1]))

    def __repr__(self):
        return (f"MLP({self.sizes}, activation={self.activation!r}, loss={self.loss!r}, "
                f"batchnorm={self.batchnorm}, init={self.init_name!r}, "
                f"dtype={np.dtype(self.dtype).name!r})")
