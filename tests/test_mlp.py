"""simcore.MLP: initialisation, gradients by central differences, API behaviour, input checks.

The PyTorch oracle of ``loss_and_grad`` lives in ``test_mlp_oracle.py``; here the network is
checked against a plain NumPy forward pass (``naive.ref_forward``) and by central differences.

Gradient error: ``conftest.rel_err``, norm-wise over the whole flattened gradient, so that
entries that are zero in theory, such as the bias just before a batch norm, and come out as
+-1e-17 do not dominate.

Central differences ``(L(theta + h e_i) - L(theta - h e_i)) / (2 h)`` with ``h = 1e-6`` in
float64; relu kinks are avoided by choosing seeds whose hidden pre-activations all lie at least
1e-3 from 0 (checked with the NumPy reference, see ``_off_kinks``).
"""
import copy

import numpy as np
import pytest

import simcore
from conftest import ACTS, FD_TOL, INITS, LOSSES, central_diff, flat, rel_err
from naive import ref_forward, ref_forward_layers, ref_loss, ref_output
from simcore import MLP, _validate
from simcore.mlp import TRAIN_NO_UPDATE, loss_and_grad_kernel


def targets(loss, n, k, rng):
    if loss == "ce":
        return rng.integers(0, k, n)
    if loss == "bce":
        return rng.integers(0, 2, n) if k == 1 else rng.integers(0, 2, (n, k))
    if loss == "mse_sigmoid":
        return rng.uniform(0, 1, n) if k == 1 else rng.uniform(0, 1, (n, k))
    return rng.normal(size=n) if k == 1 else rng.normal(size=(n, k))


def _off_kinks(net, params, X):
    _, hidden = ref_forward(net, params, X)
    return all(np.abs(h).min() > 1e-3 for h in hidden)


def make_case(act, loss, bn, seed, dtype="float64", n=6):
    """A small random network, data and targets; relu-type nets keep off their kinks."""
    k = 3 if loss == "ce" else (1 + seed % 2)
    for attempt in range(100):
        rng = np.random.default_rng(seed * 1000 + attempt)
        net = MLP([3, 4, 3, k], activation=act, loss=loss, batchnorm=bn, dtype=dtype)
        params = net.init(seed=seed * 1000 + attempt, scale=1.2, bias_scale=0.3)
        if bn:  # off the defaults so the gamma / beta gradients are exercised
            for p in params[:-1]:
                p["gamma"][:] = rng.uniform(0.5, 1.5, p["gamma"].shape)
                p["beta"][:] = rng.normal(0, 0.3, p["beta"].shape)
        X = rng.normal(size=(n, 3)).astype(dtype)
        y = targets(loss, n, k, rng)
        if act not in ("relu", "leaky_relu") or _off_kinks(net, params, X):
            return net, params, X, y
    raise AssertionError("no seed found off the relu kinks")


# ============================================================================================
# Gradients by central differences
# ============================================================================================

@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTS)
def test_loss_and_grad_by_central_differences(act, loss, bn):
    net, params, X, y = make_case(act, loss, bn, seed=ACTS.index(act) + 7 * LOSSES.index(loss))
    value, grads = net.loss_and_grad(params, X, y)
    theta = net.pack(params)

    def loss_at(t):
        return net.loss_and_grad(net.unpack(t), X, y)[0]

    fd = central_diff(loss_at, theta)
    assert value == loss_at(theta)
    assert rel_err(net.pack(grads, name="grads"), fd) < FD_TOL


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("loss", LOSSES)
def test_loss_value_matches_numpy_reference(loss, bn):
    net, params, X, y = make_case("tanh", loss, bn, seed=3, n=9)
    want, logits = ref_loss(net, params, X, y)
    assert logits.shape[1] == net.sizes[-1]
    assert net.loss_and_grad(params, X, y)[0] == pytest.approx(want, rel=1e-13)


# ============================================================================================
# Initialisation
# ============================================================================================

def expected_std(init, fan_in, fan_out):
    return {"glorot": np.sqrt(2 / (fan_in + fan_out)), "he": np.sqrt(2 / fan_in),
            "lecun": np.sqrt(1 / fan_in), "normal": np.sqrt(1 / fan_in),
            "uniform": 1 / np.sqrt(3 * fan_in)}[init]


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_init_shapes_and_dtypes(dtype, bn):
    net = MLP([4, 5, 3, 2], loss="ce", batchnorm=bn, dtype=dtype)
    params = net.init(seed=1)
    assert len(params) == 3
    for l, (p, (fi, fo)) in enumerate(zip(params, [(4, 5), (5, 3), (3, 2)])):
        want = {"W": (fi, fo), "b": (fo,)}
        if bn and l < 2:
            want.update(gamma=(fo,), beta=(fo,))
        assert {k: v.shape for k, v in p.items()} == want
        assert all(v.dtype == np.dtype(dtype) for v in p.values())
    assert [set(p) for p in params] == [set(s) for s in net.param_shapes()]


