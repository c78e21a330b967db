"""Tests of studies.theory: the theory values the study reports compare measurements with.

Each value is checked against something independent: a closed form, scipy's adaptive
quadrature, finite differences of simcore's own gradients, numpy's eigensolver, or gradient
descent run on simcore's network.
"""
import math
import re

import numpy as np
import pytest
from scipy.integrate import quad

import simcore
from conftest import central_diff
from naive import ref_hessian_vector_product, ref_sharpness_power_iteration
from studies import theory as T

ACTS = list(T.ACTIVATION_FUNCS)
A = simcore.scalar.LEAKY_SLOPE


# --- independent references -------------------------------------------------------------------

def quad_expectation(g, q):
    """E[g(sqrt(q) z)] by scipy's adaptive quadrature, folded onto z >= 0, break points at the
    activation's scale."""
    if q == 0:
        return float(g(np.zeros(1))[0])
    s = math.sqrt(q)
    pts = [p for p in (0.5 / s, 1 / s, 2 / s, 4 / s, 8 / s, 16 / s) if p < 14]

    def integrand(t):
        x = np.array([s * t, -s * t])
        return float(np.sum(g(x))) * math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)

    return quad(integrand, 0.0, 14.0, points=pts, epsabs=0.0, epsrel=1e-13, limit=1000)[0]


def quad_q_star(activation, sw, sb, q0=1.0, steps=2000):
    """q* by plain iteration of the variance map, each step by scipy quad."""
    f = T.ACTIVATION_FUNCS[activation][0]
    q = q0
    for _ in range(steps):
        new = sw * quad_expectation(lambda x: f(x) ** 2, q) + sb
        if abs(new - q) <= 1e-15 * q:
            return new
        q = new
    raise AssertionError(f"iteration did not converge: {q}")


