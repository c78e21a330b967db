"""simcore's grid engine against JAX jit(vmap), side by side, on the suite of ``workloads.py``.

For every workload (W1; the width sweep H = 16 ... 256; the digits network; W1 with batch norm)
and both dtypes, each implementation runs in its own fresh process, one after the other, in
one invocation of this script, and reports trainings/s (median of ``--repeat`` timed calls,
compile excluded), GFLOP/s and the fraction of the machine's GEMM rate (numpy ``a @ a``,
2048^2, all threads) measured in the same run. Both start from the same initial weights, and
their losses after ``--check-steps`` (30) steps are compared: float64 must agree to 1e-10
relative on the well-conditioned networks, those with lr <= ``CHECK_LR`` whose own 30-step loss
moves by less than a tenth of that when every input moves by one ulp (large-lr networks are
chaotic, and the odd small-lr one passes through an ill-conditioned stretch: there rounding
differences grow by orders of magnitude within 30 steps, whichever implementation rounds).
The table shows that difference, how many networks were set aside as ill-conditioned, and the
largest difference over all networks. ``--torch`` adds PyTorch (batched and
a plain loop) on W1, from ``w1_peers.py``.

Run:  make bench-peers      (or: python benchmarks/peers.py [--only W1 digits] [--dtype float64])
Needs the optional extra ``peers`` (jax, jaxlib, torch==2.13.0); a missing peer is reported as
skipped. Exits non-zero if a float64 check fails.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import workloads  # noqa: E402

F64_CHECK = 1e-10
CHECK_LR = 0.1


def gemm_gflops(dtype, n=2048, repeat=5):
    a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    a @ a
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        a @ a
        ts.append(time.perf_counter() - t)
    return 2 * n ** 3 / np.median(ts) / 1e9


def child(impl, name, dtype, repeat, check_steps, strategy):
    """One implementation on one workload, in this (fresh) process: a JSON line."""
    w = workloads.WORKLOADS[name]
    dt = np.dtype(dtype).type
    G, S = w["G"], w["S"]
    if impl == "simcore":
        r, sec, first_s, how = workloads.run_simcore(w, G, S, dt, repeat, strategy)
        check, _, _, _ = workloads.run_simcore(w, G, check_steps, dt, 1, strategy)
        nudged, _, _, _ = workloads.run_simcore(w, G, check_steps, dt, 1, strategy, nudge=True)
        extra = {"first_call_s": round(first_s, 3), "strategy": how,
                 "sensitivity": [float(x) for x in np.abs(check - nudged) / np.maximum(np.abs(nudged), 1e-300)]}
    else:
        r, sec, compile_s = workloads.run_jax(w, G, S, dt, repeat)
        check, _, _ = workloads.run_jax(w, G, check_steps, dt, 1)
        extra = {"first_call_s": round(compile_s, 3)}
    n = workloads.data(w)[0].shape[0]
    return dict(impl=impl, workload=name, dtype=dtype, G=G, S=S, seconds=round(sec, 4),
                trainings_per_s=round(G / sec, 3), gflops=round(workloads.flops(w, n, S) * G / sec / 1e9, 3),
                loss_median=float(np.nanmedian(r)), check_losses=[float(x) for x in check], **extra)


def subprocess_json(args):
    out = subprocess.run(args, capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(lines[-1])


def rel_diff(a, b):
    a, b = np.asarray(a), np.asarray(b)
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return float("nan")
    return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-300)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help=f"workloads, of: {' '.join(workloads.WORKLOADS)}")
    ap.add_argument("--dtype", choices=["float32", "float64", "both"], default="both")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per implementation (median)")
    ap.add_argument("--check-steps", type=int, default=30, help="steps after which the losses are compared")
    ap.add_argument("--strategy", default="auto", help="simcore's strategy (auto, lanes, gemm)")
    ap.add_argument("--torch", action="store_true", help="add PyTorch batched and a PyTorch loop on W1")
    ap.add_argument("--json", metavar="FILE", help="also write every row as JSON lines to FILE")
    ap.add_argument("--internal", nargs=3, metavar=("IMPL", "WORKLOAD", "DTYPE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.internal:
        print(json.dumps(child(*a.internal, a.repeat, a.check_steps, a.strategy)))
        return 0
    names = a.only or list(workloads.WORKLOADS)
    unknown = [x for x in names if x not in workloads.WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {list(workloads.WORKLOADS)}")
    dtypes = ["float64", "float32"] if a.dtype == "both" else [a.dtype]
    rows, failed = [], []
    gemm = {d: gemm_gflops(np.dtype(d).type) for d in dtypes}
    for name in names:
        for dtype in dtypes:
            pair = {}
            for impl in ("simcore", "jax"):
                r = subprocess_json([sys.executable, __file__, "--internal", impl, name, dtype,
                                     "--repeat", str(a.repeat), "--check-steps", str(a.check_steps),
                                     "--strategy", a.strategy])
                r.update(impl=impl, workload=name, dtype=dtype, gemm_gflops=round(gemm[dtype], 1))
                pair[impl] = r
                rows.append(r)
            s, j = pair["simcore"], pair["jax"]
            if "error" not in s and "error" not in j:
                s["x_jax"] = s["trainings_per_s"] / j["trainings_per_s"]
                calm = workloads.lrs(workloads.WORKLOADS[name], len(s["check_losses"])) <= CHECK_LR
                sens = np.nan_to_num(np.asarray(s["sensitivity"]), nan=np.inf)
                s["ill_conditioned"] = int((calm & ~(sens <= F64_CHECK / 10)).sum())
                calm &= sens <= F64_CHECK / 10
                s["check_all"] = rel_diff(s["check_losses"], j["check_losses"])
                s["check_rel"] = rel_diff(np.asarray(s["check_losses"])[calm], np.asarray(j["check_losses"])[calm])
                if dtype == "float64" and not s["check_rel"] <= F64_CHECK:
                    failed.append(f"{name} {dtype}: losses after {a.check_steps} steps differ by {s['check_rel']:.2e}")
            print(_line(s, j), flush=True)
    if a.torch and "W1" in names:
        for dtype in dtypes:
            for impl in ("torch_batched", "torch_loop"):
                G = 16 if impl == "torch_loop" else workloads.WORKLOADS["W1"]["G"]
                r = subprocess_json([sys.executable, os.path.join(HERE, "w1_peers.py"), impl, "--G", str(G),
                                     "--S", "500", "--dtype", dtype])
                r.update(impl=impl, workload="W1", dtype=dtype, gemm_gflops=round(gemm[dtype], 1))
                rows.append(r)
                print(f"  W1 {dtype} {impl}: " + (r["error"] if "error" in r else
                      f"{r['trainings_per_s']:.2f} trainings/s (G={G}), loss median {r['loss_median']:.12f}"))
    print("\nGEMM rate (numpy a @ a, 2048^2, all threads, same run): "
          + ", ".join(f"{d} {gemm[d]:.1f} GFLOP/s" for d in dtypes) + f"; {os.cpu_count()} CPUs")
    if a.json:
        with open(a.json, "w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
    for f in failed:
        print("CHECK FAILED:", f)
    return 1 if failed else 0


HEADER = (f"| workload | dtype | G | steps | simcore /s | JAX /s | simcore / JAX | simcore GFLOP/s | "
          f"% GEMM | JAX GFLOP/s | strategy | 30-step diff, lr <= {CHECK_LR} | ill-conditioned | all | "
          f"first call s |\n"
          f"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def _line(s, j):
    if not hasattr(_line, "started"):
        print(HEADER)
        _line.started = True
    w = f"| {s['workload']} | {s['dtype']} | {workloads.WORKLOADS[s['workload']]['G']} | " \
        f"{workloads.WORKLOADS[s['workload']]['S']} |"
    if "error" in s:
        return f"{w} simcore failed: {s['error'][:100]} |"
    if "error" in j:
        return (f"{w} {s['trainings_per_s']:.2f} | skipped: {j['error'][:60]} | | {s['gflops']:.1f} | "
                f"{100 * s['gflops'] / s['gemm_gflops']:.0f}% | | {s['strategy']} | | | | {s['first_call_s']:.1f} |")
    return (f"{w} {s['trainings_per_s']:.2f} | {j['trainings_per_s']:.2f} | **{s['x_jax']:.2f}x** | "
            f"{s['gflops']:.1f} | {100 * s['gflops'] / s['gemm_gflops']:.0f}% | {j['gflops']:.1f} | "
            f"{s['strategy']} | {s['check_rel']:.1e} | {s['ill_conditioned']} | {s['check_all']:.1e} | "
            f"{s['first_call_s']:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
