"""W1 side by side: simcore's grid engine against JAX jit(vmap), PyTorch batched and a PyTorch loop.

Workload W1 (see ``benchmarks/w1_peers.py``): G MLPs 2-16-16-1 (tanh, BCE from logits), 256
two-moons samples, 500 full-batch gradient-descent steps, lr[g] = geomspace(1e-2, 3, G)[g], the
same Glorot initial weights for every implementation. Each implementation runs in its own fresh
process, one after the other, in one invocation of this script; the machine's GEMM rate
(numpy ``a @ b``, 2048^2) is measured in the same run. Every implementation must reproduce the
same final losses (median, first, last) -- the table shows the median so a reader can check.

Run:  make bench-peers      (or: python benchmarks/peers.py --G 256 --dtype both)
Needs the optional extra ``peers`` (jax, jaxlib, torch==2.13.0); missing peers are skipped.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def gemm_gflops(dtype, n=2048, repeat=5):
    a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    a @ a
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        a @ a
        ts.append(time.perf_counter() - t)
    return 2 * n ** 3 / np.median(ts) / 1e9


def run_simcore(G, S, dtype, repeat):
    sys.path.insert(0, HERE)
    import w1_peers as w1
    import simcore
    dt = np.dtype(dtype).type
    X, y = w1.make_data(256)
    P = w1.init_params(G, 16, dtype=dt)
    lr = w1.lrs_for(G)
    net = simcore.MLP([2, 16, 16, 1], activation="tanh", loss="bce", dtype=dtype)
    params0 = [{"W": P[0], "b": P[1]}, {"W": P[2], "b": P[3]}, {"W": P[4], "b": P[5]}]
    t = time.perf_counter()
    simcore.train_grid(net, X, y, lr=lr[:2], steps=1, params0=[{k: v[:2] for k, v in d.items()} for d in params0])
    compile_s = time.perf_counter() - t
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        res = simcore.train_grid(net, X, y, lr=lr, steps=S, params0=params0, record_every=S)
        ts.append(time.perf_counter() - t)
    dtm = float(np.median(ts))
    r = res.final_loss
    return dict(impl="simcore", G=G, S=S, dtype=dtype, seconds=round(dtm, 4), compile_s=round(compile_s, 3),
                trainings_per_s=round(G / dtm, 2), gflops=round(w1.flops(256, 16, S) * G / dtm / 1e9, 3),
                loss_median=float(np.nanmedian(r)), loss_first=float(r[0]), loss_last=float(r[-1]))


def subprocess_json(args, env=None):
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--G", type=int, default=256)
    ap.add_argument("--S", type=int, default=500)
    ap.add_argument("--loop-G", type=int, default=16,
                    help="networks for the plain PyTorch loop (its rate per training does not depend on G)")
    ap.add_argument("--dtype", choices=["float32", "float64", "both"], default="both")
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats of simcore (median)")
    ap.add_argument("--only", nargs="*", default=None, help="subset of: simcore jax torch_batched torch_loop")
    ap.add_argument("--json", action="store_true", help="print the raw JSON lines too")
    ap.add_argument("--internal-simcore", nargs=2, metavar=("G", "DTYPE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.internal_simcore:
        print(json.dumps(run_simcore(int(a.internal_simcore[0]), a.S, a.internal_simcore[1], a.repeat)))
        return
    dtypes = ["float64", "float32"] if a.dtype == "both" else [a.dtype]
    impls = a.only or ["simcore", "jax", "torch_batched", "torch_loop"]
    rows = []
    for dtype in dtypes:
        gemm = gemm_gflops(np.dtype(dtype).type)
        for impl in impls:
            G = a.loop_G if impl == "torch_loop" else a.G
            if impl == "simcore":
                r = subprocess_json([sys.executable, __file__, "--S", str(a.S), "--repeat", str(a.repeat),
                                     "--internal-simcore", str(G), dtype])
            else:
                r = subprocess_json([sys.executable, os.path.join(HERE, "w1_peers.py"), impl, "--G", str(G),
                                     "--S", str(a.S), "--dtype", dtype])
            r.update(impl=impl, dtype=dtype, G=G, gemm_gflops=round(gemm, 1))
            rows.append(r)
            if a.json:
                print(json.dumps(r), flush=True)
    print(f"\nW1: 2-16-16-1 tanh/BCE, n=256, S={a.S} full-batch GD steps; G={a.G} "
          f"(PyTorch loop: G={a.loop_G}); {os.cpu_count()} CPUs\n")
    head = f"{'impl':<14}{'dtype':<9}{'trainings/s':>12}{'x JAX':>8}{'x loop':>8}{'GFLOP/s':>9}{'% GEMM':>8}{'compile s':>10}{'loss median':>22}"
    print(head)
    print("-" * len(head))
    for dtype in dtypes:
        by = {r["impl"]: r for r in rows if r["dtype"] == dtype}
        ref_jax = by.get("jax", {}).get("trainings_per_s")
        ref_loop = by.get("torch_loop", {}).get("trainings_per_s")
        for impl in impls:
            r = by[impl]
            if "error" in r:
                print(f"{impl:<14}{dtype:<9}  skipped: {r['error'][:80]}")
                continue
            tps = r["trainings_per_s"]
            xj = f"{tps / ref_jax:.2f}" if ref_jax else "-"
            xl = f"{tps / ref_loop:.1f}" if ref_loop else "-"
            pct = 100 * r["gflops"] / r["gemm_gflops"]
            print(f"{impl:<14}{dtype:<9}{tps:>12.2f}{xj:>8}{xl:>8}{r['gflops']:>9.2f}{pct:>7.1f}%"
                  f"{r.get('compile_s', 0):>10.2f}{r['loss_median']:>22.15f}")
    print("\nGEMM rate (numpy a @ a, 2048^2, same run): "
          + ", ".join(f"{d} {next(r['gemm_gflops'] for r in rows if r['dtype'] == d)} GFLOP/s" for d in dtypes))


if __name__ == "__main__":
    main()
