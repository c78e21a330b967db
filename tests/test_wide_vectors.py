"""simcore._jit turns off LLVM's preference for 256-bit vectors on AVX-512 CPUs, and only when
that is safe: before numba's first compilation, never over a user's NUMBA_CPU_* choice."""
import os
import subprocess
import sys

import llvmlite.binding as llvm
import pytest

AVX512 = llvm.get_host_cpu_features().get("avx512f", False)

PROBE = """
import sys
{before}
import simcore, simcore._jit as j
from numba.core import registry
# the features numba's code generator was built with (what compiled code actually gets)
features = registry.cpu_target.target_context.codegen()._tm_features
print(j.WIDE_VECTORS, features.endswith("-prefer-256-bit"))
"""


def _probe(before="", **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU") and k != "SIMCORE_WIDE_VECTORS"}
    e.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], env=e, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.skipif(not AVX512, reason="the setting applies to AVX-512 CPUs only")
def test_wide_vectors_on_by_default_and_off_on_request():
    assert _probe() == ["True", "True"]
    assert _probe(SIMCORE_WIDE_VECTORS="0") == ["False", "False"]


@pytest.mark.skipif(not AVX512, reason="the setting applies to AVX-512 CPUs only")
def test_wide_vectors_leave_a_users_choice_and_a_running_codegen_alone():
    features = llvm.get_host_cpu_features().flatten()
    assert _probe(NUMBA_CPU_FEATURES=features) == ["False", "False"]
    assert _probe(NUMBA_ENABLE_AVX="0") == ["False", "False"]
    # numba compiled something before simcore was imported: its code generator already exists
    assert _probe(before="from numba import njit\nnjit(lambda x: x + 1)(1)") == ["False", "False"]


def test_no_avx512_no_change():
    if AVX512:
        pytest.skip("this CPU has AVX-512")
    assert _probe() == ["False", "False"]
