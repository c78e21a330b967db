"""simcore's numba cache notices changes anywhere in the package (simcore/_cache.py)."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import simcore
from simcore import _cache, scalar


def test_simcore_kernels_use_the_package_stamp():
    locator = scalar.tanh._cache._impl.locator
    assert type(locator).__name__.startswith("Simcore")
    assert locator.get_source_stamp()[1] == _cache.PACKAGE_STAMP


def test_other_code_keeps_numbas_own_locators():
    from numba import njit

    @njit(cache=True)
    def f(x):
        return x + 1

    assert not type(f._cache._impl.locator).__name__.startswith("Simcore")


def test_digest_follows_contents_and_flags(tmp_path):
    copy = tmp_path / "simcore"
    shutil.copytree(_cache.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert _cache.package_digest(str(copy)) == _cache.PACKAGE_STAMP
    assert _cache.package_digest(str(copy), fastmath=False) != _cache.PACKAGE_STAMP
    (copy / "grid" / "cpu.py").write_text((copy / "grid" / "cpu.py").read_text() + "\n# edited\n")
    assert _cache.package_digest(str(copy)) != _cache.PACKAGE_STAMP


def test_edit_of_a_callee_in_another_file_is_not_served_from_the_cache(tmp_path):
    """activations.py's compiled loop inlines scalar.py's formula: after an edit of scalar.py
    alone, a fresh process must compute with the new formula (numba's own stamp, the caller's
    file only, would serve the stale machine code)."""
    copy = tmp_path / "pkg" / "simcore"
    shutil.copytree(os.path.dirname(simcore.__file__), copy, ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "pkg"), NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               SIMCORE_CACHE="1")
    code = ("import simcore, numpy as np; assert simcore.__file__.startswith(%r), simcore.__file__; "
            "print(simcore.activations.apply('identity', np.array([2.0]))[0])" % str(tmp_path))

    def run():
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stderr
        return float(out.stdout.split()[-1])

    assert run() == 2.0
    assert run() == 2.0  # from the cache
    src = (copy / "scalar.py").read_text()
    edited = src.replace('    r""":math:`f(z) = z`."""\n    return z\n', '    r""":math:`f(z) = z`."""\n    return z + 1.0\n')
    assert edited != src
    (copy / "scalar.py").write_text(edited)
    assert run() == 3.0
    assert np.isfinite(run())


_GRID_SETTINGS = r"""
import json, sys
import numpy as np
from numba.core import event
import simcore
from simcore.grid import cpu, cpu_gemm

strategy = sys.argv[1]
train_kernel = {"lanes": cpu.train_kernel, "gemm": cpu_gemm.train_kernel}[strategy]
compiled = []


class Record(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)

    def on_end(self, ev):
        pass


event.register("numba:compile", Record())
X, y = simcore.datasets.moons(24, seed=0)
out = {}
for setting in sys.argv[2:]:
    del compiled[:]
    if setting == "ce":  # the cross-entropy grid whose losses once came out 1 ulp apart
        Xc, yc = simcore.datasets.spirals(90, n_classes=3, seed=2)
        net = simcore.MLP([2, 10, 3], activation="softplus", loss="ce")
        res = simcore.train_grid(net, Xc, yc, np.geomspace(0.01, 3e3, 40), 30, seeds=np.arange(40),
                                 optimizer="nesterov", momentum=0.9, batch_size=30, record_every=7,
                                 strategy=strategy)
        values = res.history().select_dtypes("number").to_numpy(np.float64)
    else:
        act, bn = setting.split("/")
        net = simcore.MLP([2, 5, 4, 1], activation=act, loss="bce", batchnorm=bn == "bn")
        res = simcore.train_grid(net, X, y, 0.3, 4, seeds=[0], optimizer="gd", strategy=strategy)
        values = net.pack([{k: v[0] for k, v in p.items()} for p in res.params])
    out[setting] = {"values": values.tolist(), "compiled": sorted(set(compiled)),
                    "hits": sum(train_kernel(net.batchnorm).stats.cache_hits.values())}
print(json.dumps(out))
"""


@pytest.mark.parametrize("strategy, kernel", [("lanes", "train_lanes"), ("gemm", "train_networks")])
def test_grid_kernels_are_cached_apart_and_compute_the_same_compiled_or_loaded(tmp_path, strategy, kernel):
    """Two fresh processes on one empty cache: the first compiles, the second loads.

    Batch norm: each strategy's train_kernel (simcore.grid.cpu, simcore.grid.cpu_gemm) compiles
    one closure with batch norm and one without; both share one cache index, keyed on the
    closure's variable. Each must be served its own machine code, never the other's; and the one
    without batch norm compiles no batch-norm layer.

    Compiled or loaded: the grid kernel's callees are linked into it as copies and optimised
    again there, and a call binds to whichever copy the process loaded first: the callee's own
    build when the kernel was compiled in the process, the kernel's copy when it came from the
    cache. With reassociation allowed (simcore's default fastmath) these copies rounded a
    cross-entropy grid's losses 1 ulp apart ("ce": its whole telemetry); the grid's kernels are
    compiled in source order (``cpu_kernel(ordered=True)``) so that every copy computes the same.
    The second process runs "ce" first, so that it binds to the loaded copies alone.

    One pair of processes checks both (each cold process compiles every kernel afresh)."""
    import json
    kernel = f"train_kernel.<locals>.{kernel}"

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), SIMCORE_CACHE="1")

    def run(*settings):
        proc = subprocess.run([sys.executable, "-c", _GRID_SETTINGS, strategy, *settings], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.splitlines()[-1])

    first = run("tanh/plain", "ce", "relu/bn")  # an empty cache: both kernels compile
    assert first["tanh/plain"]["hits"] == 0 and first["relu/bn"]["hits"] == 0
    names = first["tanh/plain"]["compiled"]
    assert kernel in names
    assert "_bn_forward" not in names and "_bn_backward" not in names
    assert "_bn_forward" in first["relu/bn"]["compiled"]
    again = run("ce", "relu/bn", "tanh/plain")  # the other order, from the cache
    assert again["ce"]["hits"] == 1 and kernel not in again["ce"]["compiled"]
    assert np.array_equal(np.array(again["ce"]["values"]), np.array(first["ce"]["values"]), equal_nan=True)
    X, y = simcore.datasets.moons(24, seed=0)
    for setting in ("tanh/plain", "relu/bn"):
        assert again[setting]["hits"] == 1
        assert kernel not in again[setting]["compiled"]
        assert again[setting]["values"] == first[setting]["values"]
        # and the right numbers: the single-network API from the same start
        act, bn = setting.split("/")
        net = simcore.MLP([2, 5, 4, 1], activation=act, loss="bce", batchnorm=bn == "bn")
        params, optimizer = net.init(seed=0), simcore.Optimizer("gd", eta=0.3)
        for _ in range(4):
            optimizer.step(params, net.loss_and_grad(params, X, y)[1])
        np.testing.assert_allclose(again[setting]["values"], net.pack(params), rtol=1e-12, atol=1e-14)
