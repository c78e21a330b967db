"""simcore.train_grid: the grid engine against the single-network API, initialisation,
determinism, mixed architectures, divergence, telemetry, input checks and a large smoke run.

The reference of every grid result is a plain Python loop over the single-network API
(``MLP.init`` + ``MLP.loss_and_grad`` + ``simcore.Optimizer``) with the same starting point and,
for minibatch SGD, the same batches (``simcore.grid.batch_order``). The grid sums its gradients
in chunks of samples, so the two agree to rounding, not bitwise (``conftest.rel_err``, over
all parameters). The telemetry's reference is a NumPy forward pass (``naive.ref_telemetry``).

Bitwise claims (``np.array_equal``) are made only between grid runs: twice the same call,
different thread counts, different splits of a grid into calls, a network with or without
neighbours in its block.
"""
import copy
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest

import simcore
from conftest import INITS, assert_same_result, cpu_kernel_args, flat, network, rel_err
from naive import ref_telemetry
from simcore import MLP, train_grid
from simcore.grid import LANES, batch_order

OPTIMIZERS = ["gd", "momentum", "nesterov", "adam"]
COLUMNS = ["network", "step", "layer", "loss", "val_loss", "accuracy", "val_accuracy", "grad_norm", "weight_norm", "preact_mean",
           "preact_std", "act_mean", "act_std", "saturated"]
TOL = 1e-12


# --- helpers ----------------------------------------------------------------------------------

def stack(param_lists):
    """Per-network parameter lists -> the stacked layout (leading G axis)."""
    return [{k: np.stack([ps[l][k] for ps in param_lists]) for k in param_lists[0][l]}
            for l in range(len(param_lists[0]))]


def batch_of(seed, t, n, batch_size):
    """Sample indices of step t of a network with ``seed`` (the documented minibatch schedule)."""
    per_epoch = n // batch_size
    epoch, pos = divmod(t, per_epoch)
    order = np.empty(n, np.int64)
    batch_order(np.uint64(seed), epoch, n, order)
    return order[pos * batch_size:(pos + 1) * batch_size]


def momentum_of(optimizer, mu=None):
    """The momentum argument for ``optimizer``: MOMENTA (or ``mu``) where it is used, none
    otherwise (train_grid refuses an option the optimizer would ignore)."""
    return {"momentum": MOMENTA if mu is None else mu} if optimizer in ("momentum", "nesterov") else {}


def reference(net, X, y, lr, steps, seed=0, scale=1.0, bias_scale=0.0, optimizer="gd",
              momentum=None, batch_size=None, params0=None, trace=False):
    """Train one network with the single-network API; returns (params, full-data loss[, trace]).

    ``trace`` lists (params before the update, batch indices) of every step."""
    params = (copy.deepcopy(params0) if params0 is not None
              else net.init(seed=seed, scale=scale, bias_scale=bias_scale))
    opt = simcore.Optimizer(optimizer, eta=lr, momentum=momentum)
    n = X.shape[0]
    seen = []
    for t in range(steps):
        idx = np.arange(n) if batch_size is None else batch_of(seed, t, n, batch_size)
        if trace:
            seen.append((copy.deepcopy(params), idx))
        _, grads = net.loss_and_grad(params, X[idx], y[idx])
        opt.step(params, grads)
    loss, _ = net.loss_and_grad(params, X, y)
    return (params, loss, seen) if trace else (params, loss)


# --- data and networks -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moons():
    return simcore.datasets.moons(40, seed=0)


def _case(name):
    if name == "bce":
        X, y = simcore.datasets.moons(40, seed=0)
        return MLP([2, 5, 4, 1], activation="tanh", loss="bce"), X, y
    if name == "ce":
        X, y = simcore.datasets.spirals(45, n_classes=3, seed=1)
        return MLP([2, 6, 3], activation="relu", loss="ce", init="he"), X, y
    if name == "mse":
        X, y = simcore.datasets.teacher_student(40, d_in=3, seed=2)
        return MLP([3, 6, 1], activation="sigmoid", loss="mse"), X, y
    if name == "bn":
        X, y = simcore.datasets.moons(40, seed=3)
        return MLP([2, 6, 5, 1], activation="tanh", loss="bce", batchnorm=True), X, y
    raise KeyError(name)


CASES = ["bce", "ce", "mse", "bn"]
SEEDS = np.array([3, 7, 11, 0, 5])
SCALES = np.array([1.0, 0.5, 2.0, 1.0, 1.5])
BIAS_SCALES = np.array([0.0, 0.1, 0.0, 0.3, 0.0])
MOMENTA = np.array([0.0, 0.5, 0.9, 0.3, 0.0])


def _lrs(optimizer):
    return np.array([0.01, 0.03, 0.05, 0.1, 0.02]) if optimizer == "adam" else \
        np.array([0.1, 0.3, 0.05, 0.5, 1.0])


def _check_against_reference(net, X, y, res, lr, optimizer, batch_size=None, steps=15,
                             seeds=SEEDS, params0=None):
    assert not res.diverged.any()
    assert np.all(res.diverged_at == -1)
    # the gradient of a bias right before batch norm is zero in theory and rounding noise in
    # practice; Adam normalises that noise into O(lr) steps of either sign, so leave it out
    skip = net.batchnorm and optimizer == "adam"
    for g in range(len(lr)):
        start = params0[g] if params0 is not None else None
        want, want_loss = reference(net, X, y, lr[g], steps, seed=int(seeds[g]), scale=SCALES[g],
                                    bias_scale=BIAS_SCALES[g], optimizer=optimizer,
                                    momentum=MOMENTA[g] if optimizer in ("momentum", "nesterov") else None,
                                    batch_size=batch_size, params0=start)
        got = network(res, g)
        err = rel_err(flat(got, skip_bn_bias=skip), flat(want, skip_bn_bias=skip))
        assert err <= TOL, f"network {g}: rel err {err:.2e}"
        # final_loss is the full-data loss at the final parameters
        loss_at_final, _ = net.loss_and_grad(got, X, y)
        assert abs(res.final_loss[g] - loss_at_final) <= TOL * abs(loss_at_final)
        if not skip:
            assert abs(res.final_loss[g] - want_loss) <= 1e-10 * abs(want_loss)


