"""The batch-norm study end to end on a tiny grid: runner -> Parquet parts -> analysis ->
claims.json, with every prediction and observation recomputed from the stored parts;
manipulated data and a broken batch-norm backward on which they must fail (so none passes
vacuously); the identities the report lists as engine checks, tested here; and the runner's
held-out split and probes the study added."""
import textwrap

import numpy as np
import pytest

from simcore import MLP, datasets, layers, train_grid
from studies import batchnorm as study
from studies import runner
from studies import spec as specmod
from studies import theory
from studies.errors import StudyError
from study_run import analyse, run_tiny

TINY = textwrap.dedent("""\
    study = "batchnorm"
    title = "tiny batchnorm grid"
    chunk_size = 64

    [grids.stable_lr]
    data = {name = "moons", n = 64, noise = 0.2, seed = 0}
    depth = [2, 3, 4]
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
    record_every = 1
    probe_every = 10
    track_preact = true
    track_prenorm = true
    track_accuracy = true
    holdout = 0.25
    """)

PREDICTIONS = ["stable_lr_ratio_rises_with_depth", "stable_lr_bn_above_block_limit"]
OBSERVATIONS = ["stable_lr_depth2_output_layer", "bn_weight_norm_growth",
                "digits_steps_to_target_train", "digits_steps_to_target_holdout",
                "digits_prenorm_drift", "digits_postnorm_drift"]
CHECKS = ["bn_backward_sum_dx_zero", "bn_backward_ones_dx_zero", "bn_backward_ones_dgamma_zero",
          "bn_backward_ones_dbeta_n", "bn_scale_invariance_orthogonal", "bn_norm_step_identity",
          "digits_accuracy_bound"]
