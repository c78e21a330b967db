"""The lr-sensitivity study end to end on a tiny grid: runner -> Parquet parts -> analysis ->
claims.json. Every prediction is recomputed from the stored parts and the theory; manipulated
data make each one fail (so none can pass vacuously); the engine checks the report lists in its
appendix get their real tests here; and the theory the catapult prediction rests on is run on
its exact model (Lewkowycz et al.'s two-layer linear network)."""
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pytest

from studies import runner, theory
from studies import lr_sensitivity as study
from studies import spec as specmod
from studies.report import Report
from study_run import run_tiny

DATA = dict(n=32, d_in=4, hidden=[8], noise=0.1, seed=0)

TINY = textwrap.dedent("""\
    study = "lr-sensitivity"
    title = "tiny lr grid"
    description = "test"

    [defaults]
    data = {name = "teacher_student", n = 32, d_in = 4, hidden = [8], noise = 0.1, seed = 0}
    loss = "mse"
    dtype = "float64"

    [grids.ls]
    widths = []
    activation = "identity"
    lr = {geomspace = [0.01, 3.0, 9]}
    steps = 400
    record_every = 1
    probe_every = 400
    track_sharpness = true

    [grids.ls_fine]
    widths = []
    activation = "identity"
    lr = {linspace = [0.30, 0.90, 31]}
    steps = 400
    record_every = 1

    [grids.mlp]
    widths = [[8]]
    activation = "tanh"
    lr = {geomspace = [0.05, 1.6, 16]}
    seed = {range = 3}
    steps = 200
    record_every = 5
    probe_every = 20
    track_sharpness = true

    [grids.mlp_early]
    widths = [[8]]
    activation = "tanh"
    lr = {geomspace = [0.05, 1.6, 16]}
    seed = {range = 3}
    steps = 40
    record_every = 1
    probe_every = 40
    track_sharpness = true

    [grids.wide_early]
    widths = [[512]]
    activation = "tanh"
    lr = {geomspace = [0.1, 0.6, 9]}
    steps = 40
    record_every = 1
    probe_every = 40
    track_sharpness = true
    """)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    toml, out, claims, by_id = run_tiny(tmp_path_factory, "lrs", TINY)
    spec = specmod.load(toml)
    return out, spec, by_id, claims, runner.results(spec, out)


def _one(by_id, prefix):
    ids = [k for k in by_id if k.startswith(prefix + "[")]
    assert len(ids) == 1, ids
    return by_id[ids[0]]


def _per_run(data, **where):
    """One row per run from the stored parts, with its recorded losses and probed sharpness."""
    rows = data[data["layer"] == 1]
    for k, v in where.items():
        rows = rows[rows[k] == v]
    out = []
    for pid, g in rows.groupby("point"):
        sh = g[["step", "sharpness"]].dropna()
        out.append({"point": pid, "lr": g["lr"].iloc[0], "seed": g["seed"].iloc[0],
                    "steps": g["steps"].iloc[0], "L": g["loss"].to_numpy(),
                    "fin": g["final_loss"].iloc[0], "dv": bool(g["diverged"].iloc[0]),
                    "sh": dict(zip(sh["step"], sh["sharpness"]))})
    return out


def _stable(run):
    return not run["dv"] and np.isfinite(run["fin"]) and run["fin"] < run["L"][0]


class _NoFigures(Report):
    """A report that does not draw its figures (drawing is most of an analysis's time)."""

    def figure(self, name, fig, caption):
        plt.close(fig)
        self.blocks.append(("fig", name, caption))


def _claims(data, spec, tmp_path):
    rep = _NoFigures(tmp_path, title="t")
    study.analyse(data, spec, rep)
    return {c.id: c for c in rep.claims}


def _get(got, prefix):
    return next(c for k, c in got.items() if k == prefix or k.startswith(prefix + "["))


# --------------------------------------------------------------------------------------------

