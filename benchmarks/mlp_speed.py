#!/usr/bin/env python
"""Per-call speed of ``MLP.loss_and_grad`` against hand-written NumPy and PyTorch (CPU).

Two workloads, each in float32 and float64, timed side by side in one process:

* ``A``: MLP [64, 256, 256, 10], tanh, softmax cross-entropy (integer labels), batch 1024
  (BLAS-bound: the GEMMs should dominate).
* ``B``: MLP [2, 16, 16, 1], tanh, binary cross-entropy from logits, batch 256
  (overhead-bound: per-call Python and dispatch costs dominate).

Every implementation is first checked against simcore (loss and every gradient; float64 to
1e-10), then warmed up (compilation happens outside the timing), then timed interleaved:
each of ``--repeat`` rounds times one block of calls of every implementation (lasting about
``--min-time`` seconds), in a rotated order, with the garbage collector off inside a block.
The table reports the median per-call time over the rounds and the ratio of medians.

``--breakdown`` also splits simcore's call into its Python part (validation, packing,
target encoding, unpacking) and the compiled ``loss_and_grad_kernel`` called directly on
prepared arrays, and times the kernel's building blocks (GEMMs, activation loops, loss)
called one by one, next to their NumPy counterparts.

Usage::

    python benchmarks/mlp_speed.py                       # both dtypes, table
    python benchmarks/mlp_speed.py --dtype float64 --repeat 9 --json
    python benchmarks/mlp_speed.py --breakdown

Targets (reported, not asserted): A within 1.3x of NumPy and faster than torch;
B at least 5x faster than torch per call.
"""
import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

WORKLOADS = {
    "A": {"sizes": [64, 256, 256, 10], "loss": "ce", "batch": 1024},
    "B": {"sizes": [2, 16, 16, 1], "loss": "bce", "batch": 256},
}
TOL = {"float64": 1e-10, "float32": 2e-4}  # loss: abs; grads: max |diff| / max |g|


# --- data and reference implementations -----------------------------------------------------

def make_case(name, dtype, seed):
    """(net, params, X, y) for workload ``name``; fixed seed, params with non-zero biases."""
    import simcore
    w = WORKLOADS[name]
    sizes, n = w["sizes"], w["batch"]
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    if w["loss"] == "ce":
        y = rng.integers(0, sizes[-1], n).astype(np.int64)
    else:
        y = rng.integers(0, 2, n).astype(dtype)
    net = simcore.MLP(sizes, activation="tanh", loss=w["loss"], dtype=dtype)
    params = net.init(seed=seed, bias_scale=0.1)
    return net, params, X, y


def numpy_loss_and_grad(Ws, bs, X, y, loss):
    """Hand-written NumPy forward/backward: returns (loss, [dW...], [db...])."""
    acts = [X]
    a = X
    L = len(Ws)
    for l in range(L - 1):
        a = np.tanh(a @ Ws[l] + bs[l])
        acts.append(a)
    z = a @ Ws[-1] + bs[-1]
    n = X.shape[0]
    if loss == "ce":
        sh = z - z.max(axis=1, keepdims=True)
        e = np.exp(sh)
        s = e.sum(axis=1, keepdims=True)
        rows = np.arange(n)
        value = np.mean(np.log(s[:, 0]) - sh[rows, y])
        delta = e / s
        delta[rows, y] -= 1.0
        delta /= n
    else:  # bce from logits, stable
        t = y.reshape(z.shape)
        e = np.exp(-np.abs(z))
        value = np.mean(np.maximum(z, 0) - t * z + np.log1p(e))
        r = 1.0 / (1.0 + e)
        sig = np.where(z >= 0, r, e * r)
        delta = (sig - t) / z.size
    dWs, dbs = [None] * L, [None] * L
    for l in range(L - 1, -1, -1):
        a_prev = acts[l]
        dWs[l] = a_prev.T @ delta
        dbs[l] = delta.sum(axis=0)
        if l > 0:
            delta = (delta @ Ws[l].T) * (1.0 - a_prev * a_prev)
    return float(value), dWs, dbs


