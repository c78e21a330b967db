"""Vectorisable ``exp``, ``expm1``, ``log``, ``log1p`` and ``tanh`` for compiled loops, in float64
and (for a float32 argument) in float32.

Why this module exists
----------------------
Inside a numba loop ``math.exp`` / ``math.tanh`` / ``np.exp`` lower to a call to the C library.
LLVM can only vectorise such a call when it has a vector math library to map it to (Intel SVML);
the llvmlite build used here has none, so every element costs a scalar libm call and the whole
loop stays scalar.  The functions below are written only with operations LLVM knows how to
vectorise (``+ - * /``, ``fabs``, ``copysign``, compares turned into selects, integer
add/shift/and and bitcasts), without branches, loops or calls, so once LLVM inlines them into
``for i in range(n): out[i] = exp(z[i])`` the loop becomes packed AVX/AVX-512 code.

Types: each public function is a type switch resolved at compile time (see ``_by_type``).  A
float32 argument is computed in float32 and gives a float32, so a float32 loop packs twice as
many lanes (16 with AVX-512): exp and tanh have native float32 kernels (``_exp32``,
``_tanh32``); expm1, log and log1p compute in float64 and round once to float32.  Any other
argument (float64, integers) is converted with ``float(x)`` and computed in float64.

Method (float64, shared by all five)
------------------------------------
* ``2**k`` is built directly from its bit pattern ``(k + 1023) << 52`` through a numba
  ``@intrinsic`` that bitcasts int64 <-> float64 (``_as_float``, ``_as_int``).
* exp/expm1: Cody-Waite reduction ``x = k*ln2 + r``, ``|r| <= ln2/2``, and a degree-12 polynomial
  for ``expm1(r)`` (near-minimax Chebyshev fit computed with mpmath, fit error 1e-18 relative).
* log/log1p: the fdlibm (Sun) algorithm: ``1+x = 2**k * m`` with ``m`` in ``[sqrt(2)/2, sqrt(2))``,
  ``s = f/(2+f)``, ``log(m) = 2 atanh(s)`` with fdlibm's degree-14 minimax polynomial in ``s``
  (error < 2**-58.45); log1p adds the exact rounding error of ``1+x`` back in.
* tanh from expm1.

Method (float32 exp, tanh)
--------------------------
* ``2**k`` from ``(k + 127) << 23`` (``_as_float32``, ``_as_int32``); every constant is
  an ``np.float32`` (a Python float literal is a float64 and would widen the arithmetic).
* exp: the same Cody-Waite reduction with a 1.5*2**23 shifter and Cephes' two-part ln2, and a
  degree-7 polynomial for ``expm1(r)`` (near-minimax fit with numpy, 1.6e-10 relative).
* tanh: ``|x| < 0.55``: odd degree-11 near-minimax polynomial (fit with numpy, 4.3e-9 relative);
  above, ``1 - 2/(exp(2|x|) + 1)``; ``|x|`` clamped to 9.1, where tanh rounds to 1.

Why some operations go through ``_add`` / ``_sub`` / ``_mul`` / ``_div``
--------------------------------------------------------------------------
simcore compiles with ``fastmath={"nsz", "arcp", "contract", "reassoc"}`` (see
:mod:`simcore.config`).  ``reassoc`` lets LLVM rewrite ``(x - k*c1) - k*c2`` as ``x - k*(c1+c2)``,
``(1 + x) - 1`` as ``x`` or ``(p * 2**k1) * 2**k2`` as ``p * (2**k1 * 2**k2)``, which destroys
exactly the extra precision (or the overflow protection) those steps exist for.  numba's fastmath
pass only adds its flags to float instructions that have none, so these intrinsics emit their
instruction with the flag ``contract`` alone: evaluated in IEEE order, while still allowing the
FMA fusion that only ever makes these steps more accurate.  Every operation up to and including
the one that *combines* such exact terms must be one of them: a fast-math consumer may
reassociate through its strict operands (seen with tanh's correction term).  No
``nnan``/``ninf`` is ever used: infinities and NaN come out right without them.

Measured accuracy (float64, against numpy/glibc, ~10 million random points per function over
the whole range plus special values; see ``tests/test_fastmath.py``), in units of the last place:
exp 1, expm1 1, log 1, log1p 1, tanh 2.  Special values (+-0, +-inf, NaN, overflow, underflow,
subnormals, log1p(-1)) are exact.

Measured accuracy (float32, against numpy's float64 result rounded to float32, 10 million points
per function over the whole float32 range plus special values; see ``tests/test_fastmath32.py``),
in float32 ulps: exp 1, tanh 1, expm1 0, log 0, log1p 0 (these three are rounded once from
float64, so at most 1).  Exhaustively, over every float32: exp on [-104, 104] (2,241,855,490
values) max 1 ulp, 0.77 % of them off by one; tanh on [0, 10] (1,092,616,193 values; tanh is odd
and exactly 1 beyond) max 1 ulp, 0.30 % off by one.  Special values as in float64, with
tanh(-0) = -0 and tanh(+-9.010914 and beyond, +-inf) = +-1.

Vectorising also needs the loop body to be unable to raise: numba's default
``error_model="python"`` guards every float ``/`` with a ZeroDivisionError check, which stops
LLVM's loop vectoriser, so divisions here go through ``_div``.  The same applies to callers:
a loop such as ``out[i] = 1 / (1 + exp(-z[i]))`` vectorises only if the caller's own division
cannot raise (``error_model="numpy"`` or no ``/``).
"""
import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ._jit import scalar


