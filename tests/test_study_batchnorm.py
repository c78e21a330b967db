"""The batch-norm study end to end on a tiny grid: runner -> Parquet parts -> analysis ->
claims.json, with the verdicts recomputed from the stored parts; manipulated data and a broken
batch-norm backward on which the claims must fail (so none passes vacuously)."""
import textwrap

import numpy as np
import pytest

from studies import batchnorm as study
from studies import runner
from studies import spec as specmod
from studies.report import Report
from study_run import run_tiny

TINY = textwrap.dedent("""\
    study = "batchnorm"
    title = "tiny batchnorm grid"
    chunk_size = 64

    [grids.stable_lr]
    data = {name = "moons", n = 64, noise = 0.2, seed = 0}
    depth = [2, 3]
    width = 8
    activation = "tanh"
    loss = "bce"
    batchnorm = [false, true]
    lr = {geomspace = [0.1, 100.0, 7]}
    seed = {range = 2}
    steps = 30
    record_every = 10

    [grids.digits]
    data = "digits"
    widths = [6, 6, 6]
    activation = "sigmoid"
    loss = "ce"
    batchnorm = [false, true]
    lr = 2.0
    seed = {range = 2}
    steps = 30
    record_every = 5
    probe_every = 10
    track_preact = true
    """)

