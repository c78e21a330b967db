"""The convergence study's theory (heavy-ball momentum and the escape time of a saturated sigmoid
unit) against independent computations: eigenvalues of the full iteration matrix, bisection,
a brute-force search, direct simulation in parameter space and of simcore's own optimizer,
quadrature and the exact discrete map."""
import math

import numpy as np
import pytest
from scipy import integrate, optimize

from simcore import MLP, train_grid
from studies import convergence, theory


def _spd(seed, n=5, kappa=20.0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.geomspace(1.0, kappa, n)
    return Q @ np.diag(lam) @ Q.T, lam


def _iteration_radius(H, eta, beta):
    """Spectral radius of heavy ball's linear map on (d_t, d_{t-1}), from its 2n eigenvalues."""
    n = H.shape[0]
    M = np.block([[(1 + beta) * np.eye(n) - eta * H, -beta * np.eye(n)], [np.eye(n), np.zeros((n, n))]])
    return float(np.max(np.abs(np.linalg.eigvals(M))))


@pytest.mark.parametrize("seed", range(3))
def test_heavy_ball_contraction_is_the_iteration_matrix_radius(seed):
    H, lam = _spd(seed)
    rng = np.random.default_rng(100 + seed)
    for eta, beta in zip(rng.uniform(0.0, 0.2, 20), rng.uniform(0.0, 0.95, 20)):
        assert theory.heavy_ball_contraction(eta, beta, lam) == pytest.approx(
            _iteration_radius(H, eta, beta), rel=1e-6)
    # beta = 0 is gradient descent
    assert theory.heavy_ball_contraction(0.07, 0.0, lam) == pytest.approx(
        theory.ls_contraction(0.07, lam[0], lam[-1]), rel=1e-12)
    # an eta array gives the same as one call per eta
    etas = np.linspace(0.01, 0.15, 7)
    assert np.allclose(theory.heavy_ball_contraction(etas, 0.4, lam),
                       [theory.heavy_ball_contraction(e, 0.4, lam) for e in etas], rtol=1e-15)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 0.9])
def test_heavy_ball_threshold_by_bisection(beta):
    H, lam = _spd(7)
    eta = optimize.brentq(lambda e: _iteration_radius(H, e, beta) - 1.0,
                          0.5 * (1 + beta) / lam[-1], 3.0 * (1 + beta) / lam[-1], xtol=1e-14)
    assert theory.heavy_ball_threshold(beta, lam[-1]) == pytest.approx(eta, rel=1e-7)


def test_heavy_ball_optimum_by_search():
    H, lam = _spd(3, kappa=10.0)
    eta_o, beta_o, rho_o = theory.heavy_ball_optimal(lam[0], lam[-1])
    assert _iteration_radius(H, eta_o, beta_o) == pytest.approx(rho_o, abs=1e-6)
    # no (eta, beta) on a fine grid around it does better, and its neighbours do worse
    etas = np.linspace(0.5 * eta_o, 1.5 * eta_o, 121)
    betas = np.linspace(0.0, min(0.99, 2 * beta_o), 121)
    best = min(float(theory.heavy_ball_contraction(etas, b, lam).min()) for b in betas)
    assert best >= rho_o - 1e-9 and best == pytest.approx(rho_o, abs=5e-3)
    k = math.sqrt(lam[-1] / lam[0])
    assert rho_o == pytest.approx((k - 1) / (k + 1)) and beta_o == pytest.approx(rho_o ** 2)


def test_heavy_ball_excess_matches_direct_simulation():
    H, lam = _spd(5)
    w, U = np.linalg.eigh(H)
    rng = np.random.default_rng(0)
    d0 = rng.standard_normal(5)
    eta, beta = 0.08, 0.6
    d, v, direct = d0.copy(), np.zeros(5), []
    for _ in range(41):
        direct.append(0.5 * d @ H @ d)
        v = beta * v + H @ d
        d = d - eta * v
    ex = theory.heavy_ball_excess(w, U.T @ d0, eta, beta, 40)
    assert np.allclose(ex, direct, rtol=1e-10)
    # beta = 0: gradient descent's closed form
    ex0 = theory.heavy_ball_excess(w, U.T @ d0, eta, 0.0, 30)
    c = U.T @ d0
    closed = [np.sum(w / 2 * c ** 2 * (1 - eta * w) ** (2 * t)) for t in range(31)]
    assert np.allclose(ex0, closed, rtol=1e-10)


