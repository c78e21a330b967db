"""The perceptron study end to end on a tiny grid: runner -> Parquet parts -> analysis ->
claims.json, with every verdict recomputed from the stored parts; and manipulated data on which
the analysis must report failures (so no claim can pass vacuously)."""
import json
import textwrap

import numpy as np
import pandas as pd
import pytest

from studies import runner
from studies import perceptron as study
from studies import spec as specmod
from studies.report import Report
from study_run import run_tiny

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
    seed = {range = 6}
    """)

IDS = ["novikoff_bound", "novikoff_max_ratio", "separable_converged",
       "xor_perceptron_never_converges", "xor_perceptron_mistakes_grow", "xor_mlp_solves",
       "xor_perceptron_accuracy"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    toml, out, claims, by_id = run_tiny(tmp_path_factory, "perc", TINY)
    parts = pd.concat([pd.read_parquet(p) for p in sorted((out / "parts").glob("*.parquet"))],
                      ignore_index=True)
    return out, by_id, claims, parts


def _runs(parts, mask):
    return parts[mask].drop_duplicates("point")


def test_claims_present_and_computed(run):
    out, by_id, claims, parts = run
    assert list(by_id) == IDS
    assert claims["total"] == len(IDS)
    assert claims["passed"] == sum(c["verdict"] == "pass" for c in by_id.values())
    for c in by_id.values():
        assert c["verdict"] in ("pass", "fail")
        assert c["verdict"] == ("pass" if c["passed"] else "fail")
        assert c["measured"] not in (None, "no runs")
    for name in ("mistakes_vs_bound", "mistakes_vs_margin", "xor"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    assert parts["point"].nunique() == 16 + 2 + 6


def test_novikoff_numbers_match_parts(run):
    _, by_id, _, parts = run
    sep = _runs(parts, (parts["kind"] == "perceptron") & (parts["data"] == "blobs"))
    assert len(sep) == 16
    # bound recomputed from the stored R and gamma
    np.testing.assert_allclose(sep["bound"], (sep["radius"] / sep["margin"]) ** 2, rtol=1e-12)
    ratio = sep["total_mistakes"] / sep["bound"]
    over = int((sep["total_mistakes"] > sep["bound"]).sum())
    assert by_id["novikoff_bound"]["measured"] == over == 0        # a theorem: must hold
    assert by_id["novikoff_bound"]["verdict"] == "pass"
    assert by_id["novikoff_max_ratio"]["measured"] == pytest.approx(ratio.max(), rel=1e-12)
    assert 0 < ratio.max() <= 1
    assert by_id["separable_converged"]["measured"] == pytest.approx(sep["converged"].mean())
    assert by_id["separable_converged"]["verdict"] == ("pass" if sep["converged"].all() else "fail")
    # stored per-epoch counts add up to each run's total
    s = parts[(parts["kind"] == "perceptron")]
    sums = s.groupby("point")["mistakes"].sum()
    tot = s.groupby("point")["total_mistakes"].first()
    assert (sums == tot).all()


def test_xor_numbers_match_parts(run):
    _, by_id, _, parts = run
    xp = parts[(parts["kind"] == "perceptron") & (parts["data"] == "xor")]
    pr = xp.drop_duplicates("point")
    assert by_id["xor_perceptron_never_converges"]["measured"] == int(pr["converged"].sum()) == 0
    ratios = []
    for _, r in xp.groupby("point"):
        m = r.sort_values("epoch")["mistakes"].to_numpy()
        h = len(m) // 2
        ratios.append(m[len(m) - h:].sum() / m[:h].sum())
    assert by_id["xor_perceptron_mistakes_grow"]["measured"] == pytest.approx(np.median(ratios))
    lo, hi = study.GROWTH_RATIO_RANGE
    expect = all(lo <= x <= hi for x in ratios)
    assert (by_id["xor_perceptron_mistakes_grow"]["verdict"] == "pass") == expect

    mr = parts[parts["kind"] == "mlp"].drop_duplicates("point")
    solved = mr["final_accuracy"] >= study.SOLVED_ACCURACY
    assert by_id["xor_mlp_solves"]["measured"] == pytest.approx(solved.mean())
    assert (by_id["xor_mlp_solves"]["verdict"] == "pass") == (solved.mean() > 0.5)
    pmax = pr["final_accuracy"].max()
    assert by_id["xor_perceptron_accuracy"]["measured"] == pytest.approx(pmax)
    assert pmax <= study.LINEAR_XOR_CEILING + study.LINEAR_XOR_SLACK


def _analyse(data, spec, path):
    rep = Report(path, title="t")
    study.analyse(data, spec, rep)
    rep.write()
    return {c.id: c for c in rep.claims}


@pytest.fixture(scope="module")
def stored(run):
    out = run[0]
    spec = specmod.load(out / "spec.toml", name="tiny")
    return runner.results(spec, out), spec


def test_manipulated_data_fails(stored, tmp_path):
    data, spec = stored
    data = data.copy()
    sep = data[(data["kind"] == "perceptron") & (data["data"] == "blobs")]
    victim = sep["point"].iloc[0]
    rows = data["point"] == victim
    data.loc[rows, "total_mistakes"] = np.floor(data.loc[rows, "bound"]) + 1
    data.loc[rows, "converged"] = False
    xor_victim = data.loc[(data["kind"] == "perceptron") & (data["data"] == "xor"), "point"].iloc[0]
    data.loc[data["point"] == xor_victim, "converged"] = True
    data.loc[data["kind"] == "mlp", "final_accuracy"] = 0.5
    by_id = _analyse(data, spec, tmp_path / "bad")
    assert not by_id["novikoff_bound"].passed and by_id["novikoff_bound"].measured == 1
    assert not by_id["novikoff_max_ratio"].passed and by_id["novikoff_max_ratio"].measured > 1
    assert not by_id["separable_converged"].passed
    assert not by_id["xor_perceptron_never_converges"].passed
    assert not by_id["xor_mlp_solves"].passed and by_id["xor_mlp_solves"].measured == 0
    assert not by_id["xor_perceptron_accuracy"].passed      # no MLP solves it any more
    claims = json.loads((tmp_path / "bad" / "claims.json").read_text())
    assert claims["passed"] == sum(c.passed for c in by_id.values()) < claims["total"]


def test_growth_claim_fails_when_mistakes_stop(stored, tmp_path):
    data, spec = stored
    data = data.copy()
    xor = (data["kind"] == "perceptron") & (data["data"] == "xor")
    late = xor & (data["epoch"] > data["epochs_run"] / 2)
    data.loc[late, "mistakes"] = 0          # a run whose mistakes die out: sublinear growth
    by_id = _analyse(data, spec, tmp_path / "stop")
    assert not by_id["xor_perceptron_mistakes_grow"].passed
    assert by_id["xor_perceptron_mistakes_grow"].measured == 0


def test_missing_runs_fail_not_pass(stored, tmp_path):
    data, spec = stored
    only_mlp = data[data["kind"] == "mlp"]
    by_id = _analyse(only_mlp, spec, tmp_path / "mlp_only")
    for cid in ("novikoff_bound", "novikoff_max_ratio", "separable_converged",
                "xor_perceptron_never_converges", "xor_perceptron_mistakes_grow",
                "xor_perceptron_accuracy"):
        assert not by_id[cid].passed, cid
        assert by_id[cid].measured == "no runs"
