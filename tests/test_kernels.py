"""Kernels against plain NumPy references: activations, losses, dense and batch-norm layers.

Every kernel is checked three ways (STYLE.md habits 6 and 10):

* against a plain NumPy reference (``ref_*`` in ``naive.py``), evaluated in ``np.longdouble``
  where rounding or overflow of the reference itself would matter;
* for numerical stability: finite values and gradients for inputs up to ``|z| = 1e4`` in
  float32 and float64;
* gradients by central differences in float64.

Relative error of a gradient, used throughout: ``rel_err`` (norm-wise, over the whole gradient
vector), and central differences with ``h = 1e-6`` against ``FD_TOL = 1e-6``; both in
``conftest.py``.
"""
import numpy as np
import pytest

from conftest import ACTS, DTYPES, FD_TOL, central_diff, central_diff_pointwise, rel_err
from naive import (BN_EPS, LD, LOSS_REFS, ref_apply, ref_bn_backward, ref_bn_eval, ref_bn_running,
                   ref_bn_train, ref_dense_backward, ref_dense_forward)
from simcore import activations, layers, losses


# ============================================================================================
# Activations
# ============================================================================================

WRAPPERS = {name: (getattr(activations, name), getattr(activations, name + "_grad")) for name in ACTS}


def corner_values(dtype, with_inf=True):
    """0, +-tiny, +-1, +-20, +-1e4 and (optionally) +-inf, in ``dtype``."""
    tiny = np.finfo(dtype).tiny
    v = [0.0, tiny, -tiny, 1e-30, -1e-30, 1.0, -1.0, 20.0, -20.0, 40.0, -40.0, 1e4, -1e4]
    if with_inf:
        v += [np.inf, -np.inf]
    return np.array(v, dtype=dtype)


def random_values(dtype, seed=0):
    rng = np.random.default_rng(seed)
    wide = rng.choice([-1.0, 1.0], 500) * 10.0 ** rng.uniform(-8, 4, 500)
    return np.concatenate([rng.normal(0, 3, 1000), wide]).astype(dtype)


# Tolerances: f is evaluated in the array's dtype (float32 with simcore.fastmath's float32
# kernels: at most 1 ulp for exp and tanh, 3 ulp for sigmoid, see tests/test_fastmath32.py;
# rtol 3e-7 is about 2.5-5 float32 ulp). f'(z) is computed
# from the rounded a = f(z) (1 - a^2, a (1 - a)), so near saturation its error is absolute,
# about eps(dtype), not relative.
APPLY_TOL = {np.float32: dict(rtol=3e-7, atol=1e-44), np.float64: dict(rtol=1e-14, atol=1e-320)}
GRAD_TOL = {np.float32: dict(rtol=1e-6, atol=5e-7), np.float64: dict(rtol=1e-13, atol=1e-15)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTS)
def test_activation_apply_matches_reference(name, dtype):
    for z in (random_values(dtype), corner_values(dtype)):
        a = activations.apply(name, z)
        assert a.dtype == dtype and a.shape == z.shape
        np.testing.assert_allclose(a, ref_apply(name, z), **APPLY_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTS)
def test_activation_derivative_matches_reference(name, dtype):
    for z in (random_values(dtype, seed=1), corner_values(dtype)):
        d = activations.derivative(name, z)
        assert d.dtype == dtype and d.shape == z.shape
        np.testing.assert_allclose(d, ref_apply(name, z, grad=True), **GRAD_TOL[dtype])


@pytest.mark.parametrize("name", ACTS)
def test_named_wrappers_equal_apply_and_derivative(name):
    fn, grad = WRAPPERS[name]
    z = random_values(np.float64, seed=2).reshape(50, 30)
    np.testing.assert_array_equal(fn(z), activations.apply(name, z))
    np.testing.assert_array_equal(grad(z), activations.derivative(name, z))
    assert fn(z).shape == (50, 30) and grad(z).shape == (50, 30)


