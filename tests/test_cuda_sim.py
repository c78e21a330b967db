"""The CUDA backend against the CPU backend: every GPU building block against its CPU kernel,
and ``train_grid(backend="cuda")`` against ``train_grid(backend="cpu")`` at float64 relative
error <= 1e-10 (both backends run the same formulas; only the order of a few sums differs).

Runs where numba.cuda can run kernels: on a real NVIDIA GPU, or in numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported; ``make test`` does this). Elsewhere
the GPU tests skip with the reason. The simulator runs every CUDA thread as a Python thread, so
the sizes here are tiny; threads per block are patched down to 4 and blocks to 2 so that every
grid spans several blocks (each block then trains several networks) and every thread several
samples. The same tests run unchanged on a GPU. Those patches, the ``gc`` fixture (the
backend module) and ``rel_err`` are in ``conftest.py``.
"""
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import simcore
from conftest import cuda_status, flat, network, rel_err
from simcore import MLP, train_grid

AVAILABLE, WHY = cuda_status()
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"
needs_gpu = pytest.mark.skipif(
    not AVAILABLE,
    reason="no CUDA GPU and NUMBA_ENABLE_CUDASIM is not 1: the CUDA tests run on a GPU or "
           "under the simulator (NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda_sim.py; "
           "make test does)" + WHY)
# every test here runs with small launches (conftest.small_cuda_launches)
pytestmark = pytest.mark.usefixtures("small_cuda_launches")

TOL = 1e-10


# --- importing simcore never needs CUDA ---------------------------------------------------------