def test_heavy_ball_excess_matches_simcores_momentum():
    """The exact recursion is what simcore's optimizer = "momentum" does on least squares."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((16, 3))
    y = X @ np.array([0.5, -1.0, 2.0]) + 0.3 + 0.1 * rng.standard_normal(16)
    net = MLP([3, 1], activation="identity", loss="mse", dtype="float64")
    res = train_grid(net, X, y, lr=np.array([0.2]), steps=30, seeds=np.array([4], np.uint64),
                     optimizer="momentum", momentum=np.array([0.5]), record_every=1)
    loss = res.history().query("layer == 1")["loss"].to_numpy()
    sol = theory.ls_solution(X, y)
    w, U = np.linalg.eigh(theory.ls_hessian(X))
    p0 = net.init(4, 1.0, 0.0)
    d0 = np.r_[p0[0]["W"][:, 0], p0[0]["b"]] - np.r_[sol.W[:, 0], sol.b]
    ex = theory.heavy_ball_excess(w, U.T @ d0, 0.2, 0.5, 30)
    assert np.allclose(loss - sol.loss, ex[:loss.size], rtol=1e-7, atol=1e-13)


def test_heavy_ball_arguments():
    with pytest.raises(ValueError, match="beta"):
        theory.heavy_ball_factor(0.1, 1.0, 1.0)
    with pytest.raises(ValueError, match="eta"):
        theory.heavy_ball_factor(-0.1, 0.5, 1.0)
    with pytest.raises(ValueError, match="lam"):
        theory.heavy_ball_factor(0.1, 0.5, [-1.0])
    with pytest.raises(ValueError, match="c0"):
        theory.heavy_ball_excess([1.0, 2.0], [1.0], 0.1, 0.5, 3)


def _delta(loss, z):
    s = 1 / (1 + math.exp(-z))
    return 2 * s * s * (1 - s) if loss == "mse_sigmoid" else s


@pytest.mark.parametrize("loss", ["mse_sigmoid", "bce"])
def test_escape_time_by_quadrature(loss):
    for z0 in (0.5, 2.0, 4.0, 7.5):
        quad = integrate.quad(lambda z: 1 / (0.3 * _delta(loss, z)), 0.0, z0, epsabs=0, epsrel=1e-12)[0]
        assert theory.sigmoid_escape_time(loss, z0, 0.3) == pytest.approx(quad, rel=1e-10)
    z = np.array([3.0, 1.0])
    assert np.allclose(theory.sigmoid_escape_time(loss, z, 0.3, z_target=1.0),
                       [theory.sigmoid_escape_time(loss, 3.0, 0.3) - theory.sigmoid_escape_time(loss, 1.0, 0.3), 0.0])


@pytest.mark.parametrize("loss", ["mse_sigmoid", "bce"])
def test_escape_time_is_the_small_step_limit_of_the_map(loss):
    """The exact discrete map with a small step crosses the target after the flow's time."""
    eta_eff = 0.002
    for z0 in (2.5, 4.0):
        flow = theory.sigmoid_escape_time(loss, z0, eta_eff)
        traj = convergence.neuron_trajectory(loss, [z0], 0.0, eta_eff, int(1.2 * flow))[:, 0]
        steps = convergence.first_step_below(np.arange(traj.size), traj, convergence.target_loss(loss, 0.5))
        assert steps == pytest.approx(flow, rel=5e-3)


def test_escape_time_laws():
    """ln t_mse grows with slope -> 1 in z0, t_bce with slope -> 1/eta_eff."""
    z = np.array([10.0, 11.0])
    t = theory.sigmoid_escape_time("mse_sigmoid", z, 0.5)
    assert np.diff(np.log(t))[0] == pytest.approx(1.0, abs=1e-3)
    t = theory.sigmoid_escape_time("bce", z, 0.5)
    assert np.diff(t)[0] == pytest.approx(2.0, rel=1e-4)
    with pytest.raises(ValueError, match="z0"):
        theory.sigmoid_escape_time("bce", -1.0, 0.5)
