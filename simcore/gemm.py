r"""A register-tiled matrix product for one network's layers: the micro-kernel of the grid
engine's per-network strategy (:mod:`simcore.grid.cpu_gemm`).

.. math::
    C_{mn} = I_{mn} + \sum_{k=0}^{K-1} L_{mk} R_{kn}, \qquad 0 \le m < M,\ 0 \le n < N

on flat arrays with explicit offsets and strides, so that one routine serves the three
products of backpropagation (``L`` read through any strides, i.e. transposed or not):

- forward, :math:`z = b + a W`: ``L = a`` (rows samples), ``R = W``, ``I = b`` (row stride 0);
- weight gradient, :math:`\nabla W \mathrel{+}= a^T \delta`: ``L = a`` read transposed,
  ``R = \delta``, ``I = C = \nabla W`` (accumulate);
- input gradient, :math:`\delta W^T`: ``L = \delta``, ``R = W^T`` (kept by the caller),
  ``I`` a row of zeros.

How it is fast (Goto & van de Geijn 2008, the BLIS micro-kernel): a tile of ``MR = 6`` rows by
4 vectors of columns (24 accumulators, three quarters of AVX-512's 32 registers) stays in
registers for the whole sum over k; each k loads 4 vectors of ``R`` and broadcasts 6 scalars of
``L``, for 24 fused multiply-adds. Columns are the outer loop, so one panel of ``R`` (K rows by
4 vectors) is reused by every tile of rows while it is in cache. Tails: rows one at a time,
the last columns in tiles of 2 vectors (12 accumulators), then of one.

Every sum runs in the textbook's order (``I`` first, then k = 0, 1, ...), as the grid engine's
lane kernels do, so a result does not depend on the tiling: the product is bitwise the plain
triple loop with fused multiply-adds (tests/test_gemm.py).

``N`` must be a multiple of the vector width (16 float32 or 8 float64): callers pad their
column counts with zeros. Nothing is bounds-checked (as in :mod:`simcore.simd`).
"""
from ._jit import cpu_kernel, scalar
from .simd import fma2, fma4, load2, load4, store2, store4, vbroadcast, vfma, vload, vstore, width

MR = 6  # rows of a tile (broadcasts per k)
NR = 4  # vectors of a tile (loads per k)


@scalar
def _tile_6x4(L, lo, sm, sk, R, ro, ldr, I, io, si, C, co, ldc, K):
    V = width(R)
    c0 = load4(I, io, V)
    c1 = load4(I, io + si, V)
    c2 = load4(I, io + 2 * si, V)
    c3 = load4(I, io + 3 * si, V)
    c4 = load4(I, io + 4 * si, V)
    c5 = load4(I, io + 5 * si, V)
    for k in range(K):
        r = load4(R, ro + k * ldr, V)
        lk = lo + k * sk
        c0 = fma4(vbroadcast(L, lk), r, c0)
        c1 = fma4(vbroadcast(L, lk + sm), r, c1)
        c2 = fma4(vbroadcast(L, lk + 2 * sm), r, c2)
        c3 = fma4(vbroadcast(L, lk + 3 * sm), r, c3)
        c4 = fma4(vbroadcast(L, lk + 4 * sm), r, c4)
        c5 = fma4(vbroadcast(L, lk + 5 * sm), r, c5)
    store4(C, co, V, c0)
    store4(C, co + ldc, V, c1)
    store4(C, co + 2 * ldc, V, c2)
    store4(C, co + 3 * ldc, V, c3)
    store4(C, co + 4 * ldc, V, c4)
    store4(C, co + 5 * ldc, V, c5)


@scalar
def _tile_1x4(L, lo, sk, R, ro, ldr, I, io, C, co, K):
    V = width(R)
    c0 = load4(I, io, V)
    for k in range(K):
        c0 = fma4(vbroadcast(L, lo + k * sk), load4(R, ro + k * ldr, V), c0)
    store4(C, co, V, c0)