def make_numpy(net, params, X, y):
    Ws = [p["W"].copy() for p in params]
    bs = [p["b"].copy() for p in params]

    def call():
        return numpy_loss_and_grad(Ws, bs, X, y, net.loss)

    def grads(out):
        return out[0], [{"W": w, "b": b} for w, b in zip(out[1], out[2])]
    return call, grads


def make_torch(net, params, X, y):
    import torch
    F = torch.nn.functional
    tdt = torch.float64 if net.dtype == np.float64 else torch.float32
    mods = []
    for l, p in enumerate(params):
        lin = torch.nn.Linear(*p["W"].shape).to(tdt)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(p["W"].T)))
            lin.bias.copy_(torch.from_numpy(p["b"]))
        mods.append(lin)
        if l < len(params) - 1:
            mods.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*mods)
    model.train()
    lins = [m for m in model if isinstance(m, torch.nn.Linear)]
    Xt = torch.from_numpy(X)
    if net.loss == "ce":
        yt = torch.from_numpy(y).long()

        def lossf(z):
            return F.cross_entropy(z, yt)
    else:
        yt = torch.from_numpy(y).reshape(-1, net.sizes[-1])

        def lossf(z):
            return F.binary_cross_entropy_with_logits(z, yt)

    def call():
        model.zero_grad(set_to_none=True)
        loss = lossf(model(Xt))
        loss.backward()
        return loss.item()

    def grads(value):
        return value, [{"W": m.weight.grad.numpy().T, "b": m.bias.grad.numpy()} for m in lins]
    return call, grads


def make_simcore(net, params, X, y):
    def call():
        return net.loss_and_grad(params, X, y)

    def grads(out):
        return out
    return call, grads


def compare(ref, other, dtype, label):
    """Assert ``other`` (loss, grads) matches ``ref`` to the dtype's tolerance; return errors."""
    tol = TOL[dtype]
    (l0, g0), (l1, g1) = ref, other
    loss_err = abs(l0 - l1)
    grad_err = 0.0
    for a, b in zip(g0, g1):
        for key in ("W", "b"):
            x, z = np.asarray(a[key], np.float64), np.asarray(b[key], np.float64)
            assert x.shape == z.shape, (label, key, x.shape, z.shape)
            scale = max(np.abs(x).max(), 1e-30)
            grad_err = max(grad_err, float(np.abs(x - z).max() / scale))
    ok = loss_err <= tol * max(1.0, abs(l0)) and grad_err <= (1e-9 if dtype == "float64" else tol)
    assert ok, f"{label}: loss |diff| {loss_err:.3g}, grad rel diff {grad_err:.3g} (tol {tol:g})"
    return loss_err, grad_err


# --- timing -----------------------------------------------------------------------------------

def _block(fn, n):
    gc_was = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - t0
    finally:
        if gc_was:
            gc.enable()


def calls_for(fn, min_time):
    """Number of calls that makes one block last about ``min_time`` seconds."""
    n = 1
    while True:
        dt = _block(fn, n)
        if dt >= min_time / 5 or n >= 1 << 24:
            return max(1, int(round(n * min_time / max(dt, 1e-9))))
        n *= 4 if dt < min_time / 50 else 2


def time_side_by_side(fns, repeat, min_time):
    """{name: [seconds per call, one per round]}: blocks interleaved, order rotated per round."""
    names = list(fns)
    counts = {k: calls_for(fns[k], min_time) for k in names}
    out = {k: [] for k in names}
    for r in range(repeat):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            gc.collect()
            out[k].append(_block(fns[k], counts[k]) / counts[k])
    return out, counts


def med_us(ts):
    return statistics.median(ts) * 1e6


# --- the benchmark ----------------------------------------------------------------------------

