"""simcore's kernels compile at LLVM optimisation level ``SIMCORE_OPT`` (default 2) while a
user's own numba code keeps numba's level; a user's NUMBA_OPT is respected."""
import os
import subprocess
import sys

import pytest

# Records the level of every LLVM pass pipeline numba builds (0 is numba's cheap inlining pass,
# run before the full one at every level).
PROBE = """
import collections, json, numpy as np
from numba.core import codegen, config as nc
seen = collections.defaultdict(set)
phase = ["simcore"]
orig = codegen.CPUCodegen._pass_builder
def record(self, **kw):
    seen[phase[0]].add(int(kw.get("opt", nc.OPT)))
    return orig(self, **kw)
codegen.CPUCodegen._pass_builder = record
import numba, simcore
from simcore import activations
z = np.linspace(-3.0, 3.0, 64)
a = np.empty_like(z)
activations.forward(2, z, a)
phase[0] = "user"
@numba.njit
def user(x):
    return x.sum() * 2.0
user(z)
print(json.dumps({"levels": {k: sorted(v) for k, v in seen.items()}, "numba_after": int(nc.OPT),
                  "simcore": simcore.config.OPT}))
"""


def _probe(tmp_path, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("NUMBA_OPT", "SIMCORE_OPT")}
    e.update(env, NUMBA_CACHE_DIR=str(tmp_path))  # an empty cache: every kernel compiles
    out = subprocess.run([sys.executable, "-c", PROBE], env=e, capture_output=True, text=True, timeout=300)
    return out


def test_simcore_compiles_at_its_level_and_user_code_at_numbas(tmp_path):
    import json
    out = _probe(tmp_path)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["simcore"] == 2
    assert set(got["levels"]["simcore"]) <= {0, 2} and 2 in got["levels"]["simcore"]
    assert set(got["levels"]["user"]) <= {0, 3} and 3 in got["levels"]["user"]
    assert got["numba_after"] == 3  # numba's own level is restored after every simcore compile


def test_a_users_numba_opt_is_respected_and_simcore_opt_overrides_it(tmp_path):
    import json
    got = json.loads(_probe(tmp_path / "a", NUMBA_OPT="1").stdout)
    assert got["simcore"] is None and set(got["levels"]["simcore"]) <= {0, 1}
    got = json.loads(_probe(tmp_path / "b", NUMBA_OPT="1", SIMCORE_OPT="3").stdout)
    assert got["simcore"] == 3 and 3 in got["levels"]["simcore"] and set(got["levels"]["user"]) <= {0, 1}


@pytest.mark.parametrize("value", ["4", "fast", "-1"])
def test_a_bad_simcore_opt_is_refused_by_name(tmp_path, value):
    out = _probe(tmp_path, SIMCORE_OPT=value)
    assert out.returncode != 0 and "SIMCORE_OPT must be 0, 1, 2, 3 or 'numba'" in out.stderr


def test_the_level_is_part_of_the_cache_stamp():
    from simcore import _cache
    assert _cache.package_digest(opt=2) != _cache.package_digest(opt=3)
    assert _cache.package_digest() == _cache.PACKAGE_STAMP
