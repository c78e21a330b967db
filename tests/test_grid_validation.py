"""``train_grid(validation=(X_val, y_val))``: the held-out loss and the training and held-out
accuracies recorded inside the kernels, against the single-network API at the recorded steps.

The reference of a recorded step t is the network's parameters after t steps (a grid of t
steps from the same start: its updates are the first t of the longer run) evaluated by
``MLP.loss_and_grad`` and ``MLP.predict`` on the held-out set and on the samples the step's
loss was computed on (:func:`simcore.grid.batch_order` for minibatches). The kernels sum in
chunks, so the agreement is to rounding; the two CPU strategies agree to 1e-12 and each is
bitwise reproducible. The CUDA backend's values: tests/test_cuda_sim_validation.py.
"""
import numpy as np
import pandas as pd
import pytest

import simcore
from conftest import assert_same_result, network, rel_err
from simcore import MLP, GridResult, train_grid
from test_grid import batch_of  # the documented minibatch schedule

TOL = 1e-12
VAL = ["val_loss", "accuracy", "val_accuracy"]


def right_share(net, params, X, y, state=None):
    """The share of right predictions of one network: bce a unit predicts 1 where p > 1/2, ce
    the arg max of the probabilities (the reference of simcore.losses.correct_units)."""
    p = np.asarray(net.predict(params, X, state))
    if net.loss == "ce":
        return np.mean(p.argmax(axis=1) == y)
    return np.mean((p > 0.5) == np.asarray(y).reshape(p.shape))


def data(loss, n, seed):
    if loss == "ce":
        return simcore.datasets.spirals(n, n_classes=3, seed=seed)
    X, y = simcore.datasets.moons(n, seed=seed)
    if loss == "bce2":  # two independent bce units: y and 1 - y
        return X, np.stack([y, 1 - y], axis=1)
    return X, y


def make_net(loss, batchnorm=False):
    k = {"ce": 3, "bce2": 2}.get(loss, 1)
    return MLP([2, 5, 4, k], activation="tanh", loss="bce" if loss == "bce2" else loss, batchnorm=batchnorm)


CASES = [("bce", False, None, "lanes"), ("bce2", False, None, "gemm"), ("ce", False, 10, "lanes"),
         ("ce", True, None, "gemm"), ("bce", True, 8, "lanes")]


@pytest.mark.parametrize("loss, batchnorm, batch_size, strategy", CASES)
def test_held_out_values_match_the_single_network_api(loss, batchnorm, batch_size, strategy):
    """val_loss = MLP.loss_and_grad on the held-out set, val_accuracy and accuracy the share of
    right predictions, at every recorded step's parameters; with batch norm the held-out set
    normalised with the statistics of the step's batch (MLP.forward's state of the batch);
    accuracy on the step's minibatch."""
    X, y = data(loss, 40, 0)
    Xv, yv = data(loss, 27, 1)  # a held-out set that does not fill the kernels' chunks
    net = make_net(loss, batchnorm)
    lr, seeds, steps, every = [0.3, 0.05], [3, 4], 9, 4
    kw = dict(lr=lr, seeds=seeds, batch_size=batch_size, strategy=strategy)
    res = train_grid(net, X, y, steps=steps, record_every=every, validation=(Xv, yv), **kw)
    hist = res.history().query("layer == 1")
    for t in res.record_steps:
        at_t = train_grid(net, X, y, steps=max(int(t), 1), **kw) if t else None
        for g in range(2):
            params = network(at_t, g) if t else [{k: v[g] for k, v in p.items()}
                                                  for p in simcore.grid.initial_params(net, seeds)]
            rows = (batch_of(seeds[g], t, len(X), batch_size) if batch_size and t < steps
                    else np.arange(len(X)))
            row = hist[(hist["network"] == g) & (hist["step"] == t)]
            state = net.forward(params, X[rows]).state() if batchnorm else None
            logits = net.forward(params, Xv, state).logits
            val_loss = getattr(simcore.losses, net.loss)(logits, yv)[0]
            want = [val_loss, right_share(net, params, X[rows], y[rows]), right_share(net, params, Xv, yv, state)]
            got = row[VAL].to_numpy()[0]
            assert rel_err(got[0], want[0]) <= 1e-10, (t, g)
            assert got[1] == pytest.approx(want[1], abs=1e-15) and got[2] == pytest.approx(want[2], abs=1e-15)
    final = hist[hist["step"] == steps].sort_values("network")
    assert np.array_equal(res.final_val_loss, final["val_loss"].to_numpy())
    assert np.array_equal(res.final_val_accuracy, final["val_accuracy"].to_numpy())
    assert np.array_equal(res.final_accuracy, final["accuracy"].to_numpy())
    assert np.array_equal(res.config["final_val_loss"].to_numpy(), res.final_val_loss)
    assert (res.config["n_val"] == len(Xv)).all()