# --- 1. the same numbers as the single-network API --------------------------------------------

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_full_batch_matches_single_network_api(case, optimizer):
    net, X, y = _case(case)
    lr = _lrs(optimizer)
    res = train_grid(net, X, y, lr=lr, steps=15, seeds=SEEDS, init_scale=SCALES,
                     bias_scale=BIAS_SCALES, optimizer=optimizer, **momentum_of(optimizer), record_every=4)
    _check_against_reference(net, X, y, res, lr, optimizer)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("optimizer", ["gd", "nesterov", "adam"])
def test_minibatch_matches_single_network_api(case, optimizer):
    net, X, y = _case(case)
    lr = _lrs(optimizer)
    # n = 40 or 45 with batches of 12: 3 batches an epoch, the remainder left out; 5 epochs
    res = train_grid(net, X, y, lr=lr, steps=15, seeds=SEEDS, init_scale=SCALES,
                     bias_scale=BIAS_SCALES, optimizer=optimizer, **momentum_of(optimizer),
                     batch_size=12, record_every=4)
    _check_against_reference(net, X, y, res, lr, optimizer, batch_size=12)


def test_sgd_is_gd(moons):
    X, y = moons
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce")
    kw = dict(lr=[0.1, 0.5, 1.0], steps=7, seeds=[1, 2, 3], batch_size=8, record_every=2)
    assert_same_result(train_grid(net, X, y, optimizer="sgd", **kw),
                       train_grid(net, X, y, optimizer="gd", **kw))


@pytest.mark.parametrize("batch_size", [None, 8])
def test_params0_same_as_seeds(moons, batch_size):
    X, y = moons
    net, _, _ = _case("bce")
    lr = _lrs("nesterov")
    kw = dict(lr=lr, steps=15, seeds=SEEDS, optimizer="nesterov", momentum=MOMENTA,
              batch_size=batch_size, record_every=5)
    by_seed = train_grid(net, X, y, init_scale=SCALES, bias_scale=BIAS_SCALES, **kw)
    starts = [net.init(seed=int(s), scale=c, bias_scale=b)
              for s, c, b in zip(SEEDS, SCALES, BIAS_SCALES)]
    # params0 overrides the weights; seeds still key the minibatch orders
    by_params0 = train_grid(net, X, y, params0=stack(starts), **kw)
    assert_same_result(by_seed, by_params0)
    _check_against_reference(net, X, y, by_params0, lr, "nesterov", batch_size=batch_size,
                             params0=starts)


def test_params0_is_not_modified(moons):
    X, y = moons
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce")
    p0 = stack([net.init(seed=s) for s in range(3)])
    before = copy.deepcopy(p0)
    train_grid(net, X, y, lr=0.5, steps=5, params0=p0)
    for a, b in zip(p0, before):
        for k in a:
            assert np.array_equal(a[k], b[k])


def test_float32_matches_single_network_api(moons):
    X, y = moons
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce", dtype="float32")
    lr = np.array([0.1, 0.5, 1.0])
    res = train_grid(net, X, y, lr=lr, steps=10, seeds=[0, 1, 2], optimizer="momentum",
                     momentum=0.5)
    assert res.params[0]["W"].dtype == np.float32
    for g in range(3):
        want, _ = reference(net, X, y, lr[g], 10, seed=g, optimizer="momentum", momentum=0.5)
        assert rel_err(flat(network(res, g)), flat(want)) <= 1e-5


# --- batch_order -------------------------------------------------------------------------------

def test_batch_order_is_a_seeded_permutation():
    n = 37
    orders = {}
    for seed in (0, 1):
        for epoch in (0, 1):
            out = np.empty(n, np.int64)
            batch_order(np.uint64(seed), epoch, n, out)
            assert np.array_equal(np.sort(out), np.arange(n))
            again = np.empty(n, np.int64)
            batch_order(seed, epoch, n, again)  # a Python int seed gives the same order
            assert np.array_equal(out, again)
            orders[seed, epoch] = out
    assert not np.array_equal(orders[0, 0], orders[0, 1])
    assert not np.array_equal(orders[0, 0], orders[1, 0])


# --- 2. initial weights equal MLP.init ---------------------------------------------------------

@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("batchnorm", [False, True])
def test_initial_weights_equal_mlp_init(init, batchnorm):
    X, y = simcore.datasets.spirals(30, n_classes=3, seed=0)
    net = MLP([2, 7, 5, 3], activation="tanh", loss="ce", init=init, batchnorm=batchnorm)
    seeds = np.array([0, 1, 12345, 2**40, 2**63 - 1], dtype=np.uint64)
    scales = np.array([1.0, 0.3, 2.5, 1.0, 0.0])
    bias = np.array([0.0, 0.2, 0.0, 1.0, 0.5])
    res = train_grid(net, X, y, lr=0.0, steps=1, seeds=seeds, init_scale=scales, bias_scale=bias)
    for g in range(len(seeds)):
        want = net.init(seed=int(seeds[g]), scale=scales[g], bias_scale=bias[g])
        got = network(res, g)
        for l in range(net.n_layers):
            assert set(got[l]) == set(want[l])
            for k in want[l]:
                assert np.array_equal(got[l][k], want[l][k]), (g, l, k)
    # the same through the list-of-networks path
    res_list = train_grid([net] * len(seeds), X, y, lr=0.0, steps=1, seeds=seeds,
                          init_scale=scales, bias_scale=bias)
    for g in range(len(seeds)):
        assert np.array_equal(flat(network(res_list, g)), flat(network(res, g)))


def test_default_seeds_are_arange(moons):
    X, y = moons
    net = MLP([2, 5, 1], activation="tanh", loss="bce")
    res = train_grid(net, X, y, lr=np.zeros(4), steps=1)
    for g in range(4):
        assert np.array_equal(flat(network(res, g)), flat(net.init(seed=g)))
    assert list(res.config["seed"]) == [0, 1, 2, 3]


# --- 3. determinism ----------------------------------------------------------------------------

G_BIG = 70  # > 2 * LANES: three blocks, the last one padded


