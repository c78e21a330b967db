"""The vanishing-gradients section of studies/theory.py, each function against an independent
computation: Monte Carlo sampling, a closed form, finite differences, or simcore's own backprop."""
import math

import numpy as np
import pytest

from simcore import MLP
from studies import theory


def test_finite_width_log_growth_matches_sampled_jensen_term():
    # r = (sigma_w^2/N) sum_i f'(z_i)^2 g_i^2: sample E[1/2 ln r] directly
    rng = np.random.default_rng(0)
    for act, sw2, q, N in (("relu", 2.0, 1.0, 32), ("tanh", 1.5, 0.7, 24), ("sigmoid", 1.0, 0.3, 16)):
        df = theory.ACTIVATION_FUNCS[act][1]
        z = rng.normal(0.0, math.sqrt(q), (200_000, N))
        g = rng.normal(size=(200_000, N))
        r = sw2 / N * np.sum(df(z) ** 2 * g ** 2, axis=1)
        mc = 0.5 * np.mean(np.log(r))
        se = 0.5 * np.std(np.log(r)) / math.sqrt(len(r))
        pred = theory.finite_width_log_growth(act, sw2, 0.0, N, q=q)
        wide = 0.5 * math.log(theory.chi_1(act, sw2, 0.0, q=q))
        # the 1/N term is resolved (its size is several SE) and the remainder is O(1/N^2)
        assert abs(pred - mc) < 4 * se + 2.0 / N ** 2, (act, pred, mc)
        assert abs(wide - mc) > abs(pred - mc)


def test_finite_width_log_growth_relu_closed_form():
    # relu: f'^2 is Bernoulli(1/2), so 3 E f'^4 / (E f'^2)^2 - 1 = 5
    for N in (8, 64, 1000):
        assert theory.finite_width_log_growth("relu", 2.0, 0.0, N, q=1.0) == pytest.approx(-5 / (4 * N), abs=1e-12)
    with pytest.raises(ValueError, match="width"):
        theory.finite_width_log_growth("relu", 2.0, 0.0, 0)


def test_bn_gradient_factor_closed_form_and_sampling():
    # relu: E f'^2 = 1/2, Var relu(z) = 1/2 - 1/(2 pi)
    assert theory.bn_gradient_factor("relu") == pytest.approx(1.0 / (1.0 - 1.0 / math.pi), rel=1e-12)
    assert theory.bn_log_gradient_growth("relu") == pytest.approx(0.1916, abs=5e-5)
    z = np.random.default_rng(1).normal(size=4_000_000)
    for act, value in (("tanh", 0.0818), ("sigmoid", 0.0165)):
        f, df = theory.ACTIVATION_FUNCS[act]
        sampled = np.mean(df(z) ** 2) / np.var(f(z))
        assert theory.bn_gradient_factor(act) == pytest.approx(sampled, rel=3e-3)
        assert theory.bn_log_gradient_growth(act) == pytest.approx(value, abs=1e-4)


def test_correlation_map_against_sampling_and_its_fixed_points():
    rng = np.random.default_rng(2)
    act, sw2, sb2 = "tanh", 2.5, 0.05
    q = theory.q_star(act, sw2, sb2)
    f = theory.ACTIVATION_FUNCS[act][0]
    for c in (0.0, 0.3, 0.8):
        z1, z2 = rng.normal(size=(2, 2_000_000))
        u1 = math.sqrt(q) * z1
        u2 = math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
        sampled = (sw2 * np.mean(f(u1) * f(u2)) + sb2) / q
        assert theory.correlation_map(act, c, sw2, sb2) == pytest.approx(sampled, abs=2e-3)
    # c = 1 is always a fixed point (C(1) = V(q*)/q* = 1)
    assert theory.correlation_map(act, 1.0, sw2, sb2) == pytest.approx(1.0, abs=1e-10)
    cs = theory.c_star(act, sw2, sb2)
    assert 0 < cs < 1
    assert theory.correlation_map(act, cs, sw2, sb2) == pytest.approx(cs, abs=1e-10)
    # chi_c is the map's slope at c*, by central differences
    h = 1e-5
    slope = (theory.correlation_map(act, cs + h, sw2, sb2) - theory.correlation_map(act, cs - h, sw2, sb2)) / (2 * h)
    assert theory.chi_c(act, sw2, sb2) == pytest.approx(slope, rel=1e-5)
    assert theory.correlation_depth_scale(act, sw2, sb2) == pytest.approx(-1 / math.log(slope), rel=1e-4)


def test_correlation_depth_scale_ordered_phase_and_edge():
    # ordered phase: c* = 1 and xi_c = -1/ln chi_1, the gradient depth scale
    for sw2 in (0.3, 0.8, 1.4):
        assert theory.c_star("tanh", sw2, 0.05) == 1.0
        assert theory.correlation_depth_scale("tanh", sw2, 0.05) == pytest.approx(
            theory.depth_scale("tanh", sw2, 0.05), rel=1e-12)
    # xi_c grows without bound towards the edge of chaos from both sides
    crit = theory.critical_sigma_w2("tanh", 0.05)
    assert theory.correlation_depth_scale("tanh", crit * 0.99, 0.05) > 100
    assert theory.correlation_depth_scale("tanh", crit * 1.01, 0.05) > 50
    with pytest.raises(ValueError, match="q\\*"):
        theory.correlation_map("relu", 0.5, 3.0, 0.0)      # q* = inf


@pytest.mark.parametrize("batchnorm", [False, True])
def test_random_mlp_telemetry_matches_simcore_backprop(batchnorm):
    # the NumPy networks' gradient norms equal simcore's for the same weights
    rng = np.random.default_rng(3)
    X = rng.normal(size=(12, 3))
    y = rng.normal(size=12)
    depth, width = 4, 5
    r = theory.random_mlp_telemetry("tanh", X, y, width, depth, sigma_w2=1.3, batchnorm=batchnorm, seeds=1, seed=7)
    # redraw the same weights as random_mlp_telemetry does
    g = np.random.default_rng(7)
    sizes = [3] + [width] * (depth - 1) + [1]
    Ws = [g.normal(0.0, math.sqrt(1.3 / sizes[l]), (sizes[l], sizes[l + 1])) for l in range(depth)]
    bs = [g.normal(0.0, 0.0, sizes[l + 1]) for l in range(depth)]
    net = MLP(sizes, activation="tanh", loss="mse", batchnorm=batchnorm, dtype="float64")
    params = net.init(seed=0)
    for l in range(depth):
        params[l]["W"] = Ws[l]
        params[l]["b"] = bs[l]
    _, grads = net.loss_and_grad(params, X, y)
    ours = np.array([np.linalg.norm(gl["W"]) for gl in grads])
    np.testing.assert_allclose(r["grad_norm"][0], ours, rtol=1e-6)
    ys = net.activation_inputs(params, X)
    np.testing.assert_allclose(r["preact_std"][0][:-1], [u.std() for u in ys], rtol=1e-9)