@pytest.mark.parametrize("loss, batchnorm", [("bce", False), ("ce", True)])
def test_strategies_agree_and_each_is_bitwise_reproducible(loss, batchnorm):
    """lanes and gemm within 1e-12 on every held-out column; each strategy twice bitwise, and a
    network alone the same bits as in a grid of 40 (its block's neighbours change nothing)."""
    X, y = data(loss, 30, 0)
    Xv, yv = data(loss, 70, 1)  # more held-out rows than training rows, several chunks of them
    net = make_net(loss, batchnorm)
    lr = np.geomspace(0.01, 3, 40)
    kw = dict(lr=lr, steps=6, record_every=2, batch_size=10, validation=(Xv, yv))
    runs = {s: train_grid(net, X, y, strategy=s, **kw) for s in ("lanes", "gemm")}
    hl, hg = runs["lanes"].history(), runs["gemm"].history()
    for col in VAL:
        a, b = hl[col].to_numpy(), hg[col].to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)), col
        assert rel_err(a[~np.isnan(a)], b[~np.isnan(b)]) <= TOL, col
    for s, res in runs.items():
        again = train_grid(net, X, y, strategy=s, **kw)
        assert_same_result(res, again)
        assert np.array_equal(res.final_val_loss, again.final_val_loss, equal_nan=True)
        alone = train_grid(net, X, y, strategy=s, **dict(kw, lr=lr[7:8], seeds=[7]))
        assert_same_result(res, alone, 7, 0)


@pytest.mark.parametrize("strategy", ["lanes", "gemm"])
def test_validation_changes_nothing_else(strategy):
    """The training, its telemetry and final loss are bitwise those of the same call without a
    held-out set; without one the held-out columns are NaN and the training accuracy is there."""
    X, y = data("bce", 40, 0)
    Xv, yv = data("bce", 33, 1)
    net = make_net("bce")
    kw = dict(lr=[0.1, 2.0, 300.0], steps=12, record_every=5, strategy=strategy, batch_size=8)
    plain = train_grid(net, X, y, **kw)
    held = train_grid(net, X, y, validation=(Xv, yv), **kw)
    pd.testing.assert_frame_equal(plain.history().drop(columns=VAL), held.history().drop(columns=VAL),
                                  check_exact=True)
    assert np.array_equal(plain.final_loss, held.final_loss, equal_nan=True)
    for g in range(3):
        assert all(np.array_equal(a[k], b[k]) for a, b in zip(network(plain, g), network(held, g)) for k in a)
    h = plain.history()
    assert h["val_loss"].isna().all() and h["val_accuracy"].isna().all()
    assert np.array_equal(h["accuracy"].isna(), h["loss"].isna())
    assert np.isnan(plain.final_val_loss).all() and (plain.config["n_val"] == 0).all()


def test_mse_has_no_accuracy_and_a_diverged_network_none_after_its_step():
    X, y = data("bce", 30, 0)
    Xv, yv = data("bce", 20, 1)
    net = MLP([2, 4, 1], activation="relu", loss="mse")
    res = train_grid(net, X, y, lr=[0.1, 1e3], steps=20, record_every=2, validation=(Xv, yv))
    h = res.history()
    assert h["accuracy"].isna().all() and h["val_accuracy"].isna().all()
    assert np.isnan(res.final_accuracy).all()
    assert res.diverged[1] and not res.diverged[0]
    g1 = h[h["network"] == 1]
    assert g1["val_loss"].notna().all()  # rows after divergence are absent; the step itself is kept
    assert np.isfinite(h[h["network"] == 0]["val_loss"]).all()
    assert res._val_groups[0][res.record_steps > res.diverged_at[1], 0, 1].size > 0
    assert np.isnan(res._val_groups[0][res.record_steps > res.diverged_at[1], :, 1]).all()


def test_float32_networks():
    X, y = data("ce", 30, 0)
    Xv, yv = data("ce", 20, 1)
    net = MLP([2, 4, 3], activation="tanh", loss="ce", dtype="float32")
    res = train_grid(net, X, y, lr=[0.2, 0.5], steps=5, validation=(Xv, yv))
    p = network(res, 0)
    assert res.final_val_loss[0] == pytest.approx(net.loss_and_grad(p, Xv, yv)[0], rel=1e-5)
    assert res.final_val_accuracy[0] == right_share(net, p, Xv, yv)


def test_save_and_load_carry_the_held_out_values(tmp_path):
    X, y = data("ce", 30, 0)
    Xv, yv = data("ce", 20, 1)
    res = train_grid(make_net("ce"), X, y, lr=[0.2, 0.5], steps=5, record_every=2, validation=(Xv, yv))
    path = tmp_path / "r.npz"
    res.save(path)
    back = GridResult.load(path)
    for name in ("final_val_loss", "final_accuracy", "final_val_accuracy"):
        assert np.array_equal(getattr(back, name), getattr(res, name))
    pd.testing.assert_frame_equal(back.history(), res.history(), check_exact=True)
    pd.testing.assert_frame_equal(back.config, res.config, check_exact=True)


