"""simcore.gemm (the per-network strategy's register-tiled matrix product) against NumPy, and
against itself row by row: every tile shape and tail, transposed and strided operands, the
three ways of starting a sum (a bias row, zeros, accumulating into C), float32 and float64."""
import numpy as np
import pytest

from simcore.gemm import MR, NR, gemm
from simcore.simd import VBYTES

DTYPES = [np.float32, np.float64]


def _v(dtype):
    return VBYTES // np.dtype(dtype).itemsize


def _product(dtype, M, N, K, transposed, mode, seed=0):
    """(C from gemm, the float64 NumPy value, L, R, I) for one case."""
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((K, M) if transposed else (M, K)).astype(dtype)
    R = rng.standard_normal((K, N)).astype(dtype)
    C = rng.standard_normal((M, N)).astype(dtype) if mode == "accumulate" else np.full((M, N), np.nan, dtype)
    bias = rng.standard_normal(N).astype(dtype) if mode == "bias" else np.zeros(N, dtype)
    Lm = L.T if transposed else L
    start = C.astype(np.float64) if mode == "accumulate" else np.broadcast_to(bias.astype(np.float64), (M, N))
    want = start + Lm.astype(np.float64) @ R.astype(np.float64)
    sm, sk = (1, M) if transposed else (K, 1)
    if mode == "accumulate":
        gemm(L.ravel(), 0, sm, sk, R.ravel(), 0, N, C.ravel(), 0, N, C.ravel(), 0, N, M, N, K)
    else:
        gemm(L.ravel(), 0, sm, sk, R.ravel(), 0, N, bias, 0, 0, C.ravel(), 0, N, M, N, K)
    return C, want, (L, R, bias, sm, sk)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M", [1, MR - 1, MR, MR + 1, 3 * MR + 2])
@pytest.mark.parametrize("nvec", [1, 2, NR, NR + 1, 2 * NR + 3])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("mode", ["bias", "zeros", "accumulate"])
def test_gemm_against_numpy(dtype, M, nvec, transposed, mode):
    N, K = nvec * _v(dtype), 19
    C, want, _ = _product(dtype, M, N, K, transposed, mode)
    eps = np.finfo(dtype).eps
    scale = np.abs(want).max() + 1.0
    assert np.abs(C - want).max() <= 4 * K * eps * scale


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_does_not_depend_on_the_tiling(dtype):
    """The whole product (6-row tiles of 4 vectors) equals the product one row and one vector
    at a time (1 x 1 tiles), bitwise: every sum runs in the same order whatever the tile."""
    V = _v(dtype)
    M, N, K = 2 * MR + 3, (NR + 3) * V, 23
    C, _, (L, R, bias, sm, sk) = _product(dtype, M, N, K, False, "bias", seed=3)
    one = np.empty_like(C)
    for m in range(M):
        for n in range(0, N, V):
            gemm(L.ravel(), m * sm, sm, sk, R.ravel(), n, N, bias, n, 0, one.ravel(), m * N + n, N, 1, V, K)
    assert np.array_equal(C, one)


def test_gemm_leaves_everything_outside_its_block_alone():
    """Offsets and leading dimensions: a 7 x 16 block in the middle of larger arrays."""
    rng = np.random.default_rng(5)
    M, N, K, ld = 7, 16, 5, 40
    L = rng.standard_normal(200)
    R = rng.standard_normal(400)
    C = rng.standard_normal(600)
    before = C.copy()
    lo, ro, co = 3, 8, 16
    gemm(L, lo, K + 2, 1, R, ro, ld, C, co, ld, C, co, ld, M, N, K)
    Lm = np.array([[L[lo + m * (K + 2) + k] for k in range(K)] for m in range(M)])
    Rm = np.array([[R[ro + k * ld + n] for n in range(N)] for k in range(K)])
    inside = np.zeros(C.size, bool)
    for m in range(M):
        inside[co + m * ld:co + m * ld + N] = True
    got = np.array([[C[co + m * ld + n] for n in range(N)] for m in range(M)])
    want = np.array([[before[co + m * ld + n] for n in range(N)] for m in range(M)]) + Lm @ Rm
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    assert np.array_equal(C[~inside], before[~inside])