@pytest.mark.parametrize("name", ACTS)
def test_activation_exact_corner_values(name):
    z = np.array([0.0, np.inf, -np.inf])
    a = activations.apply(name, z)
    want = {"identity": [0, np.inf, -np.inf], "sigmoid": [0.5, 1, 0], "tanh": [0, 1, -1],
            "relu": [0, np.inf, 0], "leaky_relu": [0, np.inf, -np.inf],
            "softplus": [np.log(2), np.inf, 0]}[name]
    np.testing.assert_allclose(a, want, rtol=1e-15, atol=0)
    d0 = activations.derivative(name, np.array([0.0]))[0]
    want_d0 = {"identity": 1, "sigmoid": 0.25, "tanh": 1, "relu": 0, "leaky_relu": 0.01,
               "softplus": 0.5}[name]
    assert d0 == pytest.approx(want_d0, rel=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_integer_input_becomes_float64_and_shape_is_kept(dtype):
    z = np.arange(-3, 3).reshape(2, 3)
    assert activations.apply("relu", z).dtype == np.float64
    assert activations.apply("relu", z.astype(dtype)).shape == (2, 3)
    assert activations.apply("relu", np.empty((0, 4), dtype)).shape == (0, 4)


def test_activation_of_a_scalar_keeps_its_shape():
    # apply's docstring: "ndarray, same shape and dtype as z" -- a 0-d input gives a 0-d output
    assert activations.apply("relu", -2.0).shape == ()
    assert activations.derivative("sigmoid", 0.0).shape == ()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTS)
def test_activation_stable_up_to_1e4(name, dtype):
    z = np.concatenate([np.linspace(-1e4, 1e4, 2001), corner_values(np.float64, with_inf=False)])
    z = z.astype(dtype)
    with np.errstate(all="raise"):  # no hidden overflow warnings from numpy either
        a = activations.apply(name, z)
        d = activations.derivative(name, z)
    assert np.isfinite(a).all() and np.isfinite(d).all()
    # infinite inputs give no NaN either (the values themselves are checked above)
    zi = np.array([np.inf, -np.inf], dtype)
    assert not np.isnan(activations.apply(name, zi)).any()
    assert not np.isnan(activations.derivative(name, zi)).any()


@pytest.mark.parametrize("name", ACTS)
def test_activation_derivative_by_central_differences(name):
    rng = np.random.default_rng(3)
    z = rng.uniform(-6, 6, 400)
    z = z[np.abs(z) > 1e-3]  # stay off the relu / leaky_relu kink
    fd = central_diff_pointwise(lambda x: activations.apply(name, x), z)
    assert rel_err(activations.derivative(name, z), fd) < FD_TOL


def test_activation_nan_propagates():
    for name in ACTS:
        assert np.isnan(activations.apply(name, np.array([np.nan]))).all(), name


@pytest.mark.parametrize("bad", ["swish", "ReLU", "", None, 3])
def test_activation_unknown_name_raises(bad):
    with pytest.raises(ValueError, match="name"):
        activations.apply(bad, np.zeros(3))
    with pytest.raises(ValueError, match="name"):
        activations.derivative(bad, np.zeros(3))


@pytest.mark.parametrize("bad", [np.array([1 + 2j]), ["a", "b"], np.array([True, False]),
                                 np.array([None, 1.0], dtype=object), "abc"])
def test_activation_non_real_input_raises(bad):
    with pytest.raises(ValueError, match="z"):
        activations.apply("sigmoid", bad)
    with pytest.raises(ValueError, match="z"):
        activations.derivative("sigmoid", bad)
    with pytest.raises(ValueError, match="z"):
        activations.tanh(bad)


# ============================================================================================
# Losses
# ============================================================================================

LOSS_FNS = {name: getattr(losses, name) for name in LOSS_REFS}


def loss_case(name, shape, dtype, seed=0, scale=3.0):
    """Random logits of ``shape`` and matching targets for loss ``name``."""
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=shape) * scale).astype(dtype)
    if name == "ce":
        y = rng.integers(0, shape[1], shape[0])
    elif name == "bce":
        y = rng.integers(0, 2, shape)
    elif name == "mse_sigmoid":
        y = rng.uniform(0, 1, shape)
    else:
        y = rng.normal(size=shape)
    return z, y