def _big_grid_kwargs(lo=0, hi=G_BIG):
    lr = np.geomspace(0.01, 3.0, G_BIG)
    mom = np.linspace(0.0, 0.95, G_BIG)
    seeds = np.arange(100, 100 + G_BIG)
    scale = np.linspace(0.5, 2.0, G_BIG)
    return dict(lr=lr[lo:hi], momentum=mom[lo:hi], seeds=seeds[lo:hi], init_scale=scale[lo:hi],
                bias_scale=0.1, steps=12, optimizer="nesterov", batch_size=8, record_every=5)


def test_grid_exceeds_lane_count():
    assert G_BIG > 2 * LANES and G_BIG % LANES != 0


def test_deterministic_when_run_twice(moons):
    X, y = moons
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce")
    assert_same_result(train_grid(net, X, y, **_big_grid_kwargs()),
                       train_grid(net, X, y, **_big_grid_kwargs()))


def test_independent_of_split_into_calls(moons):
    X, y = moons
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce")
    whole = train_grid(net, X, y, **_big_grid_kwargs())
    for lo, hi in [(0, 33), (33, 70), (0, 1), (69, 70), (5, 45)]:
        part = train_grid(net, X, y, **_big_grid_kwargs(lo, hi))
        for c, g in enumerate(range(lo, hi)):
            assert np.array_equal(flat(network(part, c)), flat(network(whole, g)))
        assert np.array_equal(part.final_loss, whole.final_loss[lo:hi])
        assert np.array_equal(part.diverged_at, whole.diverged_at[lo:hi])
        hp = part.history()
        hp["network"] += lo
        hw = whole.history().query("@lo <= network < @hi").reset_index(drop=True)
        pd.testing.assert_frame_equal(hp, hw, check_exact=True)


def test_independent_of_numba_threads_in_process(moons):
    import numba
    X, y = moons
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce")
    before = numba.get_num_threads()
    try:
        results = []
        for k in sorted({1, before}):
            numba.set_num_threads(k)
            results.append(train_grid(net, X, y, **_big_grid_kwargs()))
    finally:
        numba.set_num_threads(before)
    for r in results[1:]:
        assert_same_result(results[0], r)


_SUBPROCESS = textwrap.dedent("""
    import sys, numpy as np, simcore
    sys.path.insert(0, {tests!r})
    from conftest import flat, network
    from test_grid import _big_grid_kwargs
    X, y = simcore.datasets.moons(40, seed=0)
    net = simcore.MLP([2, 5, 4, 1], activation="tanh", loss="bce")
    res = simcore.train_grid(net, X, y, **_big_grid_kwargs())
    h = res.history()
    np.save({out!r} + "_params.npy", np.stack([flat(network(res, g)) for g in range(len(res.final_loss))]))
    np.save({out!r} + "_loss.npy", res.final_loss)
    np.save({out!r} + "_div.npy", res.diverged_at)
    np.save({out!r} + "_hist.npy", h.to_numpy(np.float64))
""")


def test_independent_of_numba_num_threads_env(moons, tmp_path):
    """NUMBA_NUM_THREADS=1 and 3 in fresh processes give the bits of this process (numba's
    default thread count, the machine's cores): three thread counts on a machine of two or more
    cores, with one interpreter start fewer than three fresh processes."""
    X, y = moons
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce")
    res = train_grid(net, X, y, **_big_grid_kwargs())
    here = {"params": np.stack([flat(network(res, g)) for g in range(len(res.final_loss))]),
            "loss": res.final_loss, "div": res.diverged_at, "hist": res.history().to_numpy(np.float64)}
    for threads in ("1", "3"):
        out = str(tmp_path / f"t{threads}")
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        code = _SUBPROCESS.format(tests=os.path.dirname(__file__), out=out)
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        for k in here:
            assert np.array_equal(np.load(f"{out}_{k}.npy"), here[k], equal_nan=True), (threads, k)


# --- 4. mixed architectures --------------------------------------------------------------------

def _mixed_nets():
    return [MLP([2, 5, 1], activation="tanh", loss="bce"),
            MLP([2, 8, 6, 1], activation="tanh", loss="bce"),
            MLP([2, 3, 3, 3, 1], activation="tanh", loss="bce"),
            MLP([2, 5, 1], activation="tanh", loss="bce"),
            MLP([2, 5, 1], activation="relu", loss="bce", init="he"),
            MLP([2, 4, 4, 1], activation="tanh", loss="bce", batchnorm=True)]


@pytest.mark.parametrize("batch_size", [None, 10])
def test_mixed_architectures_equal_training_alone(moons, batch_size):
    X, y = moons
    nets = _mixed_nets()
    G = len(nets)
    lr = np.linspace(0.1, 0.6, G)
    seeds = np.arange(20, 20 + G)
    kw = dict(steps=11, optimizer="momentum", momentum=0.5, batch_size=batch_size,
              record_every=3)
    res = train_grid(nets, X, y, lr=lr, seeds=seeds, **kw)
    assert len(res.params) == G
    assert not res.diverged.any()
    hist = res.history()
    R = len(res.record_steps)
    assert list(res.record_steps) == [0, 3, 6, 9, 11]
    for g, net in enumerate(nets):
        # the network's own parameter layout
        got = network(res, g)
        assert len(got) == net.n_layers
        for p, shapes in zip(got, net.param_shapes()):
            assert {k: v.shape for k, v in p.items()} == shapes
        # the same bits as training it alone
        alone = train_grid(net, X, y, lr=lr[g], seeds=seeds[g], **kw)
        assert np.array_equal(flat(got), flat(network(alone, 0)))
        assert np.array_equal(res.final_loss[g], alone.final_loss[0])
        h = hist[hist["network"] == g]
        assert len(h) == R * net.n_layers
        assert sorted(h["layer"].unique()) == list(range(1, net.n_layers + 1))
        ha = alone.history().drop(columns="network").reset_index(drop=True)
        pd.testing.assert_frame_equal(h.drop(columns="network").reset_index(drop=True), ha,
                                      check_exact=True)
        # and the numbers of the single-network API
        want, _ = reference(net, X, y, lr[g], 11, seed=int(seeds[g]), optimizer="momentum",
                            momentum=0.5, batch_size=batch_size)
        assert rel_err(flat(got), flat(want)) <= TOL
    assert list(res.config["arch"]) == ["2-5-1", "2-8-6-1", "2-3-3-3-1", "2-5-1", "2-5-1", "2-4-4-1"]
    assert list(res.config["activation"])[4] == "relu"
    assert list(res.config["batchnorm"]) == [False] * 5 + [True]


