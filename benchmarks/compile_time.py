#!/usr/bin/env python
"""User-facing compile latency of the network API, each measurement in a fresh subprocess.

For the 2-16-16-1 tanh/bce network (batch 256) a child process times, in order:
``import numpy``, ``import numba``, ``import simcore`` (each incremental), ``MLP(...)`` +
``net.init``, the first ``net.loss_and_grad`` (compiles or loads its kernels), the first
``net.predict``, and a second ``loss_and_grad`` (the steady state, for reference). The parent
also times the whole child process (interpreter start-up included).

Modes, for float64 and float32:

* ``cold``: ``SIMCORE_CACHE=0``, numba's on-disk cache off: everything compiles in the process.
* ``cached``: ``SIMCORE_CACHE=1`` with ``NUMBA_CACHE_DIR`` pointing to a fresh, private
  directory (so other users of the checkout's ``__pycache__`` are not disturbed and the cache
  holds exactly what this network needs): one run populates it (reported as ``first``), then
  ``--runs`` runs load it (``warm``).

Each figure is the median over ``--runs`` child processes. Target (reported, not asserted):
import + first loss_and_grad + first predict under 2 s with a warm cache.

``--grid`` times the grid engine instead: the first ``train_grid`` call on W1's network
(2-16-16-1 tanh/BCE, 256 two-moons samples; 64 networks, 50 steps) and a second one (the
steady state). Targets: under 15 s cold, under 2 s with a warm cache (import included).

Usage::

    python benchmarks/compile_time.py                 # both dtypes, 3 runs per mode
    python benchmarks/compile_time.py --dtype float64 --runs 5 --json
    python benchmarks/compile_time.py --in-tree       # use the checkout's own cache (warm only)
    python benchmarks/compile_time.py --grid          # the grid engine's first train_grid call
    python benchmarks/compile_time.py --grid --strategy gemm   # ... with the per-network kernel
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TARGET_WARM_S = 2.0

# the child processes time their imports the same way: t0..t3 around numpy, numba, simcore
IMPORTS = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
t1 = time.perf_counter()
import numba
t2 = time.perf_counter()
import simcore
t3 = time.perf_counter()
dtype = sys.argv[1]
"""

CHILD = IMPORTS + r"""
net = simcore.MLP([2, 16, 16, 1], activation="tanh", loss="bce", dtype=dtype)
params = net.init(seed=0)
t4 = time.perf_counter()
rng = np.random.default_rng(0)
X = rng.standard_normal((256, 2)).astype(dtype)
y = rng.integers(0, 2, 256)
t5 = time.perf_counter()
loss, grads = net.loss_and_grad(params, X, y)
t6 = time.perf_counter()
out = net.predict(params, X)
t7 = time.perf_counter()
net.loss_and_grad(params, X, y)
t8 = time.perf_counter()
assert np.isfinite(loss) and out.shape == (256,)
print(json.dumps({"import_numpy": t1 - t0, "import_numba": t2 - t1, "import_simcore": t3 - t2,
                  "import_total": t3 - t0, "mlp_init": t4 - t3, "first_loss_and_grad": t6 - t5,
                  "first_predict": t7 - t6, "second_loss_and_grad": t8 - t7,
                  "user_total": (t3 - t0) + (t4 - t3) + (t6 - t5) + (t7 - t6), "loss": float(loss)}))
"""

CHILD_GRID = IMPORTS + r"""
X, y = simcore.datasets.moons(256, seed=0)
net = simcore.MLP([2, 16, 16, 1], activation="tanh", loss="bce", dtype=dtype)
lr = np.geomspace(0.01, 1.0, 64)
kw = {"strategy": sys.argv[2]} if len(sys.argv) > 2 else {}
t4 = time.perf_counter()
res = simcore.train_grid(net, X.astype(dtype), y, lr, 50, seeds=np.arange(64), **kw)
t5 = time.perf_counter()
simcore.train_grid(net, X.astype(dtype), y, lr, 50, seeds=np.arange(64), **kw)
t6 = time.perf_counter()
assert np.isfinite(res.final_loss).all()
print(json.dumps({"import_numpy": t1 - t0, "import_numba": t2 - t1, "import_simcore": t3 - t2,
                  "import_total": t3 - t0, "first_train_grid": t5 - t4, "second_train_grid": t6 - t5,
                  "user_total": (t3 - t0) + (t5 - t4)}))
"""
GRID_KEYS = ("process_wall", "import_total", "import_simcore", "first_train_grid",
             "second_train_grid", "user_total")
TARGET_COLD_GRID_S = 15.0

KEYS = ("process_wall", "import_numpy", "import_numba", "import_simcore", "import_total",
        "mlp_init", "first_loss_and_grad", "first_predict", "second_loss_and_grad", "user_total")


def run_child(dtype, env_extra, timeout, child=CHILD, extra=()):
    env = dict(os.environ)
    env.update(env_extra)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", child, dtype, *extra], env=env, capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({dtype}, {env_extra}):\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_wall"] = wall
    return res


