"""The CUDA backend's training options (issue #18) against the CPU backend: weight decay,
gradient clipping, learning-rate schedules, target_loss with stop_at_target, and resume
(two resumed halves equal one training bitwise on the GPU too).

Runs on a GPU or under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set before numba is
imported; ``make test`` runs this file so, in its own process), with tiny sizes and small
launches (conftest.small_cuda_launches), as tests/test_cuda_sim.py."""
import numpy as np
import pytest

import simcore
from conftest import cuda_status, flat, network
from simcore import LRSchedule, MLP, train_grid
from test_cuda_sim import assert_backends_agree, both

AVAILABLE, WHY = cuda_status()
needs_gpu = pytest.mark.skipif(
    not AVAILABLE,
    reason="no CUDA GPU and NUMBA_ENABLE_CUDASIM is not 1: run NUMBA_ENABLE_CUDASIM=1 python -m pytest "
           "tests/test_cuda_sim_training.py (make test does)" + WHY)
pytestmark = pytest.mark.usefixtures("small_cuda_launches")
X, Y = simcore.datasets.moons(8, seed=0)


@needs_gpu
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_weight_decay_clipping_and_a_schedule_as_on_the_cpu(optimizer):
    """Three networks: weight decay and clipping (it clips), clipping alone, weight decay alone;
    a cosine schedule after a warmup; batch norm's gamma and beta decay too."""
    net = MLP([2, 4, 3, 1], activation="tanh", loss="bce", batchnorm=optimizer == "momentum")
    lr = [0.05, 0.02, 0.1] if optimizer == "adam" else [0.3, 0.1, 0.6]
    gpu, cpu = both(net, X, Y, lr=lr, steps=4, record_every=2, seeds=[3, 7, 11], optimizer=optimizer,
                    weight_decay=[0.1, 0.0, 0.05], clip_norm=[0.05, 0.02, 1e9],
                    lr_schedule=LRSchedule("cosine", floor=0.1, warmup=2, warmup_start=0.3))
    assert_backends_agree(gpu, cpu, skip_bn_bias=optimizer == "adam")


@needs_gpu
def test_target_and_stop_at_target_as_on_the_cpu():
    """reached_at recorded on the device; the stopped networks frozen at the same step, their
    telemetry ended there, with a step schedule and minibatches."""
    net = MLP([2, 4, 1], activation="tanh", loss="mse")
    kw = dict(lr=[0.5, 0.3, 1.0, 0.05], steps=6, record_every=2, seeds=[1, 2, 3, 4], batch_size=4,
              target_loss=[0.3, 0.25, np.inf, 1e-9], stop_at_target=True, optimizer="nesterov",
              lr_schedule=LRSchedule("step", factor=0.5, every=2))
    gpu, cpu = both(net, X, Y, **kw)
    assert np.array_equal(gpu.reached_at, cpu.reached_at)
    assert cpu.reached_at[2] == 0 and cpu.reached_at[3] == -1
    assert_backends_agree(gpu, cpu)


RESUMES = [("gd", None, LRSchedule()),
           ("sgd", 3, LRSchedule("cosine", floor=0.1, period=6)),
           ("momentum", None, LRSchedule("step", factor=0.5, every=2)),
           ("nesterov", 3, LRSchedule("cosine", period=4, warmup=2, warmup_start=0.2)),
           ("adam", 3, LRSchedule("step", factor=0.5, every=2, warmup=2))]


@needs_gpu
@pytest.mark.parametrize("opt,bs,schedule", RESUMES, ids=[r[0] for r in RESUMES])
def test_two_resumed_halves_equal_one_training_on_the_gpu(opt, bs, schedule):
    """Every optimizer and every kind of schedule (minibatches with the epoch cut mid-way for
    three of them), with weight decay, clipping and a target (network 1 frozen at step 0,
    before the second call starts): 3 + 3 steps resumed equal 6, bitwise."""
    net = MLP([2, 3, 1], activation="tanh", loss="mse")
    lr = [0.05, 0.1, 0.2] if opt == "adam" else [0.3, 0.5, 1.0]
    kw = dict(lr=lr, optimizer=opt, batch_size=bs, record_every=1, weight_decay=0.01,
              clip_norm=[0.1, 1e9, 0.1], target_loss=[0.2, np.inf, 1e-9], stop_at_target=True,
              lr_schedule=schedule, backend="cuda")
    whole = train_grid(net, X, Y, steps=6, seeds=[4, 5, 6], **kw)
    first = train_grid(net, X, Y, steps=3, seeds=[4, 5, 6], **kw)
    second = train_grid(net, X, Y, steps=3, resume=first, **kw)
    assert np.array_equal(second.final_loss, whole.final_loss)
    assert np.array_equal(second.reached_at, whole.reached_at) and whole.reached_at[1] == 0
    assert np.array_equal(second.diverged_at, whole.diverged_at)
    for g in range(3):
        assert np.array_equal(flat(network(second, g)), flat(network(whole, g))), g
    for key in ("v", "m", "loss0"):
        assert np.array_equal(second.state[key], whole.state[key]), key
    hw = whole.history()
    hw = hw[hw["step"] >= 3].reset_index(drop=True)
    assert second.history().equals(hw)
