"""simcore.interop against torch itself: for every activation, loss, batch-norm setting and dtype,
the module of to_torch gives MLP.predict's outputs, MLP.loss_and_grad's loss and gradients and
its batch-norm statistics (1e-12 relative in float64), and from_torch reads it back bitwise."""
import copy
import subprocess
import sys

import numpy as np
import pytest
import torch

import simcore
from conftest import flat, max_rel_err
from simcore.activations import NAMES as ACTS
from simcore.losses import NAMES as LOSSES
from simcore.interop import SOFTPLUS_THRESHOLD, from_torch, to_torch, torch_loss, torch_targets
from torch_oracle import torch_grads

torch.set_num_threads(1)
TOL = {"float64": 1e-12, "float32": 1e-5}


def case(act, loss, bn, dtype, seed=0):
    """A tiny network of every kind, parameters off their defaults, moved batch-norm statistics
    and a batch of data."""
    rng = np.random.default_rng(seed)
    n_out = 3 if loss == "ce" else 2
    net = simcore.MLP([3, 5, 4, n_out], activation=act, loss=loss, batchnorm=bn, dtype=dtype)
    params = net.init(seed=seed, scale=1.5, bias_scale=0.3)
    state = net.init_state() if bn else None
    if bn:
        for p in params[:-1]:
            p["gamma"][:] = rng.uniform(0.5, 1.5, p["gamma"].shape)
            p["beta"][:] = rng.normal(0, 0.3, p["beta"].shape)
        for s in state[:-1]:
            s["running_mean"][:] = rng.normal(0, 0.5, s["running_mean"].shape)
            s["running_var"][:] = rng.uniform(0.5, 2.0, s["running_var"].shape)
    X = (rng.normal(size=(9, 3)) * 2).astype(dtype)
    if loss == "ce":
        y = rng.integers(0, n_out, 9)
    elif loss == "bce":
        y = rng.integers(0, 2, (9, n_out))
    elif loss == "mse_sigmoid":
        y = rng.uniform(0, 1, (9, n_out))
    else:
        y = rng.normal(size=(9, n_out))
    return net, params, state, X, y


def output(net, z):
    """The network's output from torch logits, as MLP.predict computes it."""
    if net.loss == "ce":
        return torch.softmax(z, dim=1)
    return z if net.loss == "mse" else torch.sigmoid(z)


CASES = [(a, lo, bn, dt) for a in ACTS for lo in LOSSES for bn in (False, True)
         for dt in ("float64", "float32")]


@pytest.mark.parametrize("act,loss,bn,dtype", CASES)
def test_to_torch_computes_the_mlp(act, loss, bn, dtype):
    net, params, state, X, y = case(act, loss, bn, dtype)
    tol = TOL[dtype]
    Xt = torch.from_numpy(X)
    # training mode: batch statistics; loss, gradients and the running statistics' update
    model = to_torch(net, params, state)
    assert next(model.parameters()).dtype == (torch.float64 if dtype == "float64" else torch.float32)
    z = model(Xt)
    tloss = torch_loss(net)(z, torch_targets(net, y))
    tloss.backward()
    assert max_rel_err(net.predict(params, X), output(net, z).detach().numpy().squeeze()) <= tol
    mine = copy.deepcopy(state)
    loss_value, grads = net.loss_and_grad(params, X, y, state=mine)
    assert abs(loss_value - tloss.item()) <= tol * abs(tloss.item())
    assert max_rel_err(flat(grads), flat(torch_grads(net, model))) <= tol
    if bn:
        _, _, tstate = from_torch(model, loss=loss)
        assert max_rel_err(flat(tstate), flat(mine)) <= tol
        assert max_rel_err(flat(tstate), flat(state)) > 1e-3  # both moved the statistics
    # eval mode: the running statistics carried from ``state``
    model = to_torch(net, params, state).eval()
    with torch.no_grad():
        out = output(net, model(Xt)).numpy().squeeze()
    assert max_rel_err(net.predict(params, X, state=state), out) <= tol


