"""The perceptron study end to end on a tiny grid: runner -> Parquet parts -> analysis ->
claims.json, with every prediction and check recomputed from the stored parts; manipulated data
on which the analysis must report failures; and the real tests of the engine checks the report
lists in its appendix (Novikoff with the maximum margin, XOR never converging)."""
import json
import textwrap

import numpy as np
import pandas as pd
import pytest

from simcore import datasets, perceptron as sperc
from studies import perceptron as study
from studies import perceptron_data, runner
from studies import spec as specmod
from studies.errors import StudyError
from study_run import analyse, run_tiny

TINY = textwrap.dedent("""\
    study = "perceptron"
    title = "tiny perceptron grid"
    description = "test"
    chunk_size = 8

    [grids.separable]
    kind = "perceptron"
    data = {name = "blobs", n = 40, d = [2, 4], margin = [0.1, 0.3], seed = {range = 2}}
    epochs = 300
    seed = {range = 2}

    [grids.tight]
    kind = "perceptron"
    data = {name = "hadamard", k = [4, 16], seed = {range = 2}}
    epochs = 10
    seed = {range = 2}

    [grids.xor_perceptron]
    kind = "perceptron"
    data = {name = "xor", n = 40, noise = 0.2, seed = 0}
    epochs = 20
    seed = {range = 2}

    [grids.xor_mlp]
    kind = "mlp"
    data = {name = "xor", n = 40, noise = 0.2, seed = 0}
    widths = [2]
    activation = "sigmoid"
    loss = "bce"
    lr = 3.0
    steps = 600
    record_every = 50
    seed = {range = 8}
    """)

PREDICTIONS = ["novikoff_tight_construction", "xor_stalled_plateau_limit"]
CHECKS = ["novikoff_bound", "novikoff_max_ratio", "max_margin_certified", "separable_converged",
          "xor_not_separable", "xor_perceptron_never_converges", "xor_perceptron_accuracy"]
