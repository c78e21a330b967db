"""Each of simcore's CPU functions is two numba dispatchers (``simcore._jit._TwinDispatcher``):
the one its name holds, which Python calls, and a twin that compiled code calls, built without
numba's Python-argument wrapper (a third of a small function's compile time). The two compile
the same function with the same options, so they compute the same bits; a user's ``@njit`` code
calls the twin as simcore's kernels do; and each is cached in a file of its own."""
import os
import pickle
import subprocess
import sys

import numba
import numpy as np

from simcore import activations, losses, scalar
from simcore._jit import for_compiled_callers
from simcore.scalar import ACT_CODE


def test_compiled_callers_get_one_twin_without_the_python_wrapper():
    twin = for_compiled_callers(scalar.sigmoid)
    assert twin is not scalar.sigmoid
    assert for_compiled_callers(scalar.sigmoid) is twin  # made once, on first use
    assert twin.py_func.__code__ is scalar.sigmoid.py_func.__code__
    assert twin.py_func.__qualname__ == scalar.sigmoid.py_func.__qualname__
    assert twin.targetoptions["no_cpython_wrapper"] is True
    assert "no_cpython_wrapper" not in scalar.sigmoid.targetoptions
    assert twin.targetoptions["fastmath"] == scalar.sigmoid.targetoptions["fastmath"]
    assert for_compiled_callers(for_compiled_callers) is for_compiled_callers  # not numba's: itself


@numba.njit
def _users_formulas(z):
    out = np.empty((z.size, 3))
    for i in range(z.size):
        out[i, 0] = scalar.softplus(z[i])
        out[i, 1], out[i, 2] = losses.bce_unit(z[i], 1.0)
    return out


@numba.njit
def _users_activation(code, z):
    a = np.empty_like(z)
    activations.forward(code, z, a)
    return a


def test_a_users_njit_code_calls_the_twins_and_gets_the_bits_python_gets():
    z = np.concatenate([np.linspace(-40.0, 40.0, 201), [0.0, -0.0, 1e-300, np.inf, -np.inf]])
    got = _users_formulas(z)
    want = np.array([[scalar.softplus(v), *losses.bce_unit(v, 1.0)] for v in z])
    assert np.array_equal(got, want, equal_nan=True)
    assert for_compiled_callers(scalar.softplus).signatures  # what the user's function called
    for name, code in ACT_CODE.items():
        a = np.empty_like(z)
        activations.forward(code, z, a)  # from Python
        assert np.array_equal(_users_activation(code, z), a, equal_nan=True), name


def test_a_pickled_dispatcher_is_the_same_function():
    again = pickle.loads(pickle.dumps(scalar.sigmoid))
    assert again(0.3) == scalar.sigmoid(0.3)


PROBE = """
import numba
from simcore import scalar
@numba.njit
def f(x):
    return scalar.sigmoid(x)
print(repr(f(0.25)), repr(scalar.sigmoid(0.25)))
"""


def test_the_twin_is_cached_apart(tmp_path):
    """The twin shares its function's name and line, so simcore's cache locator gives it a file
    name of its own: loading one in place of the other would hand Python a function without
    its wrapper."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), SIMCORE_CACHE="1")
    runs = [subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]  # the second loads both from the cache
    for r in runs:
        assert r.returncode == 0, r.stderr
    first, second = (r.stdout.split() for r in runs)
    assert first == second and first[0] == first[1]
    files = [f for f in os.listdir(next(tmp_path.rglob("*scalar*.nbi")).parent) if "sigmoid" in f]
    assert any("-callee" in f for f in files) and any("-callee" not in f for f in files), files
