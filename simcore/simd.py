"""Explicit SIMD vectors for compiled kernels: load, store and fused multiply-add of whole
machine registers.

Why this module exists
----------------------
The grid engine keeps the networks of a block in lanes (docs/architecture.md, *A strategy per size*) and its
dense layers are small matrix products per lane. A matrix product is fast only when it is
*register-blocked*: a handful of output rows stay in registers while the inputs stream past,
so each fused multiply-add needs a fraction of a load instead of three loads and a store.
Written as plain loops, LLVM will not do this for numba arrays: it knows nothing about aliasing
between them, so its loop vectoriser must prove at run time that the outputs overlap none of the
inputs, and for a blocked loop body (8 outputs, 9 inputs) it gives up ("too many memory checks needed");
the SLP vectoriser never adds run-time checks at all. Written with the vectors below, the
blocking is explicit and nothing needs to be proved (docs/benchmarks.md, "Measurements behind
the code's choices").

The vector type
---------------
``Vec(dtype, n)`` is a numba value type stored as an LLVM ``<n x dtype>``; ``n`` is
``VBYTES // itemsize`` (16 float32 or 8 float64: one AVX-512 register; on machines with
narrower registers LLVM splits each operation into two or four). Values live in registers (or
spill like any scalar); there is no Python-level object: these functions exist only inside
compiled code.

``width(arr)``          n for arr's dtype, a compile-time constant
``vload(arr, i)``       arr[i:i + n] of a contiguous 1-D array, as a vector (unaligned load)
``vstore(arr, i, v)``   arr[i:i + n] = v
``vfma(a, b, c)``       a * b + c elementwise (one fused instruction where the CPU has FMA)
``vzero(arr)``          a vector of zeros of arr's dtype
``vsplat(arr, x)``      a vector of arr's dtype with every element x
``vbroadcast(arr, i)``  a vector with every element arr[i] (one load, no negative-index test)

Register rows: a tuple of 4 vectors (after inlining, 4 registers), ``stride`` apart in memory:
``load4(arr, o, stride)``, ``store4(arr, o, stride, v)`` and ``fma4(x, r, acc)`` (acc[q] + x * r[q],
the 4 vectors r loaded once and shared by every row of a tile), the building blocks of the grid
engine's dense tiles and of :mod:`simcore.gemm`'s micro-kernel; tiles of 4 such rows
(``load4x4``, ``store4x4``, ``fma4x4``) for the grid engine; rows of 2 (``load2``, ``store2``,
``fma2``) for the micro-kernel's tails.

No bounds are checked (as numba's own indexing, which checks none either): callers index
within the array. The multiply-add carries only the ``contract`` flag, so the sum is evaluated
exactly in the order the kernel writes it (bitwise reproducible, docs/architecture.md, *Reproducible by construction*).
"""
from llvmlite import ir
from numba import literal_unroll, types
from numba.extending import intrinsic, models, register_model

from ._jit import scalar

VBYTES = 64  # bytes per vector: one AVX-512 register


