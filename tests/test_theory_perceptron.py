"""The perceptron study's theory functions against independent computations: the maximum margin
(least-distance programming by NNLS) against a general-purpose constrained solver and a linear
program; the Hadamard construction's margin and mistake count exactly; the best linear accuracy
in 2-D against random lines and a tiny exact case; the XOR plateau level against a direct
minimisation of the loss."""
import numpy as np
import pytest
from scipy import optimize

from simcore import datasets, perceptron as sperc
from studies import perceptron as study
from studies import perceptron_data


def _slsqp_margin(X, y):
    """gamma* = 1 / min ||u|| s.t. y_i u.z_i >= 1, by SLSQP (an independent solver)."""
    G = y[:, None] * study.augmented(X)
    u0 = np.linalg.lstsq(G, np.ones(len(y)), rcond=None)[0]
    u0 = u0 / (G @ u0).min()                      # a feasible start
    res = optimize.minimize(lambda u: u @ u, u0, jac=lambda u: 2 * u, method="SLSQP",
                            constraints=[{"type": "ineq", "fun": lambda u: G @ u - 1,
                                          "jac": lambda u: G}],
                            options={"ftol": 1e-13, "maxiter": 2000})
    assert (G @ res.x).min() >= 1 - 1e-7, res.message
    return 1 / np.linalg.norm(res.x)


@pytest.mark.parametrize("d,margin,seed", [(2, 0.05, 0), (3, 0.2, 1), (5, 0.1, 2), (8, 0.02, 3)])
def test_max_margin_matches_slsqp_and_beats_construction(d, margin, seed):
    X, y, info = datasets.blobs_margin(n=30, d=d, margin=margin, seed=seed, return_info=True)
    y = datasets.to_pm1(y)
    m = study.max_margin(X, y)
    assert m["separable"]
    assert m["gamma"] == pytest.approx(_slsqp_margin(X, y), rel=1e-6)
    assert m["gamma_upper"] == pytest.approx(m["gamma"], rel=1e-8)   # primal = dual
    assert m["gamma"] >= info.margin_augmented * (1 - 1e-12)
    u = m["u"]
    assert np.linalg.norm(u) == pytest.approx(1.0)
    assert sperc.margin(X, y, u[:-1], u[-1]) == pytest.approx(m["gamma"], rel=1e-12)


def test_xor_not_separable_by_lp():
    X, y = datasets.xor(40, 0.2, 0)
    y = datasets.to_pm1(y)
    m = study.max_margin(X, y)
    assert not m["separable"] and m["gamma"] == 0
    G = y[:, None] * study.augmented(X)
    lp = optimize.linprog(np.zeros(3), A_ub=-G, b_ub=-np.ones(len(y)), bounds=[(None, None)] * 3)
    assert lp.status == 2          # infeasible: no u with y_i u.z_i >= 1
    # a separable set is found separable by the same LP
    Xs, ys = datasets.blobs_margin(n=20, d=2, margin=0.1, seed=0)
    Gs = datasets.to_pm1(ys)[:, None] * study.augmented(Xs)
    assert optimize.linprog(np.zeros(3), A_ub=-Gs, b_ub=-np.ones(20),
                            bounds=[(None, None)] * 3).status == 0
    assert study.max_margin(Xs, datasets.to_pm1(ys))["separable"]


@pytest.mark.parametrize("k", [2, 4, 8, 32, 128])
def test_hadamard_reaches_novikoff_exactly(k):
    H = perceptron_data.sylvester_hadamard(k)
    np.testing.assert_array_equal(H @ H.T, k * np.eye(k))
    for seed in range(3):
        X, y = perceptron_data.hadamard(k, seed)
        assert X.shape == (k, k - 1) and y.sum() == k // 2
        y = datasets.to_pm1(y)
        m = study.max_margin(X, y)
        assert m["gamma"] == pytest.approx(1.0, rel=1e-10)
        assert m["gamma_upper"] == pytest.approx(1.0, rel=1e-10)
        if k <= 8:
            assert _slsqp_margin(X, y) == pytest.approx(1.0, rel=1e-6)
        bound = (sperc.radius(X) / m["gamma"]) ** 2
        assert bound == pytest.approx(k, rel=1e-10)
        for order in range(4):
            r = sperc.train(X, y, lr=1.0, max_epochs=10, seed=order)
            assert r.mistakes == k and r.converged and r.epochs == 2
            assert list(r.mistakes_per_epoch) == [k, 0]


def test_hadamard_rejects_bad_arguments():
    with pytest.raises(ValueError, match="power of two"):
        perceptron_data.hadamard(12)
    with pytest.raises(ValueError, match="k must be >= 2"):
        perceptron_data.hadamard(1)
    with pytest.raises(ValueError, match="seed"):
        perceptron_data.hadamard(4, seed=-1)


def test_best_linear_accuracy_exact_cases():
    X, y = datasets.xor(4, noise=0.0)
    assert study.best_linear_accuracy_2d(X, y) == pytest.approx(0.75)
    Xs, ys = datasets.blobs_margin(n=30, d=2, margin=0.1, seed=4)
    assert study.best_linear_accuracy_2d(Xs, ys) == 1.0


