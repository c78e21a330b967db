"""train_grid's training options (issue #18): lr_schedule, weight_decay, clip_norm, target_loss
with stop_at_target, and resume from GridResult.state.

References: PyTorch (torch.optim's weight_decay, torch.nn.utils.clip_grad_norm_ and
torch.optim.lr_scheduler) in float64 training loops on the same networks; the two CPU
strategies against each other (float64 1e-12) and each against itself (bitwise); one long
training against two resumed halves (bitwise); and the results of default options against the
digests the commit before these options wrote (tests/data/make_grid_defaults.py).
"""
import json
import math
import os
import sys

import numpy as np
import pytest
import torch

import simcore
from conftest import assert_same_result, flat, network, rel_err
from simcore import LRSchedule, MLP, train_grid
from simcore.interop import from_torch
from torch_oracle import torch_loss, torch_model

torch.set_num_threads(1)
DATA = os.path.join(os.path.dirname(__file__), "data")
X, Y = simcore.datasets.moons(24, seed=1)
NET = MLP([2, 5, 4, 1], activation="tanh", loss="bce")


# --- defaults: bitwise the results of the commit before these options -------------------------

def test_default_options_give_the_results_of_before():
    sys.path.insert(0, DATA)
    import make_grid_defaults as before
    with open(os.path.join(DATA, "grid_defaults.json")) as f:
        stored = json.load(f)
    if stored["host"] != before.host():
        pytest.skip("the stored digests are of another CPU (explicit vectors round per instruction set)")
    for name, kwargs in before.cases():
        for key, value in before.arrays(train_grid(**kwargs)).items():
            assert before.digest(value) == stored[f"{name}/{key}"], (name, key)


# --- checked at the boundary ------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(weight_decay=-0.1), "weight_decay must be >= 0"),
    (dict(weight_decay=np.nan), "weight_decay must be finite"),
    (dict(weight_decay=[0.1, 0.2]), "weight_decay has length 2"),
    (dict(clip_norm=0.0), "clip_norm must be > 0"),
    (dict(clip_norm=[1.0, -1.0, 1.0]), "clip_norm must be > 0"),
    (dict(clip_norm=np.inf), "clip_norm must be finite"),
    (dict(target_loss=np.nan), "target_loss must not be NaN"),
    (dict(target_loss=np.ones((3, 1))), "target_loss must be a scalar or a 1-D array"),
    (dict(stop_at_target=True), "stop_at_target=True needs target_loss"),
    (dict(stop_at_target=1, target_loss=0.1), "stop_at_target must be True or False"),
])
def test_bad_training_options_raise_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_grid(NET, X, Y, lr=[0.1, 0.2, 0.3], steps=2, **kwargs)


def test_lr_schedule_must_be_an_lrschedule():
    with pytest.raises(TypeError, match="lr_schedule must be a simcore.LRSchedule"):
        train_grid(NET, X, Y, lr=0.1, steps=2, lr_schedule="cosine")


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="linear"), "kind must be one of"),
    (dict(kind="step"), "needs every"),
    (dict(kind="step", every=0), "every must be >= 1"),
    (dict(kind="step", every=2, factor=0.0), "factor must be > 0"),
    (dict(kind="cosine", floor=1.5), "floor must be <= 1"),
    (dict(kind="cosine", period=0), "period must be >= 1"),
    (dict(kind="cosine", every=3), "every is a setting of kind 'step'"),
    (dict(kind="constant", floor=0.1), "floor is a setting of kind 'cosine'"),
    (dict(kind="step", every=2, period=4), "period is a setting of kind 'cosine'"),
    (dict(warmup=-1), "warmup must be >= 0"),
    (dict(warmup=2, warmup_start=1.5), "warmup_start must be <= 1"),
    (dict(warmup=2.5), "warmup must be an integer"),
])
def test_bad_schedules_raise_naming_the_setting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LRSchedule(**kwargs)


