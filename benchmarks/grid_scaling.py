"""Throughput and peak memory of the grid engine as G grows (W1 network, fewer steps).

Each G runs in a fresh process so its peak resident memory (ru_maxrss) is its own.
Run: python benchmarks/grid_scaling.py --G 256 2560 10000 --S 50
"""
import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def one(G, S, dtype):
    import simcore
    X, y = simcore.datasets.moons(256, noise=0.2, seed=0)
    net = simcore.MLP([2, 16, 16, 1], activation="tanh", loss="bce", dtype=dtype)
    lr = np.geomspace(1e-2, 3.0, G)
    simcore.train_grid(net, X, y, lr=lr[:2], steps=1)  # compile (or load from cache)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    res = simcore.train_grid(net, X, y, lr=lr, steps=S, record_every=10)
    dt = time.perf_counter() - t
    hist_rows = len(res.history())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(G=G, S=S, dtype=dtype, seconds=round(dt, 3), trainings_per_s_at_500_steps=round(G / dt * S / 500, 2),
                peak_rss_mib=round(peak, 1), rss_before_mib=round(base, 1), history_rows=hist_rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--G", type=int, nargs="+", default=[256, 2560, 10000])
    ap.add_argument("--S", type=int, default=50)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.G[0], a.S, a.dtype)))
        return
    print(f"{'G':>7}{'seconds':>9}{'trainings/s (x S/500)':>23}{'peak RSS MiB':>14}{'history rows':>14}")
    for G in a.G:
        out = subprocess.run([sys.executable, __file__, "--one", "--G", str(G), "--S", str(a.S), "--dtype", a.dtype],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['G']:>7}{r['seconds']:>9.2f}{r['trainings_per_s_at_500_steps']:>23.2f}{r['peak_rss_mib']:>14.1f}{r['history_rows']:>14}")


if __name__ == "__main__":
    main()
