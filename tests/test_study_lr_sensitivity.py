"""The lr-sensitivity study end to end on a tiny grid: runner -> Parquet parts -> analysis ->
claims.json, with the least-squares verdicts recomputed from the stored parts and the theory;
and manipulated data on which claims must fail (so none can pass vacuously)."""
import textwrap

import numpy as np
import pytest

from studies import runner, theory
from studies import lr_sensitivity as study
from studies import spec as specmod
from studies.report import Report
from study_run import run_tiny

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
    lr = {geomspace = [0.01, 3.0, 9]}
    seed = {range = 2}
    steps = 200
    record_every = 5
    probe_every = 100
    track_sharpness = true
    """)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    toml, out, claims, by_id = run_tiny(tmp_path_factory, "lrs", TINY)
    spec = specmod.load(toml)
    return out, spec, by_id, claims, runner.results(spec, out)


def _ls_id(by_id, prefix):
    ids = [k for k in by_id if k.startswith(prefix + "[")]
    assert len(ids) == 1, ids
    return by_id[ids[0]]


def test_claims_written_and_consistent(run):
    out, spec, by_id, claims, data = run
    assert claims["total"] == len(by_id) and claims["passed"] == sum(c["passed"] for c in by_id.values())
    for prefix in ("ls_threshold_bracket", "ls_threshold", "ls_sharpness_probe", "ls_no_oscillation"):
        _ls_id(by_id, prefix)
    for cid in ("mlp_threshold_above_local", "mlp_threshold_catapult_range", "edge_of_stability_reached",
                "edge_of_stability_ceiling", "u_shape", "best_eta_near_threshold"):
        assert cid in by_id
        assert by_id[cid]["verdict"] == ("pass" if by_id[cid]["passed"] else "fail")
    for name in ("final_loss_vs_eta", "threshold_vs_prediction", "edge_of_stability", "outcomes_vs_eta"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    assert data["point"].nunique() == 9 + 31 + 18


def test_least_squares_recomputed_from_parts(run):
    out, spec, by_id, claims, data = run
    X, y = runner.make_data("teacher_student", dict(n=32, d_in=4, hidden=[8], noise=0.1, seed=0))
    eta_c = theory.ls_threshold(X)
    lmax = theory.ls_spectrum(X)[1]
    rows = data[(data["widths"] == "linear") & (data["layer"] == 1)]
    # stability from the stored rows: final loss below the initial one and no engine flag
    per = rows.groupby("point").agg(lr=("lr", "first"), l0=("loss", "first"), fin=("final_loss", "first"),
                                    dv=("diverged", "first"))
    per["stable"] = ~per["dv"] & (per["fin"] < per["l0"])
    lo = per.loc[per["stable"], "lr"].max()
    hi = per.loc[~per["stable"], "lr"].min()
    assert (per.loc[per["lr"] < eta_c, "stable"]).all() and not per.loc[per["lr"] > eta_c, "stable"].any()
    br = _ls_id(by_id, "ls_threshold_bracket")
    assert br["predicted"] == pytest.approx(eta_c, rel=1e-12)
    assert br["measured"] == pytest.approx([lo, hi]) and br["passed"]
    th = _ls_id(by_id, "ls_threshold")
    assert lo <= th["measured"] <= hi and abs(th["measured"] / eta_c - 1) < study.LS_THRESHOLD_TOL
    assert th["passed"]
    pr = _ls_id(by_id, "ls_sharpness_probe")
    s0 = data[(data["widths"] == "linear") & (data["step"] == 0)]["sharpness"].dropna()
    assert pr["predicted"] == pytest.approx(lmax) and pr["measured"] == pytest.approx(s0.median())
    assert pr["passed"] and _ls_id(by_id, "ls_no_oscillation")["passed"]
    # MLP lower-bound claim: recompute the smallest unstable eta over 2/lambda_0 per seed
    m = data[(data["widths"] == "8") & (data["layer"] == 1)]
    ratios = []
    for seed, g in m.groupby("seed"):
        p = g.groupby("point").agg(lr=("lr", "first"), l0=("loss", "first"), fin=("final_loss", "first"),
                                   dv=("diverged", "first"))
        bad = p[p["dv"] | ~(p["fin"] < p["l0"])]
        lam0 = g.loc[g["step"] == 0, "sharpness"].median()
        ratios.append(bad["lr"].min() * lam0 / 2)
    assert by_id["mlp_threshold_above_local"]["measured"] == pytest.approx(min(ratios))


def test_helpers():
    assert study.bracket([0.1, 0.2, 0.3, 0.4], [True, True, False, False]) == (0.2, 0.3, True)
    assert study.bracket([0.1, 0.2, 0.3, 0.4], [True, False, True, False])[2] is False
    t = np.arange(50)
    assert study.tail_growth(1.0 + 0.9 ** t) == pytest.approx(np.log(0.9), rel=1e-6)
    assert study.tail_growth(1.0 + 1.1 ** t) == pytest.approx(np.log(1.1), rel=1e-6)
    assert study.classify([1.0, 0.5, 0.6, 0.3, 0.4, 0.2], False, 0.2)[0] == "oscillating"
    assert study.classify(1.0 / (1 + t), False, 1 / 50)[0] == "converging"
    assert study.classify([1.0, 2.0], False, 2.0)[0] == "diverged"


def _claims(data, spec, tmp_path):
    rep = Report(tmp_path, title="t")
    study.analyse(data, spec, rep)
    return {c.id: c for c in rep.claims}


def test_manipulated_data_fails(run, tmp_path):
    out, spec, by_id, claims, data = run
    # 1. a least-squares run below 2/lambda_max marked as diverged: the bracket and threshold move
    d = data.copy()
    X, _ = runner.make_data("teacher_student", dict(n=32, d_in=4, hidden=[8], noise=0.1, seed=0))
    eta_c = theory.ls_threshold(X)
    ls = d["widths"] == "linear"
    below = ls & (d["lr"] < 0.8 * eta_c) & (d["lr"] > 0.6 * eta_c)
    d.loc[below, "diverged"] = True
    got = _claims(d, spec, tmp_path / "a")
    assert not next(c for k, c in got.items() if k.startswith("ls_threshold_bracket[")).passed
    assert not next(c for k, c in got.items() if k.startswith("ls_threshold[")).passed
    # 2. the probe's sharpness doubled: the probe claim, the lower bound and the edge fail
    d = data.copy()
    d["sharpness"] = d["sharpness"] * 3.0
    got = _claims(d, spec, tmp_path / "b")
    assert not next(c for k, c in got.items() if k.startswith("ls_sharpness_probe[")).passed
    assert not got["edge_of_stability_ceiling"].passed
    # 3. stable least-squares losses made to oscillate
    d = data.copy()
    idx = d.index[ls & (d["lr"] < 0.5 * eta_c) & (d["step"] % 2 == 1) & (d["step"] > 10)]
    d.loc[idx, "loss"] = d.loc[idx, "loss"] * 1.5
    got = _claims(d, spec, tmp_path / "c")
    assert not next(c for k, c in got.items() if k.startswith("ls_no_oscillation[")).passed