def linear_problem(seed=0, n=40, d=3, n_out=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.array([1.0, 2.0, 0.5][:d]) + np.array([0.5, 0.0, -0.3][:d])
    W = rng.normal(size=(d, n_out))
    Y = X @ W + 0.3 + 0.1 * rng.normal(size=(n, n_out))
    return X, (Y[:, 0] if n_out == 1 else Y)


# --- activations and expectations -------------------------------------------------------------

@pytest.mark.parametrize("name", ACTS)
def test_activation_funcs_match_simcore(name):
    z = np.concatenate([np.linspace(-40, 40, 2001), [0.0, -1e-300, 1e-300, -800.0, 800.0]])
    f, df = T.ACTIVATION_FUNCS[name]
    np.testing.assert_allclose(f(z), simcore.activations.apply(name, z), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(df(z), simcore.activations.derivative(name, z), rtol=1e-13,
                               atol=1e-15)  # simcore.fastmath: ~1 ulp


@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("q", [1e-3, 0.5, 1.0, 4.0, 30.0, 1e3])
def test_gaussian_expectation_matches_quad(name, q):
    f, df = T.ACTIVATION_FUNCS[name]
    for g in (lambda x: f(x) ** 2, lambda x: df(x) ** 2, f):
        ours = T.gaussian_expectation(g, q)
        ref = quad_expectation(g, q)
        assert ours == pytest.approx(ref, rel=1e-11, abs=1e-15)


@pytest.mark.parametrize("q", [1e-8, 0.3, 1.0, 7.0, 1e4])
def test_gaussian_expectation_closed_forms(q):
    relu, drelu = T.ACTIVATION_FUNCS["relu"]
    leaky, dleaky = T.ACTIVATION_FUNCS["leaky_relu"]
    E = T.gaussian_expectation
    assert E(lambda x: relu(x) ** 2, q) == pytest.approx(q / 2, rel=1e-13)
    assert E(lambda x: drelu(x) ** 2, q) == pytest.approx(0.5, rel=1e-13)
    assert E(relu, q) == pytest.approx(math.sqrt(q / (2 * math.pi)), rel=1e-13)
    assert E(lambda x: leaky(x) ** 2, q) == pytest.approx(q * (1 + A * A) / 2, rel=1e-13)
    assert E(lambda x: dleaky(x) ** 2, q) == pytest.approx((1 + A * A) / 2, rel=1e-13)
    assert E(lambda x: x ** 4, q) == pytest.approx(3 * q * q, rel=1e-13)
    assert E(np.cos, q) == pytest.approx(math.exp(-q / 2), rel=1e-12, abs=1e-14)
    assert E(np.tanh, q) == pytest.approx(0.0, abs=1e-15)  # odd


def test_gaussian_expectation_q_zero_is_g_of_zero():
    assert T.gaussian_expectation(lambda x: np.cos(x) + 2, 0.0) == 3.0


# --- variance map and fixed point -------------------------------------------------------------

def test_variance_map_relu_closed_form_and_vectorised():
    qs = np.array([0.0, 0.5, 2.0, 10.0])
    np.testing.assert_allclose(T.variance_map("relu", qs, 1.7, 0.2), 1.7 * qs / 2 + 0.2, rtol=1e-13)
    assert T.variance_map("identity", 3.0, 0.5, 1.0) == pytest.approx(2.5, rel=1e-14)
    # sigmoid(0) = 1/2: at q = 0 the map gives sigma_w2 / 4 + sigma_b2
    assert T.variance_map("sigmoid", 0.0, 2.0, 0.1) == pytest.approx(0.6, rel=1e-15)


@pytest.mark.parametrize("sw,sb", [(1.0, 0.5), (1.5, 0.5), (1.99, 0.01), (0.2, 3.0)])
def test_q_star_relu_closed_form(sw, sb):
    expected = sb / (1 - sw / 2)
    assert T.q_star("relu", sw, sb) == pytest.approx(expected, rel=1e-12)
    for q0 in (1e-6, 1e6):  # a unique attracting fixed point: any start reaches it
        assert T.q_star("relu", sw, sb, q0=q0) == pytest.approx(expected, rel=1e-12)
    assert T.q_star("leaky_relu", sw, sb) == pytest.approx(sb / (1 - sw * (1 + A * A) / 2),
                                                           rel=1e-12)
    assert T.q_star("identity", sw / 2, sb) == pytest.approx(sb / (1 - sw / 2), rel=1e-12)


def test_q_star_degenerate_branches():
    # He's initialisation without bias: every q is a fixed point; the variance stays at q0
    assert T.q_star("relu", 2.0, 0.0) == 1.0
    assert T.q_star("relu", 2.0, 0.0, q0=3.5) == 3.5
    assert T.q_star("identity", 1.0, 0.0, q0=0.25) == 0.25
    # no finite fixed point: the variance explodes
    assert T.q_star("relu", 2.0, 0.1) == math.inf
    assert T.q_star("relu", 2.5, 0.0) == math.inf
    assert T.q_star("identity", 1.2, 0.0) == math.inf
    assert T.q_star("softplus", 2.0, 0.0) == math.inf
    assert T.q_star("softplus", 2.1, 0.3) == math.inf
    # the variance decays to the fixed point 0
    assert T.q_star("relu", 1.9, 0.0) == 0.0
    assert T.q_star("identity", 0.9, 0.0) == 0.0
    for sw in (0.3, 0.9, 1.0):
        assert T.q_star("tanh", sw, 0.0) == 0.0
    assert T.q_star("tanh", 1.5, 0.0, q0=0.0) == 0.0  # 0 is a (repelling) fixed point


@pytest.mark.parametrize("activation,sw,sb", [
    ("tanh", 1.5, 0.0), ("tanh", 1.5, 0.05), ("tanh", 4.0, 0.3), ("tanh", 0.8, 0.1),
    ("sigmoid", 4.0, 0.1), ("sigmoid", 30.0, 0.0), ("softplus", 1.5, 0.1), ("softplus", 0.5, 0.0),
])
def test_q_star_matches_iteration_by_quad(activation, sw, sb):
    ours = T.q_star(activation, sw, sb)
    assert ours > 0
    assert ours == pytest.approx(quad_q_star(activation, sw, sb), rel=1e-9)
    assert T.variance_map(activation, ours, sw, sb) == pytest.approx(ours, rel=1e-12)
    # from far above and far below, the same attracting point
    assert T.q_star(activation, sw, sb, q0=1e4) == pytest.approx(ours, rel=1e-10)
    assert T.q_star(activation, sw, sb, q0=1e-4) == pytest.approx(ours, rel=1e-10)


def test_variance_trajectory_converges_to_q_star():
    qs = T.variance_trajectory("tanh", 2.0, 0.1, 5.0, 60)
    assert qs.shape == (61,) and qs[0] == 5.0
    assert np.all(np.diff(qs[:20]) < 0) and np.all(np.diff(qs) <= 0)  # monotone, from above
    assert qs[-1] == pytest.approx(T.q_star("tanh", 2.0, 0.1), rel=1e-10)
    np.testing.assert_allclose(T.variance_trajectory("relu", 2.0, 0.0, 1.3, 5), 1.3, rtol=1e-14)


# --- chi_1 and criticality --------------------------------------------------------------------

def test_chi_1_tanh_without_bias_is_sigma_w2_up_to_one():
    assert T.chi_1("tanh", 1.0, 0.0) == pytest.approx(1.0, abs=1e-14)
    for sw in (0.25, 0.5, 0.9):
        assert T.chi_1("tanh", sw, 0.0) == pytest.approx(sw, rel=1e-14)
    assert T.chi_1("tanh", 1.5, 0.0) > 1.0  # chaotic above


def test_chi_1_closed_forms():
    for sw, sb in [(1.0, 0.0), (2.0, 0.0), (3.0, 0.2), (1.5, 0.7)]:
        assert T.chi_1("relu", sw, sb) == pytest.approx(sw / 2, rel=1e-13)
        assert T.chi_1("leaky_relu", sw, sb) == pytest.approx(sw * (1 + A * A) / 2, rel=1e-13)
        assert T.chi_1("identity", sw, sb) == pytest.approx(sw, rel=1e-13)
    # chi_1 at a given q: sigma_w2 E[f'(sqrt(q) z)^2], checked by quad
    q = 2.3
    ref = 1.7 * quad_expectation(lambda x: T.ACTIVATION_FUNCS["sigmoid"][1](x) ** 2, q)
    assert T.chi_1("sigmoid", 1.7, 0.0, q=q) == pytest.approx(ref, rel=1e-11)


def test_critical_sigma_w2_known_values():
    assert T.critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, abs=1e-6)
    assert T.critical_sigma_w2("relu", 0.0) == pytest.approx(2.0, abs=1e-9)
    assert T.critical_sigma_w2("relu", 0.5) == pytest.approx(2.0, abs=1e-9)
    assert T.critical_sigma_w2("identity", 0.3) == pytest.approx(1.0, abs=1e-9)
    assert T.critical_sigma_w2("leaky_relu", 0.0) == pytest.approx(2 / (1 + A * A), abs=1e-9)


@pytest.mark.parametrize("sb", [0.05, 0.3])
def test_critical_sigma_w2_tanh_with_bias(sb):
    crit = T.critical_sigma_w2("tanh", sb)
    assert crit > 1.0
    assert T.chi_1("tanh", crit, sb) == pytest.approx(1.0, abs=1e-9)
    assert T.chi_1("tanh", 0.9 * crit, sb) < 1.0 < T.chi_1("tanh", 1.1 * crit, sb)
    # independently: q* by iterating the quad map, then chi_1 by quad
    q = quad_q_star("tanh", crit, sb)
    chi = crit * quad_expectation(lambda x: (1 - np.tanh(x) ** 2) ** 2, q)
    assert chi == pytest.approx(1.0, abs=1e-8)
    assert T.depth_scale("tanh", 0.9 * crit, sb) > 0 > T.depth_scale("tanh", 1.1 * crit, sb)
    growth = [T.log_gradient_growth("tanh", f * crit, sb) for f in (0.9, 1.1)]
    assert growth[0] < 0 < growth[1]


def test_depth_scale_and_growth_values():
    assert T.depth_scale("relu", 1.0, 0.1) == pytest.approx(-1 / math.log(0.5), rel=1e-12)
    assert T.depth_scale("relu", 2.0, 0.0) == math.inf
    assert T.log_gradient_growth("relu", 3.0, 0.0) == pytest.approx(0.5 * math.log(1.5), rel=1e-12)


def test_sigma_w2_of_init():
    assert T.sigma_w2_of_init("glorot", 64) == pytest.approx(1.0)
    assert T.sigma_w2_of_init("glorot", 10, 30) == pytest.approx(0.5)
    assert T.sigma_w2_of_init("he", 17) == pytest.approx(2.0)
    assert T.sigma_w2_of_init("lecun", 5) == pytest.approx(1.0)
    assert T.sigma_w2_of_init("normal", 8, scale=1.5) == pytest.approx(2.25)
    assert T.sigma_w2_of_init("uniform", 9) == pytest.approx(1 / 3)
    # He + relu and Glorot (square) + tanh sit at the edge of chaos
    assert T.chi_1("relu", T.sigma_w2_of_init("he", 32), 0.0) == pytest.approx(1.0)
    assert T.chi_1("tanh", T.sigma_w2_of_init("glorot", 32), 0.0) == pytest.approx(1.0)


# --- sigmoid bound ----------------------------------------------------------------------------

def test_sigmoid_derivative_bound_is_the_maximum():
    z = np.linspace(-10, 10, 200001)
    assert T.sigmoid_derivative_bound() == 0.25
    assert T.ACTIVATION_FUNCS["sigmoid"][1](z).max() == pytest.approx(0.25, rel=1e-12)
    assert T.sigmoid_gradient_bound(3) == 0.25 ** 3
    assert T.sigmoid_gradient_bound(2, [2.0, 3.0]) == pytest.approx(6 / 16)


def test_sigmoid_gradient_bound_holds_for_a_network():
    net = simcore.MLP([4, 6, 6, 6, 1], activation="sigmoid", loss="mse", init="normal")
    rng = np.random.default_rng(1)
    for seed in range(5):
        params = net.init(seed, scale=3.0, bias_scale=1.0)
        x = rng.normal(size=(1, 4))
        _, g = net.loss_and_grad(params, x, rng.normal(size=1))
        ratio = np.linalg.norm(g[0]["b"]) / np.linalg.norm(g[-1]["b"])
        norms = [np.linalg.norm(p["W"], 2) for p in params[1:]]
        bound = T.sigmoid_gradient_bound(net.n_layers - 1, norms)
        assert 0 < ratio <= bound


# --- least squares ----------------------------------------------------------------------------

@pytest.mark.parametrize("n_out", [1, 2])
def test_ls_hessian_matches_finite_differences_of_simcore(n_out):
    X, Y = linear_problem(n_out=n_out)
    net = simcore.MLP([3, n_out], activation="identity", loss="mse")
    theta = net.pack(net.init(0, bias_scale=0.5))
    grad_fn = T.mlp_grad_fn(net, X, Y)
    H = T.ls_hessian(X, n_out)
    assert H.shape == (4 * n_out, 4 * n_out)
    # column by column, by central differences with a large step (the loss is quadratic)
    fd = central_diff(grad_fn, theta, h=0.1)
    for j in range(H.shape[0]):
        np.testing.assert_allclose(fd[j], H[:, j], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(T.exact_hessian(grad_fn, theta), H, rtol=1e-7, atol=1e-9)
    if n_out == 1:  # SCIENCE.md's (2/N) X^T X with the bias column
        Xa = np.hstack([X, np.ones((len(X), 1))])
        np.testing.assert_allclose(H, 2 / len(X) * Xa.T @ Xa, rtol=1e-14)


def test_ls_spectrum_and_step_sizes():
    X, _ = linear_problem()
    ev = np.linalg.eigvalsh(T.ls_hessian(X))
    lmin, lmax = T.ls_spectrum(X)
    assert (lmin, lmax) == pytest.approx((ev[0], ev[-1]), rel=1e-12)
    assert T.ls_spectrum(X, 3) == pytest.approx((ev[0] / 3, ev[-1] / 3), rel=1e-12)
    assert T.ls_threshold(X) == pytest.approx(2 / ev[-1], rel=1e-12)
    eta = T.ls_optimal_step(X)
    assert eta == pytest.approx(2 / (ev[0] + ev[-1]), rel=1e-12)
    rho = T.ls_optimal_contraction(lmin, lmax)
    kappa = T.ls_condition_number(lmin, lmax)
    assert rho == pytest.approx((kappa - 1) / (kappa + 1), rel=1e-12)
    assert T.ls_contraction(eta, lmin, lmax) == pytest.approx(rho, rel=1e-12)
    etas = np.linspace(0, 1.5 * T.ls_threshold(X), 301)
    rhos = T.ls_contraction(etas, lmin, lmax)
    assert rhos.shape == etas.shape and rhos.min() == pytest.approx(rho, rel=1e-3)
    assert np.all((rhos < 1) == ((etas > 0) & (etas < T.ls_threshold(X))))
    # rank-deficient design: lambda_min = 0, kappa = inf
    Xd = np.column_stack([X[:, 0], 2 * X[:, 0]])
    assert T.ls_spectrum(Xd)[0] == 0.0 or T.ls_spectrum(Xd)[0] < 1e-12
    assert T.ls_condition_number(0.0, 1.0) == math.inf


def test_ls_solution_is_the_minimum():
    X, Y = linear_problem(n_out=2)
    sol = T.ls_solution(X, Y)
    assert sol.W.shape == (3, 2) and sol.b.shape == (2,)
    net = simcore.MLP([3, 2], activation="identity", loss="mse")
    loss, grads = net.loss_and_grad(sol.params, X, Y)
    assert loss == pytest.approx(sol.loss, rel=1e-12)
    assert max(np.abs(g).max() for d in grads for g in d.values()) < 1e-12
    assert T.ls_solution(X, Y[:, 0]).W.shape == (3, 1)


def _gd(net, params, X, y, eta, steps):
    thetas = [net.pack(params)]
    for _ in range(steps):
        _, g = net.loss_and_grad(params, X, y)
        params = [{k: p[k] - eta * gp[k] for k in p} for p, gp in zip(params, g)]
        thetas.append(net.pack(params))
    return np.array(thetas)


@pytest.mark.parametrize("factor", [0.97, 1.03])
def test_gd_follows_the_linear_prediction_around_the_threshold(factor):
    X, y = linear_problem()
    net = simcore.MLP([3, 1], activation="identity", loss="mse")
    params = net.init(0)
    sol = T.ls_solution(X, y)
    theta_star = net.pack(sol.params)
    eta = factor * T.ls_threshold(X)
    steps = 150
    thetas = _gd(net, params, X, y, eta, steps)
    lam, U = np.linalg.eigh(T.ls_hessian(X))
    c = (thetas - theta_star) @ U  # error in the eigenbasis, per step
    predicted = c[0] * (1 - eta * lam) ** np.arange(steps + 1)[:, None]
    scale = np.abs(c).max(axis=1, keepdims=True)
    np.testing.assert_allclose(c, predicted, rtol=0, atol=1e-8 * scale.max())
    # the measured per-step factors on the slowest and fastest directions (early steps, before
    # rounding of the large component swamps the small one)
    ratio = c[1:21] / c[:20]
    np.testing.assert_allclose(ratio[:, 0], 1 - eta * lam[0], rtol=1e-6)
    np.testing.assert_allclose(ratio[:, -1], 1 - eta * lam[-1], rtol=1e-6)
    err = np.linalg.norm(c, axis=1)
    if factor < 1:
        assert err[-1] < 1e-2 * err[0]
    else:
        assert err[-1] > 1e2 * err[0]


def test_measured_divergence_threshold_matches_2_over_lambda_max():
    X, y = linear_problem(seed=3)
    net = simcore.MLP([3, 1], activation="identity", loss="mse")
    params = net.init(1)
    loss0 = net.loss_and_grad(params, X, y)[0]

    def diverges(eta, steps=300):
        p = params
        for _ in range(steps):
            loss, g = net.loss_and_grad(p, X, y)
            if not np.isfinite(loss) or loss > 1e6 * loss0:
                return True
            p = [{k: q[k] - eta * gq[k] for k in q} for q, gq in zip(p, g)]
        return net.loss_and_grad(p, X, y)[0] > loss0

    thr = T.ls_threshold(X)
    lo, hi = 0.5 * thr, 1.5 * thr
    assert not diverges(lo) and diverges(hi)
    for _ in range(12):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if diverges(mid) else (mid, hi)
    assert 0.5 * (lo + hi) == pytest.approx(thr, rel=0.02)


# --- sharpness --------------------------------------------------------------------------------

def test_hessian_vector_product_reference_exact_on_quadratics_and_accurate_on_quartics():
    """naive's central-difference H v, the product the power-iteration reference iterates."""
    rng = np.random.default_rng(0)
    M = rng.normal(size=(6, 6))
    S = M + M.T
    theta, v = rng.normal(size=6), rng.normal(size=6)
    np.testing.assert_allclose(ref_hessian_vector_product(lambda t: S @ t + 1.0, theta, v), S @ v,
                               rtol=1e-8, atol=1e-9)
    # L = sum theta^4 / 4: H = diag(3 theta^2)
    hv = ref_hessian_vector_product(lambda t: t ** 3, theta, v)
    np.testing.assert_allclose(hv, 3 * theta ** 2 * v, rtol=1e-7, atol=1e-8)
    assert np.all(ref_hessian_vector_product(lambda t: t ** 3, theta, np.zeros(6)) == 0)


def _tiny_tanh_problem():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(6, 2))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1]
    net = simcore.MLP([2, 3, 1], activation="tanh", loss="mse")
    params = net.init(0, scale=1.5, bias_scale=0.3)
    return net, params, X, y