def loss_shapes(name):
    if name == "ce":
        return [(7, 3), (1, 4), (5, 2)]
    return [(7,), (7, 3), (1,), (1, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(LOSS_REFS))
def test_loss_value_and_grad_match_reference(name, dtype):
    tol = 1e-13 if dtype == np.float64 else 2e-6
    for i, shape in enumerate(loss_shapes(name)):
        z, y = loss_case(name, shape, dtype, seed=i)
        value, dz = LOSS_FNS[name](z, y)
        ref_value, ref_dz = LOSS_REFS[name](z, y)
        assert isinstance(value, float)
        assert dz.shape == z.shape and dz.dtype == dtype
        assert value == pytest.approx(float(ref_value), rel=tol, abs=1e-300), shape
        np.testing.assert_allclose(dz, np.asarray(ref_dz, np.float64), rtol=tol,
                                   atol=tol * np.abs(np.asarray(ref_dz, np.float64)).max())


@pytest.mark.parametrize("name", ["mse", "mse_sigmoid", "bce"])
def test_loss_accepts_column_targets_for_width_one(name):
    z, y = loss_case(name, (6,), np.float64)
    v1, d1 = LOSS_FNS[name](z, y)
    v2, d2 = LOSS_FNS[name](z.reshape(6, 1), y.reshape(6, 1))
    assert v1 == v2 and d1.shape == (6,) and d2.shape == (6, 1)
    np.testing.assert_array_equal(d1, d2[:, 0])


def test_ce_accepts_float_integer_labels():
    z, y = loss_case("ce", (5, 3), np.float64)
    v1, d1 = losses.ce(z, y.astype(float))
    v2, d2 = losses.ce(z, y)
    assert v1 == v2 and np.array_equal(d1, d2)


@pytest.mark.parametrize("name", list(LOSS_REFS))
def test_loss_grad_by_central_differences(name):
    for i, shape in enumerate(loss_shapes(name)):
        z, y = loss_case(name, shape, np.float64, seed=10 + i, scale=1.5)
        _, dz = LOSS_FNS[name](z, y)
        fd = central_diff(lambda zz: LOSS_FNS[name](zz, y)[0], z)
        assert rel_err(dz, fd) < FD_TOL, (shape, rel_err(dz, fd))


def _saturated_case(name, dtype):
    """Logits of +-1e4 (and a few tame ones) with targets for ``name``."""
    if name == "ce":
        z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [1e4, 1e4, -1e4], [0.0, 1.0, -1e4]])
        y = np.array([1, 0, 2, 2])
    else:
        z = np.array([[1e4, -1e4], [-1e4, 1e4], [1e4, 1e4], [0.5, -1e4]])
        y = np.array([[0, 1], [0, 1], [1, 1], [1, 0]]) if name == "bce" else \
            np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.0]])
    return z.astype(dtype), y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(LOSS_REFS))
