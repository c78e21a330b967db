"""Optimizers: the update kernels against plain NumPy references, the Optimizer class against
torch.optim (SGD, SGD with heavy-ball and Nesterov momentum, Adam) over 10 steps on a small MLP,
and the input checks of Optimizer.

Relative error: ``conftest.rel_err``, norm-wise over all parameters of a network. The NumPy
references of the updates are in ``naive.py``.
"""
import copy

import numpy as np
import pytest
import torch

import simcore
from conftest import DTYPES, flat, rel_err
from naive import ref_adam, ref_gd, ref_momentum
from simcore import MLP, Optimizer, optim
from simcore.interop import from_torch
from torch_oracle import torch_loss_and_grad, torch_model

torch.set_num_threads(1)


def _vectors(dtype, n=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=n).astype(dtype), [rng.normal(size=n).astype(dtype) for _ in range(6)]


def close(got, want, dtype):
    """Elementwise within rtol of the largest entry: the kernels may fuse ``theta - eta * g``
    into one FMA, so an entry that cancels to a small value carries the rounding error of the
    large terms it came from."""
    rtol = 1e-14 if dtype == np.float64 else 1e-6
    want = np.asarray(want, np.float64)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(np.abs(want).max(), 1.0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eta", [0.0, 1e-12, 0.1, 1e6])
def test_gd_step_matches_reference(eta, dtype):
    theta, grads = _vectors(dtype)
    ref = theta.astype(np.float64)
    for g in grads:
        optim.gd_step(theta, g, eta)
        ref = ref_gd(ref, g.astype(np.float64), eta)
        assert theta.dtype == dtype
        close(theta, ref, dtype)
    assert np.isfinite(theta).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("mu", [0.0, 0.5, 0.99])
def test_momentum_step_matches_reference(mu, nesterov, dtype):
    theta, grads = _vectors(dtype, seed=1)
    v = np.zeros_like(theta)
    ref, ref_v = theta.astype(np.float64), np.zeros(theta.size)
    for g in grads:
        optim.momentum_step(theta, g, v, 0.05, mu, nesterov)
        ref, ref_v = ref_momentum(ref, g.astype(np.float64), ref_v, 0.05, mu, nesterov)
        close(theta, ref, dtype)
        close(v, ref_v, dtype)


def test_momentum_zero_is_gradient_descent():
    theta, grads = _vectors(np.float64, seed=2)
    a, b, v = theta.copy(), theta.copy(), np.zeros_like(theta)
    for g in grads:
        optim.momentum_step(a, g, v, 0.1, 0.0, True)
        optim.gd_step(b, g, 0.1)
    np.testing.assert_allclose(a, b, rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("betas,eps", [((0.9, 0.999), 1e-8), ((0.5, 0.9), 1e-3), ((0.0, 0.0), 1e-8)])
def test_adam_step_matches_reference(betas, eps, dtype):
    theta, grads = _vectors(dtype, seed=3)
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    ref, ref_m, ref_v = theta.astype(np.float64), np.zeros(theta.size), np.zeros(theta.size)
    for t, g in enumerate(grads, start=1):
        optim.adam_step(theta, g, m, v, t, 0.01, betas[0], betas[1], eps)
        ref, ref_m, ref_v = ref_adam(ref, g.astype(np.float64), ref_m, ref_v, t, 0.01, *betas, eps)
        close(theta, ref, dtype)
        close(m, ref_m, dtype)
        close(v, ref_v, dtype)


def test_adam_corner_cases():
    # first step: m_hat = g, v_hat = g^2, so the step is eta * sign(g) for |g| >> eps
    theta = np.zeros(4)
    g = np.array([1e-3, -5.0, 1e3, -1e-2])
    m, v = np.zeros(4), np.zeros(4)
    optim.adam_step(theta, g, m, v, 1, 0.1, 0.9, 0.999, 1e-12)
    np.testing.assert_allclose(theta, -0.1 * np.sign(g), rtol=1e-8)
    # zero gradients from the start: nothing moves
    theta = np.ones(3)
    optim.adam_step(theta, np.zeros(3), np.zeros(3), np.zeros(3), 1, 0.1, 0.9, 0.999, 1e-8)
    np.testing.assert_array_equal(theta, np.ones(3))
    # huge gradients stay finite (g^2 = 1e200 fits in float64)
    theta = np.zeros(2)
    optim.adam_step(theta, np.array([1e100, -1e100]), np.zeros(2), np.zeros(2), 1, 1e-3, 0.9,
                    0.999, 1e-8)
    np.testing.assert_allclose(theta, [-1e-3, 1e-3], rtol=1e-12)


# --- the Optimizer class against torch.optim ------------------------------------------------

TORCH_OPT = {
    "gd": lambda ps: torch.optim.SGD(ps, lr=0.1),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1),
    "momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "nesterov": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-8),
}
SIMCORE_OPT = {
    "gd": lambda: Optimizer("gd", eta=0.1),
    "sgd": lambda: Optimizer("sgd", eta=0.1),
    "momentum": lambda: Optimizer("momentum", eta=0.1, momentum=0.9),
    "nesterov": lambda: Optimizer("nesterov", eta=0.1, momentum=0.9),
    "adam": lambda: Optimizer("adam", eta=0.01, betas=(0.8, 0.99), eps=1e-8),
}


# Adam is run without batch norm: the bias just before a batch norm has a gradient that is 0 in
# theory and +-1e-17 in practice, and Adam's normalisation turns that noise into eta-sized steps
# of random sign in either implementation.
CASES = [("gd", False), ("sgd", True), ("momentum", False), ("momentum", True),
         ("nesterov", False), ("nesterov", True), ("adam", False)]


@pytest.mark.parametrize("name,bn", CASES)
def test_optimizer_matches_torch_over_10_steps(name, bn):
    rng = np.random.default_rng(0)
    net = MLP([3, 5, 4, 3], activation="tanh", loss="ce", batchnorm=bn)
    params = net.init(seed=1, bias_scale=0.1)
    X = rng.normal(size=(12, 3))
    y = rng.integers(0, 3, 12)
    model, _ = torch_model(net, params)
    topt = TORCH_OPT[name](model.parameters())
    opt = SIMCORE_OPT[name]()
    start = flat(params)
    for step in range(10):
        loss, grads = net.loss_and_grad(params, X, y)
        topt.zero_grad()
        tloss, _, _ = torch_loss_and_grad(net, params, X, y, model=model)
        topt.step()
        opt.step(params, grads)
        assert abs(loss - tloss) <= 1e-12 * abs(tloss), step
        assert rel_err(flat(params), flat(from_torch(model, loss=net.loss)[1])) <= 1e-12, step
    assert opt.t == 10
    assert rel_err(flat(params), start) > 1e-3  # the parameters really moved


def test_gd_and_sgd_are_the_same_rule():
    net = MLP([2, 3, 1])
    X, y = simcore.datasets.moons(16, seed=1)
    pa, pb = net.init(seed=0), net.init(seed=0)
    a, b = Optimizer("gd", eta=0.3), Optimizer("sgd", eta=0.3)
    for _ in range(3):
        a.step(pa, net.loss_and_grad(pa, X, y)[1])
        b.step(pb, net.loss_and_grad(pb, X, y)[1])
    np.testing.assert_array_equal(flat(pa), flat(pb))


def test_optimizer_step_is_the_kernel_on_each_tensor():
    net = MLP([3, 4, 2], loss="ce", batchnorm=False)
    params = net.init(seed=2, bias_scale=0.1)
    grads = [{k: np.random.default_rng(l).normal(size=v.shape) for k, v in p.items()}
             for l, p in enumerate(params)]
    want = [{k: ref_gd(v, grads[l][k], 0.25) for k, v in p.items()} for l, p in enumerate(params)]
    ids = [{k: id(v) for k, v in p.items()} for p in params]
    Optimizer("gd", eta=0.25).step(params, grads)
    np.testing.assert_allclose(flat(params), flat(want), rtol=1e-15)
    assert [{k: id(v) for k, v in p.items()} for p in params] == ids  # updated in place


def test_optimizer_float32_params_stay_float32():
    rng = np.random.default_rng(0)
    for name in ("gd", "momentum", "nesterov", "adam"):
        params = [{"W": rng.normal(size=(3, 4)).astype(np.float32),
                   "b": np.zeros(4, np.float32)}]
        opt = Optimizer(name, eta=1e-2)
        want = {k: v.astype(np.float64) for k, v in params[0].items()}
        for _ in range(3):
            grads = [{"W": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}]  # float64 grads
            opt.step(params, grads)
            if name == "gd":
                want = {k: ref_gd(v, grads[0][k], 1e-2) for k, v in want.items()}
        assert all(v.dtype == np.float32 for v in params[0].values())
        assert np.isfinite(flat(params)).all()
        if name == "gd":
            close(flat(params), flat([want]), np.float32)


def test_optimizer_eta_zero_changes_nothing():
    net = MLP([3, 4, 1])
    params = net.init(seed=0)
    before = flat(params)
    grads = [{k: np.ones_like(v) for k, v in p.items()} for p in params]
    for name in ("gd", "momentum", "nesterov", "adam"):
        Optimizer(name, eta=0.0).step(params, grads)
    np.testing.assert_array_equal(flat(params), before)


def test_optimizers_keep_separate_state():
    # two Optimizer objects (and two networks) never share velocity or moment buffers
    net = MLP([2, 3, 1])
    X, y = simcore.datasets.moons(16, seed=2)
    pa, pb = net.init(seed=0), net.init(seed=0)
    a, b = Optimizer("momentum", eta=0.1), Optimizer("momentum", eta=0.1)
    for _ in range(3):
        a.step(pa, net.loss_and_grad(pa, X, y)[1])
    for _ in range(3):
        b.step(pb, net.loss_and_grad(pb, X, y)[1])
    np.testing.assert_array_equal(flat(pa), flat(pb))


# --- bad input ------------------------------------------------------------------------------

CTOR_BAD = [
    (dict(name="rmsprop"), "name"),
    (dict(name="SGD"), "name"),
    (dict(name=None), "name"),
    (dict(eta=-0.1), "eta"),
    (dict(eta=float("nan")), "eta"),
    (dict(eta=float("inf")), "eta"),
    (dict(eta="0.1"), "eta"),
    (dict(name="momentum", momentum=1.0), "momentum"),
    (dict(name="momentum", momentum=1.5), "momentum"),
    (dict(name="nesterov", momentum=-0.1), "momentum"),
    (dict(name="momentum", momentum=float("nan")), "momentum"),
    (dict(name="adam", betas=(1.0, 0.999)), "betas"),
    (dict(name="adam", betas=(0.9, 1.0)), "betas"),
    (dict(name="adam", betas=(-0.1, 0.999)), "betas"),
    (dict(name="adam", betas=(0.9, float("nan"))), "betas"),
    (dict(name="adam", betas=(0.9,)), "betas"),
    (dict(name="adam", betas=(0.9, 0.99, 0.999)), "betas"),
    (dict(name="adam", betas=0.9), "betas"),
    (dict(name="adam", eps=0.0), "eps"),
    (dict(name="adam", eps=-1e-8), "eps"),
    # an option the chosen rule ignores (it would silently change nothing)
    (dict(name="gd", momentum=0.9), "momentum"),
    (dict(name="sgd", momentum=0.0), "momentum"),
    (dict(name="adam", momentum=0.5), "momentum"),
    (dict(name="momentum", betas=(0.9, 0.99)), "betas"),
    (dict(name="gd", eps=1e-8), "eps"),
    (dict(name="adam", eps=float("nan")), "eps"),
]


@pytest.mark.parametrize("kwargs,arg", CTOR_BAD, ids=[f"{i}-{c[1]}" for i, c in enumerate(CTOR_BAD)])
def test_optimizer_bad_arguments_raise_naming_the_argument(kwargs, arg):
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        Optimizer(**kwargs)


def test_defaults_apply_only_where_used():
    assert Optimizer("momentum").momentum == Optimizer("nesterov").momentum == 0.9
    assert Optimizer("adam").betas == (0.9, 0.999) and Optimizer("adam").eps == 1e-8
    assert Optimizer("momentum", momentum=0.5).momentum == 0.5


def _net_params_grads():
    net = MLP([3, 4, 2], loss="ce", batchnorm=False)
    params = net.init(seed=0)
    grads = [{k: np.ones_like(v) for k, v in p.items()} for p in params]
    return params, grads


def _bad_grads(kind, grads):
    g = copy.deepcopy(grads)
    if kind == "too_few_layers":
        return g[:1]
    if kind == "too_many_layers":
        return g + g[:1]
    if kind == "wrong_shape_first_layer":
        g[0]["W"] = g[0]["W"].T
    elif kind == "wrong_shape_last_layer":
        g[1]["W"] = np.ones((2, 2))
    elif kind == "missing_key":
        del g[1]["b"]
    elif kind == "scalar":
        g[0]["b"] = 1.0
    return g


GRADS_BAD = ["too_few_layers", "too_many_layers", "wrong_shape_first_layer",
             "wrong_shape_last_layer", "missing_key", "scalar"]


@pytest.mark.parametrize("name", ["gd", "nesterov", "adam"])
@pytest.mark.parametrize("kind", GRADS_BAD)
def test_step_with_mismatched_grads_raises(kind, name):
    params, grads = _net_params_grads()
    with pytest.raises(ValueError, match="grads"):
        Optimizer(name).step(params, _bad_grads(kind, grads))


@pytest.mark.parametrize("name", ["gd", "adam"])
@pytest.mark.parametrize("kind", ["wrong_shape_first_layer", "wrong_shape_last_layer"])
def test_rejected_step_changes_nothing(kind, name):
    # a step that raises must leave the parameters, the step count and the optimizer's
    # buffers as they were, so that the caller can fix the input and go on
    params, grads = _net_params_grads()
    opt = Optimizer(name, eta=0.1)
    opt.step(params, grads)  # one good step first, so the buffers are non-trivial
    before = flat(params)
    t = opt.t
    with pytest.raises(ValueError):
        opt.step(params, _bad_grads(kind, grads))
    np.testing.assert_array_equal(flat(params), before)
    assert opt.t == t
    # and the next good step is the same as it would have been without the failed one
    twin_params, _ = _net_params_grads()
    twin = Optimizer(name, eta=0.1)
    twin.step(twin_params, grads)
    twin.step(twin_params, grads)
    opt.step(params, grads)
    np.testing.assert_array_equal(flat(params), flat(twin_params))