# --- the schedule's factors against torch.optim.lr_scheduler ----------------------------------

def torch_lrs(make, steps, lr):
    """The lr torch's scheduler gives each of steps + 1 steps (stepped once after every step)."""
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=lr)
    sched = make(opt)
    lrs = []
    for _ in range(steps + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(lrs)


LRS = torch.optim.lr_scheduler
# (simcore's schedule, torch's scheduler of the same lrs for a peak lr of 0.5: eta_min = floor * 0.5)
SCHEDULES = [
    (LRSchedule(), lambda o: LRS.LambdaLR(o, lambda t: 1.0)),
    (LRSchedule("step", factor=0.5, every=7), lambda o: LRS.StepLR(o, step_size=7, gamma=0.5)),
    (LRSchedule("cosine", floor=0.1, period=40), lambda o: LRS.CosineAnnealingLR(o, T_max=40, eta_min=0.05)),
    (LRSchedule(warmup=10, warmup_start=0.25), lambda o: LRS.LinearLR(o, start_factor=0.25, total_iters=10)),
    (LRSchedule("cosine", floor=0.02, period=30, warmup=10, warmup_start=0.1),
     lambda o: LRS.SequentialLR(o, [LRS.LinearLR(o, start_factor=0.1, total_iters=10),
                                    LRS.CosineAnnealingLR(o, T_max=30, eta_min=0.01)], milestones=[10])),
    (LRSchedule("step", factor=0.3, every=4, warmup=6, warmup_start=0.5),
     lambda o: LRS.SequentialLR(o, [LRS.LinearLR(o, start_factor=0.5, total_iters=6),
                                    LRS.StepLR(o, step_size=4, gamma=0.3)], milestones=[6])),
]


@pytest.mark.parametrize("schedule,make", SCHEDULES)
def test_schedule_factors_match_torch_schedulers(schedule, make):
    """The lr of every step of 40 as torch's schedulers give it. torch computes them
    recursively (each lr from the one before: cosine and warmup as ratios of consecutive
    factors), simcore in closed form, so they agree to the rounding of 40 products: 1e-12 of
    the peak lr."""
    lr, steps = 0.5, 40
    ours = lr * schedule.factors(steps)
    ref = torch_lrs(make, steps, lr)
    assert np.max(np.abs(ours - ref)) <= 1e-12 * lr
    # the closed form itself: f(0) and the warmup's end, the floor at the cosine's end
    assert schedule.factors(steps)[schedule.warmup] == 1.0
    if schedule.kind == "cosine":
        assert schedule.factors(steps)[schedule.warmup + schedule.period] == pytest.approx(schedule.floor, abs=1e-15)


def test_cosine_period_defaults_to_the_steps_after_warmup():
    s = LRSchedule("cosine", floor=0.2, warmup=5)
    f = s.factors(25)
    assert s.resolved(25).period == 20 and f[25] == pytest.approx(0.2, abs=1e-15) and f[5] == 1.0
    assert f[0] == 0.0 and f[1] == pytest.approx(0.2)  # warmup from warmup_start 0


# --- training against a torch loop -------------------------------------------------------------

def torch_training(net, params, X, y, steps, make_opt, clip=None, make_sched=None):
    """params after ``steps`` full-batch steps of a torch loop: backward, clip_grad_norm_,
    the optimizer's step (its weight_decay), the scheduler's step."""
    model, tdt = torch_model(net, params)
    model.train()
    opt = make_opt(model.parameters())
    sched = make_sched(opt) if make_sched else None
    Xt = torch.tensor(X, dtype=tdt)
    for _ in range(steps):
        opt.zero_grad()
        torch_loss(net, model(Xt), y).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if sched:
            sched.step()
    return from_torch(model, loss=net.loss)[1]


TORCH_OPT = {
    "gd": lambda ps, lr, wd: torch.optim.SGD(ps, lr=lr, weight_decay=wd),
    "momentum": lambda ps, lr, wd: torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=wd),
    "nesterov": lambda ps, lr, wd: torch.optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd),
    "adam": lambda ps, lr, wd: torch.optim.Adam(ps, lr=lr, weight_decay=wd),
}


