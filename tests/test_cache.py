"""simcore's numba cache notices changes anywhere in the package (simcore/_cache.py)."""
import os
import shutil
import subprocess
import sys

import numpy as np

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