@pytest.mark.parametrize("init", INITS)
def test_init_weight_distribution(init):
    fi, fo = 500, 400  # 200,000 weights: the sample std is within 0.2 % (1 s.e.) of the true one
    net = MLP([fi, fo, 1], init=init)
    W = net.init(seed=11)[0]["W"]
    sd = expected_std(init, fi, fo)
    assert abs(W.mean()) < 5 * sd / np.sqrt(W.size)
    assert W.std() == pytest.approx(sd, rel=0.01)
    kurt = np.mean((W / W.std()) ** 4)
    if init == "uniform":
        bound = 1 / np.sqrt(fi)
        assert np.abs(W).max() <= bound and np.abs(W).max() > 0.999 * bound
        assert kurt == pytest.approx(1.8, abs=0.03)  # U[-c, c]
    else:
        assert kurt == pytest.approx(3.0, abs=0.1)  # Gaussian
        assert np.mean(np.abs(W) < sd) == pytest.approx(0.6827, abs=0.005)
    assert np.all(net.init(seed=11)[0]["b"] == 0)  # biases default to zero


@pytest.mark.parametrize("init", INITS)
def test_init_scale_multiplies_weight_std(init):
    net = MLP([60, 50, 1], init=init)
    W1 = net.init(seed=4)[0]["W"]
    W3 = net.init(seed=4, scale=2.5)[0]["W"]
    np.testing.assert_allclose(W3, 2.5 * W1, rtol=1e-14)
    assert np.all(net.init(seed=4, scale=0.0)[0]["W"] == 0)


def test_init_he_and_lecun_share_their_normals():
    # same stream, std ratio sqrt(2): the draws differ only by the constant
    W_he = MLP([30, 20, 1], init="he").init(seed=5)[0]["W"]
    W_le = MLP([30, 20, 1], init="lecun").init(seed=5)[0]["W"]
    W_no = MLP([30, 20, 1], init="normal").init(seed=5)[0]["W"]
    np.testing.assert_allclose(W_he, np.sqrt(2) * W_le, rtol=1e-14)
    np.testing.assert_array_equal(W_le, W_no)


def test_init_bias_scale():
    net = MLP([3, 4000, 1])
    p0 = net.init(seed=2)
    p = net.init(seed=2, bias_scale=0.3)
    b = p[0]["b"]
    assert b.std() == pytest.approx(0.3, rel=0.05)  # 4000 draws: s.e. 1.1 %
    assert abs(b.mean()) < 5 * 0.3 / np.sqrt(b.size)
    np.testing.assert_array_equal(p[0]["W"], p0[0]["W"])  # biases come from their own stream
    np.testing.assert_allclose(net.init(seed=2, bias_scale=0.6)[0]["b"], 2 * b, rtol=1e-14)


def test_init_is_deterministic_and_seeds_and_layers_differ():
    net = MLP([6, 6, 6, 6])
    a = net.init(seed=3, bias_scale=0.5)
    b = net.init(seed=3, bias_scale=0.5)
    c = net.init(seed=4, bias_scale=0.5)
    np.testing.assert_array_equal(flat(a), flat(b))
    assert np.all(a[0]["W"] != c[0]["W"]) and np.all(a[0]["b"] != c[0]["b"])
    # layers of equal shape draw different numbers; weights and biases differ from each other
    assert np.all(a[0]["W"] != a[1]["W"]) and np.all(a[1]["W"] != a[2]["W"])
    assert np.all(a[0]["b"] != a[1]["b"])
    # a fresh MLP object with the same configuration gives the same numbers
    np.testing.assert_array_equal(flat(MLP([6, 6, 6, 6]).init(seed=3, bias_scale=0.5)), flat(a))
    # the weights of layer l do not depend on the layers after it
    np.testing.assert_array_equal(MLP([6, 6, 2]).init(seed=3)[0]["W"], net.init(seed=3)[0]["W"])


@pytest.mark.parametrize("init", INITS)
def test_init_float32_is_float64_rounded(init):
    kw = dict(sizes=[5, 7, 3], loss="ce", init=init, batchnorm=True)
    p64 = MLP(**kw, dtype="float64").init(seed=9, scale=1.3, bias_scale=0.2)
    p32 = MLP(**kw, dtype="float32").init(seed=9, scale=1.3, bias_scale=0.2)
    for a, b in zip(p64, p32):
        for key in a:
            assert b[key].dtype == np.float32
            np.testing.assert_array_equal(b[key], a[key].astype(np.float32))


def test_init_batchnorm_gamma_one_beta_zero_on_hidden_layers_only():
    net = MLP([3, 5, 4, 2], loss="ce", batchnorm=True)
    params = net.init(seed=0, bias_scale=0.5)
    for p in params[:-1]:
        assert np.all(p["gamma"] == 1) and np.all(p["beta"] == 0)
    assert set(params[-1]) == {"W", "b"}
    state = net.init_state()
    assert [set(s) for s in state] == [{"running_mean", "running_var"}] * 2 + [set()]
    assert np.all(state[0]["running_mean"] == 0) and np.all(state[1]["running_var"] == 1)


# ============================================================================================
# API behaviour
# ============================================================================================

def test_predict_bce_gives_probabilities_of_shape_n():
    net, params, X, _ = make_case("tanh", "bce", False, seed=0)
    params[-1]["W"] *= 30  # push some outputs into saturation
    out = net.predict(params, X)
    assert out.shape == (len(X),) and np.all((out >= 0) & (out <= 1))
    np.testing.assert_allclose(out, ref_output(net, ref_forward(net, params, X)[0]), rtol=1e-13)