def test_mixed_architectures_params0(moons):
    X, y = moons
    nets = _mixed_nets()
    starts = [m.init(seed=50 + g, scale=0.7) for g, m in enumerate(nets)]
    by_p0 = train_grid(nets, X, y, lr=0.3, steps=6, params0=starts)
    by_seed = train_grid(nets, X, y, lr=0.3, steps=6, seeds=50 + np.arange(len(nets)),
                         init_scale=0.7)
    for g in range(len(nets)):
        assert np.array_equal(flat(network(by_p0, g)), flat(network(by_seed, g)))


@pytest.mark.parametrize("other", [MLP([3, 5, 1], activation="tanh", loss="bce"),
                                   MLP([2, 5, 1], activation="tanh", loss="mse"),
                                   MLP([2, 5, 2], activation="tanh", loss="bce"),
                                   MLP([2, 5, 1], activation="tanh", loss="bce", dtype="float32")])
def test_mixed_architectures_must_agree(moons, other):
    X, y = moons
    nets = [MLP([2, 4, 1], activation="tanh", loss="bce"), other]
    with pytest.raises(ValueError, match=r"net\[1\]"):
        train_grid(nets, X, y, lr=0.1, steps=2)


# --- 5. divergence is data ---------------------------------------------------------------------

def _linear_problem():
    X, y = simcore.datasets.teacher_student(50, d_in=3, hidden=(), noise=0.1, seed=4)
    net = MLP([3, 1], loss="mse")
    A = np.c_[X, np.ones(len(X))]
    lam_max = np.linalg.eigvalsh(2.0 / len(X) * A.T @ A).max()
    return net, X, y, 2.0 / lam_max  # gradient descent is stable for lr < 2 / lambda_max


def test_divergence_is_data():
    net, X, y, threshold = _linear_problem()
    lr = np.geomspace(1e-3, 1e3, 25)
    seeds = np.arange(25)
    steps = 60
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = train_grid(net, X, y, lr=lr, steps=steps, seeds=seeds, record_every=1)
        hist = res.history()
        _ = res.config
    stable, unstable = lr < 0.5 * threshold, lr > 2.0 * threshold
    assert stable.sum() >= 5 and unstable.sum() >= 5
    assert not res.diverged[stable].any()
    assert np.all(res.diverged_at[stable] == -1)
    assert np.all(np.isfinite(res.final_loss[stable]))
    assert res.diverged[unstable].all()
    assert np.all((res.diverged_at[unstable] >= 1) & (res.diverged_at[unstable] <= steps))
    assert np.array_equal(res.diverged, res.diverged_at >= 0)
    assert np.array_equal(res.config["diverged"].to_numpy(), res.diverged)
    for g in np.flatnonzero(res.diverged):
        t = res.diverged_at[g]
        h = hist[(hist["network"] == g)]
        # the history stops at the step where the divergence was detected
        assert list(h["step"]) == list(range(t + 1))
        assert np.all(np.isfinite(h["loss"].to_numpy()[:-1]))
        bad = h["loss"].to_numpy()[-1]
        assert not np.isfinite(bad) or bad > 1e6 * h["loss"].to_numpy()[0]
        # the parameters stay as they were at that step (t updates of gradient descent)
        want, want_loss = reference(net, X, y, lr[g], t, seed=g)
        got = network(res, g)
        assert rel_err(flat(got), flat(want)) <= 1e-10
        assert np.all(np.isfinite(flat(got)))
        # final_loss is the loss at the frozen parameters
        assert res.final_loss[g] == pytest.approx(want_loss, rel=1e-10)
    # networks that never diverge: the same bits without their diverging neighbours
    ok = np.flatnonzero(~res.diverged)
    alone = train_grid(net, X, y, lr=lr[ok], steps=steps, seeds=seeds[ok], record_every=1)
    assert not alone.diverged.any()
    for c, g in enumerate(ok):
        assert_same_result(res, alone, g, c)
    # and each diverged network alone diverges at the same step
    for g in np.flatnonzero(res.diverged)[:3]:
        one = train_grid(net, X, y, lr=lr[g], steps=steps, seeds=seeds[g], record_every=1)
        assert one.diverged_at[0] == res.diverged_at[g]
        assert np.array_equal(flat(network(one, 0)), flat(network(res, g)))


def test_overflow_to_inf_is_data(moons):
    """An lr so large that the loss overflows: flagged at step 1, no warning, no exception."""
    X, y = moons
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce")
    lr = np.array([0.1, 1e300, 0.5, 1e300])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = train_grid(net, X, y, lr=lr, steps=5, optimizer="momentum", momentum=0.9,
                         record_every=1)
        hist = res.history()
    assert list(res.diverged) == [False, True, False, True]
    assert list(res.diverged_at[[1, 3]]) == [1, 1]
    assert np.isfinite(res.final_loss[[0, 2]]).all()
    # the mean BCE of a saturated tanh net is finite but huge; the rule is factor 1e6 or non-finite
    assert set(hist[hist["network"] == 1]["step"]) == {0, 1}
    alone = train_grid(net, X, y, lr=lr[[0, 2]], seeds=[0, 2], steps=5, optimizer="momentum",
                       momentum=0.9, record_every=1)
    assert_same_result(res, alone, 0, 0)
    assert_same_result(res, alone, 2, 1)


# --- 6. telemetry -----------------------------------------------------------------------------

@pytest.mark.parametrize("steps,every,want", [(23, 5, [0, 5, 10, 15, 20, 23]),
                                              (20, 5, [0, 5, 10, 15, 20]),
                                              (3, 10, [0, 3]),
                                              (1, 1, [0, 1])])
def test_record_steps(moons, steps, every, want):
    X, y = moons
    net = MLP([2, 4, 1], activation="tanh", loss="bce")
    res = train_grid(net, X, y, lr=[0.1, 0.2], steps=steps, record_every=every)
    assert res.record_steps.dtype == np.int64
    assert list(res.record_steps) == want
    hist = res.history()
    assert list(hist.columns) == COLUMNS
    assert len(hist) == 2 * len(want) * net.n_layers
    assert sorted(hist["step"].unique()) == want
    for g in range(2):
        last = hist[(hist["network"] == g) & (hist["step"] == steps)]["loss"]
        assert np.all(last.to_numpy() == res.final_loss[g])


