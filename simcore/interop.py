r"""Convert an :class:`simcore.MLP` and its parameters to PyTorch's ``torch.nn`` and back.

simcore computes a dense layer as :math:`z = a W + b` with ``W`` of shape (fan_in, fan_out);
``torch.nn.Linear`` computes :math:`z = a\,\mathrm{weight}^T + \mathrm{bias}` with ``weight`` of
shape (fan_out, fan_in), so ``weight = W.T``. :func:`to_torch` writes, per layer, ``Linear``,
then on a hidden layer ``BatchNorm1d`` (where the MLP has batch norm: ``gamma`` and ``beta`` as
its weight and bias, :data:`simcore.layers.BN_EPS` and :data:`simcore.layers.BN_MOMENTUM`, the
running statistics of ``state``) and the activation's module. The module ends with the output
layer's ``Linear``: it returns logits, without the output function (sigmoid or softmax), as
torch's losses take them; :func:`torch_loss` is the matching loss and :func:`torch_targets` the
targets it takes. :func:`from_torch` reads such a ``Sequential`` back.

PyTorch is optional: ``import simcore`` never imports it, and these functions raise an
ImportError naming the ``dev`` extra (``pip install -e ".[dev]"``) when it is missing.

Examples
--------
>>> import simcore
>>> from simcore.interop import to_torch, from_torch
>>> net = simcore.MLP([2, 8, 1], activation="relu", loss="bce", batchnorm=True)
>>> model = to_torch(net, net.init(seed=0), net.init_state())   # doctest: +SKIP
>>> model                                                       # doctest: +SKIP
Sequential(
  (0): Linear(in_features=2, out_features=8, bias=True)
  (1): BatchNorm1d(8, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (2): ReLU()
  (3): Linear(in_features=8, out_features=1, bias=True)
)
>>> net2, params, state = from_torch(model, loss="bce")         # doctest: +SKIP
"""
import functools

import numpy as np

from .io import check_state
from .layers import BN_EPS, BN_MOMENTUM
from .losses import encode_targets
from .mlp import MLP
from .scalar import LEAKY_SLOPE

__all__ = ["to_torch", "from_torch", "torch_loss", "torch_targets", "SOFTPLUS_THRESHOLD"]

# torch's Softplus returns z itself above its threshold. Above 40,
# log(1 + e^z) - z = log1p(e^-z) < 4.3e-18, under half an ulp of z in float64 (and float32):
# the module computes simcore's softplus to rounding, and never overflows exp.
SOFTPLUS_THRESHOLD = 40.0


def _torch():
    """The torch package, or an ImportError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise ImportError('simcore.interop needs PyTorch, which simcore does not require: install '
                          'the dev extra (pip install -e ".[dev]", which pins torch==2.13.0) or '
                          'pip install torch') from None
    return torch


def _activation_module(torch, name):
    """torch.nn module computing simcore's activation ``name`` (:data:`simcore.scalar.ACTIVATIONS`)."""
    nn = torch.nn
    modules = {"identity": nn.Identity, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU,
               "leaky_relu": lambda: nn.LeakyReLU(LEAKY_SLOPE),
               "softplus": lambda: nn.Softplus(beta=1.0, threshold=SOFTPLUS_THRESHOLD)}
    if name not in modules:  # an activation added to simcore.scalar without a torch module here
        raise ValueError(f"activation {name!r} has no torch module in simcore.interop")
    return modules[name]()


def _activation_name(torch, m):
    """simcore's name of the activation module ``m``, or None when simcore has no such one."""
    nn = torch.nn
    plain = {nn.Identity: "identity", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.ReLU: "relu"}
    if type(m) in plain:
        return plain[type(m)]
    if type(m) is nn.LeakyReLU and m.negative_slope == LEAKY_SLOPE:
        return "leaky_relu"
    if type(m) is nn.Softplus and m.beta == 1:
        return "softplus"
    return None