@pytest.mark.parametrize("bn", [False, True])
def test_predict_ce_rows_sum_to_one(bn):
    net, params, X, _ = make_case("relu", "ce", bn, seed=2)
    out = net.predict(params, X)
    assert out.shape == (len(X), 3) and np.all(out >= 0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(out, ref_output(net, ref_forward(net, params, X)[0]), rtol=1e-12)


@pytest.mark.parametrize("k", [1, 2])
def test_predict_mse_gives_values(k):
    net = MLP([3, 4, k], activation="softplus", loss="mse")
    params = net.init(seed=0, bias_scale=1.0)
    X = np.random.default_rng(0).normal(size=(5, 3))
    out = net.predict(params, X)
    logits, _ = ref_forward(net, params, X)
    assert out.shape == ((5,) if k == 1 else (5, k))
    np.testing.assert_allclose(out, logits[:, 0] if k == 1 else logits, rtol=1e-13)


def test_predict_mse_sigmoid_gives_sigmoid_outputs():
    net, params, X, _ = make_case("sigmoid", "mse_sigmoid", False, seed=0)
    out = net.predict(params, X)
    np.testing.assert_allclose(out, ref_output(net, ref_forward(net, params, X)[0]), rtol=1e-13)


def test_predict_single_sample():
    net = MLP([2, 3, 1])
    params = net.init(seed=0)
    X = np.array([[0.3, -0.2]])
    out = net.predict(params, X)
    assert out.shape == (1,)
    assert out[0] == pytest.approx(net.predict(params, np.vstack([X, X]))[0], rel=1e-15)


def test_state_updates_running_stats_in_place_and_eval_uses_them():
    net, params, X, y = make_case("tanh", "ce", True, seed=4, n=10)
    state = net.init_state()
    arrays = [(s["running_mean"], s["running_var"]) for s in state[:-1]]
    ref_state = [{k: v.copy() for k, v in s.items()} for s in state]
    rng = np.random.default_rng(1)
    for step in range(3):
        Xs = X + 0.3 * step * rng.normal(size=X.shape)
        net.loss_and_grad(params, Xs, y, state=state)
        ref_forward(net, params, Xs, state=ref_state, update=True)
    for l, (rm, rv) in enumerate(arrays):
        assert state[l]["running_mean"] is rm and state[l]["running_var"] is rv  # same objects
        np.testing.assert_allclose(rm, ref_state[l]["running_mean"], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(rv, ref_state[l]["running_var"], rtol=1e-13)
        assert not np.all(rm == 0) and not np.all(rv == 1)
    # predict with state: eval mode from the running statistics, state untouched
    before = copy.deepcopy(state)
    Xt = rng.normal(size=(4, 3))
    out = net.predict(params, Xt, state=state)
    np.testing.assert_allclose(out, ref_output(net, ref_forward(net, params, Xt, state=state)[0]),
                               rtol=1e-12)
    for s, b in zip(state, before):
        for key in s:
            np.testing.assert_array_equal(s[key], b[key])
    # eval mode works for a single sample
    assert net.predict(params, Xt[:1], state=state).shape == (1, 3)


def test_loss_and_grad_without_state_changes_no_state():
    net, params, X, y = make_case("relu", "bce", True, seed=5)
    state = net.init_state()
    net.loss_and_grad(params, X, y)  # no state: training-mode statistics, nothing updated
    assert np.all(state[0]["running_mean"] == 0) and np.all(state[0]["running_var"] == 1)


@pytest.mark.parametrize("bn", [False, True])
def test_float32_network_returns_float32_grads(bn):
    net32, params32, X, y = make_case("tanh", "bce", bn, seed=6, dtype="float32")
    net64 = MLP(net32.sizes, activation="tanh", loss="bce", batchnorm=bn, dtype="float64")
    params64 = [{k: v.astype(np.float64) for k, v in p.items()} for p in params32]
    loss32, g32 = net32.loss_and_grad(params32, X, y)
    loss64, g64 = net64.loss_and_grad(params64, X.astype(np.float64), y)
    assert isinstance(loss32, float)
    assert all(v.dtype == np.float32 for g in g32 for v in g.values())
    assert net32.predict(params32, X).dtype == np.float32
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    assert rel_err(flat(g32), flat(g64)) < 1e-4
    # float64 inputs to a float32 network are accepted and give float32 results too
    assert all(v.dtype == np.float32 for g in net32.loss_and_grad(params64, X.astype(float), y)[1]
               for v in g.values())


def test_grads_have_the_layout_of_params():
    net, params, X, y = make_case("softplus", "mse", True, seed=8)
    _, grads = net.loss_and_grad(params, X, y)
    assert [{k: v.shape for k, v in g.items()} for g in grads] == \
           [{k: v.shape for k, v in p.items()} for p in params]


@pytest.mark.parametrize("bn", [False, True])
def test_loss_and_grad_does_not_modify_params_or_inputs(bn):
    net, params, X, y = make_case("leaky_relu", "ce", bn, seed=9)
    saved = copy.deepcopy(params)
    X0, y0 = X.copy(), y.copy()
    net.loss_and_grad(params, X, y)
    net.loss_and_grad(params, X, y, state=net.init_state() if bn else None)
    net.predict(params, X)
    for p, s in zip(params, saved):
        for key in p:
            np.testing.assert_array_equal(p[key], s[key])
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)


def test_gradient_descent_decreases_loss_on_moons():
    X, y = simcore.datasets.moons(128, seed=0)
    net = MLP([2, 16, 1], activation="tanh", loss="bce")
    params = net.init(seed=0)
    opt = simcore.Optimizer("gd", eta=0.5)
    history = []
    for _ in range(100):
        loss, grads = net.loss_and_grad(params, X, y)
        history.append(loss)
        opt.step(params, grads)
    final = net.loss_and_grad(params, X, y)[0]
    assert final < 0.6 * history[0]
    assert final < 0.45
    accuracy = np.mean((net.predict(params, X) > 0.5) == y)
    assert accuracy > 0.8
    # gradient descent with a small step: the loss decreases at (almost) every step
    assert np.mean(np.diff(history) < 0) > 0.95


def test_identical_calls_give_identical_results():
    net, params, X, y = make_case("sigmoid", "mse_sigmoid", True, seed=10)
    l1, g1 = net.loss_and_grad(params, X, y)
    l2, g2 = net.loss_and_grad(params, X, y)
    assert l1 == l2
    np.testing.assert_array_equal(flat(g1), flat(g2))


# ============================================================================================
# Bad input raises ValueError naming the argument
# ============================================================================================

CTOR_BAD = [
    (dict(sizes=[]), "sizes"),
    (dict(sizes=[3]), "sizes"),
    (dict(sizes=[3, 0, 1]), "sizes"),
    (dict(sizes=[0, 1]), "sizes"),
    (dict(sizes=[3, -2, 1]), "sizes"),
    (dict(sizes=[3, 2.5, 1]), "sizes"),
    (dict(sizes=[3.0, 1]), "sizes"),
    (dict(sizes=[3, True]), "sizes"),
    (dict(sizes=["3", 1]), "sizes"),
    (dict(sizes=None), "sizes"),
    (dict(sizes=5), "sizes"),
    (dict(activation="swish"), "activation"),
    (dict(activation=None), "activation"),
    (dict(loss="hinge"), "loss"),
    (dict(loss="CE"), "loss"),
    (dict(init="xavier"), "init"),
    (dict(init=1), "init"),
    (dict(dtype="int32"), "dtype"),
    (dict(dtype="float16"), "dtype"),
    (dict(dtype=np.int64), "dtype"),
    (dict(dtype="complex128"), "dtype"),
    (dict(dtype="nonsense"), "dtype"),
    (dict(batchnorm=1), "batchnorm"),
    (dict(batchnorm="yes"), "batchnorm"),
    (dict(batchnorm=None), "batchnorm"),
    (dict(sizes=[3, 4, 1], loss="ce"), "sizes|loss"),
]


@pytest.mark.parametrize("kwargs,arg", CTOR_BAD, ids=[f"{i}-{c[1]}" for i, c in enumerate(CTOR_BAD)])
def test_constructor_bad_input_raises_naming_the_argument(kwargs, arg):
    full = dict(sizes=[3, 4, 2])
    full.update(kwargs)
    with pytest.raises(ValueError, match=arg):
        MLP(**full)


def test_constructor_accepts_numpy_integers_and_dtypes():
    net = MLP(np.array([3, 4, 2]), dtype=np.float32, batchnorm=np.True_)
    assert net.sizes == [3, 4, 2] and net.dtype == np.float32 and net.batchnorm is True


INIT_BAD = [
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(seed="0"), "seed"),
    (dict(seed=True), "seed"),
    (dict(seed=2 ** 64), "seed"),
    (dict(scale=-0.1), "scale"),
    (dict(scale=float("nan")), "scale"),
    (dict(scale=float("inf")), "scale"),
    (dict(scale="1"), "scale"),
    (dict(bias_scale=float("nan")), "bias_scale"),
    (dict(bias_scale=-1.0), "bias_scale"),
    (dict(bias_scale=None), "bias_scale"),
]