def test_power_iteration_matches_exact_hessian_of_a_tiny_mlp():
    net, params, X, y = _tiny_tanh_problem()
    grad_fn = T.mlp_grad_fn(net, X, y)
    theta = net.pack(params)
    H = T.exact_hessian(grad_fn, theta)
    np.testing.assert_allclose(H, H.T)
    top = np.linalg.eigvalsh(H)[-1]
    lam, v, k, ok = ref_sharpness_power_iteration(grad_fn, theta)
    assert ok and k < 1000
    assert lam == pytest.approx(top, rel=1e-6)
    np.testing.assert_allclose(H @ v, lam * v, atol=1e-5 * abs(lam))
    assert T.sharpness_lanczos(grad_fn, theta) == pytest.approx(top, rel=1e-6)
    assert T.mlp_sharpness(net, params, X, y) == pytest.approx(top, rel=1e-6)
    assert ref_sharpness_power_iteration(grad_fn, theta, seed=3)[0] == pytest.approx(top, rel=1e-6)
    # warm start from the eigenvector: converges at once
    assert ref_sharpness_power_iteration(grad_fn, theta, v0=v)[2] <= 3


def test_sharpness_is_the_largest_eigenvalue_not_the_largest_magnitude():
    S = np.diag([-5.0, 1.0, 2.0, 0.5, -1.0])
    Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 5)))
    H = Q @ S @ Q.T
    grad_fn = lambda t: H @ t  # noqa: E731
    theta = np.ones(5)
    assert ref_sharpness_power_iteration(grad_fn, theta)[0] == pytest.approx(2.0, rel=1e-6)
    assert T.sharpness_lanczos(grad_fn, theta) == pytest.approx(2.0, rel=1e-8)
    # all eigenvalues negative (-8, -7, -6.5, -5, -1): the sharpness is -1, not -8
    neg = lambda t: -(H @ t) - 6.0 * t  # noqa: E731
    assert ref_sharpness_power_iteration(neg, theta)[0] == pytest.approx(-1.0, rel=1e-6)
    assert T.sharpness_lanczos(neg, theta) == pytest.approx(-1.0, rel=1e-8)