@pytest.mark.parametrize("strategy", ["lanes", "gemm"])
@pytest.mark.parametrize("opt,bn", [("gd", False), ("momentum", True), ("nesterov", False), ("adam", False)])
def test_weight_decay_and_clipping_match_torch(opt, bn, strategy):
    """Four networks: weight decay alone, clipping alone (it clips: the threshold is below the
    gradient's norm), both, neither; 12 full-batch steps against torch, float64 1e-12 (as
    simcore.Optimizer against torch.optim). Batch norm's gamma and beta decay too."""
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce", batchnorm=bn)
    lr = 0.05 if opt == "adam" else 0.5
    wd = np.array([0.1, 0.0, 0.05, 0.0])
    clip = np.array([np.nan, 0.05, 0.02, np.nan])
    steps = 12
    res = train_grid(net, X, Y, lr=lr, steps=steps, seeds=[3, 4, 5, 6], bias_scale=0.1, optimizer=opt,
                     weight_decay=wd, clip_norm=np.where(np.isnan(clip), 1e300, clip), strategy=strategy)
    start = simcore.grid.initial_params(net, [3, 4, 5, 6], bias_scale=0.1)
    for g in range(4):
        p0 = [{k: v[g] for k, v in layer.items()} for layer in start]
        ref = torch_training(net, p0, X, Y, steps, lambda ps: TORCH_OPT[opt](ps, lr, wd[g]),
                             clip=None if np.isnan(clip[g]) else clip[g])
        assert rel_err(flat(network(res, g)), flat(ref)) <= 1e-12, g
        assert rel_err(flat(network(res, g)), flat(p0)) > 1e-3
    # the options changed the training: network 1 (clipped) is not network 1 unclipped
    plain = train_grid(net, X, Y, lr=lr, steps=steps, seeds=[3, 4, 5, 6], bias_scale=0.1, optimizer=opt,
                       strategy=strategy)
    assert np.array_equal(flat(network(res, 3)), flat(network(plain, 3)))  # neither: bitwise the default
    for g in range(3):
        assert rel_err(flat(network(res, g)), flat(network(plain, g))) > 1e-6, g
    assert res.config["weight_decay"].tolist() == wd.tolist()


@pytest.mark.parametrize("strategy", ["lanes", "gemm"])
@pytest.mark.parametrize("schedule,make", SCHEDULES[1:])
def test_schedules_train_as_torch_schedulers(schedule, make, strategy):
    """Momentum with weight decay under each schedule, 20 steps, against torch's loop with its
    scheduler: the lrs differ by their rounding (torch's recursive formulas, above), which the
    parameters carry at about the same size: float64 1e-11."""
    steps, lr = 20, 0.5  # the lr of SCHEDULES' eta_min
    seeds = [1, 2]
    res = train_grid(NET, X, Y, lr=lr, steps=steps, seeds=seeds, optimizer="momentum", weight_decay=0.01,
                     lr_schedule=schedule, strategy=strategy)
    start = simcore.grid.initial_params(NET, seeds)
    for g in range(2):
        p0 = [{k: v[g] for k, v in layer.items()} for layer in start]
        ref = torch_training(NET, p0, X, Y, steps, lambda ps: TORCH_OPT["momentum"](ps, lr, 0.01),
                             make_sched=make)
        assert rel_err(flat(network(res, g)), flat(ref)) <= 1e-11, g
    plain = train_grid(NET, X, Y, lr=lr, steps=steps, seeds=seeds, optimizer="momentum", weight_decay=0.01,
                       strategy=strategy)
    assert rel_err(flat(network(res, 0)), flat(network(plain, 0))) > 1e-6