class Vec(types.Type):
    """A vector of ``count`` values of the numba float type ``dtype``."""

    def __init__(self, dtype, count):
        self.dtype = dtype
        self.count = count
        super().__init__(name=f"Vec({dtype} x {count})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        be_type = ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.count)
        super().__init__(dmm, fe_type, be_type)


def _vec_of(arr):
    if not (isinstance(arr, types.Array) and isinstance(arr.dtype, types.Float)):
        return None
    return Vec(arr.dtype, VBYTES // (arr.dtype.bitwidth // 8))


def _splat(context, builder, vt, x):
    """The vector of type ``vt`` with every element the scalar value x (LLVM IR)."""
    out = ir.Constant(context.get_value_type(vt), ir.Undefined)
    for q in range(vt.count):
        out = builder.insert_element(out, x, ir.Constant(ir.IntType(32), q))
    return out


def _element_ptr(context, builder, arrty, arr, idx):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.gep(data, [idx])


@intrinsic
def width(typingctx, arr):
    """Elements per vector for ``arr``'s dtype (a constant)."""
    vt = _vec_of(arr)
    if vt is None:
        return None

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, vt.count)

    return types.intp(arr), codegen


@intrinsic
def vload(typingctx, arr, idx):
    """The vector arr[idx:idx + width(arr)] (unaligned)."""
    vt = _vec_of(arr)
    if vt is None or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        vptr = builder.bitcast(ptr, context.get_value_type(vt).as_pointer())
        return builder.load(vptr, align=arr.dtype.bitwidth // 8)

    return vt(arr, idx), codegen


@intrinsic
def vstore(typingctx, arr, idx, v):
    """arr[idx:idx + width(arr)] = v (unaligned)."""
    vt = _vec_of(arr)
    if vt is None or v != vt or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        vptr = builder.bitcast(ptr, args[2].type.as_pointer())
        builder.store(args[2], vptr, align=arr.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(arr, idx, v), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c elementwise; "contract" alone lets it fuse, and nothing reorders it."""
    if not (isinstance(a, Vec) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        prod = builder.fmul(args[0], args[1], flags=("contract",))
        return builder.fadd(prod, args[2], flags=("contract",))

    return a(a, b, c), codegen


@intrinsic
def vzero(typingctx, arr):
    """A vector of zeros of ``arr``'s dtype."""
    vt = _vec_of(arr)
    if vt is None:
        return None

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), None)

    return vt(arr), codegen


@intrinsic
def vsplat(typingctx, arr, x):
    """A vector of ``arr``'s dtype with every element x (converted to that dtype)."""
    vt = _vec_of(arr)
    if vt is None or not isinstance(x, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return _splat(context, builder, vt, context.cast(builder, args[1], sig.args[1], vt.dtype))

    return vt(arr, x), codegen


@intrinsic
def vbroadcast(typingctx, arr, idx):
    """A vector of ``arr``'s dtype with every element arr[idx]: one load, without the test for
    a negative index that numba's ``arr[idx]`` makes (in a micro-kernel's loop, four integer
    instructions per broadcast)."""
    vt = _vec_of(arr)
    if vt is None or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return _splat(context, builder, vt, builder.load(_element_ptr(context, builder, sig.args[0], args[0], args[1])))

    return vt(arr, idx), codegen


# --- register rows of 4 vectors (the GEMM micro-kernel of simcore.gemm) -----------------------

@scalar
def load4(arr, o, stride):
    """The 4 vectors arr[o + q * stride], q = 0..3."""
    return (vload(arr, o), vload(arr, o + stride), vload(arr, o + 2 * stride),
            vload(arr, o + 3 * stride))


@scalar
def store4(arr, o, stride, v):
    """arr[o + q * stride] = v[q] for q = 0..3."""
    for q in literal_unroll((0, 1, 2, 3)):
        vstore(arr, o + q * stride, v[q])


@scalar
def fma4(x, r, acc):
    """acc[q] + x * r[q] for q = 0..3 (x one vector, r and acc rows of 4)."""
    return (vfma(x, r[0], acc[0]), vfma(x, r[1], acc[1]), vfma(x, r[2], acc[2]),
            vfma(x, r[3], acc[3]))


# --- tiles of 4 x 4 vectors (the grid engine's dense layers) ---------------------------------

@scalar
def load4x4(arr, o, stride, row_stride):
    """The tile of 4 rows of 4 vectors arr[o + q * stride + p * row_stride], q, p = 0..3."""
    return (load4(arr, o, row_stride), load4(arr, o + stride, row_stride),
            load4(arr, o + 2 * stride, row_stride), load4(arr, o + 3 * stride, row_stride))


@scalar
def store4x4(arr, o, stride, row_stride, t):
    """arr[o + q * stride + p * row_stride] = t[q][p] for q, p = 0..3."""
    for q in literal_unroll((0, 1, 2, 3)):
        store4(arr, o + q * stride, row_stride, t[q])


@scalar
def fma4x4(arr, o, stride, r, t):
    """t[q][p] + arr[o + q * stride] * r[p]: each row q of the tile multiplies its own vector
    of arr by the row of 4 vectors r, which is loaded once and shared by the 4 rows."""
    return (fma4(vload(arr, o), r, t[0]), fma4(vload(arr, o + stride), r, t[1]),
            fma4(vload(arr, o + 2 * stride), r, t[2]), fma4(vload(arr, o + 3 * stride), r, t[3]))


@scalar
def load2(arr, o, stride):
    """The 2 vectors arr[o], arr[o + stride]."""
    return vload(arr, o), vload(arr, o + stride)


@scalar
def store2(arr, o, stride, v):
    """arr[o] = v[0], arr[o + stride] = v[1]."""
    vstore(arr, o, v[0])
    vstore(arr, o + stride, v[1])


@scalar
def fma2(x, r, acc):
    """acc[q] + x * r[q] for q = 0, 1."""
    return vfma(x, r[0], acc[0]), vfma(x, r[1], acc[1])