def test_loss_stable_for_logits_1e4(name, dtype):
    z, y = _saturated_case(name, dtype)
    with np.errstate(all="raise"):
        value, dz = LOSS_FNS[name](z, y)
    assert np.isfinite(value) and np.isfinite(dz).all()
    ref_value, ref_dz = LOSS_REFS[name](z, y)
    assert value == pytest.approx(float(ref_value), rel=1e-6)
    np.testing.assert_allclose(dz, np.asarray(ref_dz, np.float64), rtol=1e-6,
                               atol=1e-6 * np.abs(np.asarray(ref_dz, np.float64)).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_saturated_loss_is_the_logit(dtype):
    value, dz = losses.bce(np.array([1e4], dtype), np.array([0]))
    assert value == pytest.approx(1e4, rel=1e-12)
    assert dz[0] == pytest.approx(1.0, rel=1e-7)
    value, dz = losses.bce(np.array([-1e4], dtype), np.array([1]))
    assert value == pytest.approx(1e4, rel=1e-12)
    assert dz[0] == pytest.approx(-1.0, rel=1e-7)
    value, dz = losses.bce(np.array([1e4], dtype), np.array([1]))
    assert value == 0.0 and dz[0] == 0.0
    value, _ = losses.ce(np.array([[1e4, -1e4]], dtype), np.array([1]))
    assert value == pytest.approx(2e4, rel=1e-12)


LOSS_BAD = [
    # (loss, z, y, argument named in the message)
    ("mse", np.zeros(3), np.zeros(4), "y"),
    ("mse", np.zeros((3, 2)), np.zeros(3), "y"),
    ("mse", np.zeros(3), np.array([0.0, np.nan, 1.0]), "y"),
    ("mse", np.zeros(3), np.array([0.0, np.inf, 1.0]), "y"),
    ("mse", np.zeros(3), np.array(["a", "b", "c"]), "y"),
    ("mse_sigmoid", np.zeros((2, 2)), np.zeros((2, 3)), "y"),
    ("bce", np.zeros(3), np.array([0, 1, 2]), "y"),
    ("bce", np.zeros(3), np.array([0, 0.5, 1]), "y"),
    ("bce", np.zeros(3), np.array([0, -1, 1]), "y"),
    ("bce", np.zeros((3, 2)), np.array([0, 1, 0]), "y"),
    ("bce", np.zeros(3), np.array([0, np.nan, 1]), "y"),
    ("ce", np.zeros((3, 2)), np.array([0, 1, 2]), "y"),
    ("ce", np.zeros((3, 2)), np.array([0, -1, 1]), "y"),
    ("ce", np.zeros((3, 3)), np.array([0, 1.5, 1]), "y"),
    ("ce", np.zeros((3, 3)), np.array([0, 1]), "y"),
    ("ce", np.zeros((3, 3)), np.array([[0, 1, 2]]), "y"),
    ("ce", np.zeros(3), np.array([0, 0, 0]), "z"),  # ce needs (n, k >= 2) logits
    ("mse", np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), "z"),
    ("mse", np.float64(1.0), np.float64(1.0), "z"),
    ("mse", np.zeros((0, 2)), np.zeros((0, 2)), "z"),
    ("bce", np.array([0.0, np.nan]), np.array([0, 1]), "z"),
    ("bce", np.array([0.0, np.inf]), np.array([0, 1]), "z"),
    ("ce", np.array([[1j, 0]]), np.array([0]), "z"),
    ("mse", ["a", "b"], np.zeros(2), "z"),
]


@pytest.mark.parametrize("name,z,y,arg", LOSS_BAD,
                         ids=[f"{i}-{c[0]}-{c[3]}" for i, c in enumerate(LOSS_BAD)])
def test_loss_bad_input_raises_naming_the_argument(name, z, y, arg):
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        LOSS_FNS[name](z, y)


# ============================================================================================
# Dense layer
# ============================================================================================

def dense_case(n, fi, fo, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, fi)).astype(dtype), rng.normal(size=(fi, fo)).astype(dtype),
            rng.normal(size=fo).astype(dtype), rng.normal(size=(n, fo)).astype(dtype))


