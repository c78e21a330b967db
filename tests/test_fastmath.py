"""Accuracy, special values and vectorisation of :mod:`simcore.fastmath`.

Reference: numpy's float64 ufuncs (glibc / numpy SIMD, themselves within ~1 ulp).  Errors are
measured in units of ``np.spacing(reference)`` (for subnormal results that is the subnormal
grid step).  Measured maxima at the time of writing: exp 1, expm1 1, log 1, log1p 1, tanh 2;
the bounds below leave one ulp of slack for a different reference libm.  These are the float64
(and integer-argument) paths; float32 arguments are tested in ``tests/test_fastmath32.py``.
"""
import math
import re

import numpy as np
import pytest

from conftest import FASTMATH_NAMES, LOOPS, apply_loop, make_loop
from naive import FASTMATH_REFS
from simcore import fastmath as fm

N = 200_000
MAX_ULP = {"exp": 2, "expm1": 2, "log": 2, "log1p": 2, "tanh": 3}


def _samples(name, seed=0):
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], N)
    wide = sign * 10.0 ** rng.uniform(-320, 3.0, N)  # every magnitude, subnormals to 1e3
    parts = [wide]
    if name in ("exp", "expm1"):
        parts += [rng.uniform(-750, 712, N), rng.uniform(-2, 2, N), rng.uniform(-0.4, 0.4, N),
                  rng.uniform(-1e-3, 1e-3, N), rng.uniform(-746, -700, N),  # subnormal results
                  rng.uniform(700, 710, N), rng.uniform(-40, 40, N)]
    elif name in ("log", "log1p"):
        parts += [np.abs(wide), 10.0 ** rng.uniform(-323, 308.2, N), rng.uniform(-1, 2, N),
                  rng.uniform(-0.3, 0.5, N), -1 + 10.0 ** rng.uniform(-16, 0, N),
                  rng.uniform(0.5, 3, N)]
    else:
        parts += [rng.uniform(-25, 25, N), rng.uniform(-1, 1, N), rng.uniform(0.4, 0.7, N),
                  rng.uniform(-0.01, 0.01, N)]
    return np.concatenate(parts)


SPECIAL = np.array([
    0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 0.5, -0.5, 2.0,
    709.7, -709.7, 709.78, 709.782712893384, 709.7827128933841, 710.0, -745.0, 745.0,
    -745.1332191019411, -745.1332191019412, -745.14, -746.0, -1000.0, 1000.0,
    5e-324, -5e-324, 2.2250738585072014e-308, -2.2250738585072014e-308, 1e-310, -1e-310,
    1e-300, -1e-300, 1e-8, -1e-8, 1e-17, -1e-17, 20.0, -20.0, 19.0, -19.0, 1e4, -1e4,
    1e308, -1e308, np.finfo(np.float64).max, -np.finfo(np.float64).max,
    2.0 ** 53, -(1 - 2.0 ** -53), -0.9999999, 0.34657359027997264, -0.34657359027997264,
    0.55, -0.55, 0.5499999999999999, 37.0, -37.0, 40.0, -40.0,
])


def _ulp_error(y, ref):
    return np.abs(y - ref) / np.spacing(np.abs(ref))


def _check(name, x):
    with np.errstate(all="ignore"):
        ref = FASTMATH_REFS[name](x)
    y = apply_loop(name, x)
    finite = np.isfinite(ref)
    # non-finite references (inf, -inf, NaN) must be matched exactly
    nf = ~finite
    same = (y[nf] == ref[nf]) | (np.isnan(y[nf]) & np.isnan(ref[nf]))
    assert same.all(), (name, x[nf][~same], y[nf][~same], ref[nf][~same])
    err = _ulp_error(y[finite], ref[finite])
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP[name], (
        f"{name}: {err[worst]} ulp at x={x[finite][worst]!r}: "
        f"{y[finite][worst]!r} vs {ref[finite][worst]!r}")
    return err.max()


@pytest.mark.parametrize("name", FASTMATH_NAMES)
def test_accuracy_whole_range(name):
    _check(name, _samples(name))


@pytest.mark.parametrize("name", FASTMATH_NAMES)
def test_special_values_in_loop(name):
    _check(name, SPECIAL)


