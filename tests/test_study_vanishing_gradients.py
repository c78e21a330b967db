"""The vanishing-gradients study end to end on a tiny grid: runner -> Parquet parts -> analysis
-> claims.json. Every prediction is recomputed from the stored rows by independent code (plain
loops over the Parquet rows, theory called directly) and must match claims.json; on manipulated
rows the analysis must report each prediction failing; the sigmoid bound, a theorem, is tested
here as the engine check it is; the track_dead probe is checked against the networks redrawn."""
import math
import textwrap

import numpy as np
import pandas as pd
import pytest

from simcore import MLP
from simcore.grid import initial_params
from studies import runner, theory
from studies import spec as specmod
from studies import vanishing_gradients as study
from studies.errors import StudyError
from study_run import analyse, run_tiny

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
seed = {range = 4}

[grids.pairings]
data = {name = "teacher_student", n = 16, d_in = 4, hidden = [4], noise = 0.1, seed = 0}
depth = [2, 10]
width = 16
activation = ["sigmoid", "tanh", "relu"]
init = ["uniform", "glorot", "he"]
batchnorm = [false, true]
seed = {range = 4}

[grids.pairings_normal]
data = {name = "teacher_student", n = 16, d_in = 4, hidden = [4], noise = 0.1, seed = 0}
depth = 10
width = 16
activation = ["sigmoid", "relu"]
init = "normal"
init_scale = [0.7071067811865476, 1.4142135623730951]
seed = {range = 4}

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

[grids.trainable]
data = {name = "teacher_student", n = 32, d_in = 4, hidden = [4], noise = 0.1, seed = 0}
depth = [3, 6, 12, 24]
width = 16
activation = "tanh"
init = "normal"
init_scale = [0.5, 0.806225774829855]
bias_scale = 0.22360679774997896
lr = 0.05
steps = 100
record_every = 100
seed = {range = 2}

