"""The vanishing-gradients study end to end on a tiny grid: runner -> Parquet parts -> analysis
-> claims.json, with the claims' numbers recomputed from the stored parts by independent code;
and manipulated data on which the analysis must report failures (no claim passes vacuously)."""
import math
import textwrap

import numpy as np
import pandas as pd
import pytest

from studies import runner, theory
from studies import spec as specmod
from studies import vanishing_gradients as study
from studies.report import Report
from study_run import run_tiny

TINY = textwrap.dedent("""\
    study = "vanishing-gradients"
    title = "tiny vanishing-gradients grid"
    description = "test"

    [defaults]
    loss = "mse"
    lr = 0.0
    steps = 1
    record_every = 1

    [grids.meanfield]
    data = {name = "teacher_student", n = 1, d_in = 16, hidden = [4], noise = 0.1, seed = 0}
    depth = 12
    width = 24
    activation = "tanh"
    init = "normal"
    init_scale = [0.7, 0.9, 1.1, 1.4, 1.8]
    bias_scale = [0.0, 0.22360679774997896]
    seed = {range = 3}

    [grids.pairings]
    data = {name = "teacher_student", n = 16, d_in = 4, hidden = [4], noise = 0.1, seed = 0}
    depth = [2, 6]
    width = 12
    activation = ["sigmoid", "tanh", "relu"]
    init = ["uniform", "glorot", "he"]
    batchnorm = [false, true]
    seed = {range = 2}

    [grids.training]
    data = {name = "teacher_student", n = 16, d_in = 4, hidden = [4], noise = 0.1, seed = 0}
    depth = 4
    width = 8
    activation = "sigmoid"
    init = ["uniform", "glorot"]
    lr = 0.05
    steps = 10
    record_every = 5
    seed = {range = 2}
    """)