def test_sharpness_of_a_linear_model_is_ls_lambda_max():
    X, y = linear_problem()
    net = simcore.MLP([3, 1], activation="identity", loss="mse")
    params = net.init(0)
    lmax = T.ls_spectrum(X)[1]
    assert T.mlp_sharpness(net, params, X, y) == pytest.approx(lmax, rel=1e-8)
    power = ref_sharpness_power_iteration(T.mlp_grad_fn(net, X, y), net.pack(params))[0]
    assert power == pytest.approx(lmax, rel=1e-6)


def test_mlp_grad_fn_uses_a_float64_twin():
    net, params, X, y = _tiny_tanh_problem()
    net32 = simcore.MLP(net.sizes, activation="tanh", loss="mse", dtype="float32")
    X32 = X.astype(np.float32)
    theta = net.pack(params)
    g32 = T.mlp_grad_fn(net32, X32, y)(theta)
    assert g32.dtype == np.float64
    _, g = net.loss_and_grad(params, X32.astype(np.float64), y)
    np.testing.assert_array_equal(g32, net.pack(g))


# --- bad input --------------------------------------------------------------------------------

def _bad_calls():
    X, y = linear_problem()
    net = simcore.MLP([3, 1], activation="identity", loss="mse")
    params = net.init(0)
    quadratic = lambda t: 2 * t  # noqa: E731
    th = np.ones(3)
    return [
        ("activation", lambda: T.variance_map("gelu", 1.0, 1.0, 0.0)),
        ("q", lambda: T.variance_map("tanh", -1.0, 1.0, 0.0)),
        ("q", lambda: T.variance_map("tanh", [1.0, -1.0], 1.0, 0.0)),
        ("sigma_w2", lambda: T.q_star("tanh", -1.0, 0.0)),
        ("sigma_b2", lambda: T.q_star("tanh", 1.0, float("nan"))),
        ("q0", lambda: T.q_star("tanh", 1.0, 0.0, q0=-1.0)),
        ("q_ceiling", lambda: T.q_star("tanh", 1.0, 0.0, q_floor=1.0, q_ceiling=0.5)),
        ("q", lambda: T.chi_1("tanh", 1.0, 0.0, q=-2.0)),
        ("sigma_w2", lambda: T.chi_1("tanh", "1", 0.0)),
        ("sigma_b2", lambda: T.critical_sigma_w2("tanh", -0.1)),
        ("chi_1", lambda: T.critical_sigma_w2("relu", 0.0, max_sigma_w2=1.5)),
        ("depth", lambda: T.variance_trajectory("tanh", 1.0, 0.0, 1.0, -1)),
        ("func", lambda: T.gaussian_expectation("tanh", 1.0)),
        ("q", lambda: T.gaussian_expectation(np.tanh, math.inf)),
        ("init", lambda: T.sigma_w2_of_init("xavier", 4)),
        ("fan_in", lambda: T.sigma_w2_of_init("he", 0)),
        ("n_layers", lambda: T.sigmoid_gradient_bound(-1)),
        ("weight_norms", lambda: T.sigmoid_gradient_bound(2, [1.0])),
        ("X", lambda: T.ls_hessian(np.ones(3))),
        ("X", lambda: T.ls_spectrum([[1.0, np.nan]])),
        ("n_out", lambda: T.ls_hessian(X, n_out=0)),
        ("eta", lambda: T.ls_contraction(-1.0, 0.1, 1.0)),
        ("eta", lambda: T.ls_contraction([0.1, -1.0], 0.1, 1.0)),
        ("lambda_max", lambda: T.ls_contraction(0.1, 2.0, 1.0)),
        ("lambda_min", lambda: T.ls_optimal_contraction(-0.1, 1.0)),
        ("Y", lambda: T.ls_solution(X, y[:-1])),
        ("theta", lambda: T.exact_hessian(quadratic, np.ones((2, 2)))),
        ("eps", lambda: T.exact_hessian(quadratic, th, eps=0.0)),
        ("seed", lambda: T.sharpness_lanczos(quadratic, th, seed=-1)),
        ("grad_fn", lambda: T.sharpness_lanczos("f", th)),
        ("grad_fn", lambda: T.sharpness_lanczos(lambda t: t[:2], th)),
        ("mask", lambda: T.hessian_block_sharpness(quadratic, th, np.ones(4, bool))),
        ("net", lambda: T.mlp_grad_fn("net", X, y)),
        ("X", lambda: T.mlp_grad_fn(net, X[:, :2], y)),
        ("y", lambda: T.mlp_grad_fn(net, X, y[:-1])),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_input_raises_value_error_naming_the_argument(case):
    name, call = _bad_calls()[case]
    with pytest.raises(ValueError, match=rf"(^|\W){re.escape(name)}\W"):
        call()