def run_case(name, dtype, args):
    net, params, X, y = make_case(name, dtype, args.seed)
    impls = {"simcore": make_simcore(net, params, X, y), "numpy": make_numpy(net, params, X, y)}
    if not args.no_torch:
        impls["torch"] = make_torch(net, params, X, y)
    # warm up (compiles simcore's kernels), then check every implementation against simcore
    results = {}
    for k, (call, grads) in impls.items():
        for _ in range(3):
            out = call()
        results[k] = grads(out)
    errs = {k: compare(results["simcore"], results[k], dtype, f"{name}/{dtype}/{k}")
            for k in impls if k != "simcore"}
    # numpy (float64) vs simcore to 1e-10 is the brief's acceptance check
    fns = {k: v[0] for k, v in impls.items()}
    times, counts = time_side_by_side(fns, args.repeat, args.min_time)
    s, npy = med_us(times["simcore"]), med_us(times["numpy"])
    row = {"workload": name, "sizes": WORKLOADS[name]["sizes"], "loss_fn": WORKLOADS[name]["loss"],
           "batch": WORKLOADS[name]["batch"], "dtype": dtype,
           "simcore_us": s, "numpy_us": npy, "ratio_simcore_numpy": s / npy,
           "loss_value": results["simcore"][0], "calls_per_block": counts, "repeat": args.repeat,
           "max_err": {k: {"loss_abs": e[0], "grad_rel": e[1]} for k, e in errs.items()},
           "spread_us": {k: [min(v) * 1e6, max(v) * 1e6] for k, v in times.items()}}
    if "torch" in times:
        t = med_us(times["torch"])
        row["torch_us"] = t
        row["ratio_torch_simcore"] = t / s
    if name == "A":
        row["target"] = "simcore/numpy <= 1.3 and torch/simcore > 1"
        row["target_met"] = row["ratio_simcore_numpy"] <= 1.3 and row.get("ratio_torch_simcore", 2) > 1
    else:
        row["target"] = "torch/simcore >= 5"
        row["target_met"] = row.get("ratio_torch_simcore", 5) >= 5
    return row


