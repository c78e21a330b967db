"""Where a grid kernel's time goes: perf's samples of one workload's training, counted per
function of the compiled kernel (and, with ``--annotate``, per instruction).

    python benchmarks/kernel_profile.py W1 --dtype float64
    python benchmarks/kernel_profile.py H128 --dtype float32 --annotate gemm

The workloads are the peers suite's (``workloads.py``), trained with one thread and
``record_every = steps`` as there. How it works, in three processes:

1. a child compiles the workload's kernel into a fresh numba cache and writes the kernel's
   object file (ELF: every function linked into the kernel, with its symbol);
2. a second child, under ``perf record -e cpu-clock`` (a software event: no hardware counters
   needed), loads the kernel from that cache and trains ``--calls`` times. A process that loads
   the kernel from the cache runs that object's code (a process that compiled it would call
   each callee's own build instead), so a sample's address minus the kernel's entry point is
   an offset in the object;
3. the samples are counted per symbol (``nm``), or per instruction (``objdump``).

Shares are of the samples that fall in the kernel (the rest is the interpreter, the import and
the cache load). Needs ``perf``, ``nm`` and ``objdump``; one cold compile per run.
"""
import argparse
import collections
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def _kernel(strategy, batchnorm):
    from simcore.grid import cpu, cpu_gemm
    disp = (cpu_gemm if strategy == "gemm" else cpu).train_kernel(batchnorm)
    (cres,) = disp.overloads.values()
    return cres


def _train(name, dtype, calls, strategy):
    import numpy as np
    import simcore
    import workloads
    w = workloads.WORKLOADS[name]
    X, y = workloads.data(w)
    net = simcore.MLP(w["sizes"], activation=w["activation"], loss=w["loss"], dtype=dtype,
                      batchnorm=w["batchnorm"])
    G, S = w["G"], w["S"]
    P = workloads.init_params(w, G, np.dtype(dtype))
    lr = workloads.lrs(w, G)
    res = simcore.train_grid(net, X, y, lr=lr, steps=1, params0=P, strategy=strategy)
    for _ in range(calls):
        res = simcore.train_grid(net, X, y, lr=lr, steps=S, params0=P, record_every=S, strategy=strategy)
    return str(res.config["strategy"].iloc[0]), w["batchnorm"]


def child(args):
    strategy, bn = _train(args.workload, args.dtype, args.calls, args.strategy)
    cres = _kernel(strategy, bn)
    out = {"strategy": strategy,
           "entry": cres.library.get_pointer_to_function(cres.fndesc.mangled_name),
           "symbol": cres.fndesc.mangled_name}
    if args.child == "compile":
        with open(os.path.join(args.dir, "kernel.o"), "wb") as f:
            f.write(cres.library._get_compiled_object())
    with open(os.path.join(args.dir, args.child + ".json"), "w") as f:
        json.dump(out, f)


def _demangle(sym):
    """numba's ``_ZN<len><name>...`` symbol as a dotted Python name (``_3c`` is "<", ...)."""
    sym = re.sub(r"^(cpython|cfunc)\.", "", sym)  # the wrappers' prefixes
    rest = sym[3:] if sym.startswith("_ZN") else sym
    parts = []
    while rest[:1].isdigit():
        n = int(re.match(r"\d+", rest).group())
        rest = rest[len(str(n)):]
        parts.append(re.sub(r"_([0-7][0-9a-f])", lambda m: chr(int(m.group(1), 16))
                            if not chr(int(m.group(1), 16)).isalnum() else m.group(0), rest[:n]))
        rest = rest[n:]
    return ".".join(parts) or sym


def _symbols(obj):
    """(start, size, short name) of every function in the object."""
    rows = []
    for line in subprocess.run(["nm", "-n", "-S", obj], capture_output=True, text=True, check=True).stdout.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "TtWw":
            rows.append((int(p[0], 16), int(p[1], 16), _demangle(p[3]), p[3]))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workload")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--strategy", default="auto")
    ap.add_argument("--calls", type=int, default=2, help="timed trainings under perf")
    ap.add_argument("--annotate", metavar="NAME", help="also list the hottest instructions of the "
                    "function whose name contains NAME")
    ap.add_argument("--child", choices=["compile", "run"], help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, HERE)
        return child(args)
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(d, "cache"), NUMBA_NUM_THREADS="1")
        base = [sys.executable, os.path.abspath(__file__), args.workload, "--dtype", args.dtype,
                "--strategy", args.strategy, "--dir", d]
        subprocess.run(base + ["--child", "compile", "--calls", "0"], env=env, check=True)
        data = os.path.join(d, "perf.data")
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4000", "-o", data] + base
                       + ["--child", "run", "--calls", str(args.calls)], env=env, check=True)
        run = json.load(open(os.path.join(d, "run.json")))
        obj = os.path.join(d, "kernel.o")
        syms = _symbols(obj)
        (kstart,) = [s for s, _, _, full in syms if full == run["symbol"]]
        ips = [int(x, 16) for x in subprocess.run(["perf", "script", "-i", data, "-F", "ip"], capture_output=True,
                                                  text=True, check=True).stdout.split()]
        lo, hi = min(s for s, *_ in syms), max(s + n for s, n, *_ in syms)
        offsets = [ip - run["entry"] + kstart for ip in ips]
        inside = [o for o in offsets if lo <= o < hi]
        per = collections.Counter()
        for o in inside:
            per[next((name for s, n, name, _ in syms if s <= o < s + n), "(between functions)")] += 1
        # the children import simcore as this process would: from PYTHONPATH, else the installed
        # one (a worktree's script profiles the installed checkout unless PYTHONPATH names it)
        where = os.path.dirname(importlib.util.find_spec("simcore").origin)
        print(f"{args.workload} {args.dtype}, strategy {run['strategy']}, simcore from {where}: "
              f"{len(ips)} samples, {len(inside)} ({100 * len(inside) / max(len(ips), 1):.0f}%) in the kernel\n")
        print("| function | share of the kernel's samples |\n|---|---|")
        for name, n in per.most_common(20):
            print(f"| {name} | {100 * n / len(inside):.1f}% |")
        if args.annotate:
            s, n, name, _ = next(r for r in syms if args.annotate in r[2])
            hits = collections.Counter(o for o in inside if s <= o < s + n)
            dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--start-address={s}",
                                  f"--stop-address={s + n}", obj], capture_output=True, text=True).stdout
            print(f"\nhottest instructions of {name} (share of its {sum(hits.values())} samples; a sample "
                  "usually lands on the instruction after the one that waited):")
            for line in dis.splitlines():
                m = re.match(r"\s*([0-9a-f]+):\s*(.*)", line)
                if m and hits.get(int(m.group(1), 16), 0) >= 0.005 * sum(hits.values()):
                    print(f"{100 * hits[int(m.group(1), 16)] / sum(hits.values()):5.1f}%  {m.group(2)[:80]}")


if __name__ == "__main__":
    main()