def _torch_dtype(torch, dtype):
    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def to_torch(net, params, state=None):
    """The ``torch.nn.Sequential`` computing ``net`` with ``params``: its logits.

    Parameters
    ----------
    net : MLP
    params : list of dict
        As :meth:`simcore.MLP.init` returns them (W (fan_in, fan_out), b, gamma, beta).
    state : list of dict, optional
        Batch-norm running statistics (:meth:`simcore.MLP.init_state`), copied into each
        ``BatchNorm1d``'s ``running_mean`` and ``running_var``; without it those are zeros and
        ones (torch's and simcore's initial values).

    Returns
    -------
    torch.nn.Sequential
        In the net's dtype (float32 or float64), on the CPU, in training mode (torch's default:
        batch statistics, updating the running ones); ``.eval()`` normalises with the running
        statistics, as :meth:`simcore.MLP.predict` with ``state`` does. Its parameters are copies.
        The output function is not included: ``torch.sigmoid`` / ``torch.softmax`` of the
        output is :meth:`simcore.MLP.predict` for ``bce`` / ``ce``.

    Raises
    ------
    ImportError
        Without PyTorch (the ``dev`` extra).
    TypeError
        ``net`` not an MLP.
    ValueError
        ``params`` or ``state`` not shaped for ``net``.
    """
    torch = _torch()
    if not isinstance(net, MLP):
        raise TypeError(f"net must be an MLP, got {type(net).__name__}")
    params = net.unpack(net.pack(params))
    if state is not None:
        state = check_state(net, state)
    tdt = _torch_dtype(torch, net.dtype)
    mods = []
    with torch.no_grad():
        for l, p in enumerate(params):
            fi, fo = p["W"].shape
            lin = torch.nn.Linear(fi, fo, dtype=tdt)
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(p["W"].T)))
            lin.bias.copy_(torch.from_numpy(p["b"]))
            mods.append(lin)
            if l == net.n_layers - 1:
                break
            if "gamma" in p:
                bn = torch.nn.BatchNorm1d(fo, eps=BN_EPS, momentum=BN_MOMENTUM, dtype=tdt)
                bn.weight.copy_(torch.from_numpy(p["gamma"]))
                bn.bias.copy_(torch.from_numpy(p["beta"]))
                if state is not None:
                    bn.running_mean.copy_(torch.from_numpy(state[l]["running_mean"]))
                    bn.running_var.copy_(torch.from_numpy(state[l]["running_var"]))
                mods.append(bn)
            mods.append(_activation_module(torch, net.activation))
    return torch.nn.Sequential(*mods)


def from_torch(module, loss="bce", init="glorot"):
    """An MLP, its parameters and batch-norm statistics read from a ``torch.nn.Sequential``.

    The module must be what :func:`to_torch` writes: ``Linear`` layers (with bias), each but the
    last followed by an optional ``BatchNorm1d`` (on every hidden layer or on none; affine,
    tracking running statistics, eps :data:`simcore.layers.BN_EPS`, momentum
    :data:`simcore.layers.BN_MOMENTUM`) and one activation module, the same on every hidden
    layer: ``Identity``, ``Sigmoid``, ``Tanh``, ``ReLU``, ``LeakyReLU(0.01)``, ``Softplus(beta=1)``
    (any threshold: torch's default 20 differs from log(1 + e^z) by under 2e-9 relatively); no
    module after the last ``Linear`` (simcore's network returns logits; its loss applies the
    output function). All parameters float32 or all float64.

    Parameters
    ----------
    module : torch.nn.Sequential
    loss, init : str
        The MLP's loss and initialisation, which the module does not hold (see :class:`simcore.MLP`).
        A module without hidden layers gets MLP's default activation.

    Returns
    -------
    net : MLP
    params : list of dict
        ``W = weight.T``, ``b = bias`` (and ``gamma``, ``beta``), bitwise the module's values.
    state : list of dict or None
        The running statistics of the ``BatchNorm1d`` layers; None without batch norm.

    Raises
    ------
    ImportError
        Without PyTorch (the ``dev`` extra).
    TypeError
        ``module`` not a ``torch.nn.Sequential``.
    ValueError
        Naming the first layer simcore cannot convert, and why.
    """
    torch = _torch()
    nn = torch.nn
    if not isinstance(module, nn.Sequential):
        raise TypeError(f"module must be a torch.nn.Sequential, got {type(module).__name__}")
    mods = list(module.named_children())
    if not mods:
        raise ValueError("module is an empty Sequential")
    linears, bns, acts = [], [], []
    i = 0
    while i < len(mods):
        name, m = mods[i]
        if not isinstance(m, nn.Linear):
            raise ValueError(f"module[{name}] is {m!r}: simcore expects a Linear here (Linear, "
                             "optional BatchNorm1d and one activation per hidden layer, a Linear last)")
        if m.bias is None:
            raise ValueError(f"module[{name}] is a Linear without bias; simcore's layers have one")
        linears.append(m)
        i += 1
        if i == len(mods):
            break
        name, m = mods[i]
        bns.append(m if isinstance(m, nn.BatchNorm1d) else None)
        if bns[-1] is not None:
            _check_batchnorm(name, m)
            i += 1
            if i == len(mods):
                raise ValueError(f"module ends with a BatchNorm1d (module[{name}]); simcore's output "
                                 "layer is a plain Linear")
            name, m = mods[i]
        if i + 1 == len(mods):
            raise ValueError(f"module ends with {m!r} (module[{name}]) after its last Linear: "
                             "simcore's network returns logits; drop it (the loss applies the "
                             "output function)")
        act = _activation_name(torch, m)
        if act is None:
            raise ValueError(f"module[{name}] is {m!r}, which simcore cannot convert: its "
                             "activations are Identity, Sigmoid, Tanh, ReLU, LeakyReLU(0.01) and "
                             "Softplus(beta=1)")
        if acts and act != acts[0]:
            raise ValueError(f"module[{name}] is {m!r}, but an earlier hidden layer uses "
                             f"{acts[0]!r}: simcore's MLP has one activation on every hidden layer")
        acts.append(act)
        i += 1
    if any(b is None for b in bns) and any(b is not None for b in bns):
        raise ValueError("module has BatchNorm1d on some hidden layers only; simcore's MLP has "
                         "batch norm on every hidden layer or on none")
    dtypes = {p.dtype for p in module.parameters()}
    if dtypes not in ({torch.float32}, {torch.float64}):
        raise ValueError(f"module's parameters must all be torch.float32 or all torch.float64, "
                         f"got {sorted(map(str, dtypes))}")
    sizes = [linears[0].in_features] + [m.out_features for m in linears]
    for l, (lin, bn) in enumerate(zip(linears[1:], bns)):
        if lin.in_features != sizes[l + 1] or (bn is not None and bn.num_features != sizes[l + 1]):
            raise ValueError(f"module's widths do not chain at hidden layer {l + 1}: "
                             f"{sizes[l + 1]} units, then {lin!r}" + (f" after {bn!r}" if bn else ""))
    dtype = "float64" if dtypes == {torch.float64} else "float32"
    net = MLP(sizes, activation=acts[0] if acts else "tanh", loss=loss,
              batchnorm=any(b is not None for b in bns), init=init, dtype=dtype)

    def numpy(t):
        return t.detach().cpu().numpy()

    params, state = [], net.init_state() if net.batchnorm else None
    for l, lin in enumerate(linears):
        p = {"W": numpy(lin.weight).T, "b": numpy(lin.bias)}
        bn = bns[l] if l < len(bns) else None
        if bn is not None:
            p["gamma"], p["beta"] = numpy(bn.weight), numpy(bn.bias)
            state[l]["running_mean"][...] = numpy(bn.running_mean)
            state[l]["running_var"][...] = numpy(bn.running_var)
        params.append(p)
    return net, net.unpack(net.pack(params)), state