# --- the strategies: agreement and reproducibility ----------------------------------------------

ALL_OPTIONS = dict(weight_decay=np.linspace(0, 0.05, 36), clip_norm=np.r_[np.full(18, 0.05), np.full(18, 1e9)],
                   lr_schedule=LRSchedule("cosine", floor=0.1, warmup=3, warmup_start=0.2),
                   target_loss=np.linspace(0.2, 0.7, 36), stop_at_target=True)


@pytest.mark.parametrize("opt,bs,bn", [("gd", None, False), ("adam", 8, False), ("nesterov", 6, True)])
def test_strategies_agree_with_every_option_and_each_is_reproducible(opt, bs, bn):
    """36 networks (two blocks of lanes, one of them partly frozen early) with every option."""
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce", batchnorm=bn)
    kw = dict(lr=np.geomspace(0.01, 3.0, 36), steps=25, optimizer=opt, batch_size=bs, record_every=3,
              **ALL_OPTIONS)
    lanes = train_grid(net, X, Y, strategy="lanes", **kw)
    gemm = train_grid(net, X, Y, strategy="gemm", **kw)
    assert_same_result(lanes, train_grid(net, X, Y, strategy="lanes", **kw))
    assert_same_result(gemm, train_grid(net, X, Y, strategy="gemm", **kw))
    assert np.array_equal(lanes.reached_at, gemm.reached_at)
    assert (lanes.reached_at >= 0).sum() >= 5 and (lanes.reached_at < 0).sum() >= 5
    assert np.array_equal(lanes.diverged_at, gemm.diverged_at)
    assert rel_err(lanes.final_loss, gemm.final_loss) <= 1e-12
    for g in range(36):
        assert rel_err(flat(network(lanes, g)), flat(network(gemm, g))) <= 1e-12, g
    hl, hg = lanes.history(), gemm.history()
    assert hl[["network", "step", "layer"]].equals(hg[["network", "step", "layer"]])
    assert rel_err(hl["loss"], hg["loss"]) <= 1e-12


def test_every_option_in_float32():
    """float32 networks with float64 options (weight decay, clipping, targets, the schedule):
    the strategies agree to float32 rounding and the parameters stay float32."""
    net = MLP([2, 5, 4, 1], activation="tanh", loss="bce", dtype="float32")
    kw = dict(lr=np.geomspace(0.01, 1.0, 36), steps=20, optimizer="adam", batch_size=8, record_every=5,
              **{**ALL_OPTIONS, "target_loss": 0.5})
    lanes = train_grid(net, X, Y, strategy="lanes", **kw)
    gemm = train_grid(net, X, Y, strategy="gemm", **kw)
    assert lanes.params[0]["W"].dtype == np.float32 and lanes.state["v"].dtype == np.float32
    assert np.array_equal(lanes.reached_at, gemm.reached_at) and (lanes.reached_at >= 0).any()
    assert rel_err(lanes.final_loss, gemm.final_loss) <= 1e-5


# --- target_loss and stop_at_target ------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["lanes", "gemm"])
def test_reached_at_is_the_first_step_at_or_below_the_target(strategy):
    lr = np.geomspace(0.05, 2.0, 6)
    target = np.array([0.6, 0.5, 0.45, 0.4, 1e-9, np.inf])  # inf: reached at step 0
    res = train_grid(NET, X, Y, lr=lr, steps=40, record_every=1, target_loss=target, strategy=strategy)
    loss = res.history().query("layer == 1").pivot(index="step", columns="network", values="loss").to_numpy()
    for g in range(6):
        below = np.flatnonzero(loss[:, g] <= target[g])
        assert res.reached_at[g] == (below[0] if below.size else -1), g
    assert res.reached_at[4] == -1 and res.reached_at[5] == 0 and (res.reached_at[:4] > 0).sum() >= 2
    assert np.isposinf(res.config["target_loss"][5])
    assert res.config["reached_at"].tolist() == res.reached_at.tolist()
    # without stop_at_target the training is the one without a target, bitwise
    plain = train_grid(NET, X, Y, lr=lr, steps=40, record_every=1, strategy=strategy)
    assert_same_result(res, plain)