@pytest.mark.parametrize("case", CASES + ["sigmoid"])
def test_telemetry_matches_manual_forward(case):
    if case == "sigmoid":
        X, y = simcore.datasets.moons(40, seed=0)
        net = MLP([2, 6, 4, 1], activation="sigmoid", loss="mse_sigmoid")
    else:
        net, X, y = _case(case)
    lr = np.array([0.2, 0.05, 0.4])
    seeds = [4, 5, 6]
    scales = np.array([1.0, 3.0, 0.5])
    steps, every = 13, 4
    res = train_grid(net, X, y, lr=lr, steps=steps, seeds=seeds, init_scale=scales,
                     record_every=every)
    hist = res.history()
    assert list(hist.columns) == COLUMNS
    assert len(hist) == len(lr) * len(res.record_steps) * net.n_layers
    for g in range(len(lr)):
        _, _, trace = reference(net, X, y, lr[g], steps, seed=seeds[g], scale=scales[g], trace=True)
        final, _ = reference(net, X, y, lr[g], steps, seed=seeds[g], scale=scales[g])
        for t in res.record_steps:
            params = trace[t][0] if t < steps else final
            loss, grads = net.loss_and_grad(params, X, y)
            h = hist[(hist["network"] == g) & (hist["step"] == t)].sort_values("layer")
            assert list(h["layer"]) == list(range(1, net.n_layers + 1))
            tol = 1e-12 if t == 0 else 1e-10
            assert h["loss"].to_numpy() == pytest.approx(np.full(net.n_layers, loss), rel=tol)
            manual = ref_telemetry(net, params, X)
            for l, row in enumerate(h.itertuples()):
                gn = np.linalg.norm(grads[l]["W"])
                assert row.grad_norm == pytest.approx(gn, rel=tol, abs=1e-14), (g, t, l)
                m = manual[l]
                assert row.weight_norm == pytest.approx(m["weight_norm"], rel=tol)
                for q in ("preact_mean", "preact_std", "act_mean", "act_std"):
                    assert getattr(row, q) == pytest.approx(m[q], rel=1e-10, abs=1e-12), (g, t, l, q)
                assert row.saturated == pytest.approx(m["saturated"], abs=1.5 / (len(X) * net.sizes[l + 1]))
        last = hist[(hist["network"] == g) & (hist["step"] == steps)]
        assert np.all(last["loss"].to_numpy() == res.final_loss[g])


def test_minibatch_telemetry_is_of_the_batch(moons):
    X, y = moons
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce")
    lr, seeds, steps, bs = np.array([0.3, 0.6]), [8, 9], 9, 8
    res = train_grid(net, X, y, lr=lr, steps=steps, seeds=seeds, batch_size=bs, record_every=2)
    hist = res.history()
    for g in range(2):
        _, _, trace = reference(net, X, y, lr[g], steps, seed=seeds[g], batch_size=bs, trace=True)
        for t in res.record_steps[:-1]:
            params, idx = trace[t]
            loss, grads = net.loss_and_grad(params, X[idx], y[idx])
            h = hist[(hist["network"] == g) & (hist["step"] == t)].sort_values("layer")
            assert h["loss"].to_numpy() == pytest.approx(np.full(3, loss), rel=1e-10)
            gn = [np.linalg.norm(grads[l]["W"]) for l in range(3)]
            assert h["grad_norm"].to_numpy() == pytest.approx(gn, rel=1e-10)
            man = ref_telemetry(net, params, X[idx])
            assert h["act_std"].to_numpy() == pytest.approx([m["act_std"] for m in man], rel=1e-10)
        # the last record is on the full data, at the final parameters
        last = hist[(hist["network"] == g) & (hist["step"] == steps)]
        assert np.all(last["loss"].to_numpy() == res.final_loss[g])


def test_saturation_extremes():
    X, y = simcore.datasets.moons(64, seed=1)
    net = MLP([2, 16, 16, 1], activation="sigmoid", loss="bce")
    res = train_grid(net, X, y, lr=0.0, steps=1, seeds=[0, 1, 2, 3],
                     init_scale=[1000.0, 300.0, 0.01, 0.05])
    h = res.history()
    h0 = h[(h["step"] == 0) & (h["layer"] < 3)]
    big = h0[h0["network"] < 2]["saturated"].to_numpy()
    small = h0[h0["network"] >= 2]["saturated"].to_numpy()
    assert np.all(big > 0.9), big
    assert np.all(small == 0.0), small
    # with huge weights the layer-2 units are pinned at 0 or 1
    assert np.all(h0[(h0["network"] < 2) & (h0["layer"] == 2)]["saturated"] > 0.95)


def test_history_of_list_network_layer_counts(moons):
    X, y = moons
    nets = [MLP([2, 3, 1]), MLP([2, 3, 3, 3, 3, 1]), MLP([2, 1])]
    res = train_grid(nets, X, y, lr=0.1, steps=4, record_every=2)
    h = res.history()
    counts = h.groupby("network").size().to_dict()
    assert counts == {0: 3 * 2, 1: 3 * 5, 2: 3 * 1}
    assert list(h["network"]) == sorted(h["network"])


# --- 7. bad input -> ValueError naming the argument --------------------------------------------

def _bad_params0(kind):
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce")
    p0 = stack([net.init(seed=s) for s in range(4)])
    if kind == "shape":
        p0[1]["W"] = np.zeros((4, 5, 3))
    elif kind == "missing_b":
        del p0[2]["b"]
    elif kind == "missing_W":
        del p0[0]["W"]
    elif kind == "extra_key":
        p0[0]["gamma"] = np.ones((4, 5))
    elif kind == "layers":
        p0 = p0[:2]
    elif kind == "nan":
        p0[0]["W"][1, 0, 0] = np.nan
    elif kind == "not_list":
        p0 = p0[0]
    elif kind == "empty":
        p0 = []
    elif kind == "G":
        p0 = stack([net.init(seed=s) for s in range(3)])
    return p0