[grids.dead_relu]
data = {name = "teacher_student", n = 16, d_in = 4, hidden = [4], noise = 0.1, seed = 0}
depth = [2, 6]
width = 8
activation = "relu"
init = "he"
lr = [0.01, 0.2]
steps = 20
record_every = 10
probe_every = 20
track_dead = true
seed = {range = 2}
    """)

PREDICTIONS = ["sigmoid_quarter", "mf_slope", "mf_crossing_tanh_sb2_0", "mf_crossing_tanh_sb2_0.05",
               "bn_growth_sigmoid", "bn_growth_tanh", "bn_growth_relu", "init_forward_relu", "init_forward_tanh",
               "trainable_depth"]
OBSERVATIONS = ["trainable_depth_constant", "ratio_vs_depth", "dead_relu"]
CHECKS = ["sigmoid_bound"]
FIGURES = ["sigmoid_quarter", "meanfield_slope", "bn_growth", "init_forward", "trainable_depth", "dead_relu",
           "grad_norm_by_layer", "ratio_vs_depth", "saturation", "training_grad_norm", "sigmoid_bound"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    toml, out, claims, by_id = run_tiny(tmp_path_factory, "vg", TINY)
    spec = specmod.load(toml)
    return out, by_id, claims, runner.results(spec, out), spec


def _analyse(data, spec, tmp_path):
    return analyse(study, data, spec, tmp_path, write=False)


def _points(spec):
    return {p["point"]: p for p in specmod.expand(spec)}


def _data_of(p):
    return runner.make_data(p["data"], p["data_args"])[:2]


def test_statements_kinds_and_figures(run):
    out, by_id, claims, _, _ = run
    assert [i for i, c in by_id.items() if c["kind"] == "prediction"] == PREDICTIONS
    assert [i for i, c in by_id.items() if c["kind"] == "observation"] == OBSERVATIONS
    assert [i for i, c in by_id.items() if c["kind"] == "check"] == CHECKS
    assert claims["total"] == len(PREDICTIONS)
    assert claims["passed"] == sum(by_id[i]["passed"] for i in PREDICTIONS)
    for i in PREDICTIONS:
        c = by_id[i]
        assert c["assumes"] and c["figure"] in FIGURES and c["measured"] != "no runs"
        assert c["verdict"] == ("holds" if c["passed"] else "fails")
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    # the tiny grid is inside every theory's assumptions: each prediction holds on real runs
    assert claims["passed"] == claims["total"], [i for i in PREDICTIONS if not by_id[i]["passed"]]


# --------------------------------------------------------------------------------------------
# the engine check: the sigmoid bound (a theorem: it must hold on every real run)

def test_sigmoid_bound_is_a_theorem_on_real_runs(run):
    _, by_id, _, data, spec = run
    points = _points(spec)
    worst, n = 0.0, 0
    rows = data[(data["activation"] == "sigmoid") & ~data["batchnorm"].astype(bool)]
    for (pt, step), r in rows.groupby(["point", "step"]):
        p = points[pt]
        X, _ = _data_of(p)
        n_s = X.shape[0]
        r = r.sort_values("layer")
        L = len(r)
        fan_in = [X.shape[1]] + p["widths"]
        a2 = (r["act_std"] ** 2 + r["act_mean"] ** 2).to_numpy()
        dz = 2 * math.sqrt(r["loss"].iloc[0] / n_s)
        for l in range(1, L + 1):
            normA = np.linalg.norm(X) if l == 1 else math.sqrt(n_s * fan_in[l - 1] * a2[l - 2])
            meas = r["grad_norm"].iloc[l - 1] / (normA * dz)
            bound = 0.25 ** (L - l) * np.prod(r["weight_norm"].to_numpy()[l:])
            worst = max(worst, meas / bound)
            n += 1
    assert n > 100 and worst <= 1.0
    assert by_id["sigmoid_bound"]["passed"] and by_id["sigmoid_bound"]["verdict"] == "ok"
    assert by_id["sigmoid_bound"]["measured"] == pytest.approx(worst, rel=1e-5, abs=1e-6)


# --------------------------------------------------------------------------------------------
# predictions recomputed from the rows

def _layer_slopes(r, depth):
    """Per-network slopes from rows of one network: -d ln grad/dl over fit_layers, and the slope
    of ln preact_std over the hidden layers 2..D-1."""
    r = r.sort_values("layer")
    lo, hi = max(3, depth // 5 + 1), depth - max(2, depth // 10)
    fit = np.arange(lo, hi + 1)
    lg = np.log(r["grad_norm"].to_numpy())
    lp = np.log(r["preact_std"].to_numpy())
    hid = np.arange(2, depth)
    return -np.polyfit(fit, lg[fit - 1], 1)[0], np.polyfit(hid, lp[hid - 1], 1)[0], lp[depth - 2] - lp[0]


def _pairing_means(data, act, bn, init=None):
    s = data[(data["activation"] == act) & (data["batchnorm"].astype(bool) == bn) & (data["depth"] == 10)
             & (data["steps"] == 1) & (data["step"] == 0)]
    if init is not None:
        s = s[s["init"] == init]
    out = {}
    for key, g in s.groupby(["init", "init_scale"]):
        vals = np.array([_layer_slopes(r, 10) for _, r in g.groupby("point")])
        out[key] = (vals.mean(axis=0), vals.std(axis=0, ddof=1) / math.sqrt(len(vals)))
    return out


def test_sigmoid_quarter_recomputed(run):
    _, by_id, _, data, _ = run
    means = _pairing_means(data, "sigmoid", False)
    (m, _), = [v for (init, _), v in means.items() if init == "glorot"]
    c = by_id["sigmoid_quarter"]
    assert c["measured"]["glorot"] == pytest.approx(m[0], abs=1e-4)
    # Glorot on square hidden layers: sigma_w^2 = 1, ln sqrt(chi_1) = -1.444 in the wide limit
    assert c["predicted"]["wide limit ln sqrt(chi_1)"] == pytest.approx(-1.4437, abs=1e-4)
    assert c["predicted"]["glorot"] == pytest.approx(theory.finite_width_log_growth("sigmoid", 1.0, 0.0, 16), abs=1e-4)
    # every sigmoid pairing sits below the naive ln(sigma_w/4) and near ln sqrt(chi_1)
    for (init, scale), (mm, se) in means.items():
        sw2 = scale ** 2 if init == "normal" else theory.sigma_w2_of_init(init, 16)
        assert mm[0] < 0.5 * math.log(sw2) + math.log(0.25)
        assert abs(mm[0] - theory.finite_width_log_growth("sigmoid", sw2, 0.0, 16)) < 4 * se[0] + 0.02
    assert c["measured"]["pairings within"] == f"{len(means)}/{len(means)}"


def test_bn_growth_recomputed(run):
    _, by_id, _, data, _ = run
    for act in ("sigmoid", "tanh", "relu"):
        c = by_id[f"bn_growth_{act}"]
        means = _pairing_means(data, act, True)
        assert set(c["measured"]) == {init for init, _ in means}
        for (init, _), (m, _) in means.items():
            assert c["measured"][init] == pytest.approx(m[0], abs=1e-4)
        assert c["predicted"]["wide limit"] == pytest.approx(theory.bn_log_gradient_growth(act), abs=1e-4)
    # batch norm replaces sigmoid's collapse (-1.44 per layer) by a slow growth
    assert min(by_id["bn_growth_sigmoid"]["measured"].values()) > 0


def test_init_forward_relu_recomputed(run):
    _, by_id, _, data, _ = run
    c = by_id["init_forward_relu"]
    means = _pairing_means(data, "relu", False)
    for (init, scale), (m, _) in means.items():
        label = f"normal sigma_w^2={scale ** 2:.3g}" if init == "normal" else init
        assert c["measured"][label] == pytest.approx(m[1], abs=1e-4)
        sw2 = scale ** 2 if init == "normal" else theory.sigma_w2_of_init(init, 16)
        assert c["predicted"][label] == pytest.approx(0.5 * math.log(sw2 / 2), abs=1e-4)
    assert c["predicted"]["he"] == 0.0


def test_meanfield_slope_recomputed(run):
    _, by_id, _, data, spec = run
    points = _points(spec)
    rows = data[(data["grid"] == "meanfield") & (data["step"] == 0)]
    recs = []
    for pt, r in rows.groupby("point"):
        p = points[pt]
        X, _ = _data_of(p)
        r = r.sort_values("layer")
        rms = np.sqrt(r["act_std"] ** 2 + r["act_mean"] ** 2).to_numpy()
        norm_a = np.concatenate([[np.linalg.norm(X[0])], rms[:-1] * np.sqrt(np.array(p["widths"], float))])
        u = np.log(r["grad_norm"].to_numpy()) - np.log(norm_a)
        layers = np.arange(3, 11)          # fit_layers(12): 3..10
        assert list(study.fit_layers(12)) == list(layers)
        q0 = p["init_scale"] ** 2 * float(X[0] @ X[0]) / X.shape[1] + p["bias_scale"] ** 2
        recs.append((p["init_scale"] ** 2, p["bias_scale"] ** 2, -np.polyfit(layers, u[layers - 1], 1)[0], q0))
    df = pd.DataFrame(recs, columns=["sw2", "sb2", "slope", "q0"])
    g = df.groupby(["sw2", "sb2"]).agg(slope=("slope", "mean"), sd=("slope", "std"), n=("slope", "size"),
                                        q0=("q0", "mean")).reset_index()

    def predicted(sw2, sb2, q0):
        # finite depth and width, by an independent loop over the layers 3..11
        qs = theory.variance_trajectory("tanh", sw2, sb2, q0, 11)
        u = np.zeros(13)
        for l in range(10, 0, -1):
            u[l] = u[l + 1] + theory.finite_width_log_growth("tanh", sw2, sb2, 24, q=float(qs[l - 1]))
        return -np.polyfit(layers, u[layers], 1)[0]

    g["pred"] = [predicted(a, b, q) for a, b, q in zip(g["sw2"], g["sb2"], g["q0"])]
    z = study.family_z(len(g))
    within = (g["slope"] - g["pred"]).abs() <= z * g["sd"] / np.sqrt(g["n"])
    c = by_id["mf_slope"]
    assert c["measured"]["points within"] == int(within.sum())
    assert c["measured"]["max |error|"] == pytest.approx(float((g["slope"] - g["pred"]).abs().max()), abs=1e-4)
    # the crossings: measured by interpolating these seed means, predicted as the zero of the curve
    for sb2 in (0.0, 0.05):
        h = g[np.isclose(g["sb2"], sb2)].sort_values("sw2")
        cross = study.zero_crossing(h["sw2"].to_numpy(), h["slope"].to_numpy())
        cid = f"mf_crossing_tanh_sb2_{sb2:g}"
        assert by_id[cid]["measured"] == pytest.approx(cross, abs=1e-3)
        q0 = float(h["q0"].mean())
        assert predicted(by_id[cid]["predicted"], sb2, q0) == pytest.approx(0.0, abs=1e-3)
        # finite depth moves the crossing above the wide-limit critical point
        assert by_id[cid]["predicted"] > theory.critical_sigma_w2("tanh", sb2)


def test_trainable_depth_recomputed(run):
    _, by_id, _, data, spec = run
    points = _points(spec)
    runs = data[data["grid"] == "trainable"].drop_duplicates("point")
    cells = {}
    for _, r in runs.iterrows():
        y = _data_of(points[r["point"]])[1]
        ratio = math.inf if r["diverged"] else r["final_loss"] / np.var(y)
        cells.setdefault((round(r["init_scale"] ** 2, 9), r["depth"]), []).append(ratio)
    xs, ys = [], []
    for sw2 in sorted({k[0] for k in cells}):
        depths = sorted(d for s, d in cells if s == sw2)
        trained = [np.median(cells[(sw2, d)]) < study.TRAINED_RATIO for d in depths]
        assert trained[0] and not trained[-1]
        k = trained.index(False) - 1
        xs.append(math.log(theory.correlation_depth_scale("tanh", sw2, 0.05)))
        ys.append(0.5 * (math.log(depths[k]) + math.log(depths[k + 1])))
    slope = np.polyfit(xs, ys, 1)[0]
    assert by_id["trainable_depth"]["measured"] == pytest.approx(slope, abs=1e-3)
    assert by_id["trainable_depth_constant"]["measured"]["D*/xi_c"] == pytest.approx(
        math.exp(np.mean(np.array(ys) - np.array(xs))), rel=1e-3)


def test_dead_share_probe_matches_redrawn_networks(run):
    _, by_id, _, data, spec = run
    points = _points(spec)
    rows = data[(data["grid"] == "dead_relu") & (data["step"] == 0) & (data["layer"] == 1)]
    assert len(rows)
    for _, r in rows.iterrows():
        p = points[r["point"]]
        X, y = _data_of(p)
        net = MLP(runner.sizes_of(p, X, y), activation="relu", loss="mse", init="he")
        params = initial_params(net, np.array([r["seed"]], np.uint64), np.array([1.0]), np.array([0.0]))
        one = [{k: v[0] for k, v in layer.items()} for layer in params]
        z = X
        dead = []
        for layer in one[:-1]:          # hidden layers by hand: z = a W + b, a = relu(z)
            z = z @ layer["W"] + layer["b"]
            dead.extend((z <= 0).all(axis=0))
            z = np.maximum(z, 0.0)
        assert r["dead_share"] == pytest.approx(np.mean(dead), abs=1e-12)
    assert by_id["dead_relu"]["kind"] == "observation" and by_id["dead_relu"]["passed"] is None


def test_track_dead_is_validated(tmp_path):
    base = TINY[:TINY.index("[grids.meanfield]")]
    bad = base + textwrap.dedent("""\
        [grids.d]
        data = {name = "teacher_student", n = 16, d_in = 4, hidden = [4], noise = 0.1, seed = 0}
        depth = 3
        width = 8
        activation = "tanh"
        steps = 4
        record_every = 2
        probe_every = 4
        track_dead = true
        """)
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    with pytest.raises(StudyError, match="track_dead needs relu"):
        specmod.load(path)
    path.write_text(bad.replace('activation = "tanh"', 'activation = "relu"').replace("probe_every = 4\n", ""))
    with pytest.raises(StudyError, match="probe_every"):
        specmod.load(path)


# --------------------------------------------------------------------------------------------
# manipulated rows: each prediction must fail

def test_manipulated_data_fails(run, tmp_path):
    _, by_id, _, data, spec = run
    bad = data.copy()
    L = bad["layer"].astype(float)
    nobn = ~bad["batchnorm"].astype(bool)
    pair = (bad["steps"] == 1) & (bad["grid"] != "meanfield")
    # 1) sigmoid bound: a first-layer gradient far above what sigma' <= 1/4 allows
    m = (bad["grid"] == "training") & (bad["layer"] == 1)
    bad.loc[m, "grad_norm"] *= 1e8
    # 2) the sigmoid collapse halved: gradients decay by e^{-0.7} per layer less
    m = pair & nobn & (bad["activation"] == "sigmoid")
    bad.loc[m, "grad_norm"] *= np.exp(0.7 * (10 - L[m]))
    # 3) batch norm made flat: the measured growth removed
    for act in ("sigmoid", "tanh", "relu"):
        m = pair & ~nobn & (bad["activation"] == act)
        bad.loc[m, "grad_norm"] *= np.exp(theory.bn_log_gradient_growth(act) * L[m] + 0.3 * L[m])
    # 4) relu's and tanh's forward variance given a trend of e^{0.2} per layer
    m = pair & nobn & bad["activation"].isin(["relu", "tanh"])
    bad.loc[m, "preact_std"] *= np.exp(0.2 * L[m])
    # 5) mean field: every slope shifted by 0.3 per layer
    mf = bad["grid"] == "meanfield"
    bad.loc[mf, "grad_norm"] *= np.exp(-0.3 * L[mf])
    # 6) trainable depth: the deepest networks of the larger sigma_w^2 trained as well
    tr = (bad["grid"] == "trainable") & (bad["init_scale"] > 0.6) & (bad["depth"] >= 12)
    bad.loc[tr, "final_loss"] = 0.0
    claims = _analyse(bad, spec, tmp_path)
    assert not claims["sigmoid_bound"].passed
    for cid in PREDICTIONS:
        assert not claims[cid].passed, cid
    assert all(by_id[c]["passed"] for c in PREDICTIONS + CHECKS)