def test_claims_written_and_consistent(run):
    out, spec, by_id, claims, data = run
    preds = [c for c in by_id.values() if c["kind"] == "prediction"]
    assert claims["total"] == len(preds) and claims["passed"] == sum(c["passed"] for c in preds)
    kinds = {"prediction": ["ls_threshold", "lazy_phase_stable", "edge_of_stability", "lazy_no_spike",
                            "catapult_signature"],
             "check": ["ls_sharpness_probe", "ls_loss_monotone"],
             "observation": ["catapult_ratio", "progressive_sharpening", "oscillation_at_the_edge",
                             "catapult_narrow", "optimal_eta", "stable_band", "outcome_shares"]}
    for kind, ids in kinds.items():
        for cid in ids:
            c = by_id[cid] if cid in by_id else _one(by_id, cid)
            assert c["kind"] == kind, cid
            if kind == "prediction":
                assert c["assumes"] and c["figure"] and c["verdict"] in ("holds", "fails")
                assert c["verdict"] == ("holds" if c["passed"] else "fails")
            elif kind == "observation":
                assert c["passed"] is None and c["verdict"] == "observed"
            else:
                assert c["verdict"] == ("ok" if c["passed"] else "fail")
    assert not any(c["assumes"] == "(not stated)" for c in by_id.values())   # no transitional claims
    for c in preds:
        assert (out / "figures" / f"{c['figure']}.png").stat().st_size > 10_000
    for name in ("final_loss_vs_eta", "threshold_vs_prediction", "edge_of_stability", "outcomes_vs_eta",
                 "edge_statistic", "catapult_signature"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    assert data["point"].nunique() == 9 + 31 + 48 + 48 + 9
    # every prediction of the tiny grid holds (its failures are tested on manipulated data below)
    assert claims["passed"] == claims["total"], [c["id"] for c in preds if not c["passed"]]


def test_least_squares_recomputed_from_parts(run):
    out, spec, by_id, claims, data = run
    X, y = runner.make_data("teacher_student", DATA)
    # the exact Hessian (2/N) X_aug^T X_aug, its eigenvalues computed here, not by the theory module
    Xa = np.hstack([X, np.ones((len(X), 1))])
    lmax = np.linalg.eigvalsh(2.0 / len(X) * Xa.T @ Xa)[-1]
    eta_c = 2.0 / lmax
    assert theory.ls_threshold(X) == pytest.approx(eta_c, rel=1e-12)
    runs = _per_run(data, widths="linear")
    lo = max(r["lr"] for r in runs if _stable(r))
    hi = min(r["lr"] for r in runs if not _stable(r))
    assert all(_stable(r) for r in runs if r["lr"] < eta_c) and not any(_stable(r) for r in runs if r["lr"] > eta_c)
    th = _one(by_id, "ls_threshold")
    assert th["predicted"] == pytest.approx(eta_c, rel=1e-12)
    assert th["measured"]["bisection"] == pytest.approx((lo + hi) / 2)
    assert lo <= th["measured"]["interpolated"] <= hi
    assert abs(th["measured"]["interpolated"] - eta_c) <= (hi - lo) / 2 and th["passed"]


def test_ls_checks_recomputed(run):
    """The engine checks: the compiled probe equals lambda_max of the exact Hessian, and a stable
    least-squares run's loss never rises (sum_i lambda_i/2 c_i^2 (1 - eta lambda_i)^(2t))."""
    out, spec, by_id, claims, data = run
    X, _ = runner.make_data("teacher_student", DATA)
    Xa = np.hstack([X, np.ones((len(X), 1))])
    lmax = np.linalg.eigvalsh(2.0 / len(X) * Xa.T @ Xa)[-1]
    runs = _per_run(data, widths="linear")
    probed = [r["sh"][0] for r in runs if 0 in r["sh"]]
    assert probed and np.max(np.abs(np.array(probed) / lmax - 1)) < study.PROBE_RTOL
    for r in runs:
        if _stable(r):
            L = r["L"]
            assert np.all(np.diff(L) <= study.RISE_FLOOR * np.abs(L[:-1])), r["lr"]
    assert _one(by_id, "ls_sharpness_probe")["passed"] and _one(by_id, "ls_loss_monotone")["passed"]
    # the identity on an exact quadratic: GD on 1/2 sum_i lambda_i c_i^2 below 2/lambda_max
    lam = np.array([0.1, 1.0, 3.0])
    for eta in (0.2, 0.5, 0.66):           # eta lambda_max up to 1.98: the weights oscillate
        c = np.ones(3)
        loss = []
        for _ in range(200):
            loss.append(0.5 * np.sum(lam * c ** 2))
            c = c - eta * lam * c
        assert np.all(np.diff(loss) <= 0)
        assert study.classify(loss, False, loss[-1])[0] == "converging"


def test_mlp_predictions_recomputed_from_parts(run):
    out, spec, by_id, claims, data = run
    # lazy phase: the smallest unstable eta over 2/lambda_0, per seed, on the long runs
    ratios = []
    for seed in (0, 1, 2):
        runs = [r for r in _per_run(data, grid="mlp") if r["seed"] == seed]
        lam0 = np.median([r["sh"][0] for r in runs])
        bad = [r["lr"] for r in runs if not _stable(r)]
        ratios.append(min(bad) * lam0 / 2)
    wide = _per_run(data, grid="wide_early")
    lam0 = np.median([r["sh"][0] for r in wide])
    bad = [r["lr"] for r in wide if not _stable(r)]
    if bad:
        ratios.append(min(bad) * lam0 / 2)
    assert by_id["lazy_phase_stable"]["measured"] == pytest.approx(min(ratios))
    assert min(ratios) >= 1 and by_id["lazy_phase_stable"]["passed"]
    # the edge of stability: per stable long run that reached the edge, the mean of sharpness *
    # eta / 2 over the probes at or after 70% of the steps
    vals, squares = [], []
    for r in _per_run(data, grid="mlp"):
        later = {s: v * r["lr"] / 2 for s, v in r["sh"].items() if s > 0}
        last = [v for s, v in later.items() if s >= study.LAST_PROBES_FROM * r["steps"]]
        if _stable(r) and later and max(later.values()) >= 1 and len(last) >= study.EDGE_MIN_PROBES:
            vals.append(np.mean(last))
            squares.append(np.mean(np.square(last)))
    band = np.sqrt(np.mean(squares) - np.mean(vals) ** 2)      # one probe's spread at the edge
    eos = by_id["edge_of_stability"]["measured"]
    assert eos["runs"] == len(vals) >= 2
    assert eos["mean"] == pytest.approx(np.mean(vals))
    assert eos["standard error"] == pytest.approx(np.std(vals, ddof=1) / np.sqrt(len(vals)))
    assert by_id["edge_of_stability"]["passed"] == bool(
        1 - 2 * eos["standard error"] <= eos["mean"] <= 1 + eos["spread"])
    # the catapult, run by run, on the every-step windows
    lazy_ok, cat = [], []
    assert f"hover band {band:.3g}" in by_id["catapult_signature"]["tolerance"]
    for grid in ("mlp_early", "wide_early"):
        runs = _per_run(data, grid=grid)
        # the boundary's blur: the largest relative move of the sharpness over the window among
        # the lazy runs above x = 1/2; runs with 1/(1 + d) < x < 1/(1 - d) are not counted
        d = max([0.0] + [abs(1 - r["sh"][40] / r["sh"][0]) for r in runs
                         if 0.5 <= r["lr"] * r["sh"][0] / 2 < 1])
        for r in runs:
            L = r["L"]
            x = r["lr"] * r["sh"][0] / 2
            rose = np.any(L / np.minimum.accumulate(L) > 1 + study.RISE_FLOOR)
            if x < 1 / (1 + d):
                lazy_ok.append(not rose)
            elif grid == "wide_early" and _stable(r) and x >= 1 / (1 - d):   # its own window
                cat.append((rose, r["sh"][40] * r["lr"] / 2 < 1 + band))
    assert by_id["lazy_no_spike"]["measured"] == pytest.approx(np.mean(lazy_ok))
    assert all(lazy_ok) and by_id["lazy_no_spike"]["passed"]
    sig = by_id["catapult_signature"]["measured"]
    assert len(cat) >= 1
    assert sig["spike"] == pytest.approx(np.mean([c[0] for c in cat]))
    assert sig["sharpness below 2/eta"] == pytest.approx(np.mean([c[1] for c in cat]))
    assert sig["both"] == pytest.approx(np.mean([c[0] and c[1] for c in cat]))
    assert by_id["catapult_signature"]["passed"] == all(c[0] and c[1] for c in cat)


def test_helpers():
    assert study.bracket([0.1, 0.2, 0.3, 0.4], [True, True, False, False]) == (0.2, 0.3, True)
    assert study.bracket([0.1, 0.2, 0.3, 0.4], [True, False, True, False])[2] is False
    t = np.arange(50)
    assert study.tail_growth(1.0 + 0.9 ** t) == pytest.approx(np.log(0.9), rel=1e-6)
    assert study.tail_growth(1.0 + 1.1 ** t) == pytest.approx(np.log(1.1), rel=1e-6)
    assert study.classify([1.0, 0.5, 0.6, 0.3, 0.4, 0.2], False, 0.2)[0] == "oscillating"
    assert study.classify(1.0 / (1 + t), False, 1 / 50)[0] == "converging"
    assert study.classify([1.0, 2.0], False, 2.0)[0] == "diverged"
    assert study.largest_rise([3.0, 2.0, 1.0, 1.5, 0.5]) == 1.5
    assert study.largest_rise([3.0, 2.0, 1.0]) == 1.0
    assert study.largest_rise([1.0, 0.5, np.inf]) == np.inf
    # "at or just above 1"
    assert study.edge_holds(1.01, 0.004, 0.012) and study.edge_holds(0.995, 0.004, 0.01)
    assert not study.edge_holds(0.98, 0.004, 0.05)        # below 1 by more than 2 standard errors
    assert not study.edge_holds(1.05, 0.004, 0.012)       # above the hover band
    assert not study.edge_holds(1.0, np.nan, np.nan)


def _uv_model(eta, n=4000, steps=300, seed=0):
    """Lewkowycz et al.'s (2020) two-layer linear network f = v . u / sqrt(n) on one sample
    (x = 1, y = 0) with L = f^2 / 2, by plain gradient descent; its tangent kernel
    lambda = (|u|^2 + |v|^2) / n is the Hessian's top eigenvalue at a minimum. Returns
    (the losses, lambda_0, the final lambda)."""
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal(n), rng.standard_normal(n)
    lam0 = (u @ u + v @ v) / n
    loss = []
    for _ in range(steps):
        f = u @ v / np.sqrt(n)
        loss.append(0.5 * f * f)
        if not np.isfinite(f) or abs(f) > 1e6:
            break
        u, v = u - eta * f * v / np.sqrt(n), v - eta * f * u / np.sqrt(n)
    return np.array(loss), lam0, (u @ u + v @ v) / n


def test_catapult_theory_on_its_exact_model():
    """The three phases of the uv model, measured with the study's own spike measure: below
    2/lambda_0 the loss falls at every step; between 2/lambda_0 and 4/lambda_0 it spikes (above
    L_0 too, at this width) and ends with lambda < 2/eta; above 4/lambda_0 it diverges."""
    _, lam0, _ = _uv_model(0.0, steps=1)
    for x in (0.5, 0.9):
        L, _, lam = _uv_model(2 * x / lam0)
        assert study.largest_rise(L) == 1.0 and lam == pytest.approx(lam0, rel=0.02)
    for x in (1.2, 1.6):
        eta = 2 * x / lam0
        L, _, lam = _uv_model(eta)
        assert study.largest_rise(L) > 10 and L.max() > L[0] and L[-1] < 1e-6 * L[0]
        assert lam * eta / 2 < 1
    L, _, _ = _uv_model(2 * 2.3 / lam0)
    assert study.largest_rise(L) == np.inf or L[-1] > L[0]


# --------------------------------------------------------------------------------------------
# manipulated data: each prediction must fail

def test_manipulated_least_squares(run, tmp_path):
    out, spec, by_id, claims, data = run
    X, _ = runner.make_data("teacher_student", DATA)
    eta_c = theory.ls_threshold(X)
    ls = data["widths"] == "linear"
    # runs below 2/lambda_max marked as diverged: the measured threshold moves
    d = data.copy()
    d.loc[ls & (d["lr"] < 0.8 * eta_c) & (d["lr"] > 0.6 * eta_c), "diverged"] = True
    assert not _get(_claims(d, spec, tmp_path / "a"), "ls_threshold").passed
    # the probe's sharpness tripled: the probe check fails
    d = data.copy()
    d.loc[ls, "sharpness"] = d.loc[ls, "sharpness"] * 3.0
    assert not _get(_claims(d, spec, tmp_path / "b"), "ls_sharpness_probe").passed
    # stable least-squares losses made to oscillate: the monotone check fails
    d = data.copy()
    idx = d.index[ls & (d["lr"] < 0.5 * eta_c) & (d["step"] % 2 == 1) & (d["step"] > 10)]
    d.loc[idx, "loss"] = d.loc[idx, "loss"] * 1.5
    assert not _get(_claims(d, spec, tmp_path / "c"), "ls_loss_monotone").passed


def test_manipulated_mlps(run, tmp_path):
    out, spec, by_id, claims, data = run
    mlp = data["grid"] == "mlp"
    # a long run at the smallest eta marked as diverged: the lazy phase fails
    d = data.copy()
    d.loc[mlp & (d["lr"] == d.loc[mlp, "lr"].min()) & (d["seed"] == 0), "diverged"] = True
    assert not _claims(d, spec, tmp_path / "a")["lazy_phase_stable"].passed
    # the sharpness during training tripled: the edge statistic is far above 1
    d = data.copy()
    d.loc[mlp & (d["step"] > 0), "sharpness"] *= 3.0
    assert not _claims(d, spec, tmp_path / "b")["edge_of_stability"].passed
    # ... or halved after the edge was reached: below 1 by many standard errors
    d = data.copy()
    last = mlp & (d["step"] >= study.LAST_PROBES_FROM * d["steps"])
    d.loc[last, "sharpness"] *= 0.7
    assert not _claims(d, spec, tmp_path / "c")["edge_of_stability"].passed
    # a lazy window run whose loss rises once: no spike is allowed below 2/lambda_0
    d = data.copy()
    early = d["grid"] == "mlp_early"
    lazy_lr = sorted(d.loc[early, "lr"].unique())[1]
    idx = d.index[early & (d["lr"] == lazy_lr) & (d["seed"] == 0) & (d["step"] == 20)]
    d.loc[idx, "loss"] *= 2.0
    assert not _claims(d, spec, tmp_path / "d")["lazy_no_spike"].passed
    # the catapult runs of the wide net made monotone (no spike): the signature fails
    d = data.copy()
    wide = d["grid"] == "wide_early"
    pts = d[wide & (d["layer"] == 1)].groupby("point")
    for pid, g in pts:
        L = g["loss"].to_numpy()
        if np.isfinite(L).all() and L[-1] < L[0] and np.any(np.diff(L) > 0):
            d.loc[g.index, "loss"] = np.minimum.accumulate(L)
            for layer in sorted(d.loc[wide & (d["point"] == pid), "layer"].unique())[1:]:
                sel = wide & (d["point"] == pid) & (d["layer"] == layer)
                d.loc[sel, "loss"] = np.minimum.accumulate(L)
    assert not _claims(d, spec, tmp_path / "e")["catapult_signature"].passed
    # ... or their sharpness at the window's end raised above 2/eta
    d = data.copy()
    d.loc[wide & (d["step"] == 40), "sharpness"] *= 5.0
    assert not _claims(d, spec, tmp_path / "f")["catapult_signature"].passed