def median_of(results):
    keys = GRID_KEYS if "first_train_grid" in results[0] else KEYS
    return {k: statistics.median(r[k] for r in results) for k in keys}


def measure(dtype, runs, timeout, in_tree, grid=False, strategy=None):
    """{mode: {"median": {...}, "runs": [...]}} for one dtype."""
    out = {}
    child = CHILD_GRID if grid else CHILD
    extra = (strategy,) if strategy else ()
    tmp = tempfile.mkdtemp(prefix="simcore_numba_cache_")
    try:
        cold_env = {"SIMCORE_CACHE": "0", "NUMBA_CACHE_DIR": os.path.join(tmp, "unused")}
        cold = [run_child(dtype, cold_env, timeout, child, extra) for _ in range(runs)]
        out["cold"] = {"median": median_of(cold), "runs": cold}
        if in_tree:
            warm_env = {"SIMCORE_CACHE": "1"}
            first = run_child(dtype, warm_env, timeout, child, extra)  # fills the checkout's cache if needed
        else:
            warm_env = {"SIMCORE_CACHE": "1", "NUMBA_CACHE_DIR": os.path.join(tmp, "cache")}
            first = run_child(dtype, warm_env, timeout, child, extra)
        out["first"] = {"median": median_of([first]), "runs": [first]}
        warm = [run_child(dtype, warm_env, timeout, child, extra) for _ in range(runs)]
        out["warm"] = {"median": median_of(warm), "runs": warm}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="child processes per mode (median)")
    p.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per child process")
    p.add_argument("--in-tree", action="store_true",
                   help="cached mode uses the checkout's own numba cache (simcore/__pycache__) "
                        "instead of a private NUMBA_CACHE_DIR")
    p.add_argument("--json", action="store_true", help="one JSON line per (dtype, mode)")
    p.add_argument("--grid", action="store_true",
                   help="time the grid engine's first train_grid call instead of the MLP API")
    p.add_argument("--strategy", choices=("lanes", "gemm"), default=None,
                   help="with --grid: force train_grid's strategy (W1 at G = 64 runs lanes by default)")
    args = p.parse_args(argv)
    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    if args.grid:
        cols = ("process_wall", "import_total", "import_simcore", "first_train_grid",
                "second_train_grid", "user_total")
        names = ("process", "import all", "import simc", "1st grid", "2nd grid", "user total")
    else:
        cols = ("process_wall", "import_total", "import_simcore", "mlp_init", "first_loss_and_grad",
                "first_predict", "second_loss_and_grad", "user_total")
        names = ("process", "import all", "import simc", "MLP+init", "1st l&g", "1st predict",
                 "2nd l&g [us]", "user total")
    if not args.json:
        print(f"# {sys.executable}; median of {args.runs} fresh processes per mode "
              f"('first' = the single run that fills an empty cache); seconds unless marked")
        hdr = f"{'dtype':<8} {'mode':<6} " + " ".join(f"{c:>12}" for c in names)
        print(hdr)
        print("-" * len(hdr))
    rows = []
    for dt in dtypes:
        load0 = os.getloadavg()[0]
        res = measure(dt, args.runs, args.timeout, args.in_tree, grid=args.grid, strategy=args.strategy)
        for mode in ("cold", "first", "warm"):
            med = res[mode]["median"]
            row = {"dtype": dt, "mode": mode, "n_runs": len(res[mode]["runs"]), **med,
                   "runs_user_total": [r["user_total"] for r in res[mode]["runs"]],
                   "loadavg_start": load0}
            if mode == "warm" or (args.grid and mode == "cold"):
                limit = TARGET_COLD_GRID_S if mode == "cold" else TARGET_WARM_S
                key = "first_train_grid" if mode == "cold" else "user_total"
                row["target"] = f"{key} < {limit} s"
                row["target_met"] = med[key] < limit
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                tail = ""
                if "target" in row:
                    tail = f"  {'met' if row['target_met'] else 'MISSED'} ({row['target']})"
                print(f"{dt:<8} {mode:<6} " + " ".join(
                    f"{med[c] * 1e6:12.0f}" if c == "second_loss_and_grad" else f"{med[c]:12.3f}"
                    for c in cols) + tail,
                      flush=True)
    if not args.json and args.grid:
        print("# columns: process = whole child incl. interpreter start; import all = numpy+numba+"
              "simcore; 1st grid = first train_grid call (compile or cache load, then 50 steps); "
              "2nd grid = the same call again; user total = import all + 1st grid")
    elif not args.json:
        print("# columns: process = whole child incl. interpreter start; import all = numpy+numba+"
              "simcore; import simc = simcore alone (after numba); 1st l&g / 1st predict = first "
              "calls (compile or cache load); 2nd l&g = steady state; user total = import all + "
              "MLP+init + 1st l&g + 1st predict")
        print(f"# 1-min load average at end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    return rows


if __name__ == "__main__":
    main()