@pytest.mark.parametrize("kwargs,arg", INIT_BAD, ids=[f"{i}-{c[1]}" for i, c in enumerate(INIT_BAD)])
def test_init_bad_input_raises_naming_the_argument(kwargs, arg):
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        MLP([3, 2]).init(**kwargs)


def _valid(loss="bce", bn=False, k=None):
    k = k or (3 if loss == "ce" else 1)
    net = MLP([3, 4, k], loss=loss, batchnorm=bn)
    params = net.init(seed=0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 3))
    y = targets(loss, 5, k, rng)
    return net, params, X, y


def _params_bad(kind):
    net, params, _, _ = _valid()
    p = copy.deepcopy(params)
    if kind == "too_short":
        p = p[:1]
    elif kind == "too_long":
        p = p + p[:1]
    elif kind == "not_a_list":
        p = {"W": p[0]["W"]}
    elif kind == "missing_key":
        del p[0]["b"]
    elif kind == "extra_key":
        p[1]["gamma"] = np.ones(1)
    elif kind == "layer_not_dict":
        p[0] = (p[0]["W"], p[0]["b"])
    elif kind == "wrong_shape":
        p[0]["W"] = p[0]["W"].T
    elif kind == "wrong_bias_shape":
        p[1]["b"] = np.zeros(2)
    elif kind == "nan":
        p[0]["W"][1, 1] = np.nan
    elif kind == "inf":
        p[1]["b"][0] = np.inf
    elif kind == "strings":
        p[0]["b"] = np.array(["a"] * 4)
    return p


