"""The convergence study: a tiny grid through the CLI; every prediction recomputed from the
stored rows and independent theory and compared with claims.json; the engine checks moved out of
the report's count tested here; the contraction fit on trajectories with known rates; and every
prediction failing on data manipulated so that it must fail."""
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy import integrate

from simcore import MLP
from studies import convergence, runner
from studies import spec as specmod
from studies.report import Report
from study_run import run_tiny

TINY = """
study = "convergence"
title = "tiny convergence"

[grids.least_squares]
data = {name = "teacher_student", n = 24, d_in = 6, hidden = [], noise = 0.3, seed = 0}
widths = []
activation = "identity"
loss = "mse"
lr = [0.1, 0.2, 0.3, 0.45, 0.455, 0.46, 0.49, 0.5, 0.505, 0.53, 0.55]
seed = {range = 3}
steps = 250
record_every = 1

[grids.hb_threshold]
data = {name = "teacher_student", n = 24, d_in = 6, hidden = [], noise = 0.3, seed = 0}
widths = []
activation = "identity"
loss = "mse"
optimizer = "momentum"
momentum = 0.5
lr = [0.70, 0.72, 0.74, 0.75, 0.76, 0.78, 0.80]
seed = {range = 2}
steps = 300
record_every = 1

[grids.hb_optimum]
data = {name = "teacher_student", n = 24, d_in = 6, hidden = [], noise = 0.3, seed = 0}
widths = []
activation = "identity"
loss = "mse"
optimizer = "momentum"
momentum = [0.26, 0.28, 0.30]
lr = [0.56, 0.57, 0.58, 0.59]
init_scale = 100.0
seed = {range = 2}
steps = 150
record_every = 1

[grids.slowdown_neuron]
data = {name = "xor", n = 1, noise = 0.0}
widths = []
activation = "identity"
loss = ["mse_sigmoid", "bce"]
init_scale = 2.0
bias_scale = 2.0
lr = 0.05
seed = {range = 8}
steps = 400
record_every = 1

[grids.slowdown_law]
data = {name = "xor", n = 1, noise = 0.0}
widths = []
activation = "identity"
loss = ["mse_sigmoid", "bce"]
init_scale = 0.0
bias_scale = {linspace = [1.5, 3.5, 5]}
lr = 0.05
seed = [1]
steps = 800
record_every = 1

[grids.slowdown_data]
data = {name = "moons", n = 32}
widths = []
activation = "identity"
loss = ["mse_sigmoid", "bce"]
init_scale = 1.0
bias_scale = 6.0
lr = 0.5
seed = {range = 4}
steps = 60
record_every = 1

[grids.steps]
data = {name = "xor", n = 32}
widths = [[4]]
activation = ["tanh", "sigmoid"]
loss = "bce"
lr = 0.5
seed = {range = 4}
steps = 300
record_every = 10

[grids.steps_centred]
data = {name = "xor", n = 32}
widths = [[4]]
activation = "sigmoid"
loss = "bce"
lr = 2.0
init_scale = 2.0
seed = {range = 4}
steps = 300
record_every = 10
"""
LS_DATA = dict(n=24, d_in=6, hidden=[], noise=0.3, seed=0)
LABEL = "teacher_student(d_in=6, hidden=[], n=24, noise=0.3, seed=0)"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    toml, out, _, claims = run_tiny(tmp_path_factory, "conv", TINY)
    spec = specmod.load(out / "spec.toml")
    return out, claims, spec, runner.results(spec, out)


@pytest.fixture(scope="module")
def ls():
    """The least-squares problem, computed here with NumPy alone: the Hessian's eigenpairs, the
    minimiser and L*."""
    X, y = runner.make_data("teacher_student", LS_DATA)
    Xa = np.hstack([X, np.ones((X.shape[0], 1))])
    H = 2.0 / X.shape[0] * Xa.T @ Xa
    lam, U = np.linalg.eigh(H)
    theta, *_ = np.linalg.lstsq(Xa, y, rcond=None)
    return dict(X=X, y=y, Xa=Xa, H=H, lam=lam, U=U, theta=theta, Lstar=float(np.mean((Xa @ theta - y) ** 2)))


def _theta0(point, d_in):
    net = MLP([d_in, 1], activation="identity", loss="mse")
    p = net.init(int(point["seed"]), float(point["init_scale"]), float(point["bias_scale"]))
    return np.r_[p[0]["W"][:, 0], p[0]["b"]]


