"""Ctrl-C for long compiled calls.

A compiled kernel holds no Python frame, so the interpreter cannot raise KeyboardInterrupt in
it: a SIGINT only sets a flag that Python looks at when the kernel returns. Long kernels
therefore run on worker threads (they release the GIL) while the calling thread waits in
short slices, where KeyboardInterrupt does arrive; it then sets a one-element ``stop`` array
that the kernels poll with :func:`stop_requested` once per step, waits for them to return,
and raises KeyboardInterrupt in the caller. Polling only ends a run early: an uninterrupted
run computes exactly what it computed without the flag.

A GPU kernel is asynchronous already: :func:`wait_device` polls for its end in the same short
slices, and on Ctrl-C writes the flag into host memory the device reads (a mapped array), then
waits for the device to leave.
"""
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core.extending import intrinsic

__all__ = ["stop_requested", "new_flag", "run_threads", "run_ranges", "wait_device"]

POLL_SECONDS = 0.05  # how often the waiting thread wakes to look for Ctrl-C


@intrinsic
def stop_requested(typingctx, flag):
    """True once ``flag[0]`` (an int64 array written by another thread) is non-zero.

    An atomic (monotonic) load: a plain load of memory the loop never writes could be hoisted
    out of the loop by LLVM, and the kernel would never see the request."""
    if not (isinstance(flag, types.Array) and flag.dtype == types.int64):
        return None
    sig = types.boolean(flag)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        value = builder.load_atomic(ary.data, "monotonic", 8)
        return builder.icmp_signed("!=", value, ir.Constant(value.type, 0))
    return sig, codegen


def new_flag():
    """A fresh stop flag: kernels read ``flag[0]``; non-zero asks them to return."""
    return np.zeros(1, np.int64)


def run_threads(kernel, arg_sets, flag):
    """Run ``kernel(*args)`` for each tuple in ``arg_sets`` on its own thread and wait for all.

    Ctrl-C while waiting sets ``flag[0] = 1``; the kernels must poll it with
    :func:`stop_requested` and return. Once every thread has returned, KeyboardInterrupt is
    raised here, so no thread outlives the call. A kernel's exception is re-raised."""
    pool = ThreadPoolExecutor(len(arg_sets))
    futures = []
    try:  # submitting inside: a Ctrl-C between two submits still stops the started threads
        for args in arg_sets:
            futures.append(pool.submit(kernel, *args))
        pending = futures
        while pending:
            _, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_EXCEPTION)
            if any(f.done() and f.exception() is not None for f in futures):
                flag[0] = 1   # a thread failed: stop the others, then raise its error below
                break
    except KeyboardInterrupt:
        flag[0] = 1
        _join(pool)
        raise
    _join(pool)
    for f in futures:
        f.result()


def run_ranges(kernel, args, n, extra=()):
    """Run ``kernel(*args, first, end, *extra, stop)`` over [0, n) split into contiguous
    ranges, one per worker thread (``numba.get_num_threads()`` of them, at most n), and wait as
    :func:`run_threads` does. The ranges are independent items (networks, blocks of networks),
    so the split never changes a result."""
    n_threads = max(1, min(numba.get_num_threads(), n))
    bounds = np.linspace(0, n, n_threads + 1).round().astype(int)
    stop = new_flag()
    run_threads(kernel, [(*args, int(a), int(b), *extra, stop) for a, b in zip(bounds[:-1], bounds[1:])],
                stop)


def wait_device(done, flag, synchronize):
    """Wait for asynchronous device work: poll ``done()`` every millisecond at first, every
    ``POLL_SECONDS`` after a while.

    Ctrl-C while waiting sets ``flag[0] = 1`` (memory the device kernel reads once in a while),
    then ``synchronize()`` waits for the device to return, through further Ctrl-C presses too,
    and KeyboardInterrupt is raised here, so no kernel outlives the call."""
    pause = 1e-3  # short at first, so that a quick kernel's call is not held up
    try:
        while not done():
            time.sleep(pause)
            pause = min(2 * pause, POLL_SECONDS)
    except KeyboardInterrupt:
        flag[0] = 1
        while True:
            try:
                synchronize()
                break
            except KeyboardInterrupt:
                continue
        raise


def _join(pool):
    """Wait for every thread of ``pool``, even through further Ctrl-C presses."""
    while True:
        try:
            pool.shutdown(wait=True)
            return
        except KeyboardInterrupt:
            continue