BAD = [
    (dict(lr=[0.1, 0.2, 0.3], seeds=[0, 1, 2, 3]), "lr"),
    (dict(lr=[0.1, 0.2, 0.3, 0.4], seeds=[0, 1, 2]), "seeds"),
    (dict(lr=0.1, momentum=[0.1, 0.2], init_scale=[1.0, 1.0, 1.0]), "momentum|init_scale"),
    (dict(lr=[0.1, 0.2], bias_scale=[0.1, 0.2, 0.3]), "lr|bias_scale"),
    (dict(lr=-0.1), "lr"),
    (dict(lr=[0.1, -1e-9]), "lr"),
    (dict(lr=np.nan), "lr"),
    (dict(lr=np.inf), "lr"),
    (dict(lr=[0.1, np.nan, 0.2]), "lr"),
    (dict(lr=[[0.1, 0.2]]), "lr"),
    (dict(lr=[]), "lr"),
    (dict(lr="0.1"), "lr"),
    (dict(steps=0), "steps"),
    (dict(steps=-1), "steps"),
    (dict(steps=1.5), "steps"),
    (dict(steps=3.0), "steps"),
    (dict(steps=True), "steps"),
    (dict(steps=None), "steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=41), "batch_size"),
    (dict(batch_size=-4), "batch_size"),
    (dict(batch_size=2.5), "batch_size"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(optimizer="Adam"), "optimizer"),
    (dict(backend="gpu"), "backend"),
    (dict(optimizer="momentum", momentum=1.0), "momentum"),
    (dict(optimizer="momentum", momentum=1.5), "momentum"),
    (dict(optimizer="nesterov", momentum=-0.1), "momentum"),
    (dict(optimizer="momentum", momentum=[0.5, 1.0]), "momentum"),
    (dict(momentum=np.nan), "momentum"),
    (dict(momentum=0.5), "momentum"),                       # gd ignores momentum
    (dict(optimizer="adam", momentum=[0.0, 0.0, 0.0]), "momentum"),
    (dict(steps=10**9), "steps"),                           # 10^8 records: over MAX_GIB
    (dict(steps=10**8, record_every=1), "record_every"),
    (dict(record_every=0), "record_every"),
    (dict(record_every=-2), "record_every"),
    (dict(record_every=2.5), "record_every"),
    (dict(seeds=-1), "seeds"),
    (dict(seeds=[0, 1.5]), "seeds"),
    (dict(seeds=[[0, 1]]), "seeds"),
    (dict(seeds=np.inf), "seeds"),
    (dict(seeds=[0.0, 1e30]), "seeds"),
    (dict(init_scale=-1.0), "init_scale"),
    (dict(init_scale=np.inf), "init_scale"),
    (dict(bias_scale=-0.5), "bias_scale"),
    (dict(divergence_ref=-1.0), "divergence_ref"),
    (dict(divergence_ref=np.nan), "divergence_ref"),
    (dict(lr=[0.1, 0.2, 0.3], divergence_ref=[1.0, 2.0]), "divergence_ref"),
    (dict(params0="shape"), "params0"),
    (dict(params0="missing_b"), "params0"),
    (dict(params0="missing_W"), "params0"),
    (dict(params0="extra_key"), "params0"),
    (dict(params0="layers"), "params0"),
    (dict(params0="nan"), "params0"),
    (dict(params0="not_list"), "params0"),
    (dict(params0="empty"), "params0"),
    (dict(params0="G", lr=[0.1, 0.2, 0.3, 0.4, 0.5]), "params0"),
    (dict(X="nan"), "X"),
    (dict(X="inf"), "X"),
    (dict(X="width"), "X"),
    (dict(X="1d"), "X"),
    (dict(y="label2"), "y"),
    (dict(y="negative"), "y"),
    (dict(y="length"), "y"),
    (dict(y="nan"), "y"),
    (dict(net="not_mlp"), "net"),
    (dict(net="empty"), "net"),
    (dict(net="list3", lr=[0.1, 0.2, 0.3, 0.4]), "net"),
]


def _bad_id(override):
    return ",".join(f"{k}={v!r}" if not isinstance(v, np.ndarray) else f"{k}=array"
                    for k, v in override.items()).replace(" ", "")


@pytest.mark.parametrize("override,match", BAD, ids=[_bad_id(o) for o, _ in BAD])
def test_bad_input_raises_value_error(moons, override, match):
    X, y = moons
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce")
    kw = dict(lr=0.1, steps=3)
    kw.update(override)
    if isinstance(kw.get("params0"), str):
        kw["params0"] = _bad_params0(kw["params0"])
    X = {"nan": np.where(np.arange(40)[:, None] == 3, np.nan, X),
         "inf": np.where(np.arange(40)[:, None] == 3, np.inf, X),
         "width": np.c_[X, X[:, :1]], "1d": X[:, 0]}.get(kw.pop("X", None), X)
    y = {"label2": np.where(np.arange(40) == 5, 2, y), "negative": np.where(np.arange(40) == 5, -1, y),
         "length": y[:-1], "nan": np.where(np.arange(40) == 5, np.nan, y.astype(float))
         }.get(kw.pop("y", None), y)
    net = {"not_mlp": "mlp", "empty": [], "list3": [net] * 3}.get(kw.pop("net", None), net)
    with pytest.raises(ValueError, match=match):
        train_grid(net, X, y, **kw)


def test_size_guard_names_the_size_and_the_limit(moons, monkeypatch):
    """Telemetry past simcore.config.MAX_GIB is refused before anything is allocated, with the
    size in GiB and what to change; the limit is a run-time setting."""
    X, y = moons
    net = MLP([2, 5, 1], activation="tanh", loss="bce")
    need = simcore.grid.telemetry_bytes(net, 64, 10**6, 1)
    assert need > (10**6 + 1) * 64 * (1 + 2 * len(simcore.grid.QUANTITIES)) * 8
    monkeypatch.setattr(simcore.config, "MAX_GIB", need / 2**30 / 2)
    with pytest.raises(ValueError, match=r"steps=1000000 with record_every=1 .* GiB.*MAX_GIB"):
        train_grid(net, X, y, lr=np.full(64, 0.1), steps=10**6, record_every=1)
    monkeypatch.setattr(simcore.config, "MAX_GIB", 4.0)
    res = train_grid(net, X, y, lr=np.full(64, 0.1), steps=3, record_every=1)
    assert res.record_steps.size == 4


def test_momentum_defaults_as_the_optimizer(moons):
    """One default: train_grid's momentum, left out, is Optimizer's 0.9."""
    X, y = moons
    net = MLP([2, 5, 1], activation="tanh", loss="bce")
    for opt in ("momentum", "nesterov"):
        res = train_grid(net, X, y, lr=[0.1], steps=6, seeds=[3], optimizer=opt)
        want, _ = reference(net, X, y, 0.1, 6, seed=3, optimizer=opt)
        assert rel_err(flat(network(res, 0)), flat(want)) <= TOL
        assert res.config["momentum"][0] == 0.9
    assert train_grid(net, X, y, lr=[0.1], steps=2).config["momentum"][0] == 0.0


def test_ce_labels_out_of_range():
    X, y = simcore.datasets.spirals(30, n_classes=3, seed=0)
    net = MLP([2, 5, 3], activation="relu", loss="ce")
    with pytest.raises(ValueError, match="y"):
        train_grid(net, X, np.where(np.arange(30) == 0, 3, y), lr=0.1, steps=2)
    with pytest.raises(ValueError, match="y"):
        train_grid(net, X, y + 0.5, lr=0.1, steps=2)


@pytest.mark.parametrize("kind", ["not_list", "length", "shape"])
def test_bad_params0_for_list_of_nets(moons, kind):
    X, y = moons
    nets = [MLP([2, 5, 1]), MLP([2, 3, 3, 1])]
    p0 = [nets[0].init(seed=0), nets[1].init(seed=1)]
    if kind == "not_list":
        p0 = stack([nets[0].init(seed=0), nets[0].init(seed=1)])[0]
    elif kind == "length":
        p0 = p0 + [nets[0].init(seed=2)]
    else:
        p0 = [p0[1], p0[0]]  # each network given the other's layout
    # a length mismatch is between net and params0: either may be named
    with pytest.raises(ValueError, match="params0" if kind != "length" else "net|params0"):
        train_grid(nets, X, y, lr=0.1, steps=2, params0=p0)


def test_batch_size_one_with_batchnorm_names_batch_size(moons):
    """batch_size=1 with a batch-norm network anywhere in the list is an error of batch_size.

    Only net[0]'s batch norm is checked against batch_size; a list whose batch-norm network is
    not the first gets the message about X instead (simcore/grid/__init__.py, train_grid)."""
    X, y = moons
    with pytest.raises(ValueError, match="batch_size"):
        train_grid(MLP([2, 4, 3, 1], batchnorm=True), X, y, lr=0.1, steps=2, batch_size=1)
    nets = [MLP([2, 4, 3, 1], batchnorm=False), MLP([2, 4, 3, 1], batchnorm=True)]
    with pytest.raises(ValueError, match="batch_size"):
        train_grid(nets, X, y, lr=0.1, steps=2, batch_size=1)


def test_params0_of_length_one_for_list_of_nets(moons):
    """A list of one MLP broadcasts over G = len(lr); params0 of length one then either
    broadcasts too or is refused with a ValueError naming params0 (never an IndexError)."""
    X, y = moons
    net = MLP([2, 5, 1])
    p0 = [net.init(seed=7)]
    try:
        res = train_grid([net], X, y, lr=[0.0, 0.0, 0.0], steps=1, params0=p0)
    except ValueError as exc:
        assert "params0" in str(exc)
    else:
        for g in range(3):
            assert np.array_equal(flat(network(res, g)), flat(p0[0]))


def test_valid_edge_inputs_are_accepted(moons):
    X, y = moons
    net = MLP([2, 4, 1], activation="tanh", loss="bce")
    # batch_size == n, numpy integer arguments, lr 0, momentum just below 1, one network
    res = train_grid(net, X, y, lr=np.float32(0.0), steps=np.int64(2), batch_size=np.int64(40),
                     optimizer="momentum", momentum=0.999, record_every=np.int32(1), seeds=[5])
    assert res.final_loss.shape == (1,)
    assert np.array_equal(flat(network(res, 0)), flat(net.init(seed=5)))
    # bool labels for bce, float 0/1 labels
    train_grid(net, X, y.astype(bool), lr=0.1, steps=1)
    train_grid(net, X, y.astype(float), lr=0.1, steps=1)


# --- 8. a large grid ---------------------------------------------------------------------------

def test_ten_thousand_networks_smoke():
    X, y = simcore.datasets.moons(256, seed=0)
    net = MLP([2, 16, 16, 1], activation="tanh", loss="bce")
    G = 10_000
    res = train_grid(net, X, y, lr=np.geomspace(0.01, 3.0, G), steps=2)
    assert res.final_loss.shape == (G,)
    assert res.diverged.shape == (G,) and res.diverged_at.shape == (G,)
    assert res.params[0]["W"].shape == (G, 2, 16)
    assert res.params[1]["W"].shape == (G, 16, 16)
    assert res.params[2]["b"].shape == (G, 1)
    assert np.isfinite(res.final_loss).all()
    assert not res.diverged.any()
    assert len(res.config) == G
    assert list(res.record_steps) == [0, 2]
    # spot checks: the first, a middle and the last network train as the single-network API
    for g in (0, 4321, G - 1):
        want, _ = reference(net, X, y, res.config["lr"][g], 2, seed=g)
        assert rel_err(flat(network(res, g)), flat(want)) <= TOL


def test_telemetry_std_of_nearly_constant_values_far_from_zero():
    """Shifted sums: a layer whose pre-activations are ~-9e3 with tiny spread keeps an exact std."""
    X, y = simcore.datasets.teacher_student(30, d_in=3, seed=1)
    net = simcore.MLP([3, 6, 1], activation="tanh", loss="mse")
    res = simcore.train_grid(net, X, y, lr=0.0, steps=1, seeds=1, bias_scale=1e4, record_every=1)
    h = res.history()
    params = net.init(seed=1, bias_scale=1e4)
    a1 = np.tanh(X @ params[0]["W"] + params[0]["b"])
    z2 = a1 @ params[1]["W"] + params[1]["b"]
    row = h[(h.step == 0) & (h.layer == 2)].iloc[0]
    assert row.preact_mean == pytest.approx(z2.mean(), rel=1e-12)
    assert abs(row.preact_std - z2.std()) <= 1e-9 * max(z2.std(), 1e-300) + 1e-12 * abs(z2.mean())


def test_initial_params_are_what_train_grid_starts_from():
    net = simcore.MLP([3, 5, 2], activation="tanh", loss="ce", init="he")
    seeds = np.array([4, 9, 11])
    stacked = simcore.grid.initial_params(net, seeds, init_scale=[1.0, 0.5, 2.0], bias_scale=0.3)
    for g, (seed, scale) in enumerate(zip(seeds, [1.0, 0.5, 2.0])):
        ref = net.init(int(seed), scale=scale, bias_scale=0.3)
        for layer, r in zip(stacked, ref):
            for k in r:
                np.testing.assert_array_equal(layer[k][g], r[k])
    with pytest.raises(ValueError, match="init_scale and bias_scale must be >= 0"):
        simcore.grid.initial_params(net, seeds, init_scale=-1.0)
    with pytest.raises(ValueError, match="net must be an MLP"):
        simcore.grid.initial_params("net", seeds)


def test_cuda_backend_without_a_gpu_names_the_alternatives():
    try:
        from simcore.grid import cuda
    except ImportError:   # numba-cuda not installed: the error says to install it
        cuda = None
    if cuda is not None and cuda.available():
        pytest.skip("a GPU (or the CUDA simulator) is present: backend='cuda' runs")
    X, y = simcore.datasets.moons(16, seed=0)
    with pytest.raises(ValueError, match="backend='cpu'" if cuda is None else "backend='cpu'.*NUMBA_ENABLE_CUDASIM=1"):
        simcore.train_grid(simcore.MLP([2, 3, 1]), X, y, lr=0.1, steps=2, backend="cuda")


def test_divergence_ref_sets_the_divergence_test():
    """With a small reference every network counts as diverged at step 0; with its own initial
    loss the outcome equals the default."""
    X, y = simcore.datasets.moons(32, seed=1)
    net = simcore.MLP([2, 4, 1], activation="tanh", loss="mse")
    lr = np.array([0.1, 50.0])
    base = simcore.train_grid(net, X, y, lr=lr, steps=30, record_every=5)
    loss0 = base.history().query("step == 0 and layer == 1")["loss"].to_numpy()
    same = simcore.train_grid(net, X, y, lr=lr, steps=30, record_every=5, divergence_ref=loss0)
    np.testing.assert_array_equal(same.diverged_at, base.diverged_at)
    tiny = simcore.train_grid(net, X, y, lr=lr, steps=30, record_every=5, divergence_ref=1e-12)
    np.testing.assert_array_equal(tiny.diverged_at, [0, 0])


# --- the kernel, compiled with and without batch norm -------------------------------------------

def _kernel_args(net, X, y, steps=2):
    """The CPU kernel's arguments for one network (G = 1), the stop flag lowered."""
    return cpu_kernel_args(net, X, y, steps, 1) + (np.zeros(1, np.int64),)


def test_one_kernel_per_batchnorm_setting():
    from simcore.grid.cpu import train_kernel
    assert train_kernel(np.bool_(False)) is train_kernel(False) is not train_kernel(True)


def test_kernel_refuses_a_network_of_the_other_batchnorm_setting():
    """train_grid picks the kernel from the network; a kernel called by hand with a network of
    the other batch-norm setting must refuse rather than skip or misread layers."""
    from simcore.grid.cpu import train_kernel
    X, y = simcore.datasets.moons(24, seed=0)
    with pytest.raises(ValueError, match="batch-norm"):
        train_kernel(False)(*_kernel_args(MLP([2, 4, 1], batchnorm=True), X, y))
    args = _kernel_args(MLP([2, 4, 1]), X, y)
    with pytest.raises(ValueError, match="batch-norm"):
        train_kernel(True)(*args)
    train_kernel(False)(*args)  # the matching kernel trains
    assert np.isfinite(args[-5][0]) and args[-6][0] == -1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_buffers_start_on_64_byte_boundaries(dtype):
    """numba aligns arrays to 32 bytes; the grid kernel's buffers must start on 64 (one AVX-512
    vector), whatever the allocator returns."""
    from simcore.grid.cpu import _empty_aligned
    for n in (0, 1, 7, 32, 1000, 4097):
        arrays = [_empty_aligned(n, np.dtype(dtype)) for _ in range(8)]
        for a in arrays:
            assert a.shape == (n,) and a.dtype == dtype and a.flags.c_contiguous
            assert a.ctypes.data % 64 == 0
        assert len({a.ctypes.data for a in arrays if n}) == (8 if n else 0)  # distinct buffers


def test_size_guard_counts_the_parameters_and_the_optimizers_state(moons, monkeypatch):
    """Wide networks with little telemetry: their trained parameters and the optimizer's moments
    (GridResult.state), three values per parameter, count against MAX_GIB too; the held-out
    values count in every record."""
    X, y = moons
    net = MLP([2, 200, 200, 1], activation="tanh", loss="bce")
    G = 64
    assert simcore.grid.state_bytes(net, G) == 3 * net.n_params * 8 * G
    assert simcore.grid.record_bytes(3) == (1 + 3 + 3 * len(simcore.grid.QUANTITIES)) * 8
    tele = simcore.grid.telemetry_bytes(net, G, 2, 1)
    limit = (tele + simcore.grid.state_bytes(net, G)) / 2 ** 30
    monkeypatch.setattr(simcore.config, "MAX_GIB", limit * 0.99)  # the telemetry alone fits
    assert tele < simcore.config.limit_bytes()
    with pytest.raises(ValueError, match=r"optimizer's state would take .* GiB.*MAX_GIB"):
        train_grid(net, X, y, lr=np.full(G, 0.1), steps=2, record_every=1)
    monkeypatch.setattr(simcore.config, "MAX_GIB", limit * 1.01)
    assert train_grid(net, X, y, lr=np.full(G, 0.1), steps=2, record_every=1).record_steps.size == 3