DENSE_SHAPES = [(5, 3, 4), (1, 3, 2), (4, 1, 1), (7, 6, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,fi,fo", DENSE_SHAPES)
def test_dense_forward_backward_match_reference(n, fi, fo, dtype):
    tol = 1e-13 if dtype == np.float64 else 1e-5
    a_prev, W, b, delta = dense_case(n, fi, fo, dtype)
    z = layers.dense_forward(a_prev, W, b)
    assert z.shape == (n, fo) and z.dtype == dtype
    np.testing.assert_allclose(z, ref_dense_forward(a_prev, W, b).astype(np.float64), rtol=tol,
                               atol=tol)
    dW, db, da = layers.dense_backward(a_prev, W, delta)
    assert (dW.shape, db.shape, da.shape) == ((fi, fo), (fo,), (n, fi))
    assert dW.dtype == db.dtype == da.dtype == dtype
    for got, want in zip((dW, db, da), ref_dense_backward(a_prev, W, delta)):
        np.testing.assert_allclose(got, want.astype(np.float64), rtol=tol, atol=tol)


@pytest.mark.parametrize("n,fi,fo", DENSE_SHAPES)
def test_dense_backward_by_central_differences(n, fi, fo):
    # scalar loss L = sum(z * R) so that dL/dz = R
    a_prev, W, b, R = dense_case(n, fi, fo, np.float64, seed=5)
    dW, db, da = layers.dense_backward(a_prev, W, R)

    def loss(a_prev, W, b):
        return float(np.sum(layers.dense_forward(a_prev, W, b) * R))

    assert rel_err(dW, central_diff(lambda x: loss(a_prev, x, b), W)) < FD_TOL
    assert rel_err(db, central_diff(lambda x: loss(a_prev, W, x), b)) < FD_TOL
    assert rel_err(da, central_diff(lambda x: loss(x, W, b), a_prev)) < FD_TOL


def test_dense_does_not_modify_its_inputs():
    a_prev, W, b, delta = dense_case(4, 3, 2, np.float64)
    copies = [x.copy() for x in (a_prev, W, b, delta)]
    layers.dense_forward(a_prev, W, b)
    layers.dense_backward(a_prev, W, delta)
    for x, c in zip((a_prev, W, b, delta), copies):
        np.testing.assert_array_equal(x, c)


DENSE_BAD = [
    # (function, args, argument named in the message)
    ("forward", (np.zeros((2, 3)), np.zeros((4, 2)), np.zeros(2)), "W"),
    ("forward", (np.zeros((2, 3)), np.zeros((3, 2)), np.zeros(3)), "b"),
    ("forward", (np.zeros((2, 3)), np.zeros((3, 2)), np.zeros((1, 2))), "b"),
    ("forward", (np.zeros(3), np.zeros((3, 2)), np.zeros(2)), "a_prev"),
    ("forward", (np.zeros((2, 3)), np.zeros(6), np.zeros(2)), "W"),
    ("forward", (np.full((2, 3), np.nan), np.zeros((3, 2)), np.zeros(2)), "a_prev"),
    ("forward", (np.zeros((2, 3)), np.full((3, 2), np.inf), np.zeros(2)), "W"),
    ("forward", (np.zeros((0, 3)), np.zeros((3, 2)), np.zeros(2)), "a_prev"),
    ("backward", (np.zeros((2, 3)), np.zeros((4, 2)), np.zeros((2, 2))), "W"),
    ("backward", (np.zeros((2, 3)), np.zeros((3, 2)), np.zeros((2, 3))), "delta"),
    ("backward", (np.zeros((2, 3)), np.zeros((3, 2)), np.zeros((3, 2))), "delta"),
    ("backward", (np.zeros((2, 3)), np.zeros((3, 2)), np.zeros(2)), "delta"),
    ("backward", (np.zeros((2, 3)), np.zeros((3, 2)), np.array([[1j, 0], [0, 0]])), "delta"),
]


@pytest.mark.parametrize("which,args,arg", DENSE_BAD,
                         ids=[f"{i}-{c[0]}-{c[2]}" for i, c in enumerate(DENSE_BAD)])
def test_dense_bad_input_raises_naming_the_argument(which, args, arg):
    fn = layers.dense_forward if which == "forward" else layers.dense_backward
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        fn(*args)


# ============================================================================================
# Batch normalisation
# ============================================================================================

def bn_case(n, m, dtype, seed=0, constant_column=False):
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(n, m)) * rng.uniform(0.5, 3, m) + rng.normal(size=m)).astype(dtype)
    if constant_column:
        z[:, 0] = 1.25  # zero batch variance: xhat = 0, inv_std = 1/sqrt(eps), still finite
    gamma = rng.uniform(0.5, 1.5, m).astype(dtype)
    beta = rng.normal(size=m).astype(dtype)
    dy = rng.normal(size=(n, m)).astype(dtype)
    return z, gamma, beta, dy