def test_special_values_exact():
    inf, nan = math.inf, math.nan
    # exp: overflow, underflow (gradual, then 0), infinities, NaN
    assert fm.exp(0.0) == 1.0 and fm.exp(-0.0) == 1.0
    assert fm.exp(709.782712893384) == np.exp(709.782712893384) < inf
    assert fm.exp(709.7827128933841) == inf and fm.exp(1e4) == inf and fm.exp(inf) == inf
    assert fm.exp(-745.1332191019411) == 5e-324
    assert fm.exp(-745.1332191019412) == 0.0 and fm.exp(-1e4) == 0.0
    assert fm.exp(-inf) == 0.0
    assert math.isnan(fm.exp(nan))
    assert fm.exp(-740.0) == np.exp(-740.0)  # subnormal
    # expm1
    assert fm.expm1(1e-300) == 1e-300 and fm.expm1(5e-324) == 5e-324
    assert fm.expm1(-inf) == -1.0 and fm.expm1(-40.0) == -1.0 and fm.expm1(inf) == inf
    assert fm.expm1(709.78) == np.expm1(709.78) and fm.expm1(710.0) == inf
    assert math.isnan(fm.expm1(nan))
    # log
    assert fm.log(1.0) == 0.0 and fm.log(0.0) == -inf and fm.log(-0.0) == -inf
    assert fm.log(inf) == inf and math.isnan(fm.log(-1e-300)) and math.isnan(fm.log(nan))
    assert fm.log(5e-324) == np.log(5e-324)
    # log1p
    assert fm.log1p(0.0) == 0.0 and fm.log1p(-1.0) == -inf and fm.log1p(inf) == inf
    assert math.isnan(fm.log1p(-1.0000001)) and math.isnan(fm.log1p(-inf))
    assert math.isnan(fm.log1p(nan))
    for tiny in (1e-300, -1e-300, 5e-324, 1e-310, 1e-17, -1e-17):
        assert fm.log1p(tiny) == tiny
    # tanh: odd, saturates to exactly +-1, tiny x returned as is, no overflow
    for big in (19.1, 20.0, 1e4, 1e308, inf):
        assert fm.tanh(big) == 1.0 and fm.tanh(-big) == -1.0
    for tiny in (1e-300, -1e-300, 5e-324, 1e-17, -1e-17):
        assert fm.tanh(tiny) == tiny
    assert fm.tanh(0.0) == 0.0 and math.isnan(fm.tanh(nan))
    x = _samples("tanh", seed=1)
    assert np.array_equal(apply_loop("tanh", -x), -apply_loop("tanh", x))


def test_int_arguments_are_computed_in_float64():
    x = np.arange(-40, 41)
    for name in FASTMATH_NAMES:
        xs = np.abs(x) if name in ("log", "log1p") else x
        y = np.empty(xs.size)
        LOOPS[name](xs, y)
        np.testing.assert_array_equal(y, apply_loop(name, xs.astype(np.float64)))
    assert fm.exp(1) == fm.exp(1.0) and fm.tanh(2) == fm.tanh(2.0) and fm.log(3) == fm.log(3.0)


def test_float32_arguments_are_computed_in_float32():
    # float32 -> float32 (accuracy and details: tests/test_fastmath32.py).  exp and tanh have
    # native float32 kernels, so they are not the float64 result rounded; the other three are.
    rng = np.random.default_rng(2)
    x32 = rng.uniform(-30, 30, 10_000).astype(np.float32)
    x64 = x32.astype(np.float64)
    for name in ("exp", "tanh"):
        y32 = apply_loop(name, x32)
        assert y32.dtype == np.float32
        rounded = apply_loop(name, x64).astype(np.float32)
        assert not np.array_equal(y32, rounded)
        np.testing.assert_allclose(y32, rounded, rtol=2.5e-7, atol=0)
    xl = np.abs(x32)
    for name in ("expm1", "log", "log1p"):
        np.testing.assert_array_equal(apply_loop(name, xl), apply_loop(name, xl.astype(np.float64))
                                      .astype(np.float32))


def _vector_ops(llvm_ir):
    return set(re.findall(r"= (?:fmul|fadd|fsub|fdiv)[^=\n]*<(\d+) x double>", llvm_ir))


@pytest.mark.parametrize("name", ["exp", "tanh", "log1p"])
def test_loop_vectorises(name):
    loop = LOOPS[name]
    x = np.linspace(-3.0, 3.0, 64)
    if name == "log1p":
        x = np.abs(x)
    loop(x, np.empty_like(x))
    sig = next(s for s in loop.signatures if str(s[0].dtype) == "float64")
    llvm_ir = loop.inspect_llvm(sig)
    widths = _vector_ops(llvm_ir)
    assert widths and max(int(w) for w in widths) >= 2, f"{name}: loop not vectorised"
    # no libm call left, scalar or vector (llvm.exp.v8f64 would be scalarised into 8 calls)
    calls = set(re.findall(r"call[^\n]*?@([\w.]+)\(", llvm_ir))
    libm = {c for c in calls if re.fullmatch(r"(llvm\.)?(exp|expm1|tanh|log1p|log)(\.\w+)*", c)}
    assert not libm, libm
    asm = loop.inspect_asm(sig)
    assert re.search(r"\b(xmm|ymm|zmm)\d+", asm)
    assert re.search(r"\tv?(mul|fmadd\d*|add|div)pd\t", asm), "no packed double instructions"


def test_libm_loop_is_not_vectorisable():
    # Why this module exists: the same loop with math.exp keeps libm calls (control for the
    # vectorisation test above; if llvmlite ever ships SVML this starts to fail, meaning
    # simcore.fastmath may no longer be needed).
    loop = make_loop(math.exp)
    x = np.zeros(8)
    loop(x, x.copy())
    llvm_ir = loop.inspect_llvm(loop.signatures[0])
    assert re.search(r"call[^\n]*@llvm\.exp\.", llvm_ir)
    assert "svml" not in llvm_ir.lower()