PARAMS_BAD = ["too_short", "too_long", "not_a_list", "missing_key", "extra_key", "layer_not_dict",
              "wrong_shape", "wrong_bias_shape", "nan", "inf", "strings"]


@pytest.mark.parametrize("kind", PARAMS_BAD)
def test_bad_params_raise_naming_the_argument(kind):
    net, _, X, y = _valid()
    with pytest.raises(ValueError, match="params"):
        net.loss_and_grad(_params_bad(kind), X, y)
    with pytest.raises(ValueError, match="params"):
        net.predict(_params_bad(kind), X)


X_BAD = {
    "1d": np.zeros(3),
    "3d": np.zeros((2, 5, 3)),
    "wrong_width": np.zeros((5, 2)),
    "nan": np.array([[0.0, np.nan, 1.0]] * 5),
    "inf": np.array([[0.0, -np.inf, 1.0]] * 5),
    "strings": np.array([["a", "b", "c"]] * 5),
    "complex": np.zeros((5, 3), complex),
    "empty": np.zeros((0, 3)),
    "ragged": [[1.0, 2.0, 3.0], [1.0]],
}


@pytest.mark.parametrize("kind", list(X_BAD))
def test_bad_X_raises_naming_the_argument(kind):
    net, params, _, y = _valid()
    X = X_BAD[kind]
    if kind in ("3d", "1d"):
        y = y[:2] if kind == "3d" else y[:1]
    with pytest.raises(ValueError, match=r"\bX\b"):
        net.loss_and_grad(params, X, y)
    with pytest.raises(ValueError, match=r"\bX\b"):
        net.predict(params, X)


Y_BAD = [
    ("bce", "wrong_length", lambda y: y[:-1]),
    ("bce", "too_long", lambda y: np.r_[y, 0]),
    ("bce", "label_2", lambda y: np.r_[y[:-1], 2]),
    ("bce", "label_-1", lambda y: np.r_[y[:-1], -1]),
    ("bce", "label_half", lambda y: np.r_[y[:-1], 0.5]),
    ("bce", "pm1_labels", lambda y: 2 * y - 1),
    ("bce", "nan", lambda y: np.r_[y[:-1], np.nan]),
    ("bce", "strings", lambda y: y.astype(str)),
    ("bce", "2d_wrong", lambda y: np.c_[y, y]),
    ("ce", "label_out_of_range", lambda y: np.r_[y[:-1], 3]),
    ("ce", "negative_label", lambda y: np.r_[y[:-1], -1]),
    ("ce", "non_integer", lambda y: np.r_[y[:-1], 1.5]),
    ("ce", "one_hot_given", lambda y: np.eye(3)[y]),
    ("ce", "wrong_length", lambda y: y[:-1]),
    ("ce", "nan", lambda y: np.r_[y[:-1], np.nan]),
    ("mse", "nan", lambda y: np.r_[y[:-1], np.nan]),
    ("mse", "inf", lambda y: np.r_[y[:-1], np.inf]),
    ("mse", "wrong_length", lambda y: y[:-1]),
    ("mse", "wrong_width", lambda y: np.c_[y, y]),
    ("mse_sigmoid", "nan", lambda y: np.r_[y[:-1], np.nan]),
]


@pytest.mark.parametrize("loss,kind,make", Y_BAD, ids=[f"{c[0]}-{c[1]}" for c in Y_BAD])
def test_bad_y_raises_naming_the_argument(loss, kind, make):
    net, params, X, y = _valid(loss)
    with pytest.raises(ValueError, match=r"\by\b"):
        net.loss_and_grad(params, X, make(y))


def test_batchnorm_with_a_single_sample_raises():
    net, params, X, y = _valid("bce", bn=True)
    with pytest.raises(ValueError, match=r"\bX\b"):
        net.loss_and_grad(params, X[:1], y[:1])
    with pytest.raises(ValueError, match=r"\bX\b"):
        net.loss_and_grad(params, X[:1], y[:1], state=net.init_state())
    with pytest.raises(ValueError, match=r"\bX\b"):
        net.predict(params, X[:1])  # no state: batch statistics need 2 rows


def _state_bad(kind, net):
    s = net.init_state()
    if kind == "too_short":
        return s[:1]
    if kind == "not_a_list":
        return s[0]
    if kind == "missing_key":
        del s[0]["running_var"]
    elif kind == "layer_not_dict":
        s[0] = None
    elif kind == "wrong_shape":
        s[0]["running_mean"] = np.zeros(3)
    elif kind == "nan":
        s[0]["running_mean"][0] = np.nan
    elif kind == "inf":
        s[0]["running_var"][0] = np.inf
    elif kind == "negative_var":
        s[0]["running_var"][0] = -1.0
    elif kind == "strings":
        s[0]["running_mean"] = np.array(["a"] * 4)
    return s


STATE_BAD = ["too_short", "not_a_list", "missing_key", "layer_not_dict", "wrong_shape", "nan",
             "inf", "negative_var"]


@pytest.mark.parametrize("kind", STATE_BAD)
def test_bad_state_raises_naming_the_argument(kind):
    net, params, X, y = _valid("bce", bn=True)
    with pytest.raises(ValueError, match="state"):
        net.loss_and_grad(params, X, y, state=_state_bad(kind, net))
    with pytest.raises(ValueError, match="state"):
        net.predict(params, X, state=_state_bad(kind, net))