IDS = ["stable_lr_bn_higher", "digits_steps_to_target", "digits_accuracy_bound",
       "digits_median_drift", "digits_spread_change", "bn_backward_sum_dx_zero",
       "bn_backward_ones_dx_zero", "bn_backward_ones_dgamma_zero", "bn_backward_ones_dbeta_n"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    toml, out, claims, by_id = run_tiny(tmp_path_factory, "bn", TINY)
    spec = specmod.load(out / "spec.toml", name="tiny")
    return out, by_id, claims, runner.results(spec, out), spec


def test_claims_present_and_figures(run):
    out, by_id, claims, data, _ = run
    assert list(by_id) == IDS
    assert claims["passed"] == sum(c["verdict"] == "pass" for c in by_id.values())
    for c in by_id.values():
        assert c["verdict"] == ("pass" if c["passed"] else "fail")
        assert c["measured"] != "no runs"
    for name in ("stable_lr_vs_depth", "final_loss_vs_eta", "preact_percentiles", "digits_training"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    assert data["point"].nunique() == 2 * 2 * 7 * 2 + 2 * 2


def _edge(etas, ok):
    ok = list(ok)
    if all(ok):
        return etas[-1], True
    i = ok.index(False)
    return (etas[i - 1] if i else 0.0), False


def test_stable_lr_recomputed(run):
    _, by_id, _, data, _ = run
    sw = data[data["grid"] == "stable_lr"]
    l0 = sw[(sw["step"] == 0) & (sw["layer"] == 1)].set_index("point")["loss"]
    runs = sw.drop_duplicates("point", keep="last").set_index("point")
    stable = (~runs["diverged"].astype(bool)) & (runs["final_loss"] < l0.reindex(runs.index))
    runs = runs.assign(stable=stable)
    higher = []
    for depth in (2, 3):
        edges = {}
        for bn in (False, True):
            g = runs[(runs["depth"] == depth) & (runs["batchnorm"] == bn)]
            share = g.groupby("lr")["stable"].mean().sort_index()
            edges[bn] = _edge(list(share.index), list(share > 0.5))
        higher.append(edges[True][0] > edges[False][0] and not edges[False][1])
    c = by_id["stable_lr_bn_higher"]
    assert c["measured"] == f"{sum(higher)} of 2"
    assert c["passed"] == all(higher)


def test_digits_recomputed(run):
    _, by_id, _, data, _ = run
    dg = data[(data["grid"] == "digits") & (data["layer"] == 1)]
    steps, drift, spread = {}, {}, {}
    for (bn, seed), g in dg.groupby(["batchnorm", "seed"]):
        g = g.sort_values("step")
        hit = g["step"][1 - g["loss"] / np.log(2) >= study.TARGET_ACCURACY]
        steps[bn, seed] = hit.iloc[0] if len(hit) else np.inf
        p = g.dropna(subset=["preact_p50"])
        assert list(p["step"]) == [0, 10, 20, 30]
        s0 = p["preact_p85"].iloc[0] - p["preact_p15"].iloc[0]
        s1 = p["preact_p85"].iloc[-1] - p["preact_p15"].iloc[-1]
        drift[bn, seed] = abs(p["preact_p50"].iloc[-1] - p["preact_p50"].iloc[0]) / s0
        spread[bn, seed] = abs(np.log(s1 / s0))
    faster = [steps[True, s] < steps[False, s] for s in (0, 1)]
    assert by_id["digits_steps_to_target"]["passed"] == all(faster)
    assert by_id["digits_steps_to_target"]["measured"].startswith(f"{sum(faster)} of 2 pairs")
    for cid, d in (("digits_median_drift", drift), ("digits_spread_change", spread)):
        bn, no = np.median([d[True, s] for s in (0, 1)]), np.median([d[False, s] for s in (0, 1)])
        assert by_id[cid]["measured"] == f"lr 2: {bn:.3g} vs {no:.3g}"
        assert by_id[cid]["passed"] == (bn < no)
    runs = dg.drop_duplicates("point", keep="last")
    margin = runs["final_accuracy"] - (1 - runs["final_loss"] / np.log(2))
    assert by_id["digits_accuracy_bound"]["measured"] == pytest.approx(margin.min())
    assert by_id["digits_accuracy_bound"]["passed"] and margin.min() >= 0


def test_invariants_at_roundoff(run):
    _, by_id, _, _, _ = run
    for cid in ("bn_backward_sum_dx_zero", "bn_backward_ones_dx_zero", "bn_backward_ones_dgamma_zero"):
        assert by_id[cid]["passed"], by_id[cid]
        assert 0 <= by_id[cid]["measured"] < 1e-9
    assert by_id["bn_backward_ones_dbeta_n"]["passed"]
    assert by_id["bn_backward_ones_dbeta_n"]["measured"] in (64, 1797)   # sums of N ones: exact


def _analyse(data, spec, path):
    rep = Report(path, title="t")
    study.analyse(data, spec, rep)
    rep.write()
    return {c.id: c for c in rep.claims}


def test_manipulated_data_fails(run, tmp_path):
    _, _, _, data, spec = run
    data = data.copy()
    sw = data["grid"] == "stable_lr"
    bn = data["batchnorm"].astype(bool)
    data.loc[sw & bn, "final_loss"] = np.inf              # every BN run of the sweep unstable
    dg = data["grid"] == "digits"
    data.loc[dg & bn & (data["step"] > 0), "loss"] = 5.0  # BN never reaches the target
    data.loc[dg, "final_accuracy"] = 0.0                  # below what the final loss certifies
    data.loc[dg, "final_loss"] = 0.01
    # BN's percentiles made to drift: the last probe moved by 10 initial spreads, spread x e^3
    last = dg & bn & (data["step"] == data["steps"])
    for c, f in (("preact_p15", -30.0), ("preact_p50", 10.0), ("preact_p85", 30.0)):
        data.loc[last, c] = data.loc[last, c] + f
    by_id = _analyse(data, spec, tmp_path / "bad")
    assert not by_id["stable_lr_bn_higher"].passed
    assert by_id["stable_lr_bn_higher"].measured == "0 of 2"
    assert not by_id["digits_steps_to_target"].passed
    assert not by_id["digits_accuracy_bound"].passed
    assert not by_id["digits_median_drift"].passed
    assert not by_id["digits_spread_change"].passed


def test_broken_backward_fails(run, tmp_path, monkeypatch):
    """A batch-norm backward that forgets the batch statistics' dependence on z (dz = gamma s dy)
    must break every invariant claim but dbeta's."""
    from simcore import layers

    _, _, _, data, spec = run

    def naive(dy, cache, gamma):
        xhat, inv_std = cache
        return gamma * inv_std * dy, (dy * xhat).sum(0), dy.sum(0)

    monkeypatch.setattr(layers, "batchnorm_backward", naive)
    by_id = _analyse(data[data["grid"] == "digits"], spec, tmp_path / "naive")
    assert not by_id["bn_backward_sum_dx_zero"].passed
    assert not by_id["bn_backward_ones_dx_zero"].passed
    assert by_id["bn_backward_ones_dbeta_n"].passed


def test_missing_runs_fail(run, tmp_path):
    _, _, _, data, spec = run
    by_id = _analyse(data[data["grid"] == "stable_lr"], spec, tmp_path / "sweep_only")
    for cid in ("digits_steps_to_target", "digits_accuracy_bound", "digits_median_drift",
                "digits_spread_change"):
        assert not by_id[cid].passed and by_id[cid].measured == "no runs"
    by_id = _analyse(data[~data["batchnorm"].astype(bool)], spec, tmp_path / "no_bn")
    assert all(not c.passed for c in by_id.values())