@pytest.mark.parametrize("strategy", ["lanes", "gemm"])
@pytest.mark.parametrize("opt", ["gd", "adam"])
def test_stop_at_target_freezes_the_network_where_it_reached(strategy, opt):
    """A frozen network's parameters and final loss are those of a training of reached_at steps;
    its telemetry ends at that step. G = 40: the first block of lanes freezes whole (every
    network reaches a target at step 0..), the second only in part."""
    lr = np.r_[np.full(32, 0.5), np.geomspace(0.05, 1.0, 8)]
    target = np.r_[np.linspace(0.66, 0.6, 32), np.full(4, 0.5), np.full(4, 1e-9)]  # 1e-9: never
    kw = dict(lr=lr, optimizer=opt, record_every=2, strategy=strategy)
    res = train_grid(NET, X, Y, steps=30, target_loss=target, stop_at_target=True, **kw)
    assert (res.reached_at[:32] >= 0).all() and 0 < (res.reached_at[32:] >= 0).sum() < 8
    hist = res.history()
    for g in np.r_[0, 31, np.arange(32, 40)]:
        t = res.reached_at[g]
        if t < 0:
            continue
        short = train_grid(NET, X, Y, steps=max(t, 1), seeds=g, **{**kw, "lr": lr[g]})
        if t == 0:
            short = train_grid(NET, X, Y, steps=1, seeds=g, **{**kw, "lr": 0.0})
        assert np.array_equal(flat(network(res, g)), flat(network(short, 0))), g
        assert res.final_loss[g] == short.final_loss[0]
        assert hist.query("network == @g")["step"].max() == t - t % 2
    assert np.array_equal(res.frozen_at(), res.reached_at)


@pytest.mark.parametrize("strategy", ["lanes", "gemm"])
def test_frozen_networks_skip_their_work(strategy):
    """Every network reaches its target at step 0: 100000 steps then cost about nothing (both
    strategies skip a frozen network; lanes the whole block). Trained, they would take seconds."""
    import time
    kw = dict(lr=np.full(32, 0.1), steps=100_000, record_every=100_000, strategy=strategy)
    train_grid(NET, X, Y, target_loss=np.inf, stop_at_target=True, **{**kw, "steps": 2})  # compiled
    t = time.process_time()
    res = train_grid(NET, X, Y, target_loss=np.inf, stop_at_target=True, **kw)
    assert time.process_time() - t < 0.5
    assert (res.reached_at == 0).all() and res.history()["step"].max() == 0
    short = train_grid(NET, X, Y, **{**kw, "steps": 200})
    assert np.array_equal(res.final_loss, short.history().query("step == 0 and layer == 1")["loss"])
    # resumed, the frozen grid stays frozen, its divergence test still against step 0's loss
    more = train_grid(NET, X, Y, target_loss=np.inf, stop_at_target=True, resume=res, **{**kw, "steps": 5})
    assert (more.diverged_at == -1).all() and np.array_equal(more.final_loss, res.final_loss)
    assert np.array_equal(more.state["loss0"], res.state["loss0"])


# --- resume: two halves are one training --------------------------------------------------------

RESUME_SCHEDULES = [LRSchedule(), LRSchedule("step", factor=0.5, every=4, warmup=3),
                    LRSchedule("cosine", floor=0.05, period=12, warmup=2, warmup_start=0.1)]


def halves_and_whole(net, S, first, schedule, strategy, **kw):
    whole = train_grid(net, X, Y, steps=S, lr_schedule=schedule, strategy=strategy, **kw)
    a = train_grid(net, X, Y, steps=first, lr_schedule=schedule, strategy=strategy, **kw)
    kw.pop("seeds", None)
    b = train_grid(net, X, Y, steps=S - first, resume=a, strategy=strategy, **kw)
    return whole, a, b