OBSERVATIONS = ["novikoff_tightness", "xor_perceptron_mistake_rate", "xor_mlp_solves",
                "xor_stalled_signature"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    toml, out, claims, by_id = run_tiny(tmp_path_factory, "perc", TINY)
    parts = pd.concat([pd.read_parquet(p) for p in sorted((out / "parts").glob("*.parquet"))],
                      ignore_index=True)
    return out, by_id, claims, parts


@pytest.fixture(scope="module")
def stored(run):
    out = run[0]
    spec = specmod.load(out / "spec.toml", name="tiny")
    return runner.results(spec, out), spec


def _runs(parts, name):
    return parts[(parts["kind"] == "perceptron") & (parts["data"] == name)].drop_duplicates("point")


def _analyse(data, spec, path):
    return analyse(study, data, spec, path)


def _points(spec):
    return {p["point"]: p for p in specmod.expand(spec)}


def test_kinds_counts_and_figures(run):
    out, by_id, claims, parts = run
    kinds = {c["id"]: c["kind"] for c in claims["claims"]}
    assert [i for i in kinds if kinds[i] == "prediction"] == PREDICTIONS
    assert sorted(i for i in kinds if kinds[i] == "check") == sorted(CHECKS)
    assert sorted(i for i in kinds if kinds[i] == "observation") == sorted(OBSERVATIONS)
    preds = [c for c in claims["claims"] if c["kind"] == "prediction"]
    assert claims["total"] == len(preds) == 2
    assert claims["passed"] == sum(c["passed"] for c in preds)
    assert claims["checks"] == {"passed": len(CHECKS), "total": len(CHECKS)}
    for c in claims["claims"]:
        if c["kind"] == "observation":
            assert c["passed"] is None and c["verdict"] == "observed"
        else:
            assert c["verdict"] in (("holds", "fails") if c["kind"] == "prediction" else ("ok",))
        if c["kind"] == "prediction":
            assert c["assumes"] and c["figure"]
    for name in ("mistakes_vs_bound", "novikoff_tightness", "xor", "xor_plateau"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    assert parts["point"].nunique() == 16 + 8 + 2 + 8


def test_tight_construction_recomputed(run, stored):
    _, by_id, _, parts = run
    spec = stored[1]
    pts = _points(spec)
    had = _runs(parts, "hadamard")
    assert len(had) == 8
    for _, r in had.iterrows():
        args = pts[int(r["point"])]["data_args"]
        X, y = perceptron_data.hadamard(**args)
        m = study.max_margin(X, datasets.to_pm1(y))
        R = np.sqrt(1 + (X ** 2).sum(1).max())
        assert R == pytest.approx(r["radius"], rel=1e-12) == pytest.approx(np.sqrt(args["k"]))
        assert m["gamma"] == pytest.approx(1.0, rel=1e-9)
        assert r["total_mistakes"] == args["k"] == round((R / m["gamma"]) ** 2)
        assert r["epochs_run"] == 2
    c = by_id["novikoff_tight_construction"]
    assert c["verdict"] == "holds"
    assert c["predicted"] == {"k=4": pytest.approx(4), "k=16": pytest.approx(16)}
    assert c["measured"] == {"k=4": 4, "k=16": 16}


H = lambda p: -p * np.log(p) - (1 - p) * np.log(1 - p)
# plateau levels for four equal clusters: an opposite pair merged, three clusters, all four
LEVELS = {"2 merged": 0.5 * np.log(2), "3 merged": 0.75 * H(1 / 3), "4 merged": np.log(2)}


def _stalled(parts):
    """(kind of the level nearest L(T), L_inf, approaching, leaving or moving) per stalled
    run."""
    m = parts[(parts["kind"] == "mlp") & (parts["layer"] == 1)]
    out = []
    for point, r in m.groupby("point"):
        if r["final_accuracy"].iloc[0] >= study.SOLVED_ACCURACY:
            continue
        r = r.sort_values("step").set_index("step")["loss"]
        T = r.index[-1]
        t1 = r.index[r.index <= T / 2][-1]
        t2 = r.index[r.index <= 3 * T / 4][-1]
        LT, L1, L2 = r[T], r[t1], r[t2]
        lim = (T * LT - t1 * L1) / (T - t1)
        kind = min(LEVELS, key=lambda k: abs(LEVELS[k] - LT))
        same = kind == min(LEVELS, key=lambda k: abs(LEVELS[k] - L1))
        moving = not same and L2 > LT > LEVELS[kind]
        appr = same and L1 > LT and abs(lim - LEVELS[kind]) <= L1 - LT
        out.append((kind, lim, appr, (not appr and 0 < L1 - L2 < L2 - LT) or moving))
    return out


def test_plateau_recomputed(run):
    _, by_id, _, parts = run
    s = _stalled(parts)
    assert len(s) >= 1, "the tiny grid must have stalled runs for this test to mean anything"
    c = by_id["xor_stalled_plateau_limit"]
    assert c["predicted"]["2 merged"] == pytest.approx(LEVELS["2 merged"], rel=1e-12)
    for k, v in c["predicted"].items():
        assert v == pytest.approx(LEVELS[k], rel=1e-12)
    kinds = {k for k, _, a, _ in s if a}
    assert c["measured"] == {k: pytest.approx(np.median([l for kk, l, a, _ in s if a and kk == k]),
                                              rel=1e-12) for k in kinds}
    assert c["passed"] == all(a or lv for _, _, a, lv in s)
    mr = parts[parts["kind"] == "mlp"].drop_duplicates("point")
    assert by_id["xor_mlp_solves"]["measured"] == pytest.approx(
        (mr["final_accuracy"] >= study.SOLVED_ACCURACY).mean())


# --------------------------------------------------------------------------------------------
# the engine checks, tested

def test_novikoff_with_max_margin_holds_on_every_run(run, stored):
    """Novikoff (1962) with the maximum margin: mistakes <= (R/gamma*)^2, gamma* >= the
    construction's margin; every run converges within the bound + 1 epochs."""
    _, by_id, _, parts = run
    pts = _points(stored[1])
    sep = _runs(parts, "blobs")
    for _, r in sep.iterrows():
        X, y, info = datasets.blobs_margin(**pts[int(r["point"])]["data_args"], return_info=True)
        m = study.max_margin(X, datasets.to_pm1(y))
        assert m["gamma"] >= info.margin_augmented * (1 - 1e-9)
        assert m["gamma_upper"] == pytest.approx(m["gamma"], rel=1e-7)
        bound = (r["radius"] / m["gamma"]) ** 2
        assert r["total_mistakes"] <= bound
        assert r["converged"] and r["epochs_run"] <= bound + 1
    np.testing.assert_allclose(sep["bound"], (sep["radius"] / sep["margin"]) ** 2, rtol=1e-12)
    s = parts[parts["kind"] == "perceptron"]
    assert (s.groupby("point")["mistakes"].sum() == s.groupby("point")["total_mistakes"].first()).all()
    for cid in ("novikoff_bound", "novikoff_max_ratio", "max_margin_certified", "separable_converged"):
        assert by_id[cid]["verdict"] == "ok", cid
    assert by_id["novikoff_bound"]["measured"] == 0


def test_novikoff_bound_on_fresh_data_and_orders():
    """The theorem beyond the grid: random separable sets, many visiting orders and step sizes."""
    rng = np.random.default_rng(5)
    for trial in range(6):
        d = int(rng.integers(2, 12))
        X, y = datasets.blobs_margin(n=60, d=d, margin=float(rng.uniform(0.02, 0.3)), seed=trial)
        y = datasets.to_pm1(y)
        g = study.max_margin(X, y)["gamma"]
        bound = (sperc.radius(X) / g) ** 2
        for seed in range(5):
            r = sperc.train(X, y, lr=float(rng.uniform(0.1, 3)), max_epochs=5000, seed=seed)
            assert r.converged and r.mistakes <= bound


def test_xor_checks_hold(run, stored):
    _, by_id, _, parts = run
    pts = _points(stored[1])
    pr = _runs(parts, "xor")
    assert by_id["xor_perceptron_never_converges"]["measured"] == int(pr["converged"].sum()) == 0
    X, y = datasets.xor(**pts[int(pr["point"].iloc[0])]["data_args"])
    assert not study.max_margin(X, datasets.to_pm1(y))["separable"]
    ceiling = study.best_linear_accuracy_2d(X, y)
    assert ceiling < 1 and (pr["final_accuracy"] <= ceiling).all()
    # the theorem beyond the grid: a longer run still never has a mistake-free epoch
    r = sperc.train(X, datasets.to_pm1(y), max_epochs=2000, seed=3)
    assert not r.converged and (r.mistakes_per_epoch > 0).all()
    for cid in ("xor_not_separable", "xor_perceptron_never_converges", "xor_perceptron_accuracy"):
        assert by_id[cid]["verdict"] == "ok", cid


# --------------------------------------------------------------------------------------------
# manipulated data must fail

def test_tight_construction_fails_on_one_missing_mistake(stored, tmp_path):
    data, spec = stored
    data = data.copy()
    had = data[(data["kind"] == "perceptron") & (data["data"] == "hadamard")]
    rows = data["point"] == had["point"].iloc[0]
    data.loc[rows, "total_mistakes"] -= 1
    by_id = _analyse(data, spec, tmp_path / "tight")
    assert not by_id["novikoff_tight_construction"].passed
    assert by_id["xor_stalled_plateau_limit"].passed


def test_plateau_fails_at_another_level(stored, tmp_path):
    """A stalled run that settles at a finite minimum above the plateau (its loss flat at
    plateau + 0.02 over the last half) must fail the prediction."""
    data, spec = stored
    data = data.copy()
    mlp = data["kind"] == "mlp"
    stalled = mlp & (data["final_accuracy"] < study.SOLVED_ACCURACY)
    assert stalled.any()
    victim = data.loc[stalled, "point"].iloc[0]
    late = (data["point"] == victim) & (data["step"] >= data.loc[mlp, "step"].max() / 2)
    data.loc[late, "loss"] = 0.5 * np.log(2) + 0.02
    by_id = _analyse(data, spec, tmp_path / "plateau")
    assert not by_id["xor_stalled_plateau_limit"].passed
    assert by_id["novikoff_tight_construction"].passed


def test_plateau_fails_for_a_minimum_reached_after_a_transit(stored, tmp_path):
    """A stalled run that leaves the ln 2 plateau and settles, flat, at 0.40 (no plateau level)
    is not a transit still arriving: it must fail the prediction."""
    data, spec = stored
    data = data.copy()
    mlp = data["kind"] == "mlp"
    stalled = mlp & (data["final_accuracy"] < study.SOLVED_ACCURACY)
    victim = (data["point"] == data.loc[stalled, "point"].iloc[0])
    T = data.loc[mlp, "step"].max()
    data.loc[victim & (data["step"] <= T / 2), "loss"] = np.log(2)
    data.loc[victim & (data["step"] > T / 2), "loss"] = 0.40
    by_id = _analyse(data, spec, tmp_path / "transit")
    assert not by_id["xor_stalled_plateau_limit"].passed
    assert "1 neither" in by_id["xor_stalled_plateau_limit"].note


def test_checks_fail_on_manipulated_runs(stored, tmp_path):
    data, spec = stored
    data = data.copy()
    sep = data[(data["kind"] == "perceptron") & (data["data"] == "blobs")]
    rows = data["point"] == sep["point"].iloc[0]
    data.loc[rows, "total_mistakes"] = 10 ** 6
    data.loc[rows, "converged"] = False
    xor = (data["kind"] == "perceptron") & (data["data"] == "xor")
    data.loc[xor & (data["point"] == data.loc[xor, "point"].iloc[0]), "converged"] = True
    data.loc[xor, "final_accuracy"] = 1.0
    by_id = _analyse(data, spec, tmp_path / "bad")
    for cid in ("novikoff_bound", "novikoff_max_ratio", "separable_converged",
                "xor_perceptron_never_converges", "xor_perceptron_accuracy"):
        assert not by_id[cid].passed, cid
    assert by_id["novikoff_bound"].measured == 1
    claims = json.loads((tmp_path / "bad" / "claims.json").read_text())
    assert claims["checks"]["passed"] < claims["checks"]["total"]


def test_missing_runs_fail_not_pass(stored, tmp_path):
    data, spec = stored
    by_id = _analyse(data[data["kind"] == "mlp"], spec, tmp_path / "mlp_only")
    assert not by_id["novikoff_tight_construction"].passed
    assert by_id["novikoff_tight_construction"].measured == "no runs"
    for cid in ("novikoff_bound", "separable_converged", "xor_perceptron_never_converges"):
        assert not by_id[cid].passed and by_id[cid].measured == "no runs", cid
    by_id = _analyse(data[data["kind"] == "perceptron"], spec, tmp_path / "perc_only")
    assert not by_id["xor_stalled_plateau_limit"].passed
    assert by_id["xor_stalled_plateau_limit"].measured == "no runs"


def test_bad_hadamard_configuration_is_named(tmp_path):
    with pytest.raises(StudyError, match="k must be a power of two"):
        runner.make_data("hadamard", {"k": 6, "seed": 0})
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace('data = {name = "hadamard", k = [4, 16], seed = {range = 2}}',
                                'data = {name = "hadamard", n = 4}'))
    with pytest.raises(StudyError, match="'n' is not an argument of data set 'hadamard'"):
        specmod.load(bad, name="bad")