BN_SHAPES = [(8, 3), (2, 4), (5, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", BN_SHAPES)
@pytest.mark.parametrize("constant_column", [False, True])
def test_batchnorm_training_forward_backward_match_reference(n, m, dtype, constant_column):
    tol = 1e-12 if dtype == np.float64 else 1e-4
    z, gamma, beta, dy = bn_case(n, m, dtype, constant_column=constant_column)
    y, (xhat, inv_std) = layers.batchnorm_forward(z, gamma, beta)
    ry, rxhat, rinv, _, _ = ref_bn_train(z, gamma, beta)
    assert y.dtype == xhat.dtype == inv_std.dtype == dtype
    for got, want in ((y, ry), (xhat, rxhat), (inv_std, rinv)):
        want = want.astype(np.float64)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    dz, dgamma, dbeta = layers.batchnorm_backward(dy, (xhat, inv_std), gamma)
    assert dz.shape == (n, m) and dgamma.shape == dbeta.shape == (m,)
    assert dz.dtype == dgamma.dtype == dbeta.dtype == dtype
    for got, want in zip((dz, dgamma, dbeta), ref_bn_backward(dy, z, gamma)):
        want = want.astype(np.float64)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(np.abs(want).max(), 1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", BN_SHAPES)
def test_batchnorm_running_statistics_update(n, m, dtype):
    tol = 1e-13 if dtype == np.float64 else 1e-5
    rng = np.random.default_rng(1)
    rm = rng.normal(size=m).astype(dtype)
    rv = rng.uniform(0.5, 2, m).astype(dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    for step in range(3):
        z, gamma, beta, _ = bn_case(n, m, dtype, seed=step)
        want_rm, want_rv = ref_bn_running(rm0.astype(LD), rv0.astype(LD),
                                          *ref_bn_train(z, gamma, beta)[3:], n)
        ids = (id(rm), id(rv))
        layers.batchnorm_forward(z, gamma, beta, running_mean=rm, running_var=rv)
        assert (id(rm), id(rv)) == ids  # updated in place
        np.testing.assert_allclose(rm, want_rm.astype(np.float64), rtol=tol, atol=tol)
        np.testing.assert_allclose(rv, want_rv.astype(np.float64), rtol=tol, atol=tol)
        rm0, rv0 = rm.copy(), rv.copy()


def test_batchnorm_training_without_running_stats_has_no_side_effects():
    z, gamma, beta, _ = bn_case(6, 3, np.float64)
    copies = [x.copy() for x in (z, gamma, beta)]
    y1, _ = layers.batchnorm_forward(z, gamma, beta)
    y2, _ = layers.batchnorm_forward(z, gamma, beta)
    np.testing.assert_array_equal(y1, y2)
    for x, c in zip((z, gamma, beta), copies):
        np.testing.assert_array_equal(x, c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 6])
def test_batchnorm_eval_matches_reference(n, dtype):
    tol = 1e-13 if dtype == np.float64 else 1e-5
    z, gamma, beta, _ = bn_case(n, 3, dtype, seed=4)
    rng = np.random.default_rng(9)
    rm = rng.normal(size=3).astype(dtype)
    rv = np.array([0.0, 0.5, 3.0], dtype)  # a zero running variance is legal (eps keeps it finite)
    rm0, rv0 = rm.copy(), rv.copy()
    y = layers.batchnorm_forward(z, gamma, beta, rm, rv, training=False)
    assert y.shape == (n, 3) and y.dtype == dtype
    want = ref_bn_eval(z, gamma, beta, rm, rv).astype(np.float64)
    np.testing.assert_allclose(y, want, rtol=tol, atol=tol * np.abs(want).max())
    np.testing.assert_array_equal(rm, rm0)  # eval mode reads, never writes
    np.testing.assert_array_equal(rv, rv0)


@pytest.mark.parametrize("n,m", BN_SHAPES)
def test_batchnorm_backward_by_central_differences(n, m):
    # scalar loss L = sum(y * R) so that dL/dy = R
    z, gamma, beta, R = bn_case(n, m, np.float64, seed=6)
    _, cache = layers.batchnorm_forward(z, gamma, beta)
    dz, dgamma, dbeta = layers.batchnorm_backward(R, cache, gamma)

    def loss(z, gamma, beta):
        return float(np.sum(layers.batchnorm_forward(z, gamma, beta)[0] * R))

    assert rel_err(dz, central_diff(lambda x: loss(x, gamma, beta), z)) < FD_TOL
    assert rel_err(dgamma, central_diff(lambda x: loss(z, x, beta), gamma)) < FD_TOL
    assert rel_err(dbeta, central_diff(lambda x: loss(z, gamma, x), beta)) < FD_TOL


@pytest.mark.parametrize("n,m", BN_SHAPES + [(64, 5)])
def test_batchnorm_backward_invariants(n, m):
    z, gamma, beta, dy = bn_case(n, m, np.float64, seed=7)
    _, cache = layers.batchnorm_forward(z, gamma, beta)
    dz, _, _ = layers.batchnorm_backward(dy, cache, gamma)
    # the output is invariant to shifting a unit's inputs, so the gradient sums to 0 per unit
    scale = np.abs(dz).max()
    assert np.abs(dz.sum(axis=0)).max() <= 1e-12 * max(scale, 1.0) * n
    # a constant upstream gradient: y sums to n * beta whatever z is, so dz = 0 and dgamma = 0
    dz, dgamma, dbeta = layers.batchnorm_backward(np.ones((n, m)), cache, gamma)
    assert np.abs(dz).max() <= 1e-12
    assert np.abs(dgamma).max() <= 1e-12 * n
    np.testing.assert_allclose(dbeta, np.full(m, float(n)), rtol=1e-15)


def test_batchnorm_normalises_each_unit():
    z, _, _, _ = bn_case(50, 4, np.float64, seed=8)
    y, (xhat, _) = layers.batchnorm_forward(z, np.ones(4), np.zeros(4))
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-14)
    np.testing.assert_allclose(y.var(axis=0), z.var(axis=0) / (z.var(axis=0) + BN_EPS), rtol=1e-12)
    np.testing.assert_array_equal(y, xhat)


def _bn_valid(dtype=np.float64):
    z, gamma, beta, _ = bn_case(4, 3, dtype)
    return z, gamma, beta


BN_FORWARD_BAD = [
    # (kwargs overriding a valid call, argument named in the message)
    (dict(gamma=np.ones(2)), "gamma"),
    (dict(beta=np.ones(4)), "beta"),
    (dict(gamma=np.ones((1, 3))), "gamma"),
    (dict(z=np.zeros(3)), "z"),
    (dict(z=np.full((4, 3), np.nan)), "z"),
    (dict(z=np.zeros((1, 3))), "z"),  # training mode needs 2 rows
    (dict(training=False), "running_mean"),  # eval mode without running statistics
    (dict(training=False, running_mean=np.zeros(3)), "running_var"),
    (dict(training=False, running_mean=np.zeros(2), running_var=np.ones(3)), "running_mean"),
    (dict(training=False, running_mean=np.zeros(3), running_var=-np.ones(3)), "running_var"),
    (dict(training=False, running_mean=np.zeros(3), running_var=np.full(3, np.nan)), "running_var"),
    (dict(running_mean=np.zeros(2), running_var=np.ones(3)), "running_mean"),
    (dict(running_mean=np.zeros(3), running_var=np.ones(3, np.float32)), "running_var"),
    (dict(running_mean=[0.0, 0.0, 0.0], running_var=np.ones(3)), "running_mean"),
    (dict(momentum=1.5), "momentum"),
    (dict(momentum=-0.1), "momentum"),
    (dict(eps=0.0), "eps"),
    (dict(eps=float("nan")), "eps"),
]


@pytest.mark.parametrize("override,arg", BN_FORWARD_BAD,
                         ids=[f"{i}-{c[1]}" for i, c in enumerate(BN_FORWARD_BAD)])
def test_batchnorm_forward_bad_input_raises_naming_the_argument(override, arg):
    z, gamma, beta = _bn_valid()
    kwargs = dict(z=z, gamma=gamma, beta=beta)
    kwargs.update(override)
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        layers.batchnorm_forward(**kwargs)


def test_batchnorm_backward_bad_dy_or_gamma_raises():
    z, gamma, beta = _bn_valid()
    _, cache = layers.batchnorm_forward(z, gamma, beta)
    with pytest.raises(ValueError, match="dy"):
        layers.batchnorm_backward(np.ones((3, 3)), cache, gamma)
    with pytest.raises(ValueError, match="dy"):
        layers.batchnorm_backward(np.full((4, 3), np.nan), cache, gamma)
    with pytest.raises(ValueError, match="gamma"):
        layers.batchnorm_backward(np.ones((4, 3)), cache, np.ones(2))


def _bad_caches():
    z, gamma, beta = _bn_valid()
    _, (xhat, inv_std) = layers.batchnorm_forward(z, gamma, beta)
    return {
        "none": None,
        "one_element": (xhat,),
        "inv_std_too_long": (xhat, np.ones(4)),
        "xhat_list": (xhat.tolist(), inv_std),
    }


@pytest.mark.parametrize("case", list(_bad_caches()))
def test_batchnorm_backward_bad_cache_raises_naming_the_argument(case):
    # the cache is an argument like any other: a malformed one must be rejected before the
    # compiled kernel reads it (an inv_std that is too short would be read out of bounds)
    z, gamma, beta = _bn_valid()
    cache = _bad_caches()[case]
    with pytest.raises(ValueError, match="cache"):
        layers.batchnorm_backward(np.ones((4, 3)), cache, gamma)