def _runs(data, grid):
    d = data[(data["grid"] == grid) & (data["layer"] == 1)].sort_values(["point", "step"])
    return {pid: t for pid, t in d.groupby("point")}


def _kinds(claims):
    return {k: c["kind"] for k, c in claims.items()}


def test_every_statement_has_a_kind_and_predictions_hold(run):
    out, claims, _, _ = run
    kinds = _kinds(claims)
    assert {kinds[f"{p}[{LABEL}]"] for p in ("ls_contraction", "ls_threshold_bracket",
                                              "ls_threshold_interpolated", "ls_optimal_step",
                                              "ls_optimal_contraction", "ls_oscillation_sign",
                                              "ls_oscillation_rate", "hb_contraction",
                                              "hb_optimal_rate")} == {"prediction"}
    assert kinds[f"hb_threshold_bracket[{LABEL}, beta=0.5]"] == "prediction"
    assert kinds["slowdown_law_mse"] == kinds["slowdown_law_bce"] == "prediction"
    assert kinds["slowdown_neuron_exact"] == kinds[f"ls_monotone[{LABEL}]"] == "check"
    assert kinds["slowdown_gradient_ratio[moons(n=32)]"] == "check"
    assert kinds["zero_centring"] == kinds["tanh_vs_sigmoid_equal_eta"] == "observation"
    preds = [c for c in claims.values() if c["kind"] == "prediction"]
    assert all(c["passed"] for c in preds), [c["id"] for c in preds if not c["passed"]]
    assert all(c["assumes"] and c["figure"] for c in preds)
    assert all((out / "figures" / f"{c['figure']}.png").exists() for c in preds)
    import json
    info = json.loads((out / "claims.json").read_text())
    assert info["total"] == len(preds) and info["checks"]["total"] == 3