IDS = ["sigmoid_bound", "mf_slope", "mf_crossing_tanh_sb2_0", "mf_crossing_tanh_sb2_0.05",
       "pair_tanh_glorot", "pair_relu_he", "pair_sigmoid_uniform", "bn_flattens_vanishing",
       "bn_flat_everywhere"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    toml, out, claims, by_id = run_tiny(tmp_path_factory, "vg", TINY)
    spec = specmod.load(toml)
    return out, by_id, claims, runner.results(spec, out), spec


def _analyse(data, spec, tmp_path):
    rep = Report(tmp_path, title="t")
    study.analyse(data, spec, rep)
    return {c.id: c for c in rep.claims}


def test_claims_present_and_figures(run):
    out, by_id, claims, data, _ = run
    assert list(by_id) == IDS
    assert claims["passed"] == sum(c["verdict"] == "pass" for c in by_id.values())
    for c in by_id.values():
        assert c["verdict"] == ("pass" if c["passed"] else "fail")
        assert c["measured"] not in (None, "no runs")
    for name in ("grad_norm_by_layer", "meanfield_slope", "ratio_vs_depth", "saturation",
                 "training_grad_norm", "sigmoid_bound"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    # the sigmoid bound is a theorem: it must hold on real runs
    assert by_id["sigmoid_bound"]["passed"]
    assert by_id["pair_sigmoid_uniform"]["passed"]


def test_sigmoid_bound_recomputed(run):
    _, by_id, _, data, spec = run
    points = {p["point"]: p for p in specmod.expand(spec)}
    worst = 0.0
    rows = data[(data["activation"] == "sigmoid") & ~data["batchnorm"].astype(bool)]
    for (pt, step), r in rows.groupby(["point", "step"]):
        p = points[pt]
        X, y = runner.make_data(p["data"], p["data_args"])[:2]
        n = X.shape[0]
        r = r.sort_values("layer")
        L = len(r)
        fan_in = [X.shape[1]] + p["widths"]
        a2 = (r["act_std"] ** 2 + r["act_mean"] ** 2).to_numpy()
        dz = 2 * math.sqrt(r["loss"].iloc[0] / n)
        for l in range(1, L + 1):
            normA = np.linalg.norm(X) if l == 1 else math.sqrt(n * fan_in[l - 1] * a2[l - 2])
            meas = r["grad_norm"].iloc[l - 1] / (normA * dz)
            bound = 0.25 ** (L - l) * np.prod(r["weight_norm"].to_numpy()[l:])
            worst = max(worst, meas / bound)
    assert worst <= 1.0
    assert by_id["sigmoid_bound"]["measured"] == pytest.approx(worst, rel=1e-5, abs=1e-6)


def test_pairing_ratio_recomputed(run):
    _, by_id, _, data, _ = run
    s = data[(data["grid"] == "pairings") & (data["activation"] == "sigmoid") & (data["init"] == "uniform")
             & ~data["batchnorm"].astype(bool) & (data["step"] == 0)]

    def gm(depth):
        d = s[s["depth"] == depth]
        g1 = d[d["layer"] == 1].set_index("point")["grad_norm"]
        gL = d[d["layer"] == depth].set_index("point")["grad_norm"]
        return float(np.exp(np.mean(np.log(g1 / gL))))

    rel = gm(6) / gm(2)
    assert by_id["pair_sigmoid_uniform"]["measured"] == pytest.approx(rel, rel=1e-2)
    assert rel < 0.1


def test_meanfield_slope_recomputed(run):
    _, by_id, _, data, spec = run
    points = {p["point"]: p for p in specmod.expand(spec)}
    rows = data[(data["grid"] == "meanfield") & (data["step"] == 0)]
    recs = []
    for pt, r in rows.groupby("point"):
        p = points[pt]
        X = runner.make_data(p["data"], p["data_args"])[0]
        r = r.sort_values("layer")
        rms = np.sqrt(r["act_std"] ** 2 + r["act_mean"] ** 2).to_numpy()
        widths = np.array(p["widths"], float)
        norm_a = np.concatenate([[np.linalg.norm(X[0])], rms[:-1] * np.sqrt(widths)])
        u = np.log(r["grad_norm"].to_numpy()) - np.log(norm_a)
        layers = np.arange(3, 11)          # fit_layers(12): 3..10
        assert list(study.fit_layers(12)) == list(layers)
        slope = -np.polyfit(layers, u[layers - 1], 1)[0]
        recs.append((p["init_scale"] ** 2, p["bias_scale"] ** 2, slope))
    df = pd.DataFrame(recs, columns=["sw2", "sb2", "slope"]).groupby(["sw2", "sb2"]).slope.mean().reset_index()
    pred = [theory.log_gradient_growth("tanh", a, b) for a, b in zip(df["sw2"], df["sb2"])]
    r = np.corrcoef(df["slope"], pred)[0, 1]
    assert by_id["mf_slope"]["measured"]["correlation"] == pytest.approx(r, abs=1e-4)
    # the crossing for sigma_b^2 = 0.05 from these seed means
    g = df[df["sb2"] > 0].sort_values("sw2")
    cross = study.zero_crossing(g["sw2"].to_numpy(), g["slope"].to_numpy())
    m = by_id["mf_crossing_tanh_sb2_0.05"]["measured"]
    if math.isfinite(cross):
        assert m == pytest.approx(cross, abs=1e-3)
    assert by_id["mf_crossing_tanh_sb2_0.05"]["predicted"] == pytest.approx(
        theory.critical_sigma_w2("tanh", 0.05), rel=1e-3)


def test_zero_crossing():
    assert study.zero_crossing([1, 2, 3], [-1.0, -0.5, 0.5]) == pytest.approx(2.5)
    assert math.isnan(study.zero_crossing([1, 2], [0.1, 0.2]))


def test_manipulated_data_fails(run, tmp_path):
    _, by_id, _, data, spec = run
    bad = data.copy()
    # 1) sigmoid bound: a first-layer gradient far above what sigma' <= 1/4 allows
    m = (bad["activation"] == "sigmoid") & ~bad["batchnorm"].astype(bool) & (bad["layer"] == 1)
    bad.loc[m, "grad_norm"] *= 1e8
    # 2) sigmoid/uniform made flat in depth: last-layer gradient scaled to the first layer's
    pm = ((bad["grid"] == "pairings") & (bad["activation"] == "sigmoid") & (bad["init"] == "uniform")
          & ~bad["batchnorm"].astype(bool))
    for pt, r in bad[pm].groupby("point"):
        g1 = r.loc[r["layer"] == 1, "grad_norm"].iloc[0]
        bad.loc[r.index[r["layer"] == r["depth"]], "grad_norm"] = g1
    # 3) mean field: every slope shifted by 0.3 per layer
    mf = bad["grid"] == "meanfield"
    bad.loc[mf, "grad_norm"] *= np.exp(-0.3 * bad.loc[mf, "layer"])
    claims = _analyse(bad, spec, tmp_path)
    assert not claims["sigmoid_bound"].passed
    assert not claims["pair_sigmoid_uniform"].passed
    assert not claims["mf_slope"].passed
    assert by_id["sigmoid_bound"]["passed"]
