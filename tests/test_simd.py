"""simcore.simd (explicit vectors) and the grid engine's register-blocked dense kernels, against
plain NumPy: every block size and tail, float32 and float64."""
import numpy as np
import pytest

from simcore._jit import cpu_kernel
from simcore.grid import LANES
from simcore.grid import cpu
from simcore.simd import vbroadcast, vfma, vload, vsplat, vstore, vzero, width, VBYTES


@cpu_kernel
def _fma_loop(a, b, c, out):
    for i in range(0, a.size, width(a)):
        vstore(out, i, vfma(vload(a, i), vload(b, i), vload(c, i)))


@cpu_kernel
def _splat_loop(a, x, out):
    for i in range(0, a.size, width(a)):
        vstore(out, i, vfma(vload(a, i), vsplat(a, x), vsplat(a, 0.5)))


@cpu_kernel
def _broadcast_each(a, out):
    """out's row i: every element a[i] (vbroadcast), for every i."""
    w = width(a)
    for i in range(a.size):
        vstore(out, i * w, vbroadcast(a, i))


@cpu_kernel
def _zero_at(out, i):
    vstore(out, i, vzero(out))


@cpu_kernel
def _width_of(a):
    return width(a)


DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_width_is_one_register(dtype):
    assert _width_of(np.zeros(1, dtype)) == VBYTES // np.dtype(dtype).itemsize
    # the grid engine steps through a block of lanes in whole vectors
    assert LANES % _width_of(np.zeros(1, dtype)) == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_load_fma_store_against_numpy(dtype):
    rng = np.random.default_rng(1)
    n = 4 * VBYTES // np.dtype(dtype).itemsize
    a, b, c = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    out = np.full(n, np.nan, dtype)
    _fma_loop(a, b, c, out)
    # one rounding (fused) or two: within one ulp of the float64 value either way
    exact = a.astype(np.float64) * b + c
    np.testing.assert_allclose(out, exact, rtol=2 * np.finfo(dtype).eps, atol=4 * np.finfo(dtype).tiny)
    assert out.dtype == dtype
    _splat_loop(a, 3, out)  # an int converted to the dtype; a * 3 + 0.5
    np.testing.assert_allclose(out, a.astype(np.float64) * 3 + 0.5, rtol=0, atol=16 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_broadcast_fills_a_vector_with_one_element(dtype):
    w = VBYTES // np.dtype(dtype).itemsize
    a = np.array([1.5, -0.0, np.inf, np.nan, np.finfo(dtype).tiny / 4, 3.0, -7.25], dtype)
    out = np.zeros(a.size * w, dtype)
    _broadcast_each(a, out)
    np.testing.assert_array_equal(out.reshape(a.size, w), np.repeat(a[:, None], w, axis=1))
    assert np.signbit(out[w:2 * w]).all()  # -0.0 stays -0.0: a bit copy, no arithmetic


@pytest.mark.parametrize("dtype", DTYPES)
def test_store_touches_exactly_one_vector_at_any_offset(dtype):
    w = VBYTES // np.dtype(dtype).itemsize
    for i in (0, 1, 3, w):  # unaligned offsets too
        out = np.ones(3 * w, dtype)
        _zero_at(out, i)
        want = np.ones(3 * w, dtype)
        want[i:i + w] = 0.0
        np.testing.assert_array_equal(out, want)


def _dense_reference(a, th, ow, ob, fi, fo):
    W = th[ow:ow + fi * fo].reshape(fi, fo, -1).astype(np.float64)
    b = th[ob:ob + fo].astype(np.float64)
    return b[None] + np.einsum("sil,ijl->sjl", a.astype(np.float64), W), W


# samples, fan-in and fan-out around the register tile (4 samples x 4 units): whole tiles, tails
# only, both
SHAPES = [(16, 2, 16), (16, 16, 16), (16, 16, 1), (3, 5, 11), (7, 19, 9), (1, 1, 1), (4, 8, 24),
          (2, 17, 8), (5, 9, 3), (6, 4, 5), (9, 3, 4)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ns,fi,fo", SHAPES)
def test_dense_kernels_against_numpy(dtype, ns, fi, fo):
    rng = np.random.default_rng(ns * 1000 + fi * 10 + fo)
    P = 5 + fi * fo + fo + 3  # parameters before and after the layer must stay untouched
    ow, ob = 5, 5 + fi * fo
    a = rng.standard_normal((ns, fi, LANES)).astype(dtype)
    th = rng.standard_normal((P, LANES)).astype(dtype)
    delta = rng.standard_normal((ns, fo, LANES)).astype(dtype)
    ref_z, W = _dense_reference(a, th, ow, ob, fi, fo)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)

    z = np.full((ns, fo, LANES), np.nan, dtype)
    cpu._dense_forward(a, th, ow, ob, fi, fo, z)
    np.testing.assert_allclose(z, ref_z, **tol)

    gr0 = rng.standard_normal((P, LANES)).astype(dtype)  # gradients are added to what is there
    gr = gr0.copy()
    da = np.full((ns, fi, LANES), np.nan, dtype)
    cpu._dense_backward(a, th, ow, ob, fi, fo, delta, gr, da, True)
    d64 = delta.astype(np.float64)
    want_gW = gr0[ow:ow + fi * fo].astype(np.float64) + np.einsum("sil,sjl->ijl", a.astype(np.float64),
                                                                   d64).reshape(fi * fo, LANES)
    want_gb = gr0[ob:ob + fo].astype(np.float64) + d64.sum(axis=0)
    np.testing.assert_allclose(gr[ow:ow + fi * fo], want_gW, **tol)
    np.testing.assert_allclose(gr[ob:ob + fo], want_gb, **tol)
    np.testing.assert_array_equal(gr[:ow], gr0[:ow])
    np.testing.assert_array_equal(gr[ob + fo:], gr0[ob + fo:])
    np.testing.assert_allclose(da, np.einsum("sjl,ijl->sil", d64, W), **tol)

    # want_da=False leaves da alone and gives the same gradients
    gr2, da2 = gr0.copy(), np.full_like(da, 7.0)
    cpu._dense_backward(a, th, ow, ob, fi, fo, delta, gr2, da2, False)
    np.testing.assert_array_equal(gr2, gr)
    assert (da2 == 7.0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiling_does_not_change_a_result(dtype):
    """The kernels sum in the order of the plain loops (z = b + a_0 W_0 + a_1 W_1 + ...;
    gradients over samples in order), whether a unit or a sample sits in a register tile of 4 or
    in a one-at-a-time tail: a unit computed alone (fan-out 1) equals, bit for bit, the same unit
    computed inside a layer of 18 (four tiles and a tail of 2), and a sample computed alone the
    same sample inside a chunk of 7 (a tile of 4 and a tail of 3), forward and backward."""
    rng = np.random.default_rng(7)
    ns, fi, fo = 7, 18, 18
    a = rng.standard_normal((ns, fi, LANES)).astype(dtype)
    th = rng.standard_normal((fi * fo + fo, LANES)).astype(dtype)
    delta = rng.standard_normal((ns, fo, LANES)).astype(dtype)
    z = np.empty((ns, fo, LANES), dtype)
    cpu._dense_forward(a, th, 0, fi * fo, fi, fo, z)
    gr = np.zeros_like(th)
    da = np.empty_like(a)
    cpu._dense_backward(a, th, 0, fi * fo, fi, fo, delta, gr, da, True)
    for j in (0, 5, 13, 17):
        th1 = np.concatenate([th[j:fi * fo:fo], th[fi * fo + j:fi * fo + j + 1]])  # W[:, j], b[j]
        z1 = np.empty((ns, 1, LANES), dtype)
        cpu._dense_forward(a, th1, 0, fi, fi, 1, z1)
        np.testing.assert_array_equal(z1[:, 0], z[:, j])
        gr1 = np.zeros_like(th1)
        cpu._dense_backward(a, th1, 0, fi, fi, 1, delta[:, j:j + 1].copy(), gr1, np.empty_like(a), False)
        np.testing.assert_array_equal(gr1[:fi], gr[j:fi * fo:fo])
        np.testing.assert_array_equal(gr1[fi], gr[fi * fo + j])
    for s in (0, 3, 4, 6):  # in the tile and in the tail
        z1 = np.empty((1, fo, LANES), dtype)
        cpu._dense_forward(a[s:s + 1].copy(), th, 0, fi * fo, fi, fo, z1)
        np.testing.assert_array_equal(z1[0], z[s])
        da1 = np.empty((1, fi, LANES), dtype)
        cpu._dense_backward(a[s:s + 1].copy(), th, 0, fi * fo, fi, fo, delta[s:s + 1].copy(),
                            np.zeros_like(th), da1, True)
        np.testing.assert_array_equal(da1[0], da[s])


def test_dense_kernels_refuse_arrays_of_another_lane_count():
    a = np.zeros((2, 3, 16))
    th = np.zeros((20, 16))
    with pytest.raises(ValueError, match="LANES"):
        cpu._dense_forward(a, th, 0, 9, 3, 3, np.zeros((2, 3, 16)))
    with pytest.raises(ValueError, match="LANES"):
        cpu._dense_backward(a, th, 0, 9, 3, 3, np.zeros((2, 3, 16)), th.copy(), a.copy(), True)
