"""Ctrl-C stops long compiled calls (simcore.interrupt): a child process gets SIGINT in the
middle of a training of 10^9 steps (a power iteration of 10^9 products, 10^8 perceptron epochs) and must raise
KeyboardInterrupt within about a second, with no thread left running."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import cpu_kernel_args
from simcore import MLP, datasets
from simcore.interrupt import new_flag, run_threads, wait_device

CHILD = textwrap.dedent("""
    import signal, sys, threading, numba
    # a test run started in the background by a shell inherits SIGINT ignored, and Python then
    # raises no KeyboardInterrupt: give the child Python's own handler whatever its parent had
    signal.signal(signal.SIGINT, signal.default_int_handler)
    numba.set_num_threads({threads})
    import numpy as np, simcore
    from simcore import MLP, train_grid
    from simcore.hessian import sharpness
    X, y = simcore.datasets.moons(64, seed=0)
    net = MLP({sizes}, activation="tanh", loss="bce")
    G = {G}
    def call(steps):
        if "{what}" == "perceptron":  # XOR: never separable, so every epoch runs
            Xp = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]] * 16)
            simcore.perceptron.train(Xp, np.array([1, 1, -1, -1] * 16), max_epochs=min(steps, 10**8))
        elif "{what}" == "sharpness":
            params = simcore.grid.initial_params(net, np.arange(G))
            sharpness(net, params, X, y, iters=steps, tol=1e-300)
        elif "{what}" == "cuda":
            train_grid(net, X, y, lr=np.full(G, 1e-3), steps=steps, record_every=steps,
                       backend="cuda")
        else:
            train_grid(net, X, y, lr=np.full(G, 1e-3), steps=steps, record_every=steps,
                       strategy="{what}")
    call(2)  # compiled (or loaded from the cache) before the clock starts
    print("ready", flush=True)
    try:
        call(10**9)
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", threading.active_count(), flush=True)
""")

CASES = [("lanes", 1, [2, 8, 8, 1], 40), ("lanes", 2, [2, 8, 8, 1], 40),
         ("gemm", 1, [2, 32, 32, 1], 4), ("gemm", 2, [2, 32, 32, 1], 4),
         ("sharpness", 2, [2, 8, 8, 1], 4), ("perceptron", 1, [2, 1], 1),
         ("cuda", 1, [2, 8, 8, 1], 40)]


def _real_gpu():
    """Whether a child process (without the CUDA simulator) finds a CUDA GPU."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    code = "from numba import cuda; print(cuda.is_available())"
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return proc.stdout.strip().endswith("True")


@pytest.mark.parametrize("what,threads,sizes,G", CASES, ids=[f"{c[0]}-{c[1]}threads" for c in CASES])
def test_sigint_stops_a_long_compiled_call(what, threads, sizes, G):
    env = None
    if what == "cuda":  # the kernel reads a flag in mapped host memory: needs a real GPU
        if not _real_gpu():
            pytest.skip("no CUDA GPU: the simulator runs a launch to its end in Python")
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    code = CHILD.format(what=what, threads=threads, sizes=sizes, G=G)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(1.0)  # well inside the 10^9-step call
        assert child.poll() is None
        sent = time.perf_counter()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
        took = time.perf_counter() - sent
    finally:
        if child.poll() is None:
            child.kill()
    # the main thread alone is left: every worker thread returned
    assert out.split() == ["interrupted", "1"], (out, err)
    print(f"{what}, {threads} threads: stopped {took:.3f} s after SIGINT")
    assert took < 3.0, f"took {took:.2f} s to stop after SIGINT"


@pytest.mark.parametrize("strategy", ["lanes", "gemm"])
def test_kernels_poll_the_stop_flag(strategy):
    """A raised flag stops a kernel before its first step (theta untouched); a lowered one
    lets it train."""
    from simcore.grid import cpu, cpu_gemm
    kernel = (cpu if strategy == "lanes" else cpu_gemm).train_kernel(False)
    X, y = datasets.moons(32, seed=1)
    net = MLP([2, 4, 1], activation="tanh", loss="bce")
    args = cpu_kernel_args(net, X, y, steps=3, record_every=3)
    before = args[0].copy()
    stop = new_flag()
    stop[0] = 1
    kernel(*args, stop)
    assert np.array_equal(args[0], before)
    stop[0] = 0
    kernel(*args, stop)
    assert not np.array_equal(args[0], before)


def test_run_threads_reraises_a_threads_error_after_stopping_the_others():
    flag = new_flag()

    def work(i):
        if i == 1:
            raise RuntimeError("boom")
        while not flag[0]:
            time.sleep(0.01)

    with pytest.raises(RuntimeError, match="boom"):
        run_threads(work, [(0,), (1,)], flag)
    assert flag[0] == 1


def test_wait_device_polls_until_done_and_leaves_the_flag_alone():
    flag = new_flag()
    answers = iter([False, False, True])
    wait_device(lambda: next(answers), flag, synchronize=lambda: pytest.fail("not interrupted"))
    assert flag[0] == 0 and next(answers, "spent") == "spent"


def test_wait_device_on_ctrl_c_raises_the_flag_and_waits_for_the_device():
    """Ctrl-C while waiting: the flag goes up, the device is waited for through a second
    Ctrl-C, and KeyboardInterrupt reaches the caller only then."""
    flag = new_flag()
    calls = []

    def done():
        raise KeyboardInterrupt

    def synchronize():
        calls.append(int(flag[0]))
        if len(calls) == 1:
            raise KeyboardInterrupt  # the user presses Ctrl-C again while the device finishes

    with pytest.raises(KeyboardInterrupt):
        wait_device(done, flag, synchronize)
    assert calls == [1, 1]