def test_least_squares_predictions_from_the_rows(run, ls):
    out, claims, spec, data = run
    lmin, lmax = ls["lam"][0], ls["lam"][-1]
    eta_c = 2 / lmax
    thr = claims[f"ls_threshold_bracket[{LABEL}]"]
    assert thr["predicted"] == pytest.approx(eta_c, rel=1e-12)
    lo, hi = thr["measured"]
    assert (lo, hi) == (0.5, 0.505)
    # the bracket as the stored rows tell it: over the second half of the run lo's excess
    # shrinks and hi's grows, for every seed
    pts = data.drop_duplicates("point").set_index("point")
    for pid, t in _runs(data, "least_squares").items():
        eta = pts.loc[pid, "lr"]
        if eta in (lo, hi):
            e = t["loss"].to_numpy() - ls["Lstar"]
            assert (e[-1] < e[e.size // 2]) == (eta == lo)
    assert claims[f"ls_optimal_step[{LABEL}]"]["predicted"] == pytest.approx(2 / (lmin + lmax), rel=1e-12)
    assert claims[f"ls_optimal_step[{LABEL}]"]["measured"] in (0.455, 0.46)
    assert claims[f"ls_optimal_contraction[{LABEL}]"]["predicted"] == pytest.approx((lmax - lmin) / (lmax + lmin))
    cross = claims[f"ls_threshold_interpolated[{LABEL}]"]
    assert cross["measured"] == pytest.approx(eta_c, rel=1e-3)
    # the measured rate at eta = 0.3 (slowest direction lambda_min) from a plain fit of the rows
    pid = pts[(pts["grid"] == "least_squares") & (pts["lr"] == 0.3) & (pts["seed"] == 0)].index[0]
    e = _runs(data, "least_squares")[pid]["loss"].to_numpy() - ls["Lstar"]
    t = np.arange(20, 60)
    assert math.exp(np.polyfit(t, np.log(e[t]), 1)[0] / 2) == pytest.approx(1 - 0.3 * lmin, rel=1e-4)


def _mean_error_and_top(ls, point, steps):
    """The mean-output error and the top direction's part of it, by simulating gradient descent
    on the parameters with NumPy (no modal formula)."""
    theta = _theta0(point, ls["X"].shape[1])
    u = ls["U"][:, -1]
    c = ls["Xa"].mean(0)
    s, top = [], []
    for _ in range(steps + 1):
        d = theta - ls["theta"]
        s.append(c @ d)
        top.append((c @ u) * (u @ d))
        theta = theta - float(point["lr"]) * ls["H"] @ d
    return np.array(s), np.array(top)


def test_oscillation_predictions_from_the_rows(run, ls):
    _, claims, _, data = run
    lmax = ls["lam"][-1]
    ybar = float(np.mean(ls["y"]))
    pts = data.drop_duplicates("point").set_index("point")
    flips = {True: [0, 0], False: [0, 0]}
    for pid, t in _runs(data, "least_squares").items():
        p = pts.loc[pid]
        s_rows = t["act_mean"].to_numpy() - ybar
        s, top = _mean_error_and_top(ls, p, int(p["steps"]))
        assert np.allclose(s_rows, s[:s_rows.size], rtol=1e-8, atol=1e-12)
        dec = (np.abs(top) > np.abs(s - top)) & (np.abs(s) > convergence.MEAN_FLOOR * np.sqrt(np.mean(ls["y"] ** 2)))
        dec = dec[:s_rows.size]
        pair = dec[1:] & dec[:-1]
        f = flips[float(p["lr"]) > 1 / lmax]
        f[0] += int((np.sign(s_rows[1:]) != np.sign(s_rows[:-1]))[pair].sum())
        f[1] += int(pair.sum())
    sign = claims[f"ls_oscillation_sign[{LABEL}]"]
    assert sign["measured"]["eta > 1/lambda_max"] == flips[True][0] / flips[True][1] == 1.0
    assert flips[False][1] > 0 and sign["measured"]["eta < 1/lambda_max"] == flips[False][0] / flips[False][1] == 0.0
    # above 2/lambda_max the top direction grows by |1 - eta lambda_max| per step, sign alternating
    pid = pts[(pts["grid"] == "least_squares") & (pts["lr"] == 0.55) & (pts["seed"] == 0)].index[0]
    s = _runs(data, "least_squares")[pid]["act_mean"].to_numpy() - ybar
    assert np.all(np.sign(s[-21:-1]) != np.sign(s[-20:]))
    k = np.arange(s.size - 20, s.size)
    rate = math.exp(np.polyfit(k, np.log(np.abs(s[k])), 1)[0])
    assert rate == pytest.approx(0.55 * lmax - 1, rel=1e-3)
    assert claims[f"ls_oscillation_rate[{LABEL}]"]["measured"] <= convergence.RATE_TOL


def _hb_radius(H, eta, beta):
    """Spectral radius of heavy ball's linear iteration on (d_t, d_{t-1}), by eigenvalues."""
    n = H.shape[0]
    M = np.block([[(1 + beta) * np.eye(n) - eta * H, -beta * np.eye(n)], [np.eye(n), np.zeros((n, n))]])
    return float(np.max(np.abs(np.linalg.eigvals(M))))


def test_heavy_ball_predictions_from_the_rows(run, ls):
    _, claims, _, data = run
    lmin, lmax = ls["lam"][0], ls["lam"][-1]
    thr = claims[f"hb_threshold_bracket[{LABEL}, beta=0.5]"]
    assert thr["predicted"] == pytest.approx(3.0 / lmax, rel=1e-12)
    assert thr["measured"] == [0.75, 0.76]
    assert _hb_radius(ls["H"], 0.75, 0.5) < 1 < _hb_radius(ls["H"], 0.76, 0.5)
    pts = data.drop_duplicates("point").set_index("point")
    for pid, t in _runs(data, "hb_threshold").items():
        if pts.loc[pid, "lr"] in (0.75, 0.76):
            e = t["loss"].to_numpy() - ls["Lstar"]
            assert (e[-1] < e[e.size // 2]) == (pts.loc[pid, "lr"] == 0.75)
    opt = claims[f"hb_optimal_rate[{LABEL}]"]
    k = math.sqrt(lmax / lmin)
    assert opt["predicted"] == pytest.approx((k - 1) / (k + 1), rel=1e-12)
    # the best cell's rate, from a plain fit of its stored rows over the whole run above the floor
    rates = {}
    for pid, t in _runs(data, "hb_optimum").items():
        e = t["loss"].to_numpy() - ls["Lstar"]
        n = np.flatnonzero(~(e > convergence.EXCESS_FLOOR * ls["Lstar"]))
        n = n[0] if n.size else e.size
        key = (pts.loc[pid, "lr"], pts.loc[pid, "momentum"])
        rates.setdefault(key, []).append(math.exp(np.polyfit(np.arange(n), np.log(e[:n]), 1)[0] / 2))
    assert abs(min(np.median(v) for v in rates.values()) - opt["measured"]) < 0.01
    assert abs(opt["measured"] - opt["predicted"]) < 0.02


def _first_below(t, target):
    hit = np.flatnonzero(t["loss"].to_numpy() <= target)
    return float(t["step"].to_numpy()[hit[0]]) if hit.size else np.nan


def test_slowdown_law_from_the_rows(run):
    _, claims, _, data = run
    pts = data.drop_duplicates("point").set_index("point")
    eta_eff = 0.05 * 3.0                     # x = (-1, -1): eta (|x|^2 + 1)
    z, steps = [], {"mse_sigmoid": [], "bce": []}
    for grid in ("slowdown_neuron", "slowdown_law"):
        runs = _runs(data, grid)
        for pid, t in runs.items():
            p = pts.loc[pid]
            if p["loss_fn"] != "mse_sigmoid":
                continue
            twin = pts[(pts["grid"] == grid) & (pts["loss_fn"] == "bce") & (pts["seed"] == p["seed"])
                       & (pts["bias_scale"] == p["bias_scale"])].index[0]
            z0 = _theta0(p, 2) @ np.array([-1.0, -1.0, 1.0])
            sm, sb = _first_below(t, 0.25), _first_below(runs[twin], math.log(2))
            if z0 >= convergence.Z_SAT and np.isfinite(sm) and np.isfinite(sb):
                z.append(z0)
                steps["mse_sigmoid"].append(sm)
                steps["bce"].append(sb)
    z = np.array(z)

    def flow(loss, z0):   # the flow time by quadrature of dz / (eta_eff delta(z))
        s = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
        delta = (lambda v: 2 * s(v) ** 2 * (1 - s(v))) if loss == "mse_sigmoid" else s
        return integrate.quad(lambda v: 1 / (eta_eff * delta(v)), 0.0, z0, epsabs=0, epsrel=1e-12)[0]

    for loss, cid, f in (("mse_sigmoid", "slowdown_law_mse", np.log), ("bce", "slowdown_law_bce", lambda v: v)):
        c = claims[cid]
        assert c["measured"] == pytest.approx(np.polyfit(z, f(np.array(steps[loss])), 1)[0], rel=1e-9)
        pred = np.polyfit(z, f(np.array([flow(loss, v) for v in z])), 1)[0]
        assert c["predicted"] == pytest.approx(pred, rel=1e-8)
    # the two laws differ: MSE's ln-slope is near 1, cross-entropy's far below
    assert claims["slowdown_law_mse"]["measured"] > 0.7
    assert np.polyfit(z, np.log(steps["bce"]), 1)[0] < 0.4


def test_engine_checks(run, ls):
    """The checks of the report's appendix, tested on the stored rows."""
    _, claims, _, data = run
    assert all(c["passed"] for c in claims.values() if c["kind"] == "check")
    pts = data.drop_duplicates("point").set_index("point")
    # below 2/lambda_max every mode shrinks, so the least-squares loss never rises
    for pid, t in _runs(data, "least_squares").items():
        loss = t["loss"].to_numpy()
        if pts.loc[pid, "lr"] < 2 / ls["lam"][-1]:
            assert np.all(np.diff(loss) <= 1e-12 * ls["Lstar"])
    assert convergence.loss_increases([3.0, 2.0, 2.0 + 1e-9, 1.0], 1e-12) == 1
    # Nielsen's neuron follows the exact map step by step
    for pid, t in _runs(data, "slowdown_neuron").items():
        p = pts.loc[pid]
        z0 = _theta0(p, 2) @ np.array([-1.0, -1.0, 1.0])
        pred = convergence.neuron_trajectory(p["loss_fn"], [z0], 0.0, 0.15, int(p["steps"]))[:, 0]
        assert np.allclose(t["loss"].to_numpy(), pred[:len(t)], rtol=1e-9, atol=1e-300)


def test_contraction_rate_recovers_known_rates():
    t = np.arange(0, 300, 2)
    e = 3.0 * 0.9 ** (2 * t) + 0.5 * 0.5 ** (2 * t)       # a fast mode dies out, 0.9 remains
    assert convergence.contraction_rate(t, e) == pytest.approx(0.9, rel=1e-9)
    # rounding floor: the tail below it is ignored, so a noisy tail does not bias the rate
    noisy = np.where(e > 1e-20, e, 1e-20 * np.abs(np.sin(t)))
    assert convergence.contraction_rate(t, noisy, floor=1e-18) == pytest.approx(0.9, rel=1e-9)
    grow = 1e-3 * 1.05 ** (2 * t)
    grow[100:] = np.nan                                  # stored rows stop at divergence
    assert convergence.contraction_rate(t, grow) == pytest.approx(1.05, rel=1e-9)
    assert math.isnan(convergence.contraction_rate(t[:3], e[:3]))
    # the whole window reads a pure oscillating geometric sequence better than its second half
    osc = 0.6 ** (2 * t) * (1.5 + np.cos(1.3 * t))
    assert abs(convergence.contraction_rate(t[:40], osc[:40], whole=True) - 0.6) < 0.01


def test_neuron_map_and_targets():
    # BCE from z0 = 0 towards y = 1 with a unit step: z1 = 0 + 1 * (1 - 1/2)
    traj = convergence.neuron_trajectory("bce", [0.0], 1.0, 1.0, 1)
    assert traj[1, 0] == pytest.approx(math.log1p(math.exp(-0.5)))
    assert convergence.target_loss("mse_sigmoid", 0.5) == 0.25
    assert convergence.target_loss("bce", 0.5) == pytest.approx(math.log(2))


class _NoPngReport(Report):
    """A report that keeps its figures' names but draws no PNG (the manipulated-data tests read
    only the claims)."""

    def figure(self, name, fig, caption):
        plt.close(fig)
        self.blocks.append(("fig", name, caption))


def _reanalyse(run, edit):
    out, _, spec, data = run
    data = edit(data.copy())
    rep = _NoPngReport(out.parent / "manipulated", title="manipulated")
    convergence.analyse(data, spec, rep)
    return {c.id: c for c in rep.claims}


def _is(data, grid):
    return (data["grid"] == grid).to_numpy()


def test_least_squares_predictions_fail_on_manipulated_data(run, ls):
    def slow_down(data):
        # the excess of every gd run decays 5% more slowly per step than it did, and the
        # mean-output error keeps its sign at every step where it alternated
        m = _is(data, "least_squares")
        e = data.loc[m, "loss"].to_numpy() - ls["Lstar"]
        step = data.loc[m, "step"].to_numpy()
        data.loc[m, "loss"] = ls["Lstar"] + e * 1.05 ** (2 * step)
        ybar = float(np.mean(ls["y"]))
        s = data.loc[m, "act_mean"].to_numpy() - ybar
        data.loc[m, "act_mean"] = ybar + s * (-1.0) ** step * 1.05 ** step
        return data

    claims = _reanalyse(run, slow_down)
    for cid in ("ls_contraction", "ls_threshold_bracket", "ls_threshold_interpolated",
                "ls_oscillation_sign", "ls_oscillation_rate"):
        assert not claims[f"{cid}[{LABEL}]"].passed, cid
    assert claims[f"ls_contraction[{LABEL}]"].measured > convergence.RATE_TOL
    assert not claims[f"ls_monotone[{LABEL}]"].passed


def test_heavy_ball_predictions_fail_on_manipulated_data(run, ls):
    def slow_down(data):
        m = _is(data, "hb_threshold") | _is(data, "hb_optimum")
        e = data.loc[m, "loss"].to_numpy() - ls["Lstar"]
        data.loc[m, "loss"] = ls["Lstar"] + e * 1.08 ** (2 * data.loc[m, "step"].to_numpy())
        return data

    claims = _reanalyse(run, slow_down)
    for cid in ("hb_contraction", "hb_optimal_rate"):
        assert not claims[f"{cid}[{LABEL}]"].passed, cid
    assert not claims[f"hb_threshold_bracket[{LABEL}, beta=0.5]"].passed


def test_slowdown_predictions_fail_on_manipulated_data(run):
    def swap(data):
        # each MSE run of the neuron given its cross-entropy twin's trajectory (rescaled to MSE's
        # target) and the other way round: the laws exchange
        pts = data.drop_duplicates("point")
        for grid in ("slowdown_neuron", "slowdown_law"):
            g = pts[pts["grid"] == grid]
            for _, p in g[g["loss_fn"] == "mse_sigmoid"].iterrows():
                q = g[(g["loss_fn"] == "bce") & (g["seed"] == p["seed"]) & (g["bias_scale"] == p["bias_scale"])].iloc[0]
                rm, rb = (data["point"] == p["point"]).to_numpy(), (data["point"] == q["point"]).to_numpy()
                lm, lb = data.loc[rm, "loss"].to_numpy(), data.loc[rb, "loss"].to_numpy()
                data.loc[rm, "loss"] = lb * 0.25 / math.log(2)
                data.loc[rb, "loss"] = lm * math.log(2) / 0.25
        return data

    claims = _reanalyse(run, swap)
    assert not claims["slowdown_law_mse"].passed
    assert not claims["slowdown_law_bce"].passed
    assert not claims["slowdown_neuron_exact"].passed


@pytest.mark.parametrize("preset", ["quick", "full"])
def test_presets_hold_every_analysis(preset):
    """Each analysis emits its predictions only where the grid has the runs: the presets must
    have them all (gd and heavy-ball least squares with a one-beta threshold scan and an (eta,
    beta) grid, a zero-weight z0 axis for the slowdown law, sigmoid runs with centred twins)."""
    from pathlib import Path
    spec = specmod.load(Path(convergence.__file__).parent / "specs" / f"convergence.{preset}.toml")
    pts = specmod.expand(spec)
    lin = [p for p in pts if not p["widths"] and p["loss"] == "mse"]
    assert any(p["optimizer"] == "gd" for p in lin)
    hb = [p for p in lin if p["optimizer"] == "momentum"]
    by_grid = {}
    for p in hb:
        by_grid.setdefault(p["grid"], set()).add(p["momentum"])
    assert any(len(b) == 1 for b in by_grid.values()) and any(len(b) > 1 for b in by_grid.values())
    assert any(p["loss"] == "mse_sigmoid" and p["init_scale"] == 0 for p in pts)
    sig = {(p["data"], p["lr"], p["init_scale"]) for p in pts if p["activation"] == "sigmoid" and p["loss"] == "bce"}
    tanh = {(p["data"], p["lr"], p["init_scale"]) for p in pts if p["activation"] == "tanh" and p["loss"] == "bce"}
    assert any((d, lr / 4, s / 2) in tanh for d, lr, s in sig)


def test_centred_sigmoid_twin_is_tanh_at_a_quarter_step():
    """The identity behind the zero-centring observation: sigma(x) - 1/2 = tanh(x/2)/2, so a
    centred-sigmoid net (W1, b1, W2, b2) is the tanh net (W1/2, b1/2, W2/2, b2), and a gradient
    step eta on the first moves the second by eta/4 in W1, b1, W2 (and eta in b2)."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 2)), (rng.random(16) > 0.5).astype(float)
    net = MLP([2, 4, 1], activation="tanh", loss="bce", dtype="float64")
    pt = net.init(3, 1.0, 0.5)

    def centred(theta):               # the centred-sigmoid net's BCE, in NumPy
        W1, b1, W2, b2 = theta
        z = (1 / (1 + np.exp(-(X @ W1 + b1))) - 0.5) @ W2 + b2
        return float(np.mean(np.maximum(z, 0) - y[:, None] * z + np.log1p(np.exp(-np.abs(z)))))

    pc = [2 * pt[0]["W"], 2 * pt[0]["b"], 2 * pt[1]["W"], pt[1]["b"].copy()]
    assert centred(pc) == pytest.approx(net.loss_and_grad(pt, X, y)[0], rel=1e-12)
    # the centred net's gradient by central differences, against the tanh net's from simcore
    _, gt = net.loss_and_grad(pt, X, y)
    gtan = [gt[0]["W"], gt[0]["b"], gt[1]["W"], gt[1]["b"]]
    for k, scale in enumerate((0.5, 0.5, 0.5, 1.0)):
        g = np.zeros_like(pc[k])
        for i in np.ndindex(g.shape):
            up = [a.copy() for a in pc]
            dn = [a.copy() for a in pc]
            up[k][i] += 1e-6
            dn[k][i] -= 1e-6
            g[i] = (centred(up) - centred(dn)) / 2e-6
        # d/d(2 W) = (1/2) d/dW: a step eta * g on the centred weights is (eta/4) * gtan on W
        # after halving; on b2 the two coincide
        assert np.allclose(g, scale * gtan[k], rtol=1e-6, atol=1e-9)