# --------------------------------------------------------------------------------------------
# Intrinsics: bit casts and IEEE-ordered arithmetic
# --------------------------------------------------------------------------------------------

@intrinsic
def _as_float(typingctx, bits):
    """Reinterpret the 64 bits of an int64 as a float64 (no conversion)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _as_int(typingctx, x):
    """Reinterpret the 64 bits of a float64 as an int64 (no conversion)."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _as_float32(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (no conversion).

    Takes any integer type because numba widens int32 arithmetic to int64: the truncation to
    32 bits is done here, and LLVM then narrows the integer arithmetic feeding it back to i32.
    """
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if bits.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif bits.bitwidth < 32:
            v = builder.sext(v, ir.IntType(32)) if bits.signed else builder.zext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _as_int32(typingctx, x):
    """Reinterpret the 32 bits of a float32 as an int32 (no conversion)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


def _ieee_binop(opname, doc):
    # The single flag "contract" keeps numba's fastmath pass (which only touches instructions
    # without flags) from adding "reassoc", so LLVM keeps our evaluation order.
    # float32 op float32 is done in float32; any other pair of floats in float64, as numba's
    # own arithmetic would (a float32 mixed with a float64 is widened, exactly).
    @intrinsic
    def op(typingctx, a, b):
        if not (isinstance(a, types.Float) and isinstance(b, types.Float)):
            return None
        ty = types.float32 if a == types.float32 and b == types.float32 else types.float64

        def codegen(context, builder, sig, args):
            return getattr(builder, opname)(args[0], args[1], flags=("contract",))

        return ty(ty, ty), codegen

    op.__doc__ = doc
    return op


_add = _ieee_binop("fadd", "a + b, never reassociated with neighbouring operations.")
_sub = _ieee_binop("fsub", "a - b, never reassociated with neighbouring operations.")
_mul = _ieee_binop("fmul", "a * b, never reassociated with neighbouring operations.")
# Division must also go through an intrinsic: numba's default error_model="python" guards every
# float ``/`` with a divide-by-zero test that raises ZeroDivisionError, and a loop that can raise
# is not vectorised.  fdiv itself gives IEEE results (x/0 = +-inf, 0/0 = NaN); ours never divide
# by zero anyway.  "contract" also keeps "arcp" away (no x * (1/y) rewrite, so division stays
# correctly rounded).
_div = _ieee_binop("fdiv", "a / b in IEEE arithmetic, without numba's ZeroDivisionError check.")


# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

_INV_LN2 = 1.4426950408889634            # 1/ln(2)
# ln(2) split in two (fdlibm): _LN2_HI has 32 significant bits, so k*_LN2_HI is exact for
# |k| < 2**21 and x - k*_LN2_HI is exact; _LN2_LO carries the next 53 bits.
_LN2_HI = 6.93147180369123816490e-01     # 0x3fe62e42fee00000
_LN2_LO = 1.90821492927058770002e-10     # 0x3dea39ef35793c76
# Adding 1.5*2**52 rounds |v| < 2**51 to the nearest integer (current rounding mode, i.e.
# ties-to-even) and leaves that integer in the low mantissa bits of the sum.
_SHIFT = 6755399441055744.0              # 1.5 * 2**52
_SHIFT_BITS = 0x4338000000000000         # bit pattern of _SHIFT

# expm1(r) = r + r**2/2 + r**3 * (_E0 + _E1 r + ... + _E9 r**9) on |r| <= ln2/2 + 1e-3:
# Chebyshev (near-minimax) fit of (expm1(r) - r - r**2/2) / r**3 computed with mpmath at 50 digits;
# fit error 8e-18 absolute, i.e. 1e-18 relative to expm1(r) -- far below 1 ulp.
_E0 = 0.16666666666666669
_E1 = 0.041666666666666664
_E2 = 0.008333333333329989
_E3 = 0.00138888888888865
_E4 = 0.0001984126986342035
_E5 = 2.480158731740639e-05
_E6 = 2.755726789174553e-06
_E7 = 2.755728256374953e-07
_E8 = 2.510065503606659e-08
_E9 = 2.0911429114372476e-09

# fdlibm e_log.c: log(1+f) = f - f*f/2 + s*(f*f/2 + R(s*s)), s = f/(2+f), minimax R on
# |s| <= 0.1716 with error < 2**-58.45.
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_SQRT_HALF_BITS = 0x3FE6A09E667F3BCD     # bit pattern of sqrt(2)/2
_MANT_MASK = 0x000FFFFFFFFFFFFF
_TWO54 = 18014398509481984.0             # 2**54: scales subnormals up to normal numbers
_TINY = 2.2250738585072014e-308          # smallest normal float64

_INF = math.inf
_NAN = math.nan

# float32 constants.  They must be np.float32 (numba types a Python float literal as float64,
# and float32 op float64 is computed in float64): every constant in a float32 kernel is one.
_F_ZERO = np.float32(0.0)
_F_HALF = np.float32(0.5)
_F_ONE = np.float32(1.0)
_F_TWO = np.float32(2.0)
_F_TWO_64 = np.float32(2.0 ** 64)
_F_TWO_M64 = np.float32(2.0 ** -64)
_F_INV_LN2 = np.float32(1.44269504)      # 1/ln(2)
# ln(2) split in two (Cephes expf): _F_LN2_HI = 0x3f318000 has 9 significant bits, so k*_F_LN2_HI
# is exact for |k| < 2**15 and x - k*_F_LN2_HI is exact; _F_LN2_LO = ln2 - _F_LN2_HI rounded.
_F_LN2_HI = np.float32(0.693359375)
_F_LN2_LO = np.float32(-2.12194440e-4)
_F_SHIFT = np.float32(12582912.0)        # 1.5 * 2**23: rounds |v| < 2**22 to an integer
_F_SHIFT_BITS = 0x4B400000               # bit pattern of _F_SHIFT
# exp32's clamp: exp(x) overflows float32 above 88.72 and rounds to 0 below -103.97.
_F_EXP_HI = np.float32(89.0)
_F_EXP_LO = np.float32(-104.0)