def test_state_with_strings_raises_value_error():
    net, params, X, y = _valid("bce", bn=True)
    with pytest.raises(ValueError, match="state"):
        net.loss_and_grad(params, X, y, state=_state_bad("strings", net))


@pytest.mark.parametrize("kind", ["lists", "int_arrays", "read_only"])
def test_state_that_cannot_be_updated_in_place_raises(kind):
    # loss_and_grad updates the running statistics in place (momentum 0.1): a state whose
    # entries cannot hold the new float values must be rejected up front with a ValueError
    # naming ``state``, not crash after the pass (lists) or silently truncate (int arrays)
    net, params, X, y = _valid("bce", bn=True)
    if kind == "lists":
        state = [{"running_mean": [0.0] * 4, "running_var": [1.0] * 4}, {}]
    elif kind == "int_arrays":
        state = [{"running_mean": np.zeros(4, int), "running_var": np.ones(4, int)}, {}]
    else:
        state = net.init_state()
        for v in state[0].values():
            v.flags.writeable = False
    with pytest.raises(ValueError, match="state"):
        net.loss_and_grad(params, X, y, state=state)


def _shifted_state(net):
    """Running statistics away from init_state's zeros and ones, so eval mode differs."""
    state = net.init_state()
    for layer in state:
        for k in layer:
            layer[k] = layer[k] + (0.3 if k == "running_var" else -0.1)
    return state


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("eval_mode", [False, True])
def test_activation_inputs_match_the_numpy_reference(bn, eval_mode):
    net = MLP([3, 5, 4, 2], activation="sigmoid", loss="ce", batchnorm=bn)
    params = net.init(seed=3, bias_scale=0.2)
    X = np.random.default_rng(0).normal(size=(9, 3))
    state = _shifted_state(net) if eval_mode else None
    got = net.activation_inputs(params, X, state=state)
    _, ref = ref_forward(net, params, X, state=copy.deepcopy(state) if state is not None else None)
    assert len(got) == 2 and [g.shape for g in got] == [(9, 5), (9, 4)]
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="X must have shape"):
        net.activation_inputs(params, X[:, :2])


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("eval_mode", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_forward_matches_the_numpy_reference(bn, eval_mode, dtype):
    """Every layer's z, y, a, batch norm's statistics (the batch's in training mode, the state's
    in eval mode) and the logits, against naive.ref_forward_layers; the statistics' state
    normalises as the batch did; nothing is updated."""
    net = MLP([3, 5, 4, 2], activation="tanh", loss="ce", batchnorm=bn, dtype=dtype)
    params = net.init(seed=3, bias_scale=0.2)
    X = np.random.default_rng(0).normal(size=(9, 3)) * 2.0 + 0.5
    state = _shifted_state(net) if eval_mode else None
    before = copy.deepcopy(state)
    fw = net.forward(params, X, state=state)
    p64 = [{k: np.asarray(v, np.float64) for k, v in p.items()} for p in params]
    ref = ref_forward_layers(net, p64, np.asarray(X, dtype), state=state)
    tol = 1e-12 if dtype == "float64" else 2e-5
    for key in ("z", "y", "a", "mean", "var"):
        got = getattr(fw, key)
        assert len(got) == (len(ref[key]) if key in ("mean", "var") else 2)
        assert len(got) == (2 if bn or key not in ("mean", "var") else 0)
        for g, r in zip(got, ref[key]):
            assert g.dtype == np.dtype(dtype)
            np.testing.assert_allclose(g, r, rtol=tol, atol=tol)
    np.testing.assert_allclose(fw.logits, ref["logits"], rtol=tol, atol=tol)
    for g, r in zip(fw.y, net.activation_inputs(params, X, state=state)):
        np.testing.assert_array_equal(g, r)
    if state is not None:
        for s, b in zip(state, before):
            for k in s:
                np.testing.assert_array_equal(s[k], b[k])
    if bn and not eval_mode:
        again = net.forward(params, X, state=fw.state())
        np.testing.assert_allclose(again.logits, fw.logits, rtol=10 * tol, atol=10 * tol)
    with pytest.raises(ValueError, match="X must have shape"):
        net.forward(params, X[:, :2])
    if bn:
        with pytest.raises(ValueError, match="at least 2 rows"):
            net.forward(params, X[:1])


# ============================================================================================
# The per-call fast paths (compiled checks, one-call packing): same results, same rejections
# ============================================================================================


def _plain_loss_and_grad(net, params, X, y):
    """loss_and_grad as it was written before the fast paths (bce/mse targets): slice-by-slice
    packing, plain numpy conversions, the compiled kernel, slice-by-slice unpacking."""
    theta = np.empty(net.n_params, net.dtype)
    for p, slots in zip(params, net.slots):
        for key, (o, size, shape) in slots.items():
            theta[o:o + size] = np.asarray(p[key]).reshape(-1)
    X = np.asarray(X, dtype=net.dtype, order="C")
    Y = np.ascontiguousarray(np.asarray(y).reshape(X.shape[0], net.sizes[-1]), dtype=net.dtype)
    grad = np.empty_like(theta)
    loss = loss_and_grad_kernel(theta, net.layout, net.act_code, net.loss_code, X, Y, grad,
                                np.empty(net.n_running, net.dtype), TRAIN_NO_UPDATE)
    return float(loss), [{key: grad[o:o + size].reshape(shape)
                          for key, (o, size, shape) in slots.items()} for slots in net.slots]


def _fast_path_case(dtype, bn=False):
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce", batchnorm=bn, dtype=dtype)
    params = net.init(seed=4, bias_scale=0.3)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(12, 2)).astype(dtype)
    y = rng.integers(0, 2, 12).astype(dtype)
    return net, params, X, y