def assert_continues(whole, b):
    """b (the second half) ends as whole, bitwise, and records what whole records at its steps."""
    assert np.array_equal(b.final_loss, whole.final_loss, equal_nan=True)
    assert np.array_equal(b.diverged_at, whole.diverged_at)
    assert np.array_equal(b.reached_at, whole.reached_at)
    for g in range(len(whole.final_loss)):
        assert np.array_equal(flat(network(b, g)), flat(network(whole, g))), g
    for key in ("v", "m", "loss0", "step"):
        assert np.array_equal(b.state[key], whole.state[key], equal_nan=True), key
    hw, hb = whole.history(), b.history()
    hw = hw[hw["step"] >= b.record_steps[0]].reset_index(drop=True)
    import pandas as pd
    pd.testing.assert_frame_equal(hb, hw, check_exact=True)


@pytest.mark.parametrize("strategy", ["lanes", "gemm"])
@pytest.mark.parametrize("schedule", RESUME_SCHEDULES, ids=["constant", "step", "cosine"])
@pytest.mark.parametrize("opt,bs", [("gd", None), ("sgd", 5), ("momentum", None), ("nesterov", 7), ("adam", 5)])
def test_two_resumed_halves_equal_one_training_bitwise(opt, bs, schedule, strategy):
    """S = 14 in 6 + 8 steps (the epochs of 4 or 3 batches cut mid-way), with weight decay,
    clipping, a target (stopping some networks in the first half, some in the second) and a
    network that diverges; records every 2 steps, so the halves' records fall on the whole's."""
    net = MLP([2, 5, 4, 1], activation="tanh", loss="mse")
    lr = np.r_[np.geomspace(0.05, 2.0, 5) / (10 if opt == "adam" else 1), 1e4]
    kw = dict(lr=lr, optimizer=opt, batch_size=bs, record_every=2, weight_decay=0.01,
              clip_norm=[0.5, 1e9, 0.5, 1e9, 0.5, 1e9], target_loss=[0.24, 0.2, 0.15, 0.12, 0.1, 0.01],
              stop_at_target=True, seeds=[7, 8, 9, 10, 11, 12])
    whole, a, b = halves_and_whole(net, 14, 6, schedule, strategy, **kw)
    assert b.record_steps.tolist() == [6, 8, 10, 12, 14] and int(b.state["step"]) == 14
    assert whole.diverged[5] and (whole.reached_at >= 0).sum() >= 3
    assert_continues(whole, b)


@pytest.mark.parametrize("strategy", ["lanes", "gemm"])
def test_resume_with_batchnorm_and_a_list_of_networks(strategy):
    nets = [MLP([2, 4, 1], activation="relu", loss="mse", batchnorm=True), MLP([2, 3, 3, 1], loss="mse")] * 2
    kw = dict(lr=[0.1, 0.2, 0.3, 0.05], optimizer="adam", batch_size=6, record_every=3)
    whole, a, b = halves_and_whole(nets, 12, 6, LRSchedule("step", every=5), strategy, **kw)
    assert_continues(whole, b)


def test_resume_from_a_saved_result(tmp_path):
    kw = dict(lr=[0.1, 0.5, 1.0], optimizer="nesterov", batch_size=5, weight_decay=0.02, record_every=2,
              lr_schedule=LRSchedule("cosine", period=10), target_loss=0.5)
    whole = train_grid(NET, X, Y, steps=10, **kw)
    a = train_grid(NET, X, Y, steps=4, **kw)
    a.save(tmp_path / "a.npz")
    loaded = simcore.GridResult.load(tmp_path / "a.npz")
    for key, value in a.state.items():
        assert np.array_equal(loaded.state[key], value), key
    assert np.array_equal(loaded.reached_at, a.reached_at)
    kw.pop("lr_schedule")
    b = train_grid(NET, X, Y, steps=6, resume=loaded, **kw)
    assert_continues(whole, b)