# expm1(r) = r + r**2/2 + r**3 * (_F_E0 + _F_E1 r + ... + _F_E4 r**4) on |r| <= ln2/2 + 1e-3.
# Fit: weighted least squares of (expm1(r) - r - r**2/2) / r**3 (reference from mpmath) on 20000
# points, weights |r|**3/exp(r) so the error is relative to exp(r), iterated to near-minimax with
# Lawson's algorithm (numpy), then rounded to float32: error 1.6e-10 relative, 0.003 float32 ulp.
_F_E0 = np.float32(0.16666666)
_F_E1 = np.float32(0.04166646)
_F_E2 = np.float32(0.008333589)
_F_E3 = np.float32(0.001393549)
_F_E4 = np.float32(0.00019732803)

# tanh32: |x| >= _F_TANH_SPLIT uses 1 - 2/(exp(2|x|) + 1); from there on tanh >= 1/2, so the
# subtracted term is below 1/2 and an error of one of its ulps is half an ulp of the result.
# tanh rounds to 1 in float32 from 9.010914 on: |x| is clamped to _F_TANH_CLAMP.
_F_TANH_SPLIT = np.float32(0.55)
_F_TANH_CLAMP = np.float32(9.1)
# tanh(x) = x + x**3 * (_F_T0 + _F_T1 s + ... + _F_T4 s**4), s = x**2, for |x| < 0.55.
# Fit: weighted least squares in s of (tanh(x) - x) / x**3 against numpy's float64 tanh on a
# grid of 20000 points in (0, 0.55], weights x**3/tanh(x) so the error is relative to tanh(x),
# iterated to near-minimax with Lawson's algorithm (numpy; fit error 1.1e-9), then rounded to
# float32: error 4.3e-9 relative, under 0.04 float32 ulp.
_F_T0 = np.float32(-0.33333316)
_F_T1 = np.float32(0.13332586)
_F_T2 = np.float32(-0.053852323)
_F_T3 = np.float32(0.021071738)
_F_T4 = np.float32(-0.0062743253)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------

@scalar
def _pow2(k):
    """2.0**k from its bit pattern, for -1022 <= k <= 1023 (int64)."""
    return _as_float((k + 1023) << 52)


@scalar
def _exp_reduce(x):
    """Return ``(r, k)`` with ``x = k*ln2 + r``, ``|r| <= ln2/2`` (|x| <= ~1100, not NaN-safe
    in k: for NaN x, k is garbage but r is NaN so every result built from it is NaN).

    k = round(x/ln2) via the 1.5*2**52 shifter: its bits give k as an int64 without a
    float->int conversion, and t - SHIFT gives it as a float (IEEE order, else LLVM folds it
    to x/ln2).  r = (x - k*LN2_HI) - k*LN2_LO (Cody-Waite): the first difference is exact.
    """
    t = x * _INV_LN2 + _SHIFT
    kf = _sub(t, _SHIFT)
    k = _as_int(t) - _SHIFT_BITS
    r = _sub(_sub(x, _mul(kf, _LN2_HI)), _mul(kf, _LN2_LO))
    return r, k


@scalar
def _expm1_tail(r):
    """expm1(r) - r for |r| <= ln2/2 + 1e-3: r**2 * (1/2 + r * P9(r)), P9 by Horner.

    Returned without adding r so callers can add r (and a scale) in the most accurate order;
    the polynomial fit error is 1e-18 relative to expm1(r).
    """
    p = _E9
    p = p * r + _E8
    p = p * r + _E7
    p = p * r + _E6
    p = p * r + _E5
    p = p * r + _E4
    p = p * r + _E3
    p = p * r + _E2
    p = p * r + _E1
    p = p * r + _E0
    return (r * r) * (0.5 + r * p)