def breakdown(name, dtype, args):
    """Split simcore's loss_and_grad into Python work and the compiled kernel; time the
    kernel's building blocks one by one (each a separate dispatcher call from Python)."""
    from simcore import mlp as M
    from simcore.activations import backward as act_bwd, forward as act_fwd
    from simcore.layers import dense_backward_kernel, dense_forward_kernel
    from simcore.losses import encode_targets, loss_grad
    from numba import njit

    net, params, X, y = make_case(name, dtype, args.seed)
    theta = net.pack(params)
    Xc = net.check_X(X)
    Y = encode_targets(net.loss, y, X.shape[0], net.sizes[-1], net.dtype)
    running = np.empty(net.n_running, net.dtype)
    grad = np.empty_like(theta)
    mode = M.TRAIN_NO_UPDATE
    kargs = (theta, net.layout, net.act_code, net.loss_code, Xc, Y, grad, running, mode)

    @njit(cache=False)
    def noop(theta, layout, act, loss_code, X, Y, grad, running, mode):
        return 0.0

    parts = {
        "api loss_and_grad": lambda: net.loss_and_grad(params, X, y),
        "kernel (direct)": lambda: M.loss_and_grad_kernel(*kargs),
        "dispatch of a no-op njit, same args": lambda: noop(*kargs),
        "pack(params)": lambda: net.pack(params),
        "check_X(X)": lambda: net.check_X(X),
        "encode_targets(y)": lambda: encode_targets(net.loss, y, X.shape[0], net.sizes[-1], net.dtype),
        "allocs (running, grad)": lambda: (np.empty(net.n_running, net.dtype), np.empty_like(theta)),
        "unpack(grad)": lambda: net.unpack(grad),
        "forward_kernel (direct)": lambda: M.forward_kernel(theta, net.layout, net.act_code, Xc, running, mode),
    }
    # building blocks on the shapes of this workload, with the kernel's own arrays
    Ws = [p["W"] for p in net.unpack(theta)]
    bs = [p["b"] for p in net.unpack(theta)]
    n = X.shape[0]
    a = [Xc]
    zs = []
    for l, W in enumerate(Ws):
        z = np.empty((n, W.shape[1]), net.dtype)
        dense_forward_kernel(a[l], W, bs[l], z)
        zs.append(z)
        if l < len(Ws) - 1:
            nxt = np.empty_like(z)
            act_fwd(net.act_code, z.reshape(-1), nxt.reshape(-1))
            a.append(nxt)
    delta = np.empty_like(zs[-1])
    blocks = {}
    for l, W in enumerate(Ws):
        fi, fo = W.shape
        z = np.empty((n, fo), net.dtype)
        dW, db = np.empty_like(W), np.empty(fo, net.dtype)
        da = np.empty_like(a[l])
        blocks[f"L{l} dense_forward ({n}x{fi} @ {fi}x{fo})"] = (
            lambda l=l, W=W, z=z: dense_forward_kernel(a[l], W, bs[l], z),
            lambda l=l, W=W: a[l] @ W + bs[l])
        if l < len(Ws) - 1:
            out = np.empty_like(zs[l])
            blocks[f"L{l} tanh forward ({n}x{fo})"] = (
                lambda l=l, out=out: act_fwd(net.act_code, zs[l].reshape(-1), out.reshape(-1)),
                lambda l=l: np.tanh(zs[l]))
            g = np.ones_like(zs[l])
            blocks[f"L{l} tanh backward ({n}x{fo})"] = (
                lambda l=l, g=g, out=out: act_bwd(net.act_code, zs[l].reshape(-1), a[l + 1].reshape(-1),
                                                 g.reshape(-1), out.reshape(-1)),
                lambda l=l, g=g: g * (1.0 - a[l + 1] * a[l + 1]))
        dd = np.ones((n, fo), net.dtype) * 1e-3
        blocks[f"L{l} dense_backward (dW, db{', da' if l else ''})"] = (
            lambda l=l, W=W, dd=dd, dW=dW, db=db, da=da: dense_backward_kernel(
                a[l], W, dd, dW, db, da, l > 0),
            (lambda l=l, W=W, dd=dd: (a[l].T @ dd, dd.sum(0), dd @ W.T)) if l else
            (lambda l=l, W=W, dd=dd: (a[l].T @ dd, dd.sum(0))))
    blocks[f"loss_grad {net.loss} ({n}x{net.sizes[-1]})"] = (
        lambda: loss_grad(net.loss_code, zs[-1], Y, delta), None)

    for k in list(parts) + list(blocks):
        fn = parts[k] if k in parts else blocks[k][0]
        fn()
        fn()
    fns = dict(parts)
    for k, (s_fn, n_fn) in blocks.items():
        fns["simcore " + k] = s_fn
        if n_fn is not None:
            fns["numpy   " + k] = n_fn
    times, _ = time_side_by_side(fns, args.repeat, args.min_time / 4)
    res = {k: med_us(v) for k, v in times.items()}
    # fresh-memory page faults per call: large temporaries that malloc hands back to the OS
    # (mmap/trim) are faulted in again on every call
    npc = make_numpy(net, params, X, y)[0]
    for k, fn in (("api loss_and_grad", parts["api loss_and_grad"]),
                  ("kernel (direct)", parts["kernel (direct)"]), ("numpy loss_and_grad", npc)):
        res[f"minor page faults per call: {k}"] = _faults_per_call(fn)
    return res


def _faults_per_call(fn, n=5):
    try:
        import resource
    except ImportError:
        return float("nan")
    fn()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n