@pytest.mark.parametrize("act,loss,bn,dtype", CASES)
def test_from_torch_round_trips_bitwise(act, loss, bn, dtype):
    net, params, state, _, _ = case(act, loss, bn, dtype, seed=1)
    net2, params2, state2 = from_torch(to_torch(net, params, state), loss=loss, init=net.init_name)
    assert repr(net2) == repr(net)
    assert flat(params2).dtype == net.dtype and flat(params2).tobytes() == flat(params).tobytes()
    if bn:
        assert flat(state2).tobytes() == flat(state).tobytes()
    else:
        assert state2 is None


def test_from_torch_reads_a_module_built_in_torch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Softplus(),
                                torch.nn.Linear(6, 3)).double()
    model(torch.randn(16, 4, dtype=torch.float64))  # move the running statistics
    net, params, state = from_torch(model, loss="ce")
    assert (net.sizes, net.activation, net.batchnorm, net.dtype) == ([4, 6, 3], "softplus", True, np.float64)
    assert np.array_equal(params[0]["W"], model[0].weight.detach().numpy().T)
    assert np.array_equal(state[0]["running_var"], model[1].running_var.numpy())
    X = np.random.default_rng(0).normal(size=(5, 4))
    with torch.no_grad():
        probs = torch.softmax(model.eval()(torch.from_numpy(X)), dim=1).numpy()
    # torch's default Softplus threshold (20) is linear above 20: equal to rounding here
    assert max_rel_err(net.predict(params, X, state=state), probs) <= 1e-12
    linear = from_torch(torch.nn.Sequential(torch.nn.Linear(2, 1)))[0]
    assert linear.sizes == [2, 1] and linear.dtype == np.float32


def test_softplus_module_is_exact_and_finite_for_large_inputs():
    net = simcore.MLP([1, 1, 1], activation="softplus", loss="mse")
    params = [{"W": np.ones((1, 1)), "b": np.zeros(1)}, {"W": np.ones((1, 1)), "b": np.zeros(1)}]
    X = np.array([[-800.0], [-30.0], [0.0], [25.0], [SOFTPLUS_THRESHOLD + 1], [800.0]])
    with torch.no_grad():
        out = to_torch(net, params)(torch.from_numpy(X)).numpy()[:, 0]
    assert np.isfinite(out).all()
    assert max_rel_err(out, net.predict(params, X)) <= 1e-15


def test_torch_loss_and_targets_shapes():
    net = simcore.MLP([2, 1], loss="bce")
    assert isinstance(torch_loss(net), torch.nn.BCEWithLogitsLoss)
    assert torch_targets(net, [0, 1, 1]).shape == (3, 1)
    ce = simcore.MLP([2, 3], loss="ce")
    t = torch_targets(ce, [2, 0])
    assert t.dtype == torch.int64 and t.tolist() == [2, 0]
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 2\]"):
        torch_targets(ce, [3, 0])
    with pytest.raises(ValueError, match="y must"):
        torch_targets(net, 0.5)


L = torch.nn.Linear