@scalar
def _log_core(u, c, kextra):
    """log(u) + c + kextra*ln2 for a positive normal (or +inf, garbage) float64 ``u``, ``|c|``
    at most ~ulp(1)/u.  fdlibm e_log.c / s_log1p.c, branch-free.

    u = 2**k * m with m in [sqrt(2)/2, sqrt(2)) (integer add on the bits moves the split point
    from 1 to sqrt(2)/2, as in musl), f = m - 1 exact, s = f/(2+f),
    log(m) = f - hfsq + s*(hfsq + R(s*s)), hfsq = f*f/2, R minimax (fdlibm _LG1.._LG7).
    Summed in fdlibm's order k*ln2_hi - ((hfsq - (s*(hfsq+R) + (k*ln2_lo + c))) - f).
    """
    hu = _as_int(u) + (0x3FF0000000000000 - _SQRT_HALF_BITS)
    k = (hu >> 52) - 1023 + kextra
    m = _as_float((hu & _MANT_MASK) + _SQRT_HALF_BITS)
    f = m - 1.0
    dk = float(k)
    s = _div(f, 2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    rr = t2 + t1
    hfsq = 0.5 * f * f
    lo = _add(_mul(dk, _LN2_LO), c)
    t = _sub(hfsq, _add(s * (hfsq + rr), lo))
    return _sub(_mul(dk, _LN2_HI), _sub(t, f))


# --------------------------------------------------------------------------------------------
# float64 functions (also used for integer arguments)
# --------------------------------------------------------------------------------------------

@scalar
def _exp64(x):
    """exp(x), float64, branch-free and vectorisable.  Measured max error 1 ulp (0.91 vs mpmath;
    subnormal results within 1 step of the subnormal grid).

    x is clamped to [-746, 710] (outside, the true result rounds to 0 / overflows, and the
    clamp keeps k small), then x = k*ln2 + r (Cody-Waite), exp(r) = 1 + (r + tail(r))
    (degree 12), and exp(x) = (exp(r) * 2**k1) * 2**k2 with k1 = k >> 1, k2 = k - k1: each
    factor is a normal number for every k in [-1077, 1025], so the first product never
    over/underflows and the second rounds once, giving +inf above 709.78 and correctly
    rounded gradual underflow down to 0 below -745.13.  NaN propagates through r.
    """
    x = float(x)
    x = 710.0 if x > 710.0 else x       # comparisons are false for NaN: NaN passes through
    x = -746.0 if x < -746.0 else x
    r, k = _exp_reduce(x)
    k1 = k >> 1
    k2 = k - k1
    # 1 + (r + tail): the one rounding that matters is the last addition
    return _mul(_mul(_add(1.0, _add(r, _expm1_tail(r))), _pow2(k1)), _pow2(k2))


@scalar
def _expm1_scaled(r, k):
    """expm1(k*ln2 + r) = 2**k * expm1(r) + (2**k - 1) for |r| <= ln2/2 and -1022 <= k <= 1023
    (``_exp_reduce``'s r and k).

    Summed as 2**k*h + (2**k*r + (2**k - 1)), h = expm1(r) - r: h >= 0 is added last, so the
    partial sum is never larger than the result and rounding 2**k*r is not magnified (vs
    rounding r + h first, which costs up to 2 ulp for k = 1); "contract" turns both steps into
    FMAs. The last term is exact for |k| <= 53, and k = 0 gives expm1(r) itself.
    """
    scale = _pow2(k)
    return _add(_mul(scale, _expm1_tail(r)), _add(_mul(scale, r), _sub(scale, 1.0)))


@scalar
def _expm1_64(x):
    """exp(x) - 1, float64, accurate also for tiny x.  Measured max error 1 ulp (1.1 vs mpmath).

    x is clamped to [-40, 710] (expm1(-40) rounds to -1; exp(710) overflows), reduced as in
    ``_exp64``, and expm1(x) = 2**k * expm1(r) + (2**k - 1) -- the last term is exact for
    |k| <= 53 and k = 0 gives expm1(r) itself, so there is no cancellation for small x.
    For k = 1024 (x in (709.43, 709.79]) the scale is applied as 2**1023 * 2.
    """
    x = float(x)
    x = 710.0 if x > 710.0 else x
    x = -40.0 if x < -40.0 else x
    r, k = _exp_reduce(x)
    kc = 1023 if k > 1023 else k
    y = _expm1_scaled(r, kc)
    y2 = y * 2.0
    return y2 if k > 1023 else y


@scalar
def _log64(x):
    """Natural log, float64.  Measured max error 1 ulp.

    Subnormal x are first scaled by 2**54 (k -= 54); then fdlibm's log kernel (see
    ``_log_core``).  log(0) = -inf, log(x<0) = NaN, log(inf) = inf, NaN -> NaN
    (special cases by selects).
    """
    x = float(x)
    sub = x < _TINY
    xs = x * _TWO54 if sub else x
    kextra = -54 if sub else 0
    y = _log_core(xs, 0.0, kextra)
    y = y if x > 0.0 else (-_INF if x == 0.0 else _NAN)
    return _INF if x == _INF else y


@scalar
def _log1p64(x):
    """log(1 + x), float64, accurate for tiny x.  Measured max error 1 ulp.

    u = 1 + x rounded; its rounding error c = (1 + x) - u is recovered exactly with Fast2Sum
    (larger operand first: x - (u - 1) for x <= 1, 1 - (u - x) otherwise, in IEEE order), and
    log1p(x) = log(u) + c/u with log(u) from fdlibm's kernel (``_log_core``).  Tiny x gives
    u = 1, c = x, result x exactly.  log1p(-1) = -inf, x < -1 -> NaN, log1p(inf) = inf,
    NaN -> NaN (selects).
    """
    x = float(x)
    u = 1.0 + x
    c_small = _sub(x, _sub(u, 1.0))
    c_big = _sub(1.0, _sub(u, x))
    c = _div(c_big if x > 1.0 else c_small, u)
    y = _log_core(u, c, 0)
    y = y if x > -1.0 else (-_INF if x == -1.0 else _NAN)
    return _INF if x == _INF else y


@scalar
def _tanh64(x):
    """tanh(x), float64, odd.  Measured max error 2 ulp against numpy (1.8 ulp against mpmath).

    With a = min(|x|, 20) (tanh(20) rounds to 1; the clamp keeps expm1 finite and lets NaN
    through), e = expm1(2a) and d = e + 2:
      a <  0.55: tanh(a) = e / d -- no cancellation, exact for tiny a (e = 2a), refined below;
      a >= 0.55: tanh(a) = 1 - 2 / d -- the result is >= 1/2 and the subtracted term small.
    One division serves both.  The sign is restored with copysign.
    """
    x = float(x)
    a = abs(x)
    a = 20.0 if a > 20.0 else a
    # expm1(2a) without _expm1_64's clamps: 2a <= 40 never reaches them (k <= 58), and in this
    # loop every instruction counts (the division and the polynomial keep both FMA ports busy)
    r, k = _exp_reduce(2.0 * a)
    e = _expm1_scaled(r, k)
    d = e + 2.0
    small = a < 0.55
    q = _div(e if small else 2.0, d)
    # Small branch: e/d is rounded twice (d, then the quotient), ~2.3 ulp worst.  The exact
    # value is q + (e - q*d - q*err_d)/d with err_d = (e + 2) - d (exact by Fast2Sum) and
    # e - q*d exact when contracted to an FMA (approximate otherwise, which is still no
    # worse); 1/d = (1 - q)/2.  All in IEEE order: with "reassoc" LLVM folds the correction
    # back into e - q*(d + err_d) and it is lost.
    err_d = _sub(e, _sub(d, 2.0))
    corr = _sub(_sub(e, _mul(q, d)), _mul(q, err_d))
    qs = _add(q, corr * (0.5 * (1.0 - q)))
    t = qs if small else 1.0 - q
    return math.copysign(t, x)


# --------------------------------------------------------------------------------------------
# float32 functions
# --------------------------------------------------------------------------------------------
# exp and tanh are native float32 kernels, so a loop over float32 vectorises at twice the
# float64 width (16 lanes with AVX-512); expm1, log and log1p are computed in float64 and
# rounded once to float32 (at most 1 ulp, usually correctly rounded), vectorising at the
# float64 width.  Every constant below is an np.float32 and every operation float32 op float32.

@scalar
def _pow2_32(k):
    """2.0**k as a float32 from its bit pattern, for -126 <= k <= 127 (any integer type)."""
    return _as_float32((k + 127) << 23)


@scalar
def _exp32_reduce(x):
    """Return ``(r, k)`` with ``x = k*ln2 + r``, ``|r| <= ln2/2``, for float32 ``|x| <= 2e4``
    (k*_F_LN2_HI exact); here |x| <= 104.

    As ``_exp_reduce`` with the 1.5*2**23 shifter (its low 23 bits hold k) and Cephes'
    two-part ln2.  NaN x gives NaN r (and garbage k).
    """
    t = x * _F_INV_LN2 + _F_SHIFT
    kf = _sub(t, _F_SHIFT)
    k = _as_int32(t) - _F_SHIFT_BITS
    r = _sub(_sub(x, _mul(kf, _F_LN2_HI)), _mul(kf, _F_LN2_LO))
    return r, k


@scalar
def _expm1_32_reduced(r):
    """expm1(r) for float32 ``|r| <= ln2/2 + 1e-3``: r + r**2 * (1/2 + r * P4(r)).

    Degree 7 in all, fit error 1.6e-10 relative to exp(r) (see _F_E0.._F_E4).
    """
    p = _F_E4
    p = p * r + _F_E3
    p = p * r + _F_E2
    p = p * r + _F_E1
    p = p * r + _F_E0
    return _add(r, (r * r) * (_F_HALF + r * p))


@scalar
def _exp32(x):
    """exp(x) for a float32 x, in float32.  Measured max error 1 ulp (see the module docstring).

    x is clamped to [-104, 89] (outside, the float32 result rounds to 0 / overflows), then
    exp(x) = (exp(r) * 2**k1) * 2**k2 with k1 = -64 for x < 0, +64 otherwise, k2 = k - k1: for
    every k in [-150, 128] both factors are normal (|k| <= 62 works with either k1, and beyond
    k has x's sign), so the first product is exact and the second rounds once, giving +inf
    above 88.72 and correctly rounded gradual underflow to 0 below -103.97.  NaN propagates
    through r.
    (Not k1 = k >> 1 as in ``_exp64``: numba does integer arithmetic in int64 and LLVM
    cannot narrow a right shift back to int32, which costs a second vector per 16 lanes.)
    """
    x = _F_EXP_HI if x > _F_EXP_HI else x     # comparisons are false for NaN
    x = _F_EXP_LO if x < _F_EXP_LO else x
    r, k = _exp32_reduce(x)
    neg = x < _F_ZERO
    s1 = _F_TWO_M64 if neg else _F_TWO_64
    k2 = k + 64 if neg else k - 64
    # 1 + expm1(r): the one rounding that matters is this addition
    return _mul(_mul(_add(_F_ONE, _expm1_32_reduced(r)), s1), _pow2_32(k2))


@scalar
def _tanh32(x):
    """tanh(x) for a float32 x, in float32, odd.  Measured max error 1 ulp (see the module
    docstring; exhaustive over [0, 10]).

    With a = min(|x|, 9.1) (tanh rounds to 1 from 9.0109; the clamp lets NaN through):
      a <  0.55: tanh(a) = a + a**3 P4(a**2), odd minimax polynomial (see _F_T0.._F_T4),
                 exact for tiny a;
      a >= 0.55: tanh(a) = 1 - 2 / (exp(2a) + 1): tanh >= 1/2 there, so the subtracted term
                 is below 1/2 and an error of one of its ulps is half an ulp of the result.
    Both are computed and one selected (no branch); 2a <= 18.2, so exp(2a) needs no clamp and
    a single power-of-two scale.  The sign is restored with copysign (tanh(-0) = -0).
    """
    a = abs(x)
    a = _F_TANH_CLAMP if a > _F_TANH_CLAMP else a
    s = a * a
    p = _F_T4
    p = p * s + _F_T3
    p = p * s + _F_T2
    p = p * s + _F_T1
    p = p * s + _F_T0
    # a + a*s*p in IEEE order, a precaution (not seen to happen here): "reassoc" would allow
    # a * (1 + s*p), which rounds 1 + s*p first (up to 1/2 ulp of 1) and loses the exactness
    # for tiny a.
    t_small = _add(a, (a * s) * p)
    r, k = _exp32_reduce(a + a)
    e2a = _mul(_add(_F_ONE, _expm1_32_reduced(r)), _pow2_32(k))
    t_big = _F_ONE - _div(_F_TWO, e2a + _F_ONE)
    t = t_small if a < _F_TANH_SPLIT else t_big
    return math.copysign(t, x)


@scalar
def _expm1_32(x):
    """expm1(x) for a float32 x: computed in float64, rounded once to float32."""
    return np.float32(_expm1_64(x))


@scalar
def _log32(x):
    """log(x) for a float32 x: computed in float64, rounded once to float32."""
    return np.float32(_log64(x))


@scalar
def _log1p32(x):
    """log1p(x) for a float32 x: computed in float64, rounded once to float32."""
    return np.float32(_log1p64(x))


# --------------------------------------------------------------------------------------------
# Public functions: float32 in float32, everything else in float64
# --------------------------------------------------------------------------------------------
# The choice is made at compile time from the argument's numba type by an ``overload`` of a
# private stub, so the public names stay ordinary CPU dispatchers: simcore._jit maps these very
# objects to ``math.*`` for the CUDA build, and Python can call them directly.  LLVM inlines the
# stub and the kernel, so a float64 (or integer) argument runs exactly the code it always did.

def _by_type(f32, f64):
    """A stub that compiled code calls as ``stub(x)``: ``f32(x)`` for a float32 x, ``f64(x)``
    for anything else (float64, integers: f64 converts with ``float(x)``)."""
    def stub(x):
        raise TypeError("simcore.fastmath: call the public function, not its type switch")

    @overload(stub)
    def _select(x):
        impl = f32 if x == types.float32 else f64
        return lambda x: impl(x)

    return stub


_exp_t = _by_type(_exp32, _exp64)
_expm1_t = _by_type(_expm1_32, _expm1_64)
_log_t = _by_type(_log32, _log64)
_log1p_t = _by_type(_log1p32, _log1p64)
_tanh_t = _by_type(_tanh32, _tanh64)


@scalar
def exp(x):
    """exp(x): float32 -> float32 (``_exp32``), else float64 (``_exp64``)."""
    return _exp_t(x)


@scalar
def expm1(x):
    """exp(x) - 1, accurate for tiny x: float32 -> float32 (``_expm1_32``), else float64
    (``_expm1_64``)."""
    return _expm1_t(x)


@scalar
def log(x):
    """Natural log: float32 -> float32 (``_log32``), else float64 (``_log64``)."""
    return _log_t(x)


@scalar
def log1p(x):
    """log(1 + x), accurate for tiny x: float32 -> float32 (``_log1p32``), else float64
    (``_log1p64``)."""
    return _log1p_t(x)


@scalar
def tanh(x):
    """tanh(x): float32 -> float32 (``_tanh32``), else float64 (``_tanh64``)."""
    return _tanh_t(x)