def _loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def environment():
    import numba
    info = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "cpus": os.cpu_count(), "SIMCORE_FASTMATH": os.environ.get("SIMCORE_FASTMATH", "1"),
            "SIMCORE_CACHE": os.environ.get("SIMCORE_CACHE", "1")}
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = sorted({f"{d.get('internal_api')}:{os.path.basename(d.get('filepath', ''))}"
                               f"x{d.get('num_threads')}" for d in threadpool_info()})
    except ImportError:
        pass
    return info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=7, help="timed rounds per implementation (median)")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per timed block")
    p.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    p.add_argument("--workload", choices=("A", "B", "both"), default="both")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="limit every loaded BLAS (numpy's and scipy's OpenBLAS, the latter used by "
                        "numba's np.dot) to N threads with threadpoolctl (default: leave as is)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON line per case instead of a table")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--breakdown", action="store_true",
                   help="also split simcore's call into Python work, kernel and building blocks")
    args = p.parse_args(argv)
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            args.no_torch = True
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    names = ["A", "B"] if args.workload == "both" else [args.workload]
    import scipy.linalg.cython_blas  # noqa: F401  (load scipy's BLAS now, so limits reach it)
    if args.blas_threads is not None:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=args.blas_threads, user_api="blas")
    env = environment()
    env["loadavg_start"] = _loadavg()
    if not args.json:
        print("# " + json.dumps(env))
        if (env["loadavg_start"] or 0) > 0.5 * (os.cpu_count() or 1):
            print("# WARNING: the machine is busy (load average above half its CPUs): multi-threaded "
                  "BLAS/OpenMP timings (torch above all) can be inflated many-fold by spinning "
                  "threads; compare with --threads 1 --blas-threads 1")
        print(f"# median of {args.repeat} rounds, each a block of ~{args.min_time}s of calls; "
              "ratios are of medians measured in the same run")
        hdr = (f"{'workload':<22} {'dtype':<8} {'simcore us':>11} {'numpy us':>10} {'torch us':>10} "
               f"{'simcore/numpy':>14} {'torch/simcore':>14}  target")
        print(hdr)
        print("-" * len(hdr))
    rows = []
    for name in names:
        for dt in dtypes:
            row = run_case(name, dt, args)
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                w = WORKLOADS[name]
                label = f"{name} {'-'.join(map(str, w['sizes']))} b{w['batch']}"
                t = f"{row['torch_us']:10.1f}" if "torch_us" in row else f"{'-':>10}"
                r = f"{row['ratio_torch_simcore']:14.2f}" if "torch_us" in row else f"{'-':>14}"
                print(f"{label:<22} {dt:<8} {row['simcore_us']:11.1f} {row['numpy_us']:10.1f} {t} "
                      f"{row['ratio_simcore_numpy']:14.2f} {r}  "
                      f"{'met' if row['target_met'] else 'MISSED'} ({row['target']})", flush=True)
    if not args.json:
        print("# per-round spread (min..max us): " + "; ".join(
            f"{r['workload']}/{r['dtype']} " + " ".join(f"{k} {a:.0f}..{b:.0f}"
                                                      for k, (a, b) in r["spread_us"].items())
            for r in rows))
        print(f"# 1-min load average: start {env['loadavg_start']}, end {_loadavg()} "
              f"(machine has {os.cpu_count()} CPUs; other processes skew multi-threaded timings)")
    if args.breakdown:
        for name in names:
            for dt in dtypes:
                res = breakdown(name, dt, args)
                if args.json:
                    print(json.dumps({"breakdown": name, "dtype": dt, "us": res}), flush=True)
                    continue
                print(f"\n# breakdown {name} {dt} (median us per call; each line a separate "
                      "call from Python, so it includes ~dispatch overhead; simcore blocks write "
                      "into preallocated outputs, numpy blocks allocate their results)")
                for k, v in res.items():
                    print(f"  {k:<58} {v:10.2f}")
                py = sum(res[k] for k in ("pack(params)", "check_X(X)", "encode_targets(y)",
                                          "allocs (running, grad)", "unpack(grad)"))
                api, ker = res["api loss_and_grad"], res["kernel (direct)"]
                print(f"  => kernel {ker:.1f} us = {100 * ker / api:.0f}% of the API call {api:.1f} us; "
                      f"API - kernel = {api - ker:.1f} us (sum of the Python pieces {py:.1f} us)")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