ETAS = np.geomspace(0.1, 100.0, 7)
STEP = ETAS[1] / ETAS[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    toml, out, claims, by_id = run_tiny(tmp_path_factory, "bn", TINY)
    spec = specmod.load(out / "spec.toml", name="tiny")
    return out, by_id, claims, runner.results(spec, out), spec


def _analyse(data, spec, path):
    return analyse(study, data, spec, path)


def test_kinds_counts_and_figures(run):
    out, by_id, claims, data, _ = run
    assert list(by_id) == PREDICTIONS[:2] + OBSERVATIONS[:1] + OBSERVATIONS[1:] + CHECKS
    for ids, kind in ((PREDICTIONS, "prediction"), (OBSERVATIONS, "observation"), (CHECKS, "check")):
        assert all(by_id[i]["kind"] == kind for i in ids)
    preds = [by_id[i] for i in PREDICTIONS]
    assert claims["total"] == 2 and claims["passed"] == sum(c["passed"] for c in preds)
    assert claims["checks"] == {"passed": sum(by_id[i]["passed"] for i in CHECKS), "total": 7}
    for c in preds:
        assert c["verdict"] == ("holds" if c["passed"] else "fails")
        assert c["assumes"] and c["figure"] == "stable_lr_vs_depth"
    assert all(by_id[i]["verdict"] == "observed" and by_id[i]["passed"] is None for i in OBSERVATIONS)
    for name in ("stable_lr_vs_depth", "final_loss_vs_eta", "weight_norm_growth",
                 "preact_percentiles", "digits_accuracy"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    assert data["point"].nunique() == 3 * 2 * 7 * 2 + 2 * 2


# ---- the learning-rate sweep, recomputed ---------------------------------------------------

def _edges(sw):
    """{(depth, bn): majority edge} from the stored rows, by their own definition."""
    l0 = sw[(sw["step"] == 0) & (sw["layer"] == 1)].set_index("point")["loss"]
    runs = sw.drop_duplicates("point", keep="last").set_index("point")
    stable = (~runs["diverged"].astype(bool)) & (runs["final_loss"] < l0.reindex(runs.index))
    runs = runs.assign(stable=stable)
    out = {}
    for (depth, bn), g in runs.groupby(["depth", "batchnorm"]):
        share = g.groupby("lr")["stable"].mean().sort_index()
        ok = list(share > 0.5)
        etas = list(share.index)
        if all(ok):
            out[depth, bn] = (etas[-1], True)
        else:
            i = ok.index(False)
            out[depth, bn] = (etas[i - 1] if i else 0.0, False)
    return out


def _block_limit(depth, seed):
    """2/lambda_max of the scale-variant block from the dense Hessian's submatrix (eigvalsh),
    independent of the Lanczos iteration the study uses."""
    X, y = datasets.load("moons", n=64, noise=0.2, seed=0)
    net = MLP([2] + [8] * (depth - 1) + [1], activation="tanh", loss="bce", batchnorm=True)
    theta = net.pack(net.init(seed=seed))
    H = theory.exact_hessian(theory.mlp_grad_fn(net, X, y), theta)
    m = theory.bn_scale_variant_mask(net)
    return 2.0 / np.linalg.eigvalsh(H[np.ix_(m, m)])[-1]


def test_stable_lr_recomputed(run):
    _, by_id, _, data, _ = run
    edges = _edges(data[data["grid"] == "stable_lr"])
    depths = np.array([2, 3, 4])
    ratios = np.array([edges[d, True][0] / edges[d, False][0] for d in depths])
    valid = np.array([edges[d, True][0] > 0 and edges[d, False][0] > 0 and not edges[d, True][1]
                      and not edges[d, False][1] for d in depths])
    slope = np.polyfit(depths[valid], np.log(ratios[valid]), 1)[0]
    se = np.log(STEP) / np.sqrt(6) / np.sqrt(((depths[valid] - depths[valid].mean()) ** 2).sum())
    c = by_id["stable_lr_ratio_rises_with_depth"]
    assert c["measured"]["all"] == pytest.approx(slope, abs=1e-4)
    assert c["passed"] == bool(slope > study.SLOPE_SE * se)
    c = by_id["stable_lr_bn_above_block_limit"]
    pred = {d: np.median([_block_limit(d, s) for s in (0, 1)]) for d in depths}
    for d in depths:
        assert c["predicted"][f"depth={d}"] == pytest.approx(pred[d], rel=1e-3)
        assert c["measured"][f"depth={d}"] == pytest.approx(edges[d, True][0], rel=1e-4)
    assert c["passed"] == all(edges[d, True][0] * STEP >= pred[d] for d in depths)
    o = by_id["stable_lr_depth2_output_layer"]
    assert o["measured"]["all"] == pytest.approx(ratios[0], rel=1e-4)


def test_stable_lr_fails_on_manipulated_data(run, tmp_path):
    """Batch norm's edges made to fall with depth: BN runs at depth >= 3 above the smallest eta
    end above their initial loss. The ratio then falls, and the BN edge (0.1) lies below the
    block's 2/lambda_max at those depths."""
    _, _, _, data, spec = run
    data = data.copy()
    bad = (data["grid"] == "stable_lr") & data["batchnorm"].astype(bool) & (data["depth"] >= 3) \
        & (data["lr"] > ETAS[0] * 1.01)
    data.loc[bad, "final_loss"] = 1e3
    by_id = _analyse(data, spec, tmp_path / "bad")
    assert not by_id["stable_lr_ratio_rises_with_depth"].passed
    assert by_id["stable_lr_ratio_rises_with_depth"].measured["all"] < 0
    assert not by_id["stable_lr_bn_above_block_limit"].passed


def test_ratio_slope_standard_error():
    """The resolution SE: ln(ratio) of two edges floored to a grid of step s has variance
    (ln s)^2 / 6; checked by simulating floored edges."""
    rng = np.random.default_rng(1)
    s, d = 1.5, np.array([2.0, 4.0, 8.0, 16.0])
    true = 0.1 * d
    est = []
    for _ in range(4000):
        a, b = rng.uniform(0, 1, (2, d.size))      # the true edges' positions inside a grid step
        est.append(np.polyfit(d, true + np.log(s) * (a - b), 1)[0])
    slope, se = study.ratio_slope(d, np.exp(true), s)
    assert slope == pytest.approx(0.1)
    assert np.std(est) == pytest.approx(se, rel=0.05)


# ---- digits, recomputed --------------------------------------------------------------------

def _medians(d, key):
    return {f"lr 2 {'BN' if bn else 'no BN'}": float(np.median([d[bn, s] for s in (0, 1)]))
            for bn in (False, True)}


def test_digits_recomputed(run):
    _, by_id, _, data, _ = run
    dg = data[(data["grid"] == "digits") & (data["layer"] == 1)]
    steps = {"train_accuracy": {}, "holdout_accuracy": {}}
    drift = {}
    for (bn, seed), g in dg.groupby(["batchnorm", "seed"]):
        p = g.dropna(subset=["prenorm_p50"]).sort_values("step")
        assert list(p["step"]) == [0, 10, 20, 30]
        for col, d in steps.items():
            hit = p["step"][p[col] >= study.TARGET_ACCURACY]
            d[bn, seed] = float(hit.iloc[0]) if len(hit) else np.inf
        s0 = p["prenorm_p85"].iloc[0] - p["prenorm_p15"].iloc[0]
        drift[bn, seed] = abs(p["prenorm_p50"].iloc[-1] - p["prenorm_p50"].iloc[0]) / s0
    for cid, col in (("digits_steps_to_target_train", "train_accuracy"),
                     ("digits_steps_to_target_holdout", "holdout_accuracy")):
        want = _medians(steps[col], col)
        got = {k: float(v) for k, v in by_id[cid]["measured"].items()}
        assert got == pytest.approx(want)
    assert by_id["digits_prenorm_drift"]["measured"] == pytest.approx(_medians(drift, "drift"))


def test_weight_norm_growth_recomputed(run):
    """measured ||W_T||^2 - ||W_0||^2 against eta^2 sum_{t<T} ||g_t||^2 (records every step)."""
    _, by_id, _, data, _ = run
    dg = data[(data["grid"] == "digits") & (data["layer"] < 4)]
    ratio = {True: [], False: []}
    for (pid, layer), g in dg.groupby(["point", "layer"]):
        g = g.sort_values("step")
        assert list(g["step"]) == list(range(31))
        w2, g2 = g["weight_norm"].to_numpy() ** 2, g["grad_norm"].to_numpy() ** 2
        pred = theory.bn_weight_norm_growth(2.0, g2[:-1] ** 0.5)
        ratio[bool(g["batchnorm"].iloc[0])].append((w2[-1] - w2[0]) / pred)
    m = by_id["bn_weight_norm_growth"]["measured"]
    assert m["BN: measured / predicted, median"] == pytest.approx(np.median(ratio[True]), abs=1e-5)
    assert m["BN: max"] == pytest.approx(max(ratio[True]), abs=1e-5)
    # with batch norm the identity holds up to batch norm's eps; without, it has no reason to
    assert abs(np.median(ratio[True]) - 1) < 0.1 and np.median(ratio[False]) > 2


def test_digits_observations_follow_manipulated_data(run, tmp_path):
    _, _, _, data, spec = run
    data = data.copy()
    dg = (data["grid"] == "digits") & data["batchnorm"].astype(bool)
    data.loc[dg, "train_accuracy"] = np.where(data.loc[dg, "step"] >= 20, 0.95, 0.1)
    last = dg & (data["step"] == 30)
    data.loc[last, "prenorm_p50"] = data.loc[last, "prenorm_p50"] + 100.0
    by_id = _analyse(data, spec, tmp_path / "moved")
    assert by_id["digits_steps_to_target_train"].measured["lr 2 BN"] == 20.0
    assert by_id["digits_prenorm_drift"].measured["lr 2 BN"] > 10


# ---- the engine checks: in the report, and their real tests ---------------------------------

def test_checks_ok(run):
    _, by_id, _, _, _ = run
    for cid in CHECKS:
        assert by_id[cid]["passed"], by_id[cid]
    for cid in ("bn_backward_sum_dx_zero", "bn_backward_ones_dx_zero", "bn_backward_ones_dgamma_zero",
                "bn_scale_invariance_orthogonal", "bn_norm_step_identity"):
        assert 0 <= by_id[cid]["measured"] < 1e-9
    assert by_id["bn_backward_ones_dbeta_n"]["measured"] in (64, 1348)   # sums of N ones: exact


def test_broken_backward_fails(run, tmp_path, monkeypatch):
    """A batch-norm backward that forgets the batch statistics' dependence on z (dz = gamma s dy)
    must break the invariant checks but dbeta's."""
    _, _, _, data, spec = run

    def naive(dy, cache, gamma):
        xhat, inv_std = cache
        return gamma * inv_std * dy, (dy * xhat).sum(0), dy.sum(0)

    monkeypatch.setattr(layers, "batchnorm_backward", naive)
    by_id = _analyse(data[data["grid"] == "digits"], spec, tmp_path / "naive")
    assert not by_id["bn_backward_sum_dx_zero"].passed
    assert not by_id["bn_backward_ones_dx_zero"].passed
    assert by_id["bn_backward_ones_dbeta_n"].passed


def test_accuracy_bound_check_fails_on_manipulated_data(run, tmp_path):
    _, _, _, data, spec = run
    data = data.copy()
    dg = data["grid"] == "digits"
    data.loc[dg, "final_accuracy"] = 0.0      # below what a final loss of 0.01 certifies
    data.loc[dg, "final_loss"] = 0.01
    assert not _analyse(data, spec, tmp_path / "acc")["digits_accuracy_bound"].passed


def _digits_net(batchnorm=True, widths=(6, 6, 6)):
    X, y = runner.split_holdout(*datasets.load("digits"), 0.25)[:2]
    return MLP([64, *widths, 10], activation="sigmoid", loss="ce", batchnorm=batchnorm), X, y


def test_batchnorm_backward_invariants():
    """sum_i dz_i = 0 for any dy; dy = 1 gives dz = 0, dgamma = sum xhat = 0, dbeta = N."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((50, 7)) * 3 + 1
    gamma, beta = rng.uniform(0.5, 2, 7), rng.standard_normal(7)
    _, cache = layers.batchnorm_forward(z, gamma, beta)
    dz, _, _ = layers.batchnorm_backward(rng.standard_normal(z.shape), cache, gamma)
    assert np.abs(dz.sum(0)).max() < 1e-12
    dz1, dg1, db1 = layers.batchnorm_backward(np.ones_like(z), cache, gamma)
    assert np.abs(dz1).max() < 1e-13 and np.abs(dg1).max() < 1e-12
    np.testing.assert_array_equal(db1, 50.0)


def test_scale_invariance_with_eps():
    """d/dc L(c W_l) at c = 1 (central difference) equals w . grad, and both equal
    eps/(var + eps) gamma dL/dgamma; the output layer (no batch norm after it) is not invariant."""
    net, X, y = _digits_net()
    params = net.init(seed=1)
    _, grads = net.loss_and_grad(params, X, y)
    corr = study.scale_correction(net, params, X, grads)
    for l in range(3):
        for j in range(6):
            def loss(c):
                p = [{k: v.copy() for k, v in layer.items()} for layer in params]
                p[l]["W"][:, j] *= c
                return net.loss_and_grad(p, X, y)[0]
            h = 1e-4
            fd = (loss(1 + h) - loss(1 - h)) / (2 * h)
            dot = float(params[l]["W"][:, j] @ grads[l]["W"][:, j])
            assert dot == pytest.approx(fd, abs=1e-9)
            assert dot == pytest.approx(corr[l][j], abs=1e-14)
    rows = study.scale_invariance(net, params, X, y, lr=2.0)
    assert all(r["max_cos"] < 1e-10 and r["step_rel_err"] < 1e-12 for r in rows[:3])
    assert rows[3]["max_cos"] > 1e-3


def test_norm_growth_identity_over_training():
    """Plain GD on a batch-norm net: ||W_T||^2 - ||W_0||^2 = eta^2 sum ||g_t||^2 - 2 eta sum (the
    eps term) exactly, step by step (simcore's train_grid against the formula)."""
    net, X, y = _digits_net()
    lr, T = 2.0, 15
    res = train_grid(net, X, y, lr=np.array([lr]), steps=T, seeds=np.array([0], np.uint64),
                     record_every=1)
    h = res.history()
    params = net.init(seed=0)
    eps_sum = np.zeros(3)
    for t in range(T):
        _, grads = net.loss_and_grad(params, X, y)
        eps_sum += [c.sum() for c in study.scale_correction(net, params, X, grads)]
        params = [{k: v - lr * g[k] for k, v in p.items()} for p, g in zip(params, grads)]
    for l in (1, 2, 3):
        g = h[h["layer"] == l].sort_values("step")
        w2, gn = g["weight_norm"].to_numpy() ** 2, g["grad_norm"].to_numpy()
        want = theory.bn_weight_norm_growth(lr, gn[:-1]) - 2 * lr * eps_sum[l - 1]
        assert w2[-1] - w2[0] == pytest.approx(want, rel=1e-8)


def test_accuracy_bound_theorem():
    """acc >= 1 - L/ln 2 for cross-entropy, on random networks and labels."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.standard_normal((200, 5)) * rng.uniform(0.1, 5)
        y = rng.integers(0, 5, 200)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        L = -np.mean(np.log(p[np.arange(200), y]))
        assert np.mean(p.argmax(1) == y) >= 1 - L / np.log(2) - 1e-12


def test_missing_runs(run, tmp_path):
    _, _, _, data, spec = run
    by_id = _analyse(data[data["grid"] == "stable_lr"], spec, tmp_path / "sweep_only")
    for cid in OBSERVATIONS[2:]:
        assert by_id[cid].measured == "no runs"
    assert not by_id["digits_accuracy_bound"].passed
    by_id = _analyse(data[data["grid"] == "digits"], spec, tmp_path / "digits_only")
    for cid in PREDICTIONS:
        assert not by_id[cid].passed and by_id[cid].measured == "no runs"


# ---- the runner's held-out split and probes -------------------------------------------------

def test_split_holdout():
    X, y = datasets.load("digits")
    a = runner.split_holdout(X, y, 0.25)
    b = runner.split_holdout(X, y, 0.25)
    assert len(a[0]) + len(a[2]) == len(X) and len(a[2]) == round(0.25 * len(X))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    rows = {r.tobytes() for r in a[0]}
    assert sum(r.tobytes() in rows for r in a[2]) < 5     # disjoint up to duplicate images
    with pytest.raises(StudyError, match="holdout"):
        runner.split_holdout(X[:2], y[:2], 0.25)


def test_holdout_accuracy_and_the_eps_correction():
    """Held-out accuracy with the training set's statistics, evaluated on the training set, is
    the training-mode accuracy; the eps correction of scale invariance is eps / (var + eps)
    gamma dL/dgamma with var the batch variance of z."""
    net, X, y = _digits_net()
    params = net.init(seed=2)
    train = float(np.mean(net.predict(params, X).argmax(1) == y))
    assert runner.holdout_accuracy(net, params, X, X, y) == pytest.approx(train)
    _, grads = net.loss_and_grad(params, X, y)
    z = X @ params[0]["W"] + params[0]["b"]
    want = 1e-5 / (z.var(0) + 1e-5) * params[0]["gamma"] * grads[0]["gamma"]
    np.testing.assert_allclose(study.scale_correction(net, params, X, grads)[0], want, rtol=1e-9, atol=1e-300)
    plain, _, _ = _digits_net(batchnorm=False)
    p0 = plain.init(seed=2)
    acc = float(np.mean(plain.predict(p0, X).argmax(1) == y))
    assert runner.holdout_accuracy(plain, p0, X, X, y) == pytest.approx(acc)


@pytest.mark.parametrize("extra, message", [
    ("holdout = 1.0\n", "holdout must be < 1"),
    ("holdout = -0.1\n", "holdout must be >= 0"),
    ("track_prenorm = true\n", "need probe_every >= 1"),
    ("probe_every = 10\ntrack_accuracy = true\nloss = 'mse'\n", "track_accuracy needs a classification loss"),
    ("probe_every = 10\ntrack_prenorm = true\ndepth = 1\nwidth = 4\n", "track_prenorm needs a hidden layer"),
])
def test_spec_errors(extra, message):
    text = "[grids.g]\ndata = 'moons'\nlr = 0.1\n" + extra
    if "depth" not in extra:
        text += "widths = [4]\n"
    import tomllib
    with pytest.raises(StudyError, match=message):
        specmod.load(tomllib.loads(text), name="g")


def test_keys_at_their_default_make_the_same_chunks():
    """A key given at its default value makes the same points, so the same chunk keys (every
    key enters the hash, studies.store version 2); another value makes other chunks."""
    import tomllib
    base = "[grids.g]\ndata = 'moons'\nlr = 0.1\nwidths = [4]\n"
    a = runner.plan(specmod.load(tomllib.loads(base), name="g"))
    b = runner.plan(specmod.load(tomllib.loads(base + "holdout = 0.0\ntrack_prenorm = false\n"
                                               "track_accuracy = false\n"), name="g"))
    c = runner.plan(specmod.load(tomllib.loads(base + "holdout = 0.2\n"), name="g"))
    assert [x["key"] for x in a] == [x["key"] for x in b] != [x["key"] for x in c]
