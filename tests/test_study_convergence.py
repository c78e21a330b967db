"""The convergence study: a tiny grid through the CLI, its claims against the stored rows and
the theory, the contraction fit on trajectories with known rates, and claims that must fail on
manipulated data (so they cannot pass vacuously)."""
import math

import numpy as np
import pytest

from studies import convergence, runner, theory
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
lr = [0.1, 0.3, 0.45, 0.455, 0.46, 0.49, 0.5, 0.505, 0.55]
seed = {range = 3}
steps = 250
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

[grids.steps]
data = {name = "xor", n = 32}
widths = [[4]]
activation = ["tanh", "sigmoid"]
loss = "bce"
lr = 0.5
seed = {range = 4}
steps = 300
record_every = 10
"""
LS_DATA = dict(n=24, d_in=6, hidden=[], noise=0.3, seed=0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    toml, out, _, claims = run_tiny(tmp_path_factory, "conv", TINY)
    spec = specmod.load(out / "spec.toml")
    return out, claims, spec, runner.results(spec, out)


def _claim(claims, prefix):
    hits = [c for k, c in claims.items() if k.startswith(prefix)]
    assert len(hits) == 1, f"{prefix}: {sorted(claims)}"
    return hits[0]


def test_tiny_run_claims_match_theory_and_store(run):
    out, claims, spec, data = run
    X, y = runner.make_data("teacher_student", LS_DATA)
    eta_c = theory.ls_threshold(X)
    lmin, lmax = theory.ls_spectrum(X)
    thr = _claim(claims, "ls_threshold_bracket")
    assert thr["predicted"] == pytest.approx(eta_c, rel=1e-12)
    lo, hi = thr["measured"]
    assert (lo, hi) == (0.5, 0.505) and thr["passed"]
    # the bracket as the stored rows tell it: over the second half of the run lo's excess
    # shrinks and hi's grows, for every seed
    Lstar = theory.ls_solution(X, y).loss
    ls = data[data["grid"] == "least_squares"]
    for eta, shrinks in ((lo, True), (hi, False)):
        for _, t in ls[ls["lr"] == eta].groupby("seed"):
            e = t.sort_values("step")["loss"].to_numpy() - Lstar
            assert (e[-1] < e[e.size // 2]) == shrinks
    opt = _claim(claims, "ls_optimal_step")
    assert opt["predicted"] == pytest.approx(theory.ls_optimal_step(X), rel=1e-12)
    assert opt["measured"] in (0.455, 0.46) and opt["passed"]
    rho = _claim(claims, "ls_optimal_contraction")
    assert rho["predicted"] == pytest.approx(theory.ls_optimal_contraction(lmin, lmax), rel=1e-12)
    assert _claim(claims, "ls_contraction")["passed"]
    assert _claim(claims, "ls_threshold_interpolated")["measured"] == pytest.approx(eta_c, rel=1e-3)
    # Nielsen's neuron follows the exact map; MSE is slower from saturated starts
    assert claims["slowdown_neuron_exact"]["passed"]
    assert claims["slowdown_neuron"]["passed"] and claims["slowdown_neuron"]["measured"] > 1
    assert "tanh_faster_than_sigmoid" in claims
    assert (out / "figures" / "steps_to_target.png").exists()
    assert (out / "figures" / "slowdown_neuron.png").exists()


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


def test_neuron_map_and_targets():
    # BCE from z0 = 0 towards y = 1 with a unit step: z1 = 0 + 1 * (1 - 1/2)
    traj = convergence.neuron_trajectory("bce", [0.0], 1.0, 1.0, 1)
    assert traj[1, 0] == pytest.approx(math.log1p(math.exp(-0.5)))
    assert convergence.target_loss("mse_sigmoid", 0.5) == 0.25
    assert convergence.target_loss("bce", 0.5) == pytest.approx(math.log(2))


def _reanalyse(run, tmp_path, edit):
    out, _, spec, data = run
    data = edit(data.copy())
    rep = Report(tmp_path / "rep", title="manipulated")
    convergence.analyse(data, spec, rep)
    return {c.id: c for c in rep.claims}


def test_claims_fail_on_manipulated_data(run, tmp_path):
    def slow_down(data):
        # excess loss of every least-squares run decays 5% more slowly per step than it did
        X, y = runner.make_data("teacher_student", LS_DATA)
        Lstar = theory.ls_solution(X, y).loss
        m = (data["grid"] == "least_squares").to_numpy()
        e = data.loc[m, "loss"].to_numpy() - Lstar
        data.loc[m, "loss"] = Lstar + e * 1.05 ** (2 * data.loc[m, "step"].to_numpy())
        # and the BCE run of the neuron is made as slow as MSE's
        pts = data.drop_duplicates("point")
        nb = pts[(pts["grid"] == "slowdown_neuron") & (pts["loss_fn"] == "bce")]
        for _, p in nb.iterrows():
            twin = pts[(pts["grid"] == "slowdown_neuron") & (pts["loss_fn"] == "mse_sigmoid")
                       & (pts["seed"] == p["seed"])]["point"].iloc[0]
            rows = (data["point"] == p["point"]).to_numpy()
            data.loc[rows, "loss"] = data.loc[data["point"] == twin, "loss"].to_numpy() * 10
        return data

    claims = _reanalyse(run, tmp_path, slow_down)
    c = next(v for k, v in claims.items() if k.startswith("ls_contraction"))
    assert not c.passed and c.measured > convergence.RATE_TOL
    assert not next(v for k, v in claims.items() if k.startswith("ls_threshold_bracket")).passed
    assert not claims["slowdown_neuron_exact"].passed
    assert not claims["slowdown_neuron"].passed