@scalar
def _tile_6x2(L, lo, sm, sk, R, ro, ldr, I, io, si, C, co, ldc, K):
    V = width(R)
    c0 = load2(I, io, V)
    c1 = load2(I, io + si, V)
    c2 = load2(I, io + 2 * si, V)
    c3 = load2(I, io + 3 * si, V)
    c4 = load2(I, io + 4 * si, V)
    c5 = load2(I, io + 5 * si, V)
    for k in range(K):
        r = load2(R, ro + k * ldr, V)
        lk = lo + k * sk
        c0 = fma2(vbroadcast(L, lk), r, c0)
        c1 = fma2(vbroadcast(L, lk + sm), r, c1)
        c2 = fma2(vbroadcast(L, lk + 2 * sm), r, c2)
        c3 = fma2(vbroadcast(L, lk + 3 * sm), r, c3)
        c4 = fma2(vbroadcast(L, lk + 4 * sm), r, c4)
        c5 = fma2(vbroadcast(L, lk + 5 * sm), r, c5)
    store2(C, co, V, c0)
    store2(C, co + ldc, V, c1)
    store2(C, co + 2 * ldc, V, c2)
    store2(C, co + 3 * ldc, V, c3)
    store2(C, co + 4 * ldc, V, c4)
    store2(C, co + 5 * ldc, V, c5)


@scalar
def _tile_1x2(L, lo, sk, R, ro, ldr, I, io, C, co, K):
    V = width(R)
    c0 = load2(I, io, V)
    for k in range(K):
        c0 = fma2(vbroadcast(L, lo + k * sk), load2(R, ro + k * ldr, V), c0)
    store2(C, co, V, c0)


@scalar
def _tile_6x1(L, lo, sm, sk, R, ro, ldr, I, io, si, C, co, ldc, K):
    c0 = vload(I, io)
    c1 = vload(I, io + si)
    c2 = vload(I, io + 2 * si)
    c3 = vload(I, io + 3 * si)
    c4 = vload(I, io + 4 * si)
    c5 = vload(I, io + 5 * si)
    for k in range(K):
        r = vload(R, ro + k * ldr)
        lk = lo + k * sk
        c0 = vfma(vbroadcast(L, lk), r, c0)
        c1 = vfma(vbroadcast(L, lk + sm), r, c1)
        c2 = vfma(vbroadcast(L, lk + 2 * sm), r, c2)
        c3 = vfma(vbroadcast(L, lk + 3 * sm), r, c3)
        c4 = vfma(vbroadcast(L, lk + 4 * sm), r, c4)
        c5 = vfma(vbroadcast(L, lk + 5 * sm), r, c5)
    vstore(C, co, c0)
    vstore(C, co + ldc, c1)
    vstore(C, co + 2 * ldc, c2)
    vstore(C, co + 3 * ldc, c3)
    vstore(C, co + 4 * ldc, c4)
    vstore(C, co + 5 * ldc, c5)


@scalar
def _tile_1x1(L, lo, sk, R, ro, ldr, I, io, C, co, K):
    c0 = vload(I, io)
    for k in range(K):
        c0 = vfma(vbroadcast(L, lo + k * sk), vload(R, ro + k * ldr), c0)
    vstore(C, co, c0)


@cpu_kernel(ordered=True)
def gemm(L, lo, sm, sk, R, ro, ldr, I, io, si, C, co, ldc, M, N, K):
    """C[co + m*ldc + n] = I[io + m*si + n] + sum_k L[lo + m*sm + k*sk] R[ro + k*ldr + n]
    for m < M, n < N (a multiple of width(C)); flat 1-D arrays of one dtype. ``I`` may be ``C``
    itself (si = ldc, io = co: accumulate) or a row read by every m (si = 0)."""
    V = width(C)
    n = 0
    while n + NR * V <= N:
        m = 0
        while m + MR <= M:
            _tile_6x4(L, lo + m * sm, sm, sk, R, ro + n, ldr, I, io + m * si + n, si,
                      C, co + m * ldc + n, ldc, K)
            m += MR
        while m < M:
            _tile_1x4(L, lo + m * sm, sk, R, ro + n, ldr, I, io + m * si + n, C, co + m * ldc + n, K)
            m += 1
        n += NR * V
    while n + 2 * V <= N:
        m = 0
        while m + MR <= M:
            _tile_6x2(L, lo + m * sm, sm, sk, R, ro + n, ldr, I, io + m * si + n, si,
                      C, co + m * ldc + n, ldc, K)
            m += MR
        while m < M:
            _tile_1x2(L, lo + m * sm, sk, R, ro + n, ldr, I, io + m * si + n, C, co + m * ldc + n, K)
            m += 1
        n += 2 * V
    while n < N:
        m = 0
        while m + MR <= M:
            _tile_6x1(L, lo + m * sm, sm, sk, R, ro + n, ldr, I, io + m * si + n, si,
                      C, co + m * ldc + n, ldc, K)
            m += MR
        while m < M:
            _tile_1x1(L, lo + m * sm, sk, R, ro + n, ldr, I, io + m * si + n, C, co + m * ldc + n, K)
            m += 1
        n += V
