"""The grid engine: train many networks in one compiled call. CPU strategies: networks in lanes
(:mod:`simcore.grid.cpu`) and one network per thread (:mod:`simcore.grid.cpu_gemm`); the GPU:
:mod:`simcore.grid.cuda`."""
from dataclasses import dataclass, replace

import numba
import numpy as np
import pandas as pd

from .. import _validate, config
from .._jit import cpu_kernel
from ..interrupt import run_ranges
from ..init import fill_layer, unit_spread
from ..losses import encode_targets
from ..optim import DEFAULT_MOMENTUM, USED_BY, check_used
from ..mlp import MLP
from ..simd import VBYTES
from . import cpu, cpu_gemm
from .core import (FAN_IN, FAN_OUT, OFF_B, OFF_BETA, OFF_GAMMA, OFF_W, OPT_CODE, QUANTITIES, VAL_QUANTITIES,
                   batch_order)
from .cpu import LANES
from .result import GridResult
from .schedule import LRSchedule

BACKENDS = ("cpu", "cuda")
STRATEGIES = ("auto", "lanes", "gemm")

__all__ = ["train_grid", "initial_params", "choose_strategy", "telemetry_bytes", "state_bytes", "GridResult", "batch_order", "QUANTITIES",
           "LANES", "STRATEGIES", "LRSchedule"]


@cpu_kernel
def _init_columns(theta, layout, uniform_init, spreads, seeds, scales, bias_scales):
    """Column g of theta (P, G) = MLP.init(seeds[g], scales[g], bias_scales[g]) for every g:
    each layer drawn by :func:`simcore.init.fill_layer`, as :func:`simcore.init.draw_layer` does."""
    P, G = theta.shape
    n_layers = layout.shape[0]
    w = np.empty(P)
    for g in range(G):
        for l in range(n_layers):
            fi, fo = layout[l, FAN_IN], layout[l, FAN_OUT]
            ow, ob = layout[l, OFF_W], layout[l, OFF_B]
            fill_layer(seeds[g], l, uniform_init, scales[g] * spreads[l], bias_scales[g],
                       w[ow:ow + fi * fo], w[ob:ob + fo])
            if layout[l, OFF_GAMMA] >= 0:
                w[layout[l, OFF_GAMMA]:layout[l, OFF_GAMMA] + fo] = 1.0
                w[layout[l, OFF_BETA]:layout[l, OFF_BETA] + fo] = 0.0
        for p in range(P):
            theta[p, g] = w[p]


def _draw_theta(m, seeds, init_scale, bias_scale):
    """theta (P, G) of G networks of architecture ``m`` drawn as ``m.init(seed, scale, bias_scale)``."""
    theta = np.empty((m.n_params, seeds.size), m.dtype)
    spreads = np.array([unit_spread(m.init_name, fi, fo) for fi, fo in zip(m.sizes[:-1], m.sizes[1:])])
    _init_columns(theta, m.layout, m.init_name == "uniform", spreads, seeds, init_scale, bias_scale)
    return theta


def initial_params(net, seeds, init_scale=1.0, bias_scale=0.0):
    """The stacked initial parameters :func:`simcore.train_grid` draws for ``seeds`` (a leading G axis;
    network g equals ``net.init(seeds[g], init_scale[g], bias_scale[g])``)."""
    if not isinstance(net, MLP):
        raise ValueError(f"net must be an MLP, got {type(net).__name__}")
    seeds = _per_network("seeds", seeds, kind=int)
    scale = np.broadcast_to(_per_network("init_scale", init_scale), seeds.shape).copy()
    bias = np.broadcast_to(_per_network("bias_scale", bias_scale), seeds.shape).copy()
    if (scale < 0).any() or (bias < 0).any():
        raise ValueError("init_scale and bias_scale must be >= 0")
    return _unstack(net, _draw_theta(net, seeds, scale, bias))