@pytest.mark.parametrize("change,match", [
    (dict(params0="a"), "leave params0 out"),
    (dict(seeds=[1, 2, 3]), "leave seeds out"),
    (dict(divergence_ref=1.0), "leave divergence_ref out"),
    (dict(init_scale=0.5), "leave init_scale out"),
    (dict(bias_scale=[0.0, 0.1, 0.0]), "leave bias_scale out"),
    (dict(optimizer="momentum"), "optimizer must be the resumed training's, 'adam'"),
    (dict(batch_size=4), "batch_size must be the resumed training's, 5"),
    (dict(lr=[0.1, 0.2]), "lr has length 2"),
    (dict(net=MLP([2, 5, 1], activation="tanh", loss="bce")), "net must be the resumed training's"),
    (dict(net=MLP([2, 5, 4, 1], activation="tanh", loss="mse")), "net must be the resumed training's"),
    (dict(X=X[:20], y=Y[:20]), "X must have the resumed training's 24 samples"),
    (dict(lr_schedule=LRSchedule("cosine", period=9)), "lr_schedule must be the resumed training's"),
    (dict(lr_schedule=LRSchedule()), "lr_schedule must be the resumed training's"),
])
def test_resume_that_does_not_match_raises_naming_the_argument(change, match):
    kw = dict(net=NET, X=X, y=Y, lr=[0.1, 0.2, 0.3], steps=3, optimizer="adam", batch_size=5,
              lr_schedule=LRSchedule("cosine", period=10))
    a = train_grid(**kw)
    if change.get("params0") == "a":
        change = dict(params0=a.params)
    with pytest.raises(ValueError, match=match):
        train_grid(**{**kw, **change, "resume": a})
    # the default period is the stored one: the same schedule given again resumes
    train_grid(**{**kw, "lr_schedule": LRSchedule("cosine"), "resume": a})


def test_resume_must_be_a_grid_result():
    with pytest.raises(TypeError, match="resume must be a GridResult"):
        train_grid(NET, X, Y, lr=0.1, steps=2, resume={"v": 0})


def test_a_version_1_file_loads_without_state(tmp_path):
    """Files of format version 1 (before GridResult.state) still load, with state None."""
    from test_io import rewrite
    res = train_grid(NET, X, Y, lr=0.1, steps=2)
    res.state = None
    res.reached_at = None
    res.save(tmp_path / "old.npz")

    def old(header):
        header["format_version"] = 1
        header["fields"].pop("state")
        header["fields"].pop("reached_at")
    path = rewrite(tmp_path / "old.npz", old)
    loaded = simcore.GridResult.load(path)
    assert loaded.state is None and loaded.reached_at is None
    assert np.array_equal(loaded.final_loss, res.final_loss)
    assert math.isfinite(loaded.final_loss[0])


@pytest.mark.parametrize("strategy", ["lanes", "gemm"])
def test_the_moments_a_rule_does_not_use_stay_zero(strategy):
    """Gradient descent changes neither of the optimizer's moments and momentum not m (the
    per-network kernel does not even copy them): the state keeps them at zero, and a resumed
    half continues from them as the whole training does (test above)."""
    for opt, untouched in (("gd", ("v", "m")), ("momentum", ("m",)), ("nesterov", ("m",))):
        kw = {} if opt == "gd" else {"momentum": 0.9}
        res = train_grid(NET, X, Y, lr=[0.1, 0.5, 2.0], steps=5, optimizer=opt, strategy=strategy, **kw)
        for key in untouched:
            assert not res.state[key].any(), (opt, key)
        if opt != "gd":
            assert np.abs(res.state["v"]).max() > 0, opt