def _variants_X(X):
    other = np.float64 if X.dtype == np.float32 else np.float32
    wide = np.zeros((2 * X.shape[0], 3), X.dtype)
    wide[::2, :2] = X
    ro = X.copy()
    ro.flags.writeable = False
    return {"same": X, "other_dtype": X.astype(other), "fortran": np.asfortranarray(X),
            "strided": wide[::2, :2], "read_only": ro, "list": X.tolist(),
            "int": np.round(4 * X).astype(np.int64)}


def _variants_y(y):
    longer = np.zeros(2 * y.size, y.dtype)
    longer[::2] = y
    return {"same": y, "float64": y.astype(np.float64), "float32": y.astype(np.float32),
            "int64": y.astype(np.int64), "int32": y.astype(np.int32), "uint8": y.astype(np.uint8),
            "bool": y.astype(bool), "column": y.reshape(-1, 1), "strided": longer[::2],
            "list": y.astype(int).tolist()}


def _variants_params(params):
    other = np.float64 if params[0]["W"].dtype == np.float32 else np.float32
    return {"same": params,
            "other_dtype": [{k: v.astype(other) for k, v in p.items()} for p in params],
            "fortran": [{k: np.asfortranarray(v) for k, v in p.items()} for p in params],
            "strided": [{k: np.repeat(v, 2, axis=-1)[..., ::2] for k, v in p.items()}
                        for p in params],
            "int": [{k: np.round(3 * v).astype(np.int32) for k, v in p.items()} for p in params],
            "lists": [{k: v.tolist() for k, v in p.items()} for p in params],
            "tuple": tuple(params)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("what", ["X", "y", "params"])
def test_loss_and_grad_is_bit_identical_to_the_plain_pipeline(dtype, bn, what):
    net, params, X, y = _fast_path_case(dtype, bn)
    variants = {"X": _variants_X(X), "y": _variants_y(y), "params": _variants_params(params)}[what]
    for name, v in variants.items():
        args = {"params": params, "X": X, "y": y}
        args[what] = v
        loss, grads = net.loss_and_grad(**args)
        ref_loss, ref_grads = _plain_loss_and_grad(net, **args)
        assert loss == ref_loss, name
        for g, r in zip(grads, ref_grads):
            assert g.keys() == r.keys(), name
            for key in g:
                assert g[key].dtype == net.dtype and g[key].shape == r[key].shape, (name, key)
                np.testing.assert_array_equal(g[key], r[key], err_msg=f"{name} {key}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bn", [False, True])
def test_pack_is_a_fresh_exact_copy_and_unpack_gives_views(dtype, bn):
    net, params, _, _ = _fast_path_case(dtype, bn)
    for variant in _variants_params(params).values():
        theta = net.pack(variant)
        ref = np.empty(net.n_params, net.dtype)
        for p, slots in zip(variant, net.slots):
            for key, (o, size, shape) in slots.items():
                ref[o:o + size] = np.asarray(p[key]).reshape(-1)
        assert theta.dtype == net.dtype and theta.flags.c_contiguous and theta.flags.writeable
        np.testing.assert_array_equal(theta, ref)
    theta = net.pack(params)
    assert not any(np.shares_memory(theta, v) for p in params for v in p.values())
    views = net.unpack(theta)
    assert [{k: v.shape for k, v in p.items()} for p in views] == net.param_shapes()
    for p, q in zip(views, params):
        for key in p:
            assert np.shares_memory(p[key], theta)
            np.testing.assert_array_equal(p[key], q[key])
    views[-1]["b"][0] = 7.0
    assert theta[-1] == 7.0 and params[-1]["b"][0] != 7.0


def test_each_call_returns_fresh_gradient_arrays():
    net, params, X, y = _fast_path_case("float32")
    _, g1 = net.loss_and_grad(params, X, y)
    before = [{k: v.copy() for k, v in p.items()} for p in g1]
    _, g2 = net.loss_and_grad(params, X[:6], y[:6])
    assert not any(np.shares_memory(a, b)
                   for p, q in zip(g1, g2) for a, b in zip(p.values(), q.values()))
    for p, q in zip(g1, before):
        for key in p:
            np.testing.assert_array_equal(p[key], q[key])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X_is_rejected_at_any_position_and_in_any_layout(dtype, bad):
    net, params, X, y = _fast_path_case(dtype)
    for name, v in _variants_X(X).items():
        if name in ("int",):
            continue
        for pos in [(0, 0), (5, 1), (11, 1)]:
            Xb = np.array(v, dtype=np.asarray(v).dtype, copy=True)
            Xb[pos] = bad
            if name == "read_only":
                Xb.flags.writeable = False
            if name == "strided":
                wide = np.zeros((24, 3), Xb.dtype)
                wide[::2, :2] = Xb
                Xb = wide[::2, :2]
            if name == "list":
                Xb = Xb.tolist()
            with pytest.raises(ValueError, match=r"^X must be finite"):
                net.loss_and_grad(params, Xb, y)
            with pytest.raises(ValueError, match=r"^X must be finite"):
                net.predict(params, Xb)


def test_X_that_overflows_float32_is_rejected():
    net, params, X, y = _fast_path_case("float32")
    Xb = X.astype(np.float64)
    Xb[3, 0] = 1e39  # finite in float64, inf once cast to the net's float32
    with np.errstate(over="ignore"), pytest.raises(ValueError, match=r"^X must be finite"):
        net.loss_and_grad(params, Xb, y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("y_dtype", ["float32", "float64", "int64", "int32", "int8", "float16"])
def test_bad_bce_labels_are_rejected_at_any_position(dtype, y_dtype):
    net, params, X, y = _fast_path_case(dtype)
    bad_values = [2, -1] + ([0.5, np.nan, np.inf, -np.inf] if y_dtype.startswith("float") else [])
    for bad in bad_values:
        for pos in [0, 6, 11]:
            yb = y.astype(y_dtype)
            yb[pos] = bad
            msg = f"y must take values in [0, 1], got {yb[pos]!r}"
            for v in (yb, yb.reshape(-1, 1), np.repeat(yb, 2)[::2]):
                with pytest.raises(ValueError) as info:
                    net.loss_and_grad(params, X, v)
                assert str(info.value) == msg


def test_minus_zero_is_a_valid_bce_label():
    net, params, X, y = _fast_path_case("float64")
    y = np.where(y == 0, -0.0, 1.0)
    loss, _ = net.loss_and_grad(params, X, y)
    assert loss == net.loss_and_grad(params, X, np.abs(y))[0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_params_are_rejected_in_every_tensor(dtype, bad):
    net, params, X, y = _fast_path_case(dtype, bn=True)
    for l, p in enumerate(params):
        for key in p:
            for variant in ("same", "other_dtype", "fortran", "strided"):
                pb = _variants_params(copy.deepcopy(params))[variant]  # fresh arrays
                for pos in [(0,) * p[key].ndim, (-1,) * p[key].ndim]:
                    v = pb[l][key]
                    keep = v[pos]
                    v[pos] = bad
                    with pytest.raises(ValueError, match=r"^params must be finite"):
                        net.loss_and_grad(pb, X, y)
                    v[pos] = keep


def test_params_that_overflow_float32_are_rejected():
    net, params, X, y = _fast_path_case("float32")
    pb = [{k: v.astype(np.float64) for k, v in p.items()} for p in params]
    pb[1]["W"][2, 3] = -1e39  # finite in float64, -inf once cast to the net's float32
    with np.errstate(over="ignore"), pytest.raises(ValueError, match=r"^params must be finite"):
        net.loss_and_grad(pb, X, y)


@pytest.mark.parametrize("bn", [False, True])
def test_params_of_the_wrong_shape_or_kind_are_rejected_in_every_tensor(bn):
    net, params, X, y = _fast_path_case("float32", bn=bn)
    for l, p in enumerate(params):
        for key, v in p.items():
            for bad in (np.zeros(v.shape + (1,), v.dtype), np.zeros(v.size + 1, v.dtype),
                        v.astype(bool), v.astype(complex), v.astype(str)):
                pb = copy.deepcopy(params)
                pb[l][key] = bad
                with pytest.raises(ValueError, match=rf"^params\[{l}\]\['{key}'\] must "):
                    net.loss_and_grad(pb, X, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.longdouble, ">f8"])
@pytest.mark.parametrize("size", [0, 1, 3, 17, 64, 257, 5000])
def test_all_finite_agrees_with_numpy(dtype, size):
    a = np.random.default_rng(size).normal(size=size).astype(dtype)
    assert _validate.all_finite(a) is True
    positions = range(size) if size <= 64 else [0, 1, size // 2, size - 2, size - 1]
    for bad in (np.nan, np.inf, -np.inf):
        for pos in positions:
            b = a.copy()
            b[pos] = bad
            assert not _validate.all_finite(b), (bad, pos)
            assert not _validate.all_finite(np.repeat(b, 2)[::2]), (bad, pos)  # strided
            if size % 2 == 0 and size:
                assert not _validate.all_finite(b.reshape(2, -1).T), (bad, pos)  # Fortran 2-D
            b.flags.writeable = False
            assert not _validate.all_finite(b), (bad, pos)
    big = np.full(size, np.finfo(np.dtype(dtype)).max, dtype)
    assert _validate.all_finite(big)  # no arithmetic inside: nothing overflows


@pytest.mark.parametrize("dtype", ["bool", "int8", "uint8", "int32", "int64", "float16",
                                   "float32", "float64"])
def test_zero_one_labels_check_agrees_with_numpy(dtype):
    rng = np.random.default_rng(1)
    for size in (1, 5, 64, 1000):
        y = rng.integers(0, 2, size).astype(dtype)
        assert _validate.labels("y", y, size, values=(0, 1)) is not None
        if dtype == "bool":
            continue
        bads = [2, 3] + ([-1] if dtype[0] != "u" else []) + (
            [0.5, 1 + 2 ** -10, np.nan, np.inf, -np.inf] if dtype.startswith("float") else [])
        for bad in bads:
            for pos in sorted({0, size // 2, size - 1}):
                b = y.copy()
                b[pos] = bad
                with pytest.raises(ValueError) as info:
                    _validate.labels("y", b, size, values=(0, 1))
                assert str(info.value) == f"y must take values in [0, 1], got {b[pos]!r}"
