"""The asv suite stays alive: every benchmark is discovered, imported and run once.

``asv run --python=same --quick --dry-run`` runs each benchmark (setup included) once in this
environment and saves nothing; the forkserver launcher imports the suite once and forks a
process per case (spawning one interpreter per case doubles the run time). Timings are never
asserted: only that asv exits cleanly and that no benchmark failed. asv's machine file is written under a temporary HOME, so the developer's
``~/.asv-machine.json`` is left alone. The slow cases (``SIMCORE_BENCH_SLOW``) stay off, and
``SIMCORE_BENCH_SMOKE=1`` runs the peers workloads for one step, once, and only one workload per
code path of the engine (bench_suite.SMOKE_WORKLOADS). The benchmarks import this
checkout's simcore (``ASV_PYTHONPATH``), and their kernels compile into its numba cache, where
the later tests find them.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("bench_kernels", "bench_network", "bench_grid", "bench_suite", "bench_cuda", "bench_science")


def _asv(args, env, timeout):
    return subprocess.run([sys.executable, "-m", "asv", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_every_benchmark_runs_once(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path))
    env.pop("SIMCORE_BENCH_SLOW", None)
    env["SIMCORE_BENCH_SMOKE"] = "1"  # the peers workloads run one step once
    # asv drops PYTHONPATH: without this a checkout on PYTHONPATH (a worktree) would benchmark
    # the installed simcore instead of itself, and compile into that install's numba cache
    env["ASV_PYTHONPATH"] = str(ROOT)
    machine = _asv(["machine", "--yes", "--machine", "ci"], env, 120)
    assert machine.returncode == 0, machine.stdout + machine.stderr
    proc = _asv(["run", "--python=same", "--quick", "--dry-run", "--show-stderr",
                 "--launch-method=forkserver", "--machine", "ci"], env, 900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    failed = [line for line in out.splitlines() if re.search(r"\bfailed\b", line, re.I)]
    assert not failed, "\n".join(failed) + "\n" + out[-8000:]
    for module in MODULES:  # an import error would drop a whole module silently
        assert f"{module}." in out, f"no benchmark of {module} ran:\n{out[-4000:]}"