@pytest.mark.parametrize("validation, match", [
    ((np.zeros((5, 3)), np.zeros(5)), r"validation\[0\] \(X_val\) must have shape \(n_val, 2\)"),
    ((np.zeros((5, 2)), np.zeros(4)), r"validation\[1\] \(y_val\).*shape"),
    ((np.zeros((5, 2)), np.full(5, 2)), r"validation\[1\] \(y_val\)"),
    ((np.full((5, 2), np.nan), np.zeros(5)), r"validation\[0\] \(X_val\)"),
    ((np.zeros((0, 2)), np.zeros(0)), r"validation\[0\] \(X_val\) must have at least 1"),
    (np.zeros((5, 2)), r"validation must be a pair"),
    ((np.zeros((5, 2)),), r"validation must be a pair"),
    (("abc", np.zeros(5)), r"validation\[0\] \(X_val\)"),
])
def test_bad_validation_is_a_value_error_naming_it(validation, match):
    X, y = data("bce", 10, 0)
    with pytest.raises(ValueError, match=match):
        train_grid(MLP([2, 3, 1]), X, y, lr=0.1, steps=1, validation=validation)


def test_batch_norm_evaluates_one_held_out_row_with_the_training_statistics():
    """One held-out row is enough with batch norm: it is normalised with the training set's
    statistics (full batch), so its loss is that of the same row inside the training set."""
    X, y = data("bce", 10, 0)
    net = MLP([2, 3, 1], batchnorm=True)
    res = train_grid(net, X, y, lr=[0.1, 0.3], steps=3, validation=(X[4:5], y[4:5]))
    p = network(res, 1)
    logits = net.forward(p, X).logits
    assert rel_err(res.final_val_loss[1], simcore.losses.bce(logits[4:5], y[4:5])[0]) <= 1e-14


def test_batch_norm_held_out_accuracy_is_the_study_runners():
    """With full-batch batch norm the kernel's held-out accuracy is the one the study runner's
    probes compute in NumPy (training-set statistics: studies.runner.holdout_accuracy)."""
    from studies.runner import holdout_accuracy
    X, y = data("ce", 36, 0)
    Xv, yv = data("ce", 21, 1)
    net = make_net("ce", batchnorm=True)
    res = train_grid(net, X, y, lr=[0.5, 2.0], steps=6, validation=(Xv, yv))
    for g in range(2):
        assert res.final_val_accuracy[g] == holdout_accuracy(net, network(res, g), X, Xv, yv)


def test_a_result_without_the_held_out_fields_reads_nan(tmp_path):
    """A GridResult built without them (as a file of an older simcore loads): None attributes,
    NaN history columns, and a save/load round trip that keeps it so."""
    X, y = data("bce", 20, 0)
    res = train_grid(make_net("bce"), X, y, lr=[0.1, 0.2], steps=3)
    old = GridResult(final_loss=res.final_loss, diverged=res.diverged, diverged_at=res.diverged_at,
                     params=res.params, record_steps=res.record_steps, config=res.config,
                     _groups=res._groups, nets=res.nets)
    assert old.final_val_loss is None and old.history()[VAL].isna().all().all()
    old.save(tmp_path / "old.npz")
    back = GridResult.load(tmp_path / "old.npz")
    assert back.final_accuracy is None and back._val_groups is None
    pd.testing.assert_frame_equal(back.history(), old.history(), check_exact=True)


@pytest.mark.parametrize("strategy", ["lanes", "gemm"])
def test_held_out_values_follow_stop_at_target_and_resume(strategy):
    """With the training's options: a network stopped at its target records its held-out values
    up to that step and none after (a block of lanes whose networks all stopped skips its steps
    too), its final ones at its frozen parameters; two resumed halves record the held-out values
    of one whole training, bitwise."""
    X, y = data("bce", 40, 0)
    Xv, yv = data("bce", 27, 1)
    net = make_net("bce")
    lr = np.r_[np.full(32, 0.5), np.geomspace(0.05, 1.0, 8)]
    target = np.r_[np.full(32, np.inf), np.full(8, 0.6)]  # the first block stops at step 0
    kw = dict(lr=lr, record_every=2, strategy=strategy, validation=(Xv, yv), target_loss=target,
              stop_at_target=True)
    res = train_grid(net, X, y, steps=12, **kw)
    h = res.history().query("layer == 1")
    first = h[h["network"] < 32]
    assert (first["step"] == 0).all() and first[VAL].notna().all().all()
    assert np.array_equal(res.final_val_loss[:32], first["val_loss"].to_numpy())
    for g in np.flatnonzero(res.reached_at > 0):
        rows = h[h["network"] == g]
        assert rows["step"].max() == res.reached_at[g] - res.reached_at[g] % 2
    whole = res
    a = train_grid(net, X, y, steps=6, **kw)
    b = train_grid(net, X, y, steps=6, resume=a, **kw)
    for key in ("final_val_loss", "final_accuracy", "final_val_accuracy"):
        assert np.array_equal(getattr(b, key), getattr(whole, key), equal_nan=True), key
    hw, hb = whole.history(), b.history()
    hw = hw[hw["step"] >= 6].reset_index(drop=True)
    pd.testing.assert_frame_equal(hb, hw, check_exact=True)