def test_best_linear_accuracy_against_random_lines():
    """Random lines give lower bounds on the best linear accuracy; the enumeration's value is
    above every one of them and within the two points on its line of the best."""
    X, y = datasets.xor(30, noise=0.6, seed=2)
    bound = study.best_linear_accuracy_2d(X, y)
    rng = np.random.default_rng(0)
    th = rng.uniform(0, 2 * np.pi, 200_000)
    w = np.stack([np.cos(th), np.sin(th)], 1)
    b = rng.uniform(-3, 3, len(th))
    acc = (((X @ w.T + b) > 0) == (y[:, None] > 0)).mean(0)
    assert acc.max() <= bound + 1e-12
    assert bound - acc.max() <= 2 / len(y) + 1e-12


@pytest.mark.parametrize("n_a,n_b,n", [(50, 50, 200), (51, 50, 201), (10, 30, 80)])
def test_plateau_loss_is_the_best_common_output(n_a, n_b, n):
    """BCE of a common output p on the two merged clusters (n_a positives, n_b negatives),
    minimised over p numerically, with every other sample at zero loss."""
    f = lambda p: -(n_a * np.log(p) + n_b * np.log(1 - p)) / n
    res = optimize.minimize_scalar(f, bounds=(1e-9, 1 - 1e-9), method="bounded",
                                   options={"xatol": 1e-12})
    assert study.plateau_loss(n_a, n_b, n) == pytest.approx(res.fun, rel=1e-9)
    assert res.x == pytest.approx(n_a / (n_a + n_b), abs=1e-6)
    assert study.xor_plateau_losses(200) == {k: pytest.approx(0.5 * np.log(2))
                                             for k in ("0-1", "0-2", "3-1", "3-2")}


def test_xor_labels_match_simcore_layout():
    _, y = datasets.xor(8, noise=0.0)
    assert tuple(y[:4]) == study.XOR_LABELS
    for a, b in study.XOR_OPPOSITE_PAIRS:
        assert study.XOR_LABELS[a] != study.XOR_LABELS[b]


def test_richardson_limit_exact_for_one_over_t():
    L = lambda t: 0.3 + 2.5 / t
    assert study.richardson_limit(1000, L(1000), 2000, L(2000)) == pytest.approx(0.3, rel=1e-12)


def test_partitions_and_plateau_levels():
    parts = list(study._partitions([0, 1, 2, 3]))
    assert len(parts) == 15                                   # Bell number B_4
    assert len({tuple(sorted(tuple(sorted(g)) for g in p)) for p in parts}) == 15
    assert all(sorted(sum(p, [])) == [0, 1, 2, 3] for p in parts)
    H = lambda p: -p * np.log(p) - (1 - p) * np.log(1 - p)
    levels = study.xor_plateau_levels(200)
    assert sorted({round(v, 12) for v in levels.values()}) == pytest.approx(
        sorted([np.log(2) / 2, 0.75 * H(1 / 3), np.log(2)]))
    assert {study.level_kind(k) for k in levels} == {"2 merged", "3 merged", "2+2 merged",
                                                     "4 merged"}
    # unequal clusters (n = 202: corners 0 and 1 have 51 samples): the merged pair {0, 1}
    # costs the entropy of its 51 + 51 samples, {0, 2} that of 51 + 50
    lv = study.xor_plateau_levels(202)
    assert lv["{0,1}"] == pytest.approx(102 * np.log(2) / 202)
    assert lv["{0,2}"] == pytest.approx(101 * H(51 / 101) / 202)


def test_a_stalled_network_has_merged_clusters():
    """The mechanism behind the plateau levels, seen directly: a 2-2-1 network that stalls on
    XOR gives two opposite-label clusters the same output near 1/2 and the others near 0 or 1,
    and its loss is just above (1/2) ln 2."""
    from simcore import MLP, train_grid
    X, y = datasets.xor(200, 0.2, 0)
    net = MLP([2, 2, 1], activation="sigmoid", loss="bce", init="glorot")
    res = train_grid(net, X, y, lr=1.0, steps=3000, seeds=np.arange(16, dtype=np.uint64),
                     record_every=3000)
    stalled = np.flatnonzero(res.final_loss > 0.2)
    assert len(stalled) >= 1
    corner = np.arange(200) % 4
    for g in stalled:
        params = [{k: v[g] for k, v in layer.items()} for layer in res.params]
        out = net.predict(params, X).ravel()
        means = np.array([out[corner == c].mean() for c in range(4)])
        near_half = np.flatnonzero(np.abs(means - 0.5) < 0.1)
        assert len(near_half) == 2
        a, b = near_half
        assert study.XOR_LABELS[a] != study.XOR_LABELS[b]
        rest = np.setdiff1d(np.arange(4), near_half)
        assert (np.abs(means[rest] - np.array(study.XOR_LABELS)[rest]) < 0.05).all()
        assert 0 < res.final_loss[g] - np.log(2) / 2 < 0.01