@pytest.mark.parametrize("mods,match", [
    ([], "module is an empty Sequential"),
    ([L(2, 3), torch.nn.Dropout(0.1), L(3, 1)], r"module\[1\] is Dropout\(p=0.1.*which simcore cannot convert"),
    ([L(2, 3), torch.nn.ELU(), L(3, 1)], r"module\[1\] is ELU\(alpha=1.0\), which simcore cannot"),
    ([L(2, 3), torch.nn.LeakyReLU(0.2), L(3, 1)], r"module\[1\] is LeakyReLU\(negative_slope=0.2\)"),
    ([L(2, 3), torch.nn.Softplus(beta=2), L(3, 1)], r"module\[1\] is Softplus\(beta=2"),
    ([L(2, 3), torch.nn.Tanh(), L(3, 1), torch.nn.Sigmoid()],
     r"module ends with Sigmoid\(\) \(module\[3\]\) after its last Linear"),
    ([L(2, 3), torch.nn.Tanh(), L(3, 3), torch.nn.ReLU(), L(3, 1)],
     r"module\[3\] is ReLU\(\), but an earlier hidden layer uses 'tanh'"),
    ([L(2, 3), torch.nn.Tanh(), torch.nn.Tanh(), L(3, 1)], r"module\[2\] is Tanh\(\): simcore expects a Linear"),
    ([L(2, 3), torch.nn.BatchNorm1d(3), torch.nn.Tanh(), L(3, 3), torch.nn.Tanh(), L(3, 1)],
     "BatchNorm1d on some hidden layers only"),
    ([L(2, 3), torch.nn.BatchNorm1d(3, eps=1e-3), torch.nn.Tanh(), L(3, 1)],
     r"module\[1\] is a BatchNorm1d that simcore cannot convert: eps=0.001"),
    ([L(2, 3), torch.nn.BatchNorm1d(3, momentum=None), torch.nn.Tanh(), L(3, 1)], "momentum=None"),
    ([L(2, 3), torch.nn.BatchNorm1d(3, affine=False), torch.nn.Tanh(), L(3, 1)], "affine=False"),
    ([L(2, 3), torch.nn.BatchNorm1d(3, track_running_stats=False), torch.nn.Tanh(), L(3, 1)],
     "track_running_stats=False"),
    ([L(2, 3), torch.nn.BatchNorm1d(3)], r"module ends with a BatchNorm1d \(module\[1\]\)"),
    ([L(2, 3, bias=False), torch.nn.Tanh(), L(3, 1)], r"module\[0\] is a Linear without bias"),
    ([L(2, 3), torch.nn.Tanh(), L(4, 1)], "widths do not chain at hidden layer 1: 3 units, then Linear"),
    ([L(2, 3), torch.nn.Tanh(), L(3, 1).double()], r"must all be torch.float32 or all torch.float64, got \['torch.float32', 'torch.float64'\]"),
    ([L(2, 3).half(), torch.nn.Tanh(), L(3, 1).half()], r"got \['torch.float16'\]"),
])
def test_from_torch_names_what_it_cannot_convert(mods, match):
    with pytest.raises(ValueError, match=match):
        from_torch(torch.nn.Sequential(*mods))


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="module must be a torch.nn.Sequential, got Linear"):
        from_torch(L(2, 1))
    net = simcore.MLP([2, 3, 1], batchnorm=True)
    with pytest.raises(TypeError, match="net must be an MLP, got str"):
        to_torch("net", net.init())
    with pytest.raises(ValueError, match=r"params must be a list of 2 per-layer dicts"):
        to_torch(net, net.init()[:1])
    with pytest.raises(ValueError, match=r"state\[0\]\['running_mean'\] must be a finite array of shape \(3,\)"):
        to_torch(net, net.init(), [{"running_mean": np.zeros(2), "running_var": np.ones(3)}, {}])
    with pytest.raises(ValueError, match="loss must be one of"):
        from_torch(to_torch(net, net.init()), loss="hinge")
    for fn in (torch_loss, torch_targets):
        with pytest.raises(TypeError, match="net must be an MLP"):
            fn(None, *([[0]] if fn is torch_targets else []))


def test_torch_is_optional(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # ``import torch`` now raises ImportError
    net = simcore.MLP([2, 1])
    for call in (lambda: to_torch(net, net.init()), lambda: from_torch(None),
                 lambda: torch_loss(net), lambda: torch_targets(net, [0])):
        with pytest.raises(ImportError, match=r'simcore.interop needs PyTorch.*pip install -e "\.\[dev\]"'):
            call()


def test_import_simcore_does_not_import_torch():
    code = "import sys, simcore, simcore.io, simcore.interop; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