def test_import_simcore_does_not_import_numba_cuda():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    code = ("import sys, simcore, simcore.grid; "
            "assert not any(m == 'numba.cuda' or m.startswith('numba.cuda.') or "
            "m.startswith('numba_cuda') for m in sys.modules), "
            "sorted(m for m in sys.modules if 'cuda' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_no_gpu_error_names_the_alternatives(monkeypatch):
    """Without a GPU (and without the simulator) backend='cuda' is a ValueError that says so and
    names backend='cpu' and NUMBA_ENABLE_CUDASIM."""
    X, y = simcore.datasets.moons(8, seed=0)
    net = MLP([2, 3, 1])
    if AVAILABLE:
        from simcore.grid import cuda as module
        monkeypatch.setattr(module, "available", lambda: False)
    with pytest.raises(ValueError, match="backend") as info:
        train_grid(net, X, y, lr=0.1, steps=1, backend="cuda")
    msg = str(info.value)
    assert "backend='cpu'" in msg
    if AVAILABLE:
        assert "NUMBA_ENABLE_CUDASIM=1" in msg and "GPU" in msg


# --- building blocks against the CPU kernels ----------------------------------------------------

ACTS = list(simcore.scalar.ACT_CODE)


@needs_gpu
@pytest.mark.parametrize("name", ACTS)
def test_activation_kernels(cb, name):
    code = simcore.scalar.ACT_CODE[name]
    z = np.r_[np.linspace(-6.0, 6.0, 9), [-750.0, -30.0, -1e-12, 0.0, 1e-12, 30.0, 750.0]]
    a_cpu = simcore.activations.apply(name, z)
    a_gpu = cb.activation_forward(code, z)
    assert rel_err(a_gpu, a_cpu) <= TOL
    assert np.array_equal(a_gpu == 0, a_cpu == 0)
    da = np.linspace(-2.0, 3.0, z.size)
    dz_cpu = np.empty_like(z)
    simcore.activations.backward(code, z, a_cpu, da, dz_cpu)
    assert rel_err(cb.activation_backward(code, z, a_cpu, da), dz_cpu) <= TOL


@needs_gpu
def test_dense_kernels(cb):
    rng = np.random.default_rng(0)
    a, W, b, delta = rng.normal(size=(6, 3)), rng.normal(size=(3, 4)), rng.normal(size=4), \
        rng.normal(size=(6, 4))
    assert rel_err(cb.dense_forward(a, W, b), simcore.layers.dense_forward(a, W, b)) <= TOL
    for got, want in zip(cb.dense_backward(a, W, delta), simcore.layers.dense_backward(a, W, delta)):
        assert got.shape == want.shape
        assert rel_err(got, want) <= TOL


@needs_gpu
def test_batchnorm_kernels(cb):
    rng = np.random.default_rng(1)
    z = rng.normal(2.0, 3.0, size=(7, 3))
    gamma, beta, dy = rng.normal(size=3), rng.normal(size=3), rng.normal(size=(7, 3))
    y_cpu, (xhat_cpu, istd_cpu) = simcore.layers.batchnorm_forward(z, gamma, beta)
    y, xhat, istd = cb.batchnorm_forward(z, gamma, beta)
    assert rel_err(y, y_cpu) <= TOL and rel_err(xhat, xhat_cpu) <= TOL
    assert rel_err(istd, istd_cpu) <= TOL
    want = simcore.layers.batchnorm_backward(dy, (xhat_cpu, istd_cpu), gamma)
    for got, w in zip(cb.batchnorm_backward(dy, xhat_cpu, istd_cpu, gamma), want):
        assert rel_err(got, w) <= TOL


@needs_gpu
@pytest.mark.parametrize("loss", list(simcore.losses.LOSS_CODE))
def test_loss_kernels(cb, loss):
    rng = np.random.default_rng(2)
    n, K = 6, (3 if loss == "ce" else 2)
    z = rng.normal(scale=4.0, size=(n, K))
    z[0, 0] = 40.0  # far in the tails: the stable forms must hold
    if loss == "ce":
        y = rng.integers(0, K, n)
    elif loss == "bce":
        y = rng.integers(0, 2, (n, K))
    else:
        y = rng.normal(size=(n, K))
    want_loss, want_dz = getattr(simcore.losses, loss)(z, y)
    Y = simcore.losses.encode_targets(loss, y, n, K, np.float64)
    got_loss, got_dz = cb.loss_grad(simcore.losses.LOSS_CODE[loss], z, Y)
    assert abs(got_loss - want_loss) <= TOL * abs(want_loss)
    assert rel_err(got_dz, want_dz) <= TOL


@needs_gpu
@pytest.mark.parametrize("opt", ["gd", "momentum", "nesterov", "adam"])
def test_optimizer_kernels(cb, opt):
    rng = np.random.default_rng(3)
    th_cpu = rng.normal(size=9)
    th_gpu = th_cpu.copy()
    v_cpu, m_cpu = np.zeros(9), np.zeros(9)
    v_gpu, m_gpu = np.zeros(9), np.zeros(9)
    code = simcore.grid.core.OPT_CODE[opt]
    for t in range(1, 4):
        g = rng.normal(size=9)
        if opt == "gd":
            simcore.optim.gd_step(th_cpu, g, 0.1)
        elif opt == "adam":
            simcore.optim.adam_step(th_cpu, g, m_cpu, v_cpu, t, 0.1, 0.9, 0.999, 1e-8)
        else:
            simcore.optim.momentum_step(th_cpu, g, v_cpu, 0.1, 0.7, opt == "nesterov")
        cb.optimizer_step(code, th_gpu, g, v_gpu, m_gpu, t, 0.1, 0.7)
    assert rel_err(th_gpu, th_cpu) <= TOL
    assert rel_err(v_gpu, v_cpu) <= TOL and rel_err(m_gpu, m_cpu) <= TOL


@needs_gpu
def test_counter_based_rng_same_numbers(cb):
    """Reproducible by construction (docs/architecture.md): the GPU draws the CPU's numbers, and the same minibatch orders.

    Not bit for bit: ``uniform`` rounds ``(bits >> 11) + 0.5`` (54 significant bits) to
    float64, and the CPU build's fastmath flags (reassoc) fold that rounding away, so a CPU
    uniform can differ from the IEEE value (the GPU's, and the simulator's) by 2**-54; the
    normals inherit that through log/cos. Batch orders agree exactly."""
    for seed, stream in ((0, 0), (12345, 3), (2**63 - 1, 2**32 + 1)):
        cpu_u, gpu_u = np.empty(9), np.empty(9)
        simcore.init.fill_uniform(seed, stream, 0.5, cpu_u)
        cb.fill_uniform(seed, stream, 0.5, gpu_u)
        assert np.abs(cpu_u - gpu_u).max() <= 0.5 * 2.0 ** -52
        cpu_n, gpu_n = np.empty(9), np.empty(9)
        simcore.init.fill_normal(seed, stream, 2.0, cpu_n)
        cb.fill_normal(seed, stream, 2.0, gpu_n)
        assert np.abs(cpu_n - gpu_n).max() <= 2.0 * 1e-13
    for seed, epoch, n in ((0, 0, 7), (99, 3, 12)):
        want = np.empty(n, np.int64)
        simcore.grid.batch_order(np.uint64(seed), epoch, n, want)
        assert np.array_equal(cb.batch_order_gpu(seed, epoch, n), want)


# --- the grid engine against the CPU engine -----------------------------------------------------

def assert_backends_agree(gpu, cpu, tol=TOL, skip_bn_bias=False):
    assert np.array_equal(gpu.diverged_at, cpu.diverged_at)
    assert np.array_equal(gpu.record_steps, cpu.record_steps)
    assert np.array_equal(np.isnan(gpu.final_loss), np.isnan(cpu.final_loss))
    ok = ~np.isnan(cpu.final_loss)
    assert rel_err(gpu.final_loss[ok], cpu.final_loss[ok]) <= tol
    for g in range(len(cpu.final_loss)):
        err = rel_err(flat(network(gpu, g), skip_bn_bias), flat(network(cpu, g), skip_bn_bias))
        assert err <= tol, f"network {g}: parameters differ by {err:.2e}"
    hg, hc = gpu.history(), cpu.history()
    assert list(hg.columns) == list(hc.columns) and len(hg) == len(hc)
    for col in hc.columns:
        a, b = hg[col].to_numpy(np.float64), hc[col].to_numpy(np.float64)
        assert np.array_equal(np.isnan(a), np.isnan(b)), col
        fin = ~np.isnan(b)
        if col == "saturated":  # a count of |f'| < 0.01: rounding may move a unit across
            assert np.abs(a[fin] - b[fin]).max(initial=0.0) <= 0.2, col
        else:
            assert rel_err(a[fin], b[fin]) <= tol, f"{col}: {rel_err(a[fin], b[fin]):.2e}"


def both(net, X, y, **kw):
    gpu = train_grid(net, X, y, backend="cuda", **kw)
    cpu = train_grid(net, X, y, backend="cpu", **kw)
    return gpu, cpu


def _data(kind, n=8):
    if kind == "ce":
        return simcore.datasets.spirals(n, n_classes=3, seed=1)
    if kind == "mse":
        return simcore.datasets.teacher_student(n, d_in=3, seed=2)
    return simcore.datasets.moons(n, seed=0)


LOSS_NETS = {
    "bce": lambda: MLP([2, 4, 3, 1], activation="tanh", loss="bce"),
    "ce": lambda: MLP([2, 5, 3], activation="relu", loss="ce", init="he"),
    "mse": lambda: MLP([3, 4, 1], activation="sigmoid", loss="mse"),
    "mse_sigmoid": lambda: MLP([2, 4, 1], activation="softplus", loss="mse_sigmoid"),
}
G3 = dict(lr=[0.3, 0.1, 0.6], seeds=[3, 7, 11], init_scale=[1.0, 0.5, 1.5],
          bias_scale=[0.0, 0.2, 0.1])


@needs_gpu
@pytest.mark.parametrize("loss", list(LOSS_NETS))
def test_engine_each_loss(loss):
    X, y = _data("ce" if loss == "ce" else "mse" if loss == "mse" else "bce")
    gpu, cpu = both(LOSS_NETS[loss](), X, y, steps=3, record_every=2, **G3)
    assert not cpu.diverged.any()
    assert_backends_agree(gpu, cpu)


@needs_gpu
@pytest.mark.parametrize("optimizer", ["momentum", "nesterov", "adam"])
def test_engine_each_optimizer_with_batchnorm(optimizer):
    X, y = _data("bce")
    net = MLP([2, 4, 3, 1], activation="leaky_relu", loss="bce", batchnorm=True)
    lr = [0.05, 0.02, 0.1] if optimizer == "adam" else [0.3, 0.1, 0.6]
    gpu, cpu = both(net, X, y, lr=lr, steps=3, record_every=3, seeds=[3, 7, 11],
                    optimizer=optimizer, **({} if optimizer == "adam" else {"momentum": [0.5, 0.9, 0.0]}))
    assert_backends_agree(gpu, cpu, skip_bn_bias=optimizer == "adam")


@needs_gpu
def test_engine_minibatches():
    """Batches of 3 of 8 samples (2 a epoch, 2 left out), 5 steps: three epochs with orders
    drawn on the device from each network's seed; the last record is on the full data."""
    X, y = _data("ce")
    net = MLP([2, 4, 3], activation="tanh", loss="ce", batchnorm=True)
    gpu, cpu = both(net, X, y, lr=[0.2, 0.5, 0.1], steps=5, record_every=2, seeds=[1, 2, 5],
                    optimizer="nesterov", momentum=0.5, batch_size=3)
    assert_backends_agree(gpu, cpu)


@needs_gpu
def test_engine_mixed_architectures_and_diverging_network():
    """A list of MLPs of different depths, widths, activations and batch norm (one compiled
    group each), with a learning rate that blows one network up: it is frozen at the same step
    with the same NaN telemetry on both backends, and its neighbours train on."""
    X, y = _data("bce")
    nets = [MLP([2, 3, 1], activation="identity", loss="bce"),
            MLP([2, 4, 4, 1], activation="tanh", loss="bce", batchnorm=True),
            MLP([2, 3, 1], activation="identity", loss="bce"),
            MLP([2, 5, 1], activation="sigmoid", loss="bce")]
    gpu, cpu = both(nets, X, y, lr=[0.5, 0.2, 3e7, 1.0], steps=4, record_every=2,
                    seeds=[1, 2, 3, 4], init_scale=[1.0, 1.0, 30.0, 1.0])
    assert cpu.diverged.tolist() == [False, False, True, False]
    assert_backends_agree(gpu, cpu)


@needs_gpu
def test_engine_weights_in_global_memory(gc, monkeypatch):
    """When parameters and gradients do not fit in shared memory they live in global scratch:
    the same numbers."""
    monkeypatch.setattr(gc, "_SHARED_BYTES", 0)
    X, y = _data("bce")
    gpu, cpu = both(LOSS_NETS["bce"](), X, y, steps=2, record_every=1, optimizer="adam",
                    lr=[0.05, 0.1, 0.02], seeds=[3, 7, 11])
    assert_backends_agree(gpu, cpu)


@needs_gpu
def test_engine_divergence_ref_and_determinism():
    """divergence_ref is honoured, and a second run gives the same bits."""
    X, y = _data("mse")
    net = LOSS_NETS["mse"]()
    kw = dict(lr=[0.1, 0.2, 0.4], steps=2, seeds=[0, 1, 2], divergence_ref=[1e-9, 10.0, 1e-9],
              record_every=1)
    gpu, cpu = both(net, X, y, **kw)
    assert cpu.diverged.any()
    assert_backends_agree(gpu, cpu)
    again = train_grid(net, X, y, backend="cuda", **kw)
    assert np.array_equal(again.final_loss, gpu.final_loss, equal_nan=True)
    assert np.array_equal(flat(again.params), flat(gpu.params))


@needs_gpu
def test_engine_float32():
    X, y = _data("bce")
    net = MLP([2, 4, 3, 1], activation="tanh", loss="bce", dtype="float32")
    gpu, cpu = both(net, X, y, steps=2, record_every=2, optimizer="momentum", momentum=0.5, **G3)
    assert gpu.params[0]["W"].dtype == np.float32
    assert rel_err(flat(gpu.params), flat(cpu.params)) <= 1e-5
    assert rel_err(gpu.final_loss, cpu.final_loss) <= 1e-5


@needs_gpu
@pytest.mark.parametrize("shared", [True, False])
def test_engine_polls_the_stop_flag(gc, monkeypatch, shared):
    """Ctrl-C raises a flag in host memory the kernel reads (simcore.interrupt.wait_device): a
    raised flag stops every network before its first step (parameters untouched), in both
    kernels; a lowered one is today's training. The SIGINT test on a real GPU is in
    tests/test_interrupt.py."""
    if not shared:
        monkeypatch.setattr(gc, "_SHARED_BYTES", 0)
    X, y = _data("bce")
    net = LOSS_NETS["bce"]()
    # 17 steps: the flag is read at steps 0 and 16 (gc.STOP_POLL_STEPS)
    kw = dict(lr=[0.3, 0.1, 0.6], seeds=[3, 7, 11], steps=gc.STOP_POLL_STEPS + 1, record_every=8)
    start = simcore.grid.initial_params(net, kw["seeds"])
    new_flag = gc.new_stop_flag
    raised = new_flag()
    raised[0] = 1
    monkeypatch.setattr(gc, "new_stop_flag", lambda: raised)
    stopped = train_grid(net, X, y, backend="cuda", **kw)
    assert np.array_equal(flat(stopped.params), flat(start))
    monkeypatch.setattr(gc, "new_stop_flag", new_flag)
    gpu, cpu = both(net, X, y, **kw)
    assert not np.array_equal(flat(gpu.params), flat(start))
    assert_backends_agree(gpu, cpu)


@needs_gpu
def test_engine_stops_when_the_flag_rises_mid_run(gc, monkeypatch):
    """The flag raised from another thread while the kernel runs (as Ctrl-C does): a training
    of 10^6 steps returns within seconds, its networks trained for some steps but not all. On
    a GPU the kernel reads host memory; under the simulator the same array from Python."""
    import threading
    X, y = _data("bce")
    net = LOSS_NETS["bce"]()
    raised = gc.new_stop_flag()
    monkeypatch.setattr(gc, "new_stop_flag", lambda: raised)
    timer = threading.Timer(1.0, lambda: raised.__setitem__(0, 1))
    timer.start()
    try:
        t0 = time.perf_counter()
        res = train_grid(net, X, y, backend="cuda", lr=[0.3, 0.1], seeds=[3, 7], steps=10**6,
                         record_every=10**6)
        took = time.perf_counter() - t0
    finally:
        timer.cancel()
    assert took < 60, f"took {took:.1f} s to stop"
    start = simcore.grid.initial_params(net, [3, 7])
    assert not np.array_equal(flat(res.params), flat(start))   # it trained before the flag rose


# --- every kernel compiles for a real GPU (PTX for sm_90, no GPU needed) --------------------------

PTX_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, numba
    try:
        from numba import cuda
        import numba.cuda.dispatcher as disp
    except Exception as exc:
        print("no numba-cuda:", exc); sys.exit(77)

    class Device:  # device functions ask the current device for its compute capability
        compute_capability = (9, 0)
    disp.get_current_device = lambda: Device()

    def ptx(func, args):
        return cuda.compile_ptx(func, tuple(numba.typeof(a) for a in args), cc=(9, 0))[0]

    try:
        ptx(lambda a: None, (np.zeros(1),))
    except Exception as exc:  # NVVM or NVRTC missing: a driver-less machine without the toolkit
        print("no NVVM/NVRTC:", type(exc).__name__, str(exc)[:200]); sys.exit(77)

    import simcore
    from simcore.grid import cuda as gc
    sys.path.insert(0, {tests!r})
    import cuda_blocks as cb
    gc.available = lambda: True
    compiled = []
    def compile_instead(name, body, blocks, *args):
        assert ".visible .entry" in ptx(body, args)
        compiled.append(name)
    cb._launch = compile_instead
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 3))
    for code in range(6):
        cb.activation_forward(code, z[0]); cb.activation_backward(code, z[0], z[1], z[2])
    cb.dense_forward(z, z[:3], z[0]); cb.dense_backward(z, z[:3], z)
    cb.batchnorm_forward(z, z[0], z[1]); cb.batchnorm_backward(z, z, z[0], z[1])
    cb.loss_grad(0, z, z)
    cb.optimizer_step(3, z[0].copy(), z[1], z[2].copy(), z[3].copy(), 1, 0.1)
    cb.fill_normal(1, 2, 1.0, np.empty(3)); cb.fill_uniform(1, 2, 1.0, np.empty(3))
    cb.batch_order_gpu(1, 0, 5)

    net = simcore.MLP([2, 6, 5, 1], activation="tanh", loss="bce", batchnorm=True)
    P, G, n, R = net.n_params, 3, 10, 3
    for dtype, shared in ((np.float64, True), (np.float32, False)):
        lofs, d1, d2, fsize, max_w, st_size = gc._scratch_layout(net.layout, n)
        args = (np.zeros((P, G), dtype), net.layout, 1, 2, np.zeros((n, 2), dtype),
                np.zeros((n, 1), dtype), np.zeros((4, 2), dtype), np.zeros((4, 1), dtype),
                np.arange(4, dtype=np.int64), np.zeros((R, 3, G)), np.zeros((3, G)), np.zeros(G, np.uint64), np.zeros(G), np.zeros(G),
                np.zeros(G), 0, np.zeros(G), np.zeros(G), np.zeros(7), np.zeros(G), False, 0,
                np.zeros((P, G), dtype), np.zeros((P, G), dtype), np.zeros(G, np.int64), 5, 4, 2, np.zeros((R, G)), np.zeros((R, net.n_layers, 7, G)),
                np.zeros(G, np.int64), np.zeros(G), lofs, d1, d2, np.zeros((2, fsize), dtype),
                np.zeros((2, st_size)), np.zeros((2, 2 * n), np.int64),
                np.zeros((2, 4 * P), dtype), np.zeros(1, np.int32))
        text = ptx(gc._train_kernel(dtype, 128, shared).py_func, args)
        assert ".visible .entry" in text
        # the stop flag is read inside a loop (between a label and a branch back to it): a
        # load LLVM could hoist out of the step loop would never see Ctrl-C
        lines = text.splitlines()
        loads = [i for i, ln in enumerate(lines) if "ld.volatile.global.u32" in ln]
        labels = {ln.strip().rstrip(":"): i for i, ln in enumerate(lines) if ln.strip().startswith("$L") and ln.strip().endswith(":")}
        loops = [(labels[ln.split()[-1].rstrip(";")], i) for i, ln in enumerate(lines)
                 if "bra" in ln and ln.split()[-1].rstrip(";") in labels and labels[ln.split()[-1].rstrip(";")] < i]
        assert loads and all(any(a < k < b for a, b in loops) for k in loads), "stop flag read outside the loop"
        compiled.append(f"train_{np.dtype(dtype).name}_{'shared' if shared else 'global'}")
    print("compiled:", " ".join(sorted(set(compiled))))
""")


@needs_gpu  # once per `make test`: in its simulator run
def test_every_kernel_compiles_to_ptx():
    """Typing and code generation for a real GPU (sm_90) of every kernel: the simulator runs
    kernels as Python and checks neither. Needs numba-cuda with NVVM and NVRTC (e.g.
    ``pip install "cuda-toolkit[nvvm,nvrtc]==13.*"``), no GPU; skipped where they are missing."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    script = PTX_SCRIPT.replace("{tests!r}", repr(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=900)
    if proc.returncode == 77:
        pytest.skip("cannot compile PTX here: " + proc.stdout.strip()[-300:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "train_float64_shared" in proc.stdout and "train_float32_global" in proc.stdout