def _check_batchnorm(name, bn):
    """ValueError naming module[name] for a BatchNorm1d that simcore's batch norm does not compute."""
    why = []
    if not bn.affine:
        why.append("affine=False (simcore's batch norm has gamma and beta)")
    if not bn.track_running_stats:
        why.append("track_running_stats=False")
    if bn.eps != BN_EPS:
        why.append(f"eps={bn.eps} (simcore's is {BN_EPS})")
    if bn.momentum != BN_MOMENTUM:
        why.append(f"momentum={bn.momentum} (simcore's is {BN_MOMENTUM})")
    if why:
        raise ValueError(f"module[{name}] is a BatchNorm1d that simcore cannot convert: " + "; ".join(why))


@functools.cache
def _mse_sigmoid_class(torch):
    class MSESigmoidLoss(torch.nn.Module):
        r"""simcore's ``mse_sigmoid`` on logits: :math:`\frac{1}{nk}\sum (\sigma(z) - y)^2`."""

        def forward(self, z, y):
            return torch.nn.functional.mse_loss(torch.sigmoid(z), y)

    return MSESigmoidLoss


def torch_loss(net):
    """The torch loss module computing ``net``'s loss from the logits of :func:`to_torch`'s
    module and :func:`torch_targets`' targets (mean reduction, as simcore's losses).

    ``mse``: ``MSELoss``; ``bce``: ``BCEWithLogitsLoss``; ``ce``: ``CrossEntropyLoss``;
    ``mse_sigmoid``: a module computing ``mse_loss(sigmoid(z), y)``.
    """
    torch = _torch()
    if not isinstance(net, MLP):
        raise TypeError(f"net must be an MLP, got {type(net).__name__}")
    nn = torch.nn
    return {"mse": nn.MSELoss, "bce": nn.BCEWithLogitsLoss, "ce": nn.CrossEntropyLoss,
            "mse_sigmoid": _mse_sigmoid_class(torch)}[net.loss]()


def torch_targets(net, y):
    """simcore's targets ``y`` (see :class:`simcore.MLP`) as the tensor :func:`torch_loss` takes: int64
    labels (n,) for ``ce``, else (n, n_out) in the net's dtype (the shape of the logits).

    Raises
    ------
    ValueError
        Naming ``y`` when it does not fit ``net``'s loss (as :meth:`simcore.MLP.loss_and_grad` does).
    """
    torch = _torch()
    if not isinstance(net, MLP):
        raise TypeError(f"net must be an MLP, got {type(net).__name__}")
    n = np.shape(y)[0] if np.ndim(y) else 0
    Y = encode_targets(net.loss, y, n, net.sizes[-1], net.dtype)
    if net.loss == "ce":
        return torch.from_numpy(Y.argmax(axis=1))
    return torch.from_numpy(np.ascontiguousarray(Y))