def run_blocks(kernel, args, G, size=LANES):
    """Run ``kernel(*args, first_block, end_block, size, stop)`` over the ceil(G / size) blocks
    of ``size`` networks of a grid, on worker threads (the kernel releases the GIL); Ctrl-C stops
    every thread within a step and raises KeyboardInterrupt (:func:`simcore.interrupt.run_ranges`)."""
    run_ranges(kernel, args, -(-G // size), extra=(size,))


def choose_strategy(net, G):
    """The CPU strategy ``train_grid(strategy="auto")`` picks for G networks of architecture ``net``.

    "lanes" (:mod:`simcore.grid.cpu`): networks side by side in SIMD lanes, blocks of LANES.
    Best for narrow networks, where one network's matrix products are too small to tile, and
    only when the grid fills its blocks (a block of one network costs as much as LANES).
    "gemm" (:mod:`simcore.grid.cpu_gemm`): one network at a time, register-tiled matrix
    products. Best once a layer is wide enough that a block of lanes no longer keeps its
    weights in cache. The thresholds are measured (docs/architecture.md, "Which strategy runs when")."""
    widest = max(net.sizes[1:-1], default=net.sizes[-1])
    if widest >= GEMM_VECTORS * VBYTES // np.dtype(net.dtype).itemsize:
        return "gemm"
    if G * LANES_FILL < LANES * min(numba.get_num_threads(), -(-G // LANES)):
        return "gemm"
    return "lanes"


GEMM_VECTORS = 5  # a hidden layer of 5 vectors (40 float64, 80 float32 units) or more: "gemm"
LANES_FILL = 2    # lanes need G >= LANES / LANES_FILL networks per thread to pay off


def record_bytes(n_layers):
    """Bytes of one telemetry record of one network: its loss, its held-out values
    (``VAL_QUANTITIES``) and every layer's QUANTITIES."""
    return (1 + len(VAL_QUANTITIES) + n_layers * len(QUANTITIES)) * 8


def telemetry_bytes(net, G, steps, record_every, strategy="auto"):
    """Bytes of the telemetry :func:`simcore.train_grid` allocates for G networks like ``net`` (an MLP, or
    a list of MLPs, one per network): the loss, the held-out values and the per-layer quantities
    at each of the ``steps // record_every + 2`` records, 8 bytes each; with the "lanes"
    strategy, the same again per thread for the block of LANES networks it records into before
    copying them out."""
    nets = list(net) if isinstance(net, (list, tuple)) else [net]
    per_network = (steps // record_every + 2) * record_bytes(max(m.n_layers for m in nets))
    how = choose_strategy(nets[0], G) if strategy == "auto" else strategy
    blocks = LANES * min(numba.get_num_threads(), -(-G // LANES)) if how == "lanes" else 0
    return per_network * (G + blocks)


def state_bytes(net, G):
    """Bytes of the trained parameters and the optimizer's moments v and m
    (``GridResult.state``) of G networks like ``net`` (an MLP, or a list of G):
    three values per parameter, in the networks' dtype."""
    nets = list(net) if isinstance(net, (list, tuple)) else [net] * G
    return 3 * sum(m.n_params * np.dtype(m.dtype).itemsize for m in nets)


def n_records(steps, record_every):
    """Telemetry records of a training: steps 0, record_every, 2 record_every, ... and the last."""
    return steps // record_every + 1 + (1 if steps % record_every else 0)


def check_size(net, G, steps, record_every, strategy="auto"):
    """ValueError naming steps, record_every and G when the results (the telemetry, the trained
    parameters and the optimizer's state) would pass ``simcore.config.MAX_GIB`` (before anything
    is allocated)."""
    tele = telemetry_bytes(net, G, steps, record_every, strategy)
    need = tele + state_bytes(net, G)
    limit = config.limit_bytes()
    if need > limit:
        raise ValueError(
            f"steps={steps} with record_every={record_every} is {n_records(steps, record_every)} records of G={G} "
            f"networks: the telemetry ({tele / 2**30:.1f} GiB) with the trained parameters and the "
            f"optimizer's state would take {need / 2**30:.1f} GiB, over the limit of "
            f"{config.MAX_GIB:g} GiB (simcore.config.MAX_GIB, env SIMCORE_MAX_GIB); raise "
            f"record_every, or lower steps or G (or raise the limit)")


def _per_network(name, value, kind=float):
    """A scalar or 1-D array of per-network values, as a 1-D array (length 1 for a scalar)."""
    arr = np.asarray(value)
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D array (one value per network), "
                         f"got shape {arr.shape}")
    arr = arr.reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if kind is int:
        integral = arr.dtype.kind in "iu" or (
            arr.dtype.kind == "f" and np.isfinite(arr).all() and np.all(arr == np.round(arr)))
        if not integral:
            raise ValueError(f"{name} must hold non-negative integers, got {arr}")
        if (arr < 0).any() or (arr > 2**63 - 1).any():
            raise ValueError(f"{name} must hold integers in [0, 2**63 - 1], got {arr[(arr < 0) | (arr > 2**63 - 1)][0]}")
        return arr.astype(np.uint64)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {arr[~np.isfinite(arr)][0]}")
    return arr


def _arch_key(net):
    return (tuple(net.sizes), net.activation, net.batchnorm, net.init_name)


def _stack_params(net, params, G, name):
    """Check stacked params (MLP layout with a leading G axis) and return theta (P, G)."""
    if not isinstance(params, (list, tuple)) or len(params) != len(net.slots):
        raise ValueError(f"{name} must be a list of {len(net.slots)} per-layer dicts with a leading "
                         f"axis of G={G} networks")
    theta = np.empty((net.n_params, G), net.dtype)
    for l, (p, slots) in enumerate(zip(params, net.slots)):
        if not isinstance(p, dict) or p.keys() != slots.keys():
            raise ValueError(f"{name}[{l}] must be a dict with keys {sorted(slots)}")
        for key, (o, size, shape) in slots.items():
            arr = np.asarray(p[key])
            if arr.shape != (G,) + shape:
                raise ValueError(f"{name}[{l}][{key!r}] must have shape {(G,) + shape}, got {arr.shape}")
            if arr.dtype.kind not in "iuf" or not np.isfinite(arr).all():
                raise ValueError(f"{name}[{l}][{key!r}] must hold finite real numbers")
            theta[o:o + size] = arr.reshape(G, -1).T
    return theta


def _unstack(net, theta):
    """Stacked params (leading G axis) from theta (P, G)."""
    G = theta.shape[1]
    return [{key: np.ascontiguousarray(theta[o:o + size].T).reshape((G,) + shape)
             for key, (o, size, shape) in slots.items()} for slots in net.slots]


def train_grid(net, X, y, lr, steps, seeds=None, params0=None, init_scale=1.0, bias_scale=0.0,
               optimizer="gd", momentum=None, batch_size=None, record_every=10, validation=None,
               divergence_ref=None, backend="cpu", strategy="auto", lr_schedule=None, weight_decay=0.0,
               clip_norm=None, target_loss=None, stop_at_target=False, resume=None):
    r"""Train G networks on the same data in one compiled call.

    Parameters
    ----------
    net : MLP or list of MLP
        One architecture for all networks, or one MLP per network (length G; depths and
        widths may differ, input and output width, loss and dtype must agree).
    X : (n, n_in) array
    y : targets as for :meth:`MLP.loss_and_grad`.
    lr : float or (G,) array
        Learning rate :math:`\eta` of each network, finite and >= 0.
    steps : int >= 1
        Number of updates.
    seeds : int or (G,) array of int, optional
        Keys of the counter-based generator: initial weights (as ``MLP.init(seed)``) and
        minibatch orders. Default ``arange(G)``.
    params0 : stacked params, optional
        Initial parameters, overriding ``seeds`` for the weights: for one MLP its layout with a
        leading G axis; for a list of MLPs, a list of G per-network parameter lists.
    init_scale, bias_scale : float or (G,) array
        As ``scale`` and ``bias_scale`` of :meth:`MLP.init`.
    optimizer : {"gd", "sgd", "momentum", "nesterov", "adam"}
        Update rule (see :mod:`simcore.optim`; Adam with betas (0.9, 0.999), eps 1e-8).
    momentum : float or (G,) array in [0, 1), optional
        :math:`\mu` for momentum and nesterov; default 0.9 (as :class:`simcore.Optimizer`).
        Given with another optimizer, a ValueError (it would change nothing).
    batch_size : int, optional
        None: full batch. Otherwise minibatch SGD: each epoch every network visits the samples
        in its own order (:func:`simcore.grid.core.batch_order` of its seed and the epoch) in ``n // batch_size``
        batches of exactly ``batch_size`` (the remainder of the epoch is left out).
    record_every : int >= 1
        Telemetry every ``record_every`` steps, and at the last step.
    validation : (X_val, y_val), optional
        A held-out set, checked as X and y are (input width, dtype, the loss's targets; with
        batch norm at least 2 rows). At every recorded step, at the parameters the recorded
        training loss was computed at, the kernel computes ``val_loss``, the mean loss over the
        held-out set, and for ``bce`` and ``ce`` ``val_accuracy``: the share of right
        predictions, a unit predicting class 1 where its logit :math:`z > 0`
        (:math:`\sigma(z) > 1/2`) for ``bce`` (each of the n_out units counts), the class
        :math:`\arg\max_j z_j` (ties to the first) for ``ce``
        (:func:`simcore.losses.correct_units`). With batch norm the held-out set is normalised
        with the statistics (mean, biased variance) of the step's training batch, the batch the
        recorded loss was computed on: for full-batch training the training set's, as
        ``MLP.forward(params, X_val, state=MLP.forward(params, X).state())``; the last step is
        always full-batch. (Not PyTorch's ``eval()``: the grid keeps no running averages.)
        Training ``accuracy`` (same rule) is recorded with or without a held-out set, on the
        samples the step's loss was computed on (its minibatch; the full data set at the last
        step). Not defined values are NaN: the accuracies of ``mse`` and ``mse_sigmoid``, the
        held-out values without ``validation``, and, as all telemetry, a diverged network's
        records after its step.
    divergence_ref : float or (G,) array, optional
        The loss a network's divergence test compares with (diverged: loss non-finite or above
        1e6 times it). Default: each network's loss at step 0. Give the first call's initial
        loss to continue a training in several calls with the same test.
    backend : {"cpu", "cuda"}
        "cpu": all cores, with the layout ``strategy`` names. "cuda": one
        thread block per network on an NVIDIA GPU (:mod:`simcore.grid.cuda`; needs the
        ``cuda`` extra, and a GPU or ``NUMBA_ENABLE_CUDASIM=1`` for numba's simulator).
    strategy : {"auto", "lanes", "gemm"}
        How the CPU backend lays out the work: "lanes" trains LANES networks side by side in
        SIMD lanes, "gemm" one network at a time with register-tiled matrix products, "auto"
        picks per architecture and G (:func:`simcore.grid.choose_strategy`). Results agree to rounding
        (float64 within 1e-12), and each strategy is bitwise reproducible on its own. Only
        "auto" with ``backend="cuda"``.
    lr_schedule : LRSchedule, optional
        The shape of the learning rate over the steps, shared by the grid: step t trains with
        :math:`\eta_t = \eta\,f(t)`, each network's peak :math:`\eta` its ``lr``
        (:class:`simcore.LRSchedule`: constant, step :math:`\gamma^{\lfloor u / every
        \rfloor}`, cosine :math:`floor + (1 - floor)(1 + \cos(\pi \min(u, T)/T))/2`, after a
        linear warmup :math:`s_0 + (1 - s_0) t / w` for :math:`t < w`, :math:`u = t - w`). Default
        constant.
    weight_decay : float or (G,) array, >= 0
        L2 weight decay :math:`\lambda` as PyTorch's ``torch.optim`` ``weight_decay``: the
        optimizer's rule sees :math:`g + \lambda \theta` for every parameter (W, b, and
        batch norm's gamma and beta), with momentum and Adam too (Adam, not AdamW). Default 0.
    clip_norm : float or (G,) array, > 0, optional
        Global gradient-norm clipping per network as ``torch.nn.utils.clip_grad_norm_``: with
        :math:`\lVert g \rVert_2` over all of the network's gradients,
        :math:`g \leftarrow g \min(1, c / (\lVert g \rVert_2 + 10^{-6}))`, before the weight
        decay (a torch loop's ``backward(); clip_grad_norm_(); step()``). Default None: none.
    target_loss : float or (G,) array, optional
        Each network's target: ``GridResult.reached_at`` is the first step whose loss (the one
        recorded at that step: the batch's, and at the last step the full data's) is <= it
        (-1 if never).
    stop_at_target : bool
        Freeze a network at the step it reached its target, as a diverged one is: its
        parameters stay, its telemetry ends there, its final loss is evaluated at them; its
        work is skipped where the strategy allows (a network of "gemm" or CUDA at once, a block
        of "lanes" once all of its networks are frozen). Needs ``target_loss``.
    resume : GridResult, optional
        Continue the training ``resume`` returned (its ``GridResult.state``): its
        parameters, the optimizer's moments, the step count (the schedule, Adam's corrections
        and the minibatch epoch continue where it stopped), the divergence references, and the
        steps of divergence and of reaching the target so far. Two calls of S/2 steps, the
        second resuming the first, equal one call of S steps bitwise (with the same ``lr``,
        ``momentum``, ``weight_decay``, ``clip_norm`` and ``target_loss``; a cosine schedule
        needs its ``period`` given). The networks, the optimizer, ``batch_size``, the number of
        samples and the schedule must be the state's (``lr_schedule`` may be left out), and
        ``params0``, ``seeds`` and ``divergence_ref`` must be left out. ``record_steps`` count
        the steps of the whole training.

    Returns
    -------
    GridResult

    Raises
    ------
    ValueError
        Naming the argument: mismatched lengths of per-network arrays, negative or non-finite
        lr, steps < 1, batch_size out of [1, n], params0 of the wrong shapes, unknown optimizer,
        momentum with an optimizer that ignores it, telemetry past ``simcore.config.MAX_GIB``
        (:func:`simcore.grid.telemetry_bytes`); negative weight_decay, clip_norm <= 0, a NaN target_loss,
        stop_at_target without target_loss, a resume that does not match the call.
    TypeError
        lr_schedule not an LRSchedule, resume not a GridResult with a state.

    KeyboardInterrupt
        Ctrl-C stops every thread within one training step (:mod:`simcore.interrupt`); on
        the CUDA backend every block within ``simcore.grid.cuda.STOP_POLL_STEPS`` steps.

    Examples
    --------
    >>> import numpy as np, simcore
    >>> X, y = simcore.datasets.moons(256, seed=0)
    >>> net = simcore.MLP([2, 16, 16, 1], activation="tanh", loss="bce")
    >>> res = simcore.train_grid(net, X, y, lr=np.geomspace(0.01, 3, 64), steps=500)
    >>> res.final_loss.shape
    (64,)
    """
    if resume is not None:  # the resumed parameters give the call its G and shapes
        net, params0 = _resume_params(net, resume, seeds, params0, divergence_ref, init_scale, bias_scale)
    job = _check(net, X, y, lr, steps, seeds, params0, init_scale, bias_scale, optimizer,
                 momentum, batch_size, record_every, divergence_ref, backend, strategy, validation)
    _check_training(job, lr_schedule, weight_decay, clip_norm, target_loss, stop_at_target, resume)
    runs = [_run_group(job, idx) for idx in _plan(job)]
    return _assemble(job, runs)


# --- train_grid in four steps: check -> plan -> run a backend -> assemble ----------------------

@dataclass
class _Job:
    """A checked train_grid call: every network's architecture and per-network values (length
    G), the encoded data, and the settings shared by all networks."""
    nets: list
    net_is_list: bool
    X: np.ndarray
    Y: np.ndarray
    per: dict
    params0: object
    optimizer: str
    steps: int
    batch: int
    record_every: int
    backend: str
    strategy: str
    Xv: np.ndarray = None   # the held-out set (no rows: none) and its encoded targets
    Yv: np.ndarray = None
    # the training's options of simcore.grid's _check_training (the defaults: a new training)
    schedule: LRSchedule = LRSchedule()
    stop_at_target: bool = False
    t0: int = 0          # the global step the call starts at (resume)
    state: dict = None   # the resumed GridResult's state, or None

    @property
    def G(self):
        return len(self.nets)


def _check(net, X, y, lr, steps, seeds, params0, init_scale, bias_scale, optimizer, momentum,
           batch_size, record_every, divergence_ref, backend, strategy, validation=None):
    """Every argument checked before compiled code runs (ValueError naming it); the per-network
    values broadcast to G; the telemetry's size checked against ``config.MAX_GIB``."""
    _validate.choice("backend", backend, BACKENDS)
    _validate.choice("strategy", strategy, STRATEGIES)
    if backend == "cuda" and strategy != "auto":
        raise ValueError(f"strategy must be 'auto' with backend='cuda' (one thread block per network), "
                         f"got {strategy!r}")
    if backend == "cuda":
        _cuda().require_gpu()  # ValueError naming backend='cpu' and the simulator when there is no GPU
    _validate.choice("optimizer", optimizer, OPT_CODE)
    check_used(optimizer, momentum=momentum)
    if momentum is None:
        momentum = DEFAULT_MOMENTUM if optimizer in USED_BY["momentum"] else 0.0
    steps = _validate.integer("steps", steps, minimum=1)
    record_every = _validate.integer("record_every", record_every, minimum=1)
    net_is_list = isinstance(net, (list, tuple))
    nets = list(net) if net_is_list else [net]
    if not nets or not all(isinstance(m, MLP) for m in nets):
        raise ValueError("net must be an MLP or a non-empty list of MLPs")
    first = nets[0]
    for i, m in enumerate(nets[1:], 1):
        if (m.sizes[0], m.sizes[-1], m.loss, m.dtype) != (first.sizes[0], first.sizes[-1], first.loss, first.dtype):
            raise ValueError(f"net[{i}] must have the input width, output width, loss and dtype of "
                             f"net[0] ({first.sizes[0]}, {first.sizes[-1]}, {first.loss!r}, "
                             f"{np.dtype(first.dtype).name}), got {m!r}")
    X = first.check_X(X)
    n = X.shape[0]
    Y = encode_targets(first.loss, y, n, first.sizes[-1], first.dtype)
    Xv, Yv = _check_validation(first, validation)
    per = {"lr": _per_network("lr", lr), "init_scale": _per_network("init_scale", init_scale),
           "bias_scale": _per_network("bias_scale", bias_scale),
           "momentum": _per_network("momentum", momentum),
           "divergence_ref": _per_network("divergence_ref", -1.0 if divergence_ref is None else divergence_ref)}
    if (per["lr"] < 0).any():
        raise ValueError(f"lr must be >= 0, got {per['lr'].min()}")
    if (per["init_scale"] < 0).any() or (per["bias_scale"] < 0).any():
        raise ValueError("init_scale and bias_scale must be >= 0")
    if divergence_ref is not None and (per["divergence_ref"] < 0).any():
        raise ValueError(f"divergence_ref must be >= 0, got {per['divergence_ref'].min()}")
    if ((per["momentum"] < 0) | (per["momentum"] >= 1)).any():
        raise ValueError(f"momentum must be in [0, 1), got {per['momentum']}")
    lengths = {k: v.size for k, v in per.items()}
    if seeds is not None:
        per["seeds"] = _per_network("seeds", seeds, kind=int)
        lengths["seeds"] = per["seeds"].size
    if net_is_list:
        lengths["net"] = len(nets)
    if params0 is not None:
        if net_is_list:
            if not isinstance(params0, (list, tuple)):
                raise ValueError("params0 must be a list of per-network parameter lists when net is a list")
            lengths["params0"] = len(params0)
        else:
            try:
                lengths["params0"] = len(np.asarray(params0[0]["W"]))
            except Exception:
                raise ValueError("params0 must be a list of per-layer dicts with a leading G axis") from None
    G = max(lengths.values())
    bad = {k: v for k, v in lengths.items() if v not in (1, G)}
    if bad:
        raise ValueError(f"per-network arguments must have length 1 or G={G}: "
                         + ", ".join(f"{k} has length {v}" for k, v in bad.items()))
    for k in list(per):
        per[k] = np.broadcast_to(per[k], (G,)).copy()
    if "seeds" not in per:
        per["seeds"] = np.arange(G, dtype=np.uint64)
    if len(nets) == 1:
        nets = nets * G
    if params0 is not None and net_is_list and len(params0) == 1:
        params0 = list(params0) * G
    if batch_size is None:
        batch = n
    else:
        batch = _validate.integer("batch_size", batch_size, minimum=1, maximum=n)
        if any(m.batchnorm for m in nets) and batch < 2:
            raise ValueError("batch_size must be >= 2 with batch norm (batch statistics)")
    if any(m.batchnorm for m in nets) and batch < 2:
        raise ValueError("X must have at least 2 rows with batch norm")
    check_size(nets, G, steps, record_every, strategy if backend == "cpu" else "gemm")  # GPU: no block copies
    return _Job(nets, net_is_list, X, Y, per, params0, optimizer, steps, batch, record_every,
                backend, strategy, Xv, Yv)


def _check_validation(net, validation):
    """The held-out set (X_val, y_val) as (Xv, Yv), checked as X and y are, errors naming
    ``validation``; without one, (0, n_in) and (0, n_out) arrays."""
    if validation is None:
        return (np.empty((0, net.sizes[0]), net.dtype), np.empty((0, net.sizes[-1]), net.dtype))
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        raise ValueError(f"validation must be a pair (X_val, y_val), got {type(validation).__name__}")
    X_val, y_val = validation
    Xv = _validate.array("validation[0] (X_val)", X_val, ndim=2, dtype=net.dtype)
    if Xv.shape[1] != net.sizes[0]:
        raise ValueError(f"validation[0] (X_val) must have shape (n_val, {net.sizes[0]}) like X, got {Xv.shape}")
    try:
        Yv = encode_targets(net.loss, y_val, Xv.shape[0], net.sizes[-1], net.dtype)
    except ValueError as exc:
        raise ValueError(f"validation[1] (y_val), the targets of X_val's {Xv.shape[0]} rows: {exc}") from None
    return Xv, np.ascontiguousarray(Yv)


def _broadcast(job, name, values):
    """Per-network values of length 1 or G, as a (G,) array (a ValueError naming ``name``)."""
    if values.size not in (1, job.G):
        raise ValueError(f"per-network arguments must have length 1 or G={job.G}: {name} has length "
                         f"{values.size}")
    return np.broadcast_to(values, (job.G,)).copy()


def _check_training(job, lr_schedule, weight_decay, clip_norm, target_loss, stop_at_target, resume):
    """The training's options (schedule, weight decay, clipping, target, resume) checked and
    put into ``job``: per-network values in ``job.per`` ("weight_decay"; "clip_norm", 0 for
    none; "target_loss", NaN for none), the schedule resolved for the call's steps."""
    per = job.per
    per["weight_decay"] = _broadcast(job, "weight_decay", _per_network("weight_decay", weight_decay))
    if (per["weight_decay"] < 0).any():
        raise ValueError(f"weight_decay must be >= 0, got {per['weight_decay'].min()}")
    if clip_norm is None:
        per["clip_norm"] = np.zeros(job.G)
    else:
        per["clip_norm"] = _broadcast(job, "clip_norm", _per_network("clip_norm", clip_norm))
        if (per["clip_norm"] <= 0).any():
            raise ValueError(f"clip_norm must be > 0 (None: no clipping), got {per['clip_norm'].min()}")
    if not isinstance(stop_at_target, (bool, np.bool_)):
        raise ValueError(f"stop_at_target must be True or False, got {stop_at_target!r}")
    if target_loss is None:
        if stop_at_target:
            raise ValueError("stop_at_target=True needs target_loss (the loss to stop at)")
        per["target_loss"] = np.full(job.G, np.nan)
    else:
        target = np.asarray(target_loss)
        floats = target.dtype.kind == "f"
        if floats and np.isnan(target).any():
            raise ValueError("target_loss must not be NaN (leave it out for no target)")
        inf = np.isposinf(target).reshape(-1) if floats else False  # +inf: every finite loss reaches it
        checked = _per_network("target_loss", np.where(np.isposinf(target), 0.0, target) if floats else target)
        checked[inf] = np.inf
        per["target_loss"] = _broadcast(job, "target_loss", checked)
    job.stop_at_target = bool(stop_at_target)
    if lr_schedule is not None and not isinstance(lr_schedule, LRSchedule):
        raise TypeError(f"lr_schedule must be a simcore.LRSchedule or None, got {type(lr_schedule).__name__}")
    if resume is None:
        job.schedule = (lr_schedule or LRSchedule()).resolved(job.steps)
        return
    state = resume.state
    if len(resume.final_loss) != job.G:
        raise ValueError(f"resume holds G={len(resume.final_loss)} networks; the call has G={job.G} "
                         f"(per-network arguments must have length 1 or {len(resume.final_loss)})")
    if str(state["optimizer"]) != job.optimizer:
        raise ValueError(f"optimizer must be the resumed training's, {str(state['optimizer'])!r}, got "
                         f"{job.optimizer!r}")
    if int(state["n"]) != job.X.shape[0]:
        raise ValueError(f"X must have the resumed training's {int(state['n'])} samples, got {job.X.shape[0]}")
    if int(state["batch"]) != job.batch:
        raise ValueError(f"batch_size must be the resumed training's, {int(state['batch'])}, got "
                         f"{job.batch}")
    stored = LRSchedule.decode(state["schedule"])
    if lr_schedule is not None:
        given = lr_schedule
        if given.kind == "cosine" and given.period is None:  # the default period: the stored one
            given = replace(given, period=stored.period)
        if given != stored:
            raise ValueError(f"lr_schedule must be the resumed training's, {stored}, got {lr_schedule}")
    job.schedule = stored
    job.state = state
    job.t0 = int(state["step"])
    per["seeds"] = np.asarray(resume.config["seed"], dtype=np.uint64).copy()
    per["divergence_ref"] = np.asarray(state["loss0"], np.float64).copy()


def _resume_params(net, resume, seeds, params0, divergence_ref, init_scale, bias_scale):
    """(net, params0) of the call that continues ``resume``: its parameters (and one MLP per
    network where they are per network), after checking that the call leaves out what the
    resumed training fixes and trains its architectures."""
    if not isinstance(resume, GridResult) or resume.state is None:
        raise TypeError(f"resume must be a GridResult of train_grid (with its state), got "
                        f"{type(resume).__name__}")
    for name, value in (("params0", params0), ("seeds", seeds), ("divergence_ref", divergence_ref)):
        if value is not None:
            raise ValueError(f"resume continues from the resumed training's parameters, seeds and "
                             f"divergence references: leave {name} out")
    for name, value, default in (("init_scale", init_scale, 1.0), ("bias_scale", bias_scale, 0.0)):
        if np.any(np.asarray(value) != default):
            raise ValueError(f"resume continues from the resumed training's parameters: leave {name} "
                             f"out (it sets the initial draw)")
    nets = list(net) if isinstance(net, (list, tuple)) else [net] * len(resume.final_loss)
    key = [(_arch_key(m), m.loss, np.dtype(m.dtype).name) if isinstance(m, MLP) else None for m in nets]
    if resume.nets is None or key != [(_arch_key(m), m.loss, np.dtype(m.dtype).name) for m in resume.nets]:
        raise ValueError("net must be the resumed training's architectures (sizes, activation, batch "
                         "norm, init, loss and dtype of every network, one MLP or a list of G)")
    return (net if isinstance(resume.params[0], dict) else nets), resume.params


def _cuda():
    """The CUDA backend's module, imported only when asked for: simcore never needs CUDA."""
    try:
        from . import cuda
    except ImportError as exc:
        raise ValueError(f"backend='cuda' needs numba-cuda (pip install 'simcore[cuda]'): {exc}; "
                         "use backend='cpu'") from None
    return cuda


def _plan(job):
    """The networks grouped by architecture (indices into the grid): one compiled call each."""
    groups = {}
    for g, m in enumerate(job.nets):
        groups.setdefault(_arch_key(m), []).append(g)
    return [np.asarray(idx) for idx in groups.values()]


def _initial_theta(job, idx):
    """theta (P, len(idx)) of the group's networks: drawn from their seeds, or from params0."""
    m = job.nets[idx[0]]
    per = job.per
    if job.params0 is None and job.state is None:
        return _draw_theta(m, per["seeds"][idx], per["init_scale"][idx], per["bias_scale"][idx])
    if job.net_is_list:
        theta = np.empty((m.n_params, idx.size), m.dtype)
        for c, g in enumerate(idx):
            theta[:, c] = m.pack(job.params0[g], name=f"params0[{g}]")
        return theta
    return _stack_params(m, job.params0, job.G, "params0")


def _run_group(job, idx):
    """Train the networks ``idx`` (one architecture) on the job's backend; returns
    (idx, trained theta, telemetry of losses and of layers, final loss, step of divergence,
    strategy, held-out telemetry, final held-out values, the optimizer's state)."""
    m = job.nets[idx[0]]
    theta = _initial_theta(job, idx)
    R = n_records(job.steps, job.record_every)
    rec_loss = np.full((R, idx.size), np.nan)  # a record a frozen network skips stays NaN
    rec_layer = np.full((R, m.n_layers, len(QUANTITIES), idx.size), np.nan)
    fl = np.empty(idx.size)
    dv = np.empty(idx.size, np.int64)
    rec_val = np.full((R, len(VAL_QUANTITIES), idx.size), np.nan)
    final_val = np.empty((len(VAL_QUANTITIES), idx.size))
    per = {k: np.ascontiguousarray(v[idx]) for k, v in job.per.items()}
    v, mom, dv[:], reached = _initial_state(job, idx, m.n_params, m.dtype)
    args = (theta, m.layout, m.act_code, m.loss_code, job.X, job.Y,
            job.Xv, job.Yv, rec_val, final_val,
            per["seeds"], per["lr"], per["momentum"], per["divergence_ref"], OPT_CODE[job.optimizer],
            per["weight_decay"], per["clip_norm"], job.schedule.encode(job.steps), per["target_loss"],
            job.stop_at_target, job.t0, v, mom, reached, job.steps, job.batch,
            job.record_every, rec_loss, rec_layer, dv, fl)
    if job.backend == "cuda":
        _cuda().train_blocks_cuda(*args)  # one thread block per network (simcore.grid.cuda)
        how = "cuda"
    else:
        how = choose_strategy(m, idx.size) if job.strategy == "auto" else job.strategy
        if how == "lanes":
            run_blocks(cpu.train_kernel(m.batchnorm), args, idx.size)
        else:
            run_blocks(cpu_gemm.train_kernel(m.batchnorm), args, idx.size, size=1)
    return idx, theta, rec_loss, rec_layer, fl, dv, how, rec_val, final_val, {"v": v, "m": mom, "reached_at": reached}


def _initial_state(job, idx, P, dtype):
    """The optimizer's moments v, m (P, len(idx)) and the steps of divergence and of reaching
    the target so far (-1: not yet) of the group's networks: zeros and -1, or the resumed state."""
    if job.state is None:
        return (np.zeros((P, idx.size), dtype), np.zeros((P, idx.size), dtype),
                np.full(idx.size, -1, np.int64), np.full(idx.size, -1, np.int64))
    st = job.state
    starts = np.r_[0, np.cumsum([m.n_params for m in job.nets])]
    v = np.stack([st["v"][starts[g]:starts[g + 1]] for g in idx], axis=1).astype(dtype)
    mom = np.stack([st["m"][starts[g]:starts[g + 1]] for g in idx], axis=1).astype(dtype)
    return v, mom, st["diverged_at"][idx].astype(np.int64), st["reached_at"][idx].astype(np.int64)


def _assemble(job, runs):
    """The GridResult of the groups' runs, in the grid's order of networks."""
    G, nets, per = job.G, job.nets, job.per
    final_loss = np.empty(G)
    diverged_at = np.empty(G, np.int64)
    strategies = np.full(G, "", dtype=object)
    params_out = [None] * G
    out_groups = []
    final_val = np.empty((len(VAL_QUANTITIES), G))
    val_groups = []
    reached_at = np.empty(G, np.int64)
    for idx, theta, rec_loss, rec_layer, fl, dv, how, rec_val, fv, kept in runs:
        final_val[:, idx] = fv
        val_groups.append(rec_val)
        final_loss[idx] = fl
        diverged_at[idx] = dv
        reached_at[idx] = kept["reached_at"]
        strategies[idx] = how
        out_groups.append((idx, rec_loss, rec_layer))
        m = nets[idx[0]]
        if len(runs) == 1 and not job.net_is_list:
            params_out = _unstack(m, theta)
        else:
            for c, g in enumerate(idx):
                params_out[g] = m.unpack(theta[:, c].copy())
    steps, every = job.steps, job.record_every
    record_steps = np.r_[np.arange(0, steps + 1, every), [steps] if steps % every else []].astype(np.int64)
    record_steps += job.t0  # the steps of the whole training (a resumed one continues them)
    config = pd.DataFrame({
        "network": np.arange(G), "arch": ["-".join(map(str, m.sizes)) for m in nets],
        "activation": [m.activation for m in nets], "batchnorm": [m.batchnorm for m in nets],
        "lr": per["lr"], "seed": per["seeds"], "init_scale": per["init_scale"],
        "bias_scale": per["bias_scale"], "momentum": per["momentum"], "strategy": strategies,
        "final_loss": final_loss, "diverged": diverged_at >= 0, "diverged_at": diverged_at,
        "final_val_loss": final_val[0], "final_accuracy": final_val[1], "final_val_accuracy": final_val[2],
        "n_val": np.full(G, job.Xv.shape[0], np.int64),
        "weight_decay": per["weight_decay"], "clip_norm": np.where(per["clip_norm"] > 0, per["clip_norm"], np.nan),
        "target_loss": per["target_loss"], "reached_at": reached_at,
        "stop_at_target": np.full(G, job.stop_at_target)})
    return GridResult(final_loss=final_loss, diverged=diverged_at >= 0, diverged_at=diverged_at,
                      params=params_out, record_steps=record_steps, config=config, _groups=out_groups,
                      nets=list(nets), final_val_loss=final_val[0].copy(), final_accuracy=final_val[1].copy(),
                      final_val_accuracy=final_val[2].copy(), _val_groups=val_groups, reached_at=reached_at,
                      state=_final_state(job, runs, diverged_at, reached_at))


def _final_state(job, runs, diverged_at, reached_at):
    """GridResult.state: what :func:`simcore.train_grid` needs to continue this training (``resume``)."""
    G, nets = job.G, job.nets
    starts = np.r_[0, np.cumsum([m.n_params for m in nets])]
    v = np.empty(starts[-1], nets[0].dtype)
    mom = np.empty(starts[-1], nets[0].dtype)
    loss0 = np.empty(G)
    for idx, theta, rec_loss, rec_layer, fl, dv, how, rec_val, fv, kept in runs:
        for c, g in enumerate(idx):
            v[starts[g]:starts[g + 1]] = kept["v"][:, c]
            mom[starts[g]:starts[g + 1]] = kept["m"][:, c]
        ref = job.per["divergence_ref"][idx]
        loss0[idx] = np.where(ref >= 0, ref, rec_loss[0])  # the kernel's: given, or the loss of step 0
    end = job.t0 + job.steps
    # the last step's loss is the full data's: under minibatches a continued training sees that
    # step's batch instead, so a divergence or target found only there is found again (or not)
    if job.batch < job.X.shape[0]:
        diverged_at = np.where(diverged_at == end, -1, diverged_at)
        reached_at = np.where(reached_at == end, -1, reached_at)
    return {"step": np.array(end, np.int64), "optimizer": np.array(job.optimizer),
            "n": np.array(job.X.shape[0], np.int64), "batch": np.array(job.batch, np.int64),
            "schedule": job.schedule.encode(job.steps), "loss0": loss0,
            "diverged_at": diverged_at.copy(), "reached_at": reached_at.copy(), "v": v, "m": mom}
