r"""The grid engine on the CPU: many networks of one architecture trained in one compiled call.

Networks sit in *lanes* (docs/architecture.md, *A strategy per size*): every per-network array carries the network
index as its innermost, contiguous axis of length ``LANES``, so each arithmetic instruction
advances ``LANES`` networks at once with SIMD and nothing needs a horizontal reduction. Threads
(``simcore.grid.run_blocks``) own disjoint blocks of ``LANES`` networks: no shared
writes, and every network sees the same sequence of operations whatever its block, lane,
thread count or chunking of the grid, so results are bitwise reproducible.

One step of full-batch (or minibatch) training of the block, for layers :math:`l = 1..L`:

.. math::
    z_l = a_{l-1} W_l + b_l,\ y_l = \mathrm{BN}(z_l),\ a_l = f(y_l);\quad
    \delta_L = \partial L / \partial z_L;\quad
    \nabla W_l = \textstyle\sum_s a_{l-1,s}^T \delta_{l,s};\quad
    \delta_{l-1} = (\delta_l W_l^T) \odot f'(y_{l-1})

then the optimizer's update, masked per lane: a network whose loss is non-finite or exceeds
``DIVERGE_FACTOR`` times its initial loss is frozen and flagged (*Divergence is data*). Telemetry is
accumulated here every ``record_every`` steps (*Telemetry inside the kernel*).

Why the lane loops run to a run-time count ``nl`` rather than the constant ``LANES``: with a
constant trip count LLVM unrolls ``for k in range(LANES)`` into scalar code and, knowing
nothing about aliasing between numba's arrays, cannot pack it again (SLP); with a run-time
count its loop vectoriser emits packed AVX-512 code behind a cheap run-time overlap check,
more than twice as fast (docs/benchmarks.md, "Measurements behind the code's choices"). The dense layers themselves go further: they are register-blocked with the explicit vectors of
:mod:`simcore.simd` (see ``SB`` below).

Compile time: the kernel is compiled twice, with and without batch norm (:func:`train_kernel`),
so that a network without batch norm does not compile the batch-norm layers. Nothing else is
worth a compile per value: one kernel holding every activation, loss and optimizer compiles
once, while a kernel per activation would compile again for every activation a study compares
(docs/benchmarks.md, "Compile time").
"""
import functools
import math

import numpy as np

from .._jit import cpu_kernel
from ..activations import backward as act_backward, forward as act_forward
from ..interrupt import stop_requested
from ..layers import BN_EPS, bn_affine, bn_input_grad, bn_inv_std, bn_normalize
from ..losses import (CE, MSE, MSE_SIGMOID, accuracy_units, bce_unit, ce_delta, ce_row_loss, correct_units,
                      mse_sigmoid_unit, mse_unit, output_grad, output_unit, softmax_shift)
from ..optim import ADAM, GD, MOMENTUM, NESTEROV
from ..scalar import exp
from ..simd import (VBYTES, fma4, fma4x4, load4, load4x4, store4, store4x4, vfma, vload, vsplat, vstore,
                    vzero, width)
from .core import (FAN_IN, FAN_OUT, NQ, OFF_B, OFF_BETA, OFF_GAMMA, OFF_W, adam_corrections,
                   batch_order, check_batchnorm_layout, clip_scale, decayed, evaluation, frozen_at,
                   is_diverged, is_reached, lr_factor, optimizer_step, saturated, shifted_moments)

LANES = 32                # networks per block: four AVX-512 registers of float64
CHUNK = 16                # samples per chunk of the batch (buffers stay in cache)
# --- layers in lanes: arrays are (samples, units, LANES); th and gr are (params, LANES) --------

# The dense layers are the engine's matrix products, register-blocked with explicit vectors
# (simcore.simd explains why LLVM will not block them by itself). A tile of SB = 4 samples x 4
# outputs (or inputs), one vector of V = width(th) lanes each, stays in 16 registers while the
# other operand streams past: each weight vector loaded serves SB samples, so a block's weights
# (64 KiB for a 16x16 layer of 32 float64 lanes, more than L1) stream from L2 once per SB samples
# instead of once per sample (docs/benchmarks.md, "Where the time went"). Tails (ns % SB samples, fo % 4
# outputs) take tiles of one. Lane rows are LANES apart, a constant, which keeps the addressing
# in immediate offsets. Each sum runs in the order of the textbook loop (z = b, then + a_i W_ij
# for i = 0, 1, ...; gradients summed over samples in order), so a result does not depend on
# the tiling (tests/test_simd.py).
SB = 4
assert LANES % 16 == 0  # whole vectors of 16 float32 or 8 float64 per block of lanes


@cpu_kernel(ordered=True)
def _dense_forward(a, th, ow, ob, fi, fo, z):
    """z[s, j] = b[j] + sum_i a[s, i] W[i, j] for every lane; a (ns, fi, LANES), z (ns, fo, LANES),
    W and b rows of th at offsets ow (row-major fi x fo) and ob."""
    V = width(th)
    nl = z.shape[2]  # = LANES; a run-time trip count keeps LLVM from unrolling the c loops
    if nl != LANES or a.shape[2] != LANES or th.shape[1] != LANES:
        raise ValueError("dense kernels need arrays of LANES lanes")  # unchecked vector access below
    af, tf, zf = a.reshape(-1), th.reshape(-1), z.reshape(-1)
    ns = a.shape[0]
    ra, rz, rw = fi * LANES, fo * LANES, fo * LANES  # next sample in a, in z; next input row of W
    s = 0
    while s + SB <= ns:  # tiles of SB samples
        j = 0
        while j + 4 <= fo:  # x 4 outputs: 16 accumulators
            for c in range(0, nl, V):
                x, w = s * ra + c, (ow + j) * LANES + c
                b = load4(tf, (ob + j) * LANES + c, LANES)
                t = (b, b, b, b)
                for i in range(fi):
                    t = fma4x4(af, x + i * LANES, ra, load4(tf, w + i * rw, LANES), t)
                store4x4(zf, (s * fo + j) * LANES + c, rz, LANES, t)
            j += 4
        while j < fo:  # x the last fo % 4 outputs, one at a time: SB accumulators, one per sample
            for c in range(0, nl, V):
                x, w = s * ra + c, (ow + j) * LANES + c
                b = vload(tf, (ob + j) * LANES + c)
                zs = (b, b, b, b)
                for i in range(fi):
                    zs = fma4(vload(tf, w + i * rw), load4(af, x + i * LANES, ra), zs)
                store4(zf, (s * fo + j) * LANES + c, rz, zs)
            j += 1
        s += SB
    while s < ns:  # the last ns % SB samples, one at a time
        j = 0
        while j + 4 <= fo:
            for c in range(0, nl, V):
                x, w = s * ra + c, (ow + j) * LANES + c
                z0 = load4(tf, (ob + j) * LANES + c, LANES)
                for i in range(fi):
                    z0 = fma4(vload(af, x + i * LANES), load4(tf, w + i * rw, LANES), z0)
                store4(zf, (s * fo + j) * LANES + c, LANES, z0)
            j += 4
        while j < fo:
            for c in range(0, nl, V):
                x, w = s * ra + c, (ow + j) * LANES + c
                z0 = vload(tf, (ob + j) * LANES + c)
                for i in range(fi):
                    z0 = vfma(vload(af, x + i * LANES), vload(tf, w + i * rw), z0)
                vstore(zf, (s * fo + j) * LANES + c, z0)
            j += 1
        s += 1


@cpu_kernel(ordered=True)
def _dense_backward(a, th, ow, ob, fi, fo, delta, gr, da, want_da):
    """Add this chunk's gradients to gr: dL/db[j] += sum_s delta[s, j] and
    dL/dW[i, j] += sum_s a[s, i] delta[s, j]; with ``want_da`` also write
    da[s, i] = sum_j delta[s, j] W[i, j] (the next delta before the activation's derivative)."""
    V = width(th)
    ns, nl = a.shape[0], gr.shape[1]  # nl = LANES; a run-time trip count keeps LLVM from unrolling the c loops
    if nl != LANES or a.shape[2] != LANES or th.shape[1] != LANES or delta.shape[2] != LANES:
        raise ValueError("dense kernels need arrays of LANES lanes")  # unchecked vector access below
    af, tf, df, gf, daf = a.reshape(-1), th.reshape(-1), delta.reshape(-1), gr.reshape(-1), da.reshape(-1)
    ra, rd, rw = fi * LANES, fo * LANES, fo * LANES  # next sample in a, in delta; next input row of W
    # --- the bias gradients: the weight of an input fixed at 1 (1 * delta is exact, so each
    # multiply-add rounds as the plain sum gr + delta would); 4 rows in registers, samples streaming
    one = vsplat(th, 1.0)
    j = 0
    while j < fo:
        jb = 4 if j + 4 <= fo else 1
        for c in range(0, nl, V):
            g = (ob + j) * LANES + c
            if jb == 4:
                acc = load4(gf, g, LANES)
                for s in range(ns):
                    acc = fma4(one, load4(df, s * rd + j * LANES + c, LANES), acc)
                store4(gf, g, LANES, acc)
            else:
                g0 = vload(gf, g)
                for s in range(ns):
                    g0 = vfma(one, vload(df, s * rd + j * LANES + c), g0)
                vstore(gf, g, g0)
        j += jb
    # --- the weight gradients: tiles of 4 inputs x 4 outputs in registers, samples streaming past
    i = 0
    while i + 4 <= fi:
        j = 0
        while j + 4 <= fo:
            for c in range(0, nl, V):
                g = (ow + i * fo + j) * LANES + c
                t = load4x4(gf, g, rw, LANES)  # rows: inputs i..i+3, each of outputs j..j+3
                for s in range(ns):
                    t = fma4x4(af, s * ra + i * LANES + c, LANES, load4(df, s * rd + j * LANES + c, LANES), t)
                store4x4(gf, g, rw, LANES, t)
            j += 4
        while j < fo:  # the last fo % 4 outputs: 4 inputs x 1 output
            for c in range(0, nl, V):
                g = (ow + i * fo + j) * LANES + c
                acc = load4(gf, g, rw)
                for s in range(ns):
                    acc = fma4(vload(df, s * rd + j * LANES + c), load4(af, s * ra + i * LANES + c, LANES),
                               acc)
                store4(gf, g, rw, acc)
            j += 1
        i += 4
    while i < fi:  # the last fi % 4 inputs, one at a time
        j = 0
        while j < fo:
            jb = 4 if j + 4 <= fo else 1
            for c in range(0, nl, V):
                g = (ow + i * fo + j) * LANES + c
                if jb == 4:
                    acc = load4(gf, g, LANES)
                    for s in range(ns):
                        acc = fma4(vload(af, s * ra + i * LANES + c), load4(df, s * rd + j * LANES + c, LANES),
                                   acc)
                    store4(gf, g, LANES, acc)
                else:
                    g0 = vload(gf, g)
                    for s in range(ns):
                        g0 = vfma(vload(af, s * ra + i * LANES + c), vload(df, s * rd + j * LANES + c), g0)
                    vstore(gf, g, g0)
            j += jb
        i += 1
    if not want_da:
        return
    # --- da = delta W^T: tiles of SB samples x 4 inputs in registers, the fo outputs streaming past
    s = 0
    while s < ns:
        sb = SB if s + SB <= ns else 1
        i = 0
        while i < fi:
            ib = 4 if i + 4 <= fi else 1
            for c in range(0, nl, V):
                w = (ow + i * fo) * LANES + c  # W[i, 0]; W[i + q, j] is q rows of rw further
                o = s * ra + i * LANES + c
                zero = vzero(th)
                if ib == 4 and sb == SB:
                    z4 = (zero, zero, zero, zero)
                    t = (z4, z4, z4, z4)  # rows: samples s..s+3, each of inputs i..i+3
                    for j in range(fo):
                        t = fma4x4(df, s * rd + j * LANES + c, rd, load4(tf, w + j * LANES, rw), t)
                    store4x4(daf, o, ra, LANES, t)
                elif ib == 4:
                    d0 = (zero, zero, zero, zero)
                    for j in range(fo):
                        d0 = fma4(vload(df, s * rd + j * LANES + c), load4(tf, w + j * LANES, rw), d0)
                    store4(daf, o, LANES, d0)
                elif sb == SB:
                    d0 = (zero, zero, zero, zero)
                    for j in range(fo):
                        d0 = fma4(vload(tf, w + j * LANES), load4(df, s * rd + j * LANES + c, rd), d0)
                    store4(daf, o, ra, d0)
                else:
                    d1 = zero
                    for j in range(fo):
                        d1 = vfma(vload(df, s * rd + j * LANES + c), vload(tf, w + j * LANES), d1)
                    vstore(daf, o, d1)
            i += ib
        s += sb


@cpu_kernel(ordered=True)
def _bn_forward(z, th, og, obeta, fo, y, xhat, inv_std, acc, mean):
    """Training-mode batch norm of z into y over the batch (z's first axis), keeping xhat,
    1/sqrt(var + eps) and the batch means (float64) for the backward pass and the held-out set."""
    nl = z.shape[2]  # lanes: a run-time trip count, see the module docstring
    nb = z.shape[0]
    for j in range(fo):
        for k in range(nl):
            acc[0, k] = 0.0
            acc[1, k] = 0.0
        for s in range(nb):
            for k in range(nl):
                acc[0, k] += z[s, j, k]
        for k in range(nl):
            acc[0, k] /= nb
            mean[j, k] = acc[0, k]
        for s in range(nb):
            for k in range(nl):
                d = z[s, j, k] - acc[0, k]
                acc[1, k] += d * d
        for k in range(nl):
            inv_std[j, k] = bn_inv_std(acc[1, k] / nb, BN_EPS)
        for s in range(nb):
            for k in range(nl):
                xhat[s, j, k] = bn_normalize(z[s, j, k], acc[0, k], inv_std[j, k])
                y[s, j, k] = bn_affine(th[og + j, k], xhat[s, j, k], th[obeta + j, k])


@cpu_kernel(ordered=True)
def _bn_apply(z, th, og, obeta, fo, y, mean, inv_std):
    """Batch norm of held-out z into y with the statistics of the training batch (its means and
    1/sqrt(var + eps) as :func:`_bn_forward` kept them): y = gamma (z - mean) inv_std + beta."""
    nl = z.shape[2]  # lanes: a run-time trip count, see the module docstring
    for s in range(z.shape[0]):
        for j in range(fo):
            for k in range(nl):
                y[s, j, k] = bn_affine(th[og + j, k], bn_normalize(z[s, j, k], mean[j, k], inv_std[j, k]),
                                       th[obeta + j, k])


@cpu_kernel(ordered=True)
def _bn_backward(dy, xhat, inv_std, th, og, obeta, fo, gr, dz, acc):
    nl = dy.shape[2]  # lanes: a run-time trip count, see the module docstring
    nb = dy.shape[0]
    for j in range(fo):
        for k in range(nl):
            acc[0, k] = 0.0
            acc[1, k] = 0.0
        for s in range(nb):
            for k in range(nl):
                acc[0, k] += dy[s, j, k]
                acc[1, k] += dy[s, j, k] * xhat[s, j, k]
        for k in range(nl):
            gr[obeta + j, k] += acc[0, k]
            gr[og + j, k] += acc[1, k]
        for s in range(nb):
            for k in range(nl):
                dz[s, j, k] = bn_input_grad(dy[s, j, k], xhat[s, j, k], th[og + j, k], inv_std[j, k], nb,
                                            acc[0, k], acc[1, k])


@cpu_kernel(ordered=True)
def _loss_lanes(code, z, Y, delta, loss, acc, n_total):
    """Add this chunk's share of the mean loss (over ``n_total`` samples) to ``loss`` (float64,
    per lane) and write dL/dz into ``delta``; Y is (nb, K, LANES), acc (3, LANES) scratch."""
    nl = z.shape[2]  # lanes: a run-time trip count, see the module docstring
    nb, K = z.shape[0], z.shape[1]
    if code == CE:  # softmax cross-entropy with log-sum-exp, per sample and lane
        for s in range(nb):
            for k in range(nl):
                acc[0, k] = z[s, 0, k]
                acc[1, k] = 0.0
                acc[2, k] = 0.0
            for j in range(1, K):
                for k in range(nl):
                    acc[0, k] = max(acc[0, k], z[s, j, k])
            for j in range(K):
                for k in range(nl):
                    e = exp(z[s, j, k] - acc[0, k])
                    delta[s, j, k] = e
                    acc[1, k] += e
                    acc[2, k] += Y[s, j, k] * z[s, j, k]
            for k in range(nl):
                loss[k] += ce_row_loss(acc[0, k], acc[1, k], acc[2, k]) / n_total
                acc[1, k] = 1.0 / acc[1, k]
            for j in range(K):
                for k in range(nl):
                    delta[s, j, k] = ce_delta(delta[s, j, k], acc[1, k], Y[s, j, k]) / n_total
        return
    inv_m = 1.0 / (n_total * K)
    for s in range(nb):
        for j in range(K):
            # the code is tested outside the lane loop, so each loop stays branch-free and vectorises
            if code == MSE:
                for k in range(nl):
                    value, d = mse_unit(z[s, j, k], Y[s, j, k])
                    loss[k] += value * inv_m
                    delta[s, j, k] = d * inv_m
            elif code == MSE_SIGMOID:
                for k in range(nl):
                    value, d = mse_sigmoid_unit(z[s, j, k], Y[s, j, k])
                    loss[k] += value * inv_m
                    delta[s, j, k] = d * inv_m
            else:
                for k in range(nl):
                    value, d = bce_unit(z[s, j, k], Y[s, j, k])
                    loss[k] += value * inv_m
                    delta[s, j, k] = d * inv_m


# --- telemetry -------------------------------------------------------------------------------

@cpu_kernel(ordered=True)
def _tele_accumulate(y, a, deriv, acc, first):
    """Add the sums that telemetry needs of one chunk of a layer into acc (7, LANES): sums and
    sums of squares of y - c_y and of a - c_a, and the count of saturated units (|f'(y)| small).

    The shifts c_y, c_a (acc[5], acc[6]) are the lane's first value (set when ``first``): shifted
    sums keep the variance exact when values are nearly constant far from zero."""
    nl = y.shape[2]
    if first:
        for k in range(nl):
            acc[5, k] = y[0, 0, k]
            acc[6, k] = a[0, 0, k]
    for s in range(y.shape[0]):
        for j in range(y.shape[1]):
            for k in range(nl):
                dy = y[s, j, k] - acc[5, k]
                da = a[s, j, k] - acc[6, k]
                acc[0, k] += dy
                acc[1, k] += dy * dy
                acc[2, k] += da
                acc[3, k] += da * da
                acc[4, k] += saturated(deriv[s, j, k])


@cpu_kernel(ordered=True)
def _tele_finish(th, gr, ow, n_w, m, acc, out):
    """Telemetry of one layer into out (NQ, lanes) from its accumulated sums: the norms of the
    n_w weights from offset ``ow`` (zero padding adds nothing), means over m values (samples x units)."""
    nl = gr.shape[1]
    for k in range(nl):
        out[0, k] = 0.0
        out[1, k] = 0.0
    for p in range(ow, ow + n_w):
        for k in range(nl):
            out[0, k] += gr[p, k] * gr[p, k]
            out[1, k] += th[p, k] * th[p, k]
    for k in range(nl):
        out[0, k] = math.sqrt(out[0, k])
        out[1, k] = math.sqrt(out[1, k])
        for q in range(2):
            out[2 + 2 * q, k], out[3 + 2 * q, k] = shifted_moments(acc[5 + q, k], acc[2 * q, k],
                                                                   acc[2 * q + 1, k], m)
        out[6, k] = acc[4, k] / m


@cpu_kernel(ordered=True)
def _output_lanes(code, z, out, deriv):
    """The network's output from its logits (:func:`simcore.losses.output_unit`), and its
    diagonal derivative d out / d z (for the output layer's saturation)."""
    nl = z.shape[2]  # lanes: a run-time trip count, see the module docstring
    nb, K = z.shape[0], z.shape[1]
    for s in range(nb):
        for k in range(nl):
            zmax, total = z[s, 0, k], 1.0
            if code == CE:
                zmax, total = softmax_shift(z[s, :, k])
            for j in range(K):
                out[s, j, k] = output_unit(code, z[s, j, k], zmax, total)
                deriv[s, j, k] = output_grad(code, z[s, j, k], out[s, j, k])


@cpu_kernel(ordered=True, inline=True)
def _update_loop(opt, th, gr, v, m, lrt, mom, frozen, c1, c2):
    """theta <- theta - lr * step for every parameter and lane, v and m updated; a frozen lane
    (frozen[k] >= 0) keeps its parameters and moments."""
    nl = th.shape[1]
    for p in range(th.shape[0]):
        for k in range(nl):
            alive = frozen[k] < 0
            step, vk, mk = optimizer_step(opt, gr[p, k], v[p, k], m[p, k], mom[k], c1, c2)
            v[p, k] = vk if alive else v[p, k]
            m[p, k] = mk if alive else m[p, k]
            new = th[p, k] - lrt[k] * step
            th[p, k] = new if alive else th[p, k]


@cpu_kernel(ordered=True)
def _update_lanes(opt, th, gr, v, m, lrt, mom, frozen, c1, c2):
    """The update of a block (:func:`_update_loop`), one inlined loop per optimizer: with the
    code a constant, the step's other rules fold away (a run-time code would compute all of
    them, Adam's square root and division included, and select one per element)."""
    if opt == GD:
        _update_loop(GD, th, gr, v, m, lrt, mom, frozen, c1, c2)
    elif opt == MOMENTUM:
        _update_loop(MOMENTUM, th, gr, v, m, lrt, mom, frozen, c1, c2)
    elif opt == NESTEROV:
        _update_loop(NESTEROV, th, gr, v, m, lrt, mom, frozen, c1, c2)
    else:
        _update_loop(ADAM, th, gr, v, m, lrt, mom, frozen, c1, c2)


@cpu_kernel(ordered=True)
def _chunk_plan(ci, nb, n_val, chunk):
    """(held, first sample, samples) of chunk ci of a step: the batch's ceil(nb / chunk) chunks
    come first, then, at recorded steps, the held-out set's (held True)."""
    n_chunks = -(-nb // chunk)
    held = ci >= n_chunks
    c0 = (ci - n_chunks if held else ci) * chunk
    return held, c0, min(chunk, (n_val if held else nb) - c0)


@cpu_kernel(ordered=True)
def _count_correct(code, z, zo, zrow, zs, Y, yo, ys, K, nb, out):
    """Add the right predictions of nb samples to out (one count per lane,
    :func:`simcore.losses.correct_units`): sample s of lane k has its logits in the flat buffer z
    from zo + s zrow + k, zs apart, and its targets in row s of Y from column yo + k, ys apart."""
    nl = out.shape[0]
    for s in range(nb):
        for k in range(nl):
            out[k] += correct_units(code, z, zo + s * zrow + k, zs, Y, s, yo + k, ys, K)


@cpu_kernel(ordered=True)
def _empty_aligned(n, dt):
    """An uninitialised 1-D array of n elements of dtype dt that starts on a VBYTES (64-byte)
    boundary. numba aligns arrays to 32 bytes only, and a 64-byte vector loaded from a 32-byte
    boundary spans two cache lines, and the grid's speed then varied from one process to the
    next, as its buffers happened to fall (docs/benchmarks.md, "Measurements behind the code's choices")."""
    buf = np.empty(n + VBYTES // 4, dt)  # room to move the start by up to 64 bytes
    off = VBYTES - np.int64(buf.ctypes.data % np.uint64(VBYTES))
    off = (off % VBYTES) // buf.itemsize
    return buf[off:off + n]


@cpu_kernel(ordered=True)
def _view(buf, base, nb, w, nl):
    """A (nb, w, nl) array stored at ``base`` of a flat buffer (contiguous)."""
    return buf[base:base + nb * w * nl].reshape((nb, w, nl))


@functools.lru_cache(maxsize=None)
def train_kernel(batchnorm):
    """The training kernel ``train_lanes`` below, compiled for networks with batch norm on
    their hidden layers (``batchnorm=True``) or without (False).

    The flag is a constant of the compiled code (a closure variable, which numba's on-disk cache
    keys on), so without batch norm numba drops the batch-norm layers before it types them."""
    batchnorm = bool(batchnorm)

    @cpu_kernel(ordered=True)
    def train_lanes(theta, layout, act, loss_code, X, Y,
                    Xv, Yv, rec_val_all, final_val_all,
                    seeds_all, lr_all, mom_all, ref_all, opt,
                    wd_all, clip_all, sched, target_all, stop_at_target, t0, v_all, m_all, reached_all,
                    steps, batch, record_every, rec_loss_all, rec_layer_all, diverged_all,
                    final_all, first_block, end_block, nl, stop):
        """Train blocks [first_block, end_block) of ``nl`` (= LANES) networks of one
        architecture; theta (P, G) is updated in place, telemetry written to rec_loss_all (R, G)
        and rec_layer_all (R, L, NQ, G). Threads call this on disjoint ranges of blocks (it
        releases the GIL). ``ref_all[g]`` is the loss network g's divergence test compares with
        (a negative value: its own loss at step 0). A non-zero ``stop[0]`` (Ctrl-C, see
        :mod:`simcore.interrupt`) makes it return before the next step, results unfinished.

        The training continues from global step ``t0`` (0 for a new one): the optimizer's
        moments start from v_all, m_all (P, G) and are written back there, diverged_all and
        reached_all (G,) hold the steps of divergence and of reaching ``target_all`` so far
        (-1: not yet) and are updated; ``sched`` is the learning-rate schedule
        (:func:`simcore.grid.core.lr_factor`), ``wd_all`` the weight decay and ``clip_all`` the
        gradient-norm clipping (0: none) of each network.

        Without batch norm a batch is processed in chunks of CHUNK samples (forward, loss and
        backward of a chunk, gradients summed over chunks), so the per-layer buffers stay in
        the L1/L2 cache; batch norm needs the whole batch at once.

        One function on purpose: numba re-optimises a callee inside every caller, so one more
        level of nesting around this body would double its compile time. The last block is
        padded with copies of its first network (lr 0); padding never reaches the outputs.

        The held-out set (Xv, Yv; no rows: none) is evaluated at every recorded step, after the
        batch, in chunks of its own that run the forward pass and the loss only (batch norm
        normalises them with the batch's statistics); rec_val_all (R, 3, G) and
        final_val_all (3, G) receive VAL_QUANTITIES (:func:`simcore.grid.core.evaluation`)."""
        P, G = theta.shape
        R = rec_loss_all.shape[0]
        n_layers = layout.shape[0]
        n, d_in = X.shape
        K = Y.shape[1]
        minibatch = batch < n
        n_batches = n // batch
        dt = theta.dtype
        check_batchnorm_layout(layout, batchnorm)
        max_w = 0
        for l in range(n_layers):
            max_w = max(max_w, layout[l, FAN_IN], layout[l, FAN_OUT])
        chunk = n if batchnorm else min(CHUNK, n)
        n_val = Xv.shape[0]
        units = accuracy_units(loss_code, K)
        origin = np.int64(0)  # offset 0 of a buffer; a literal 0 would compile _view a second time
        # Buffers, each allocated flat and reshaped: numba compiles an allocation once per
        # distinct signature, so three signatures (the network's dtype, float64, int64) instead
        # of twenty shorten the first call (docs/benchmarks.md, "Measurements behind the code's choices"). Those the vector
        # code reads start on a 64-byte boundary. Every buffer is written before it is read.
        # One (chunk, width, nl) block per layer: abase[l] for the input of layer l, ybase[l]
        # for its activation input y (= z without batch norm) and batch-norm xhat
        abase = np.empty(n_layers, np.int64)
        ybase = np.empty(n_layers, np.int64)
        ubase = np.empty(n_layers, np.int64)
        a_size = 0
        y_size = 0
        for l in range(n_layers):
            abase[l] = a_size
            ybase[l] = y_size
            ubase[l] = y_size // (chunk * nl)
            a_size += chunk * layout[l, FAN_IN] * nl
            y_size += chunk * layout[l, FAN_OUT] * nl
        A = _empty_aligned(a_size, dt)
        Ypre = _empty_aligned(y_size, dt)
        Xhat = _empty_aligned(y_size, dt)  # batch norm's x-hat (unused without batch norm)
        inv_std = _empty_aligned(y_size // chunk, dt).reshape((y_size // (chunk * nl), nl))
        bmean = np.empty(y_size // chunk, np.float64).reshape((y_size // (chunk * nl), nl))  # batch means
        D1 = _empty_aligned(chunk * max_w * nl, dt)
        D2 = _empty_aligned(chunk * max_w * nl, dt)
        ones = _empty_aligned(chunk * max_w * nl, dt)
        ones[:] = 1.0
        Yb = _empty_aligned(chunk * K * nl, dt)
        gr = _empty_aligned(P * nl, dt).reshape((P, nl))
        v = _empty_aligned(P * nl, dt).reshape((P, nl))
        m = _empty_aligned(P * nl, dt).reshape((P, nl))
        th = _empty_aligned(P * nl, dt).reshape((P, nl))
        order = np.empty(nl * n, np.int64).reshape((nl, n))
        acc = np.empty(3 * nl, np.float64).reshape((3, nl))
        tacc = np.empty(n_layers * 7 * nl, np.float64).reshape((n_layers, 7, nl))
        loss = np.empty(nl, np.float64)
        loss0 = np.empty(nl, np.float64)
        ref = np.empty(nl, np.float64)
        tele = np.empty(NQ * nl, np.float64).reshape((NQ, nl))
        lr = np.empty(nl, np.float64)
        mom = np.empty(nl, np.float64)
        rec_loss = np.empty(R * nl, np.float64).reshape((R, nl))
        rec_layer = np.empty(R * n_layers * NQ * nl, np.float64).reshape((R, n_layers, NQ, nl))
        diverged_at = np.empty(nl, np.int64)  # -1 while the network is alive
        reached_at = np.empty(nl, np.int64)   # -1 until the network's loss reaches its target
        frozen = np.empty(nl, np.int64)       # the step it stopped training at, -1 while it trains
        wd = np.empty(nl, np.float64)
        clip = np.empty(nl, np.float64)
        target = np.empty(nl, np.float64)
        lrt = np.empty(nl, np.float64)        # the step's learning rate, lr * lr_factor(t)
        final_loss = np.empty(nl, np.float64)
        vloss = np.empty(nl, np.float64)
        right = np.empty(2 * nl, np.float64).reshape((2, nl))  # right predictions: batch, held-out set
        rec_val = np.empty(R * 3 * nl, np.float64).reshape((R, 3, nl))
        final_val = np.empty(3 * nl, np.float64).reshape((3, nl))
        for blk in range(first_block, end_block):
            g0 = blk * nl
            gb = min(nl, G - g0)
            for k in range(nl):
                g = g0 + k if k < gb else g0
                for p in range(P):
                    th[p, k] = theta[p, g]
                    v[p, k] = v_all[p, g]
                    m[p, k] = m_all[p, g]
                lr[k] = lr_all[g] if k < gb else 0.0
                mom[k] = mom_all[g]
                ref[k] = ref_all[g]
                diverged_at[k] = diverged_all[g]
                reached_at[k] = reached_all[g]
                frozen[k] = frozen_at(diverged_at[k], reached_at[k], stop_at_target)
                wd[k] = wd_all[g]
                clip[k] = clip_all[g]
                target[k] = target_all[g]
            any_wd = False
            any_clip = False
            for k in range(gb):
                any_wd = any_wd or wd[k] != 0.0
                any_clip = any_clip or clip[k] > 0.0
            rec_loss[:] = np.nan  # records of steps a frozen block skips stay NaN
            rec_layer[:] = np.nan
            rec_val[:] = np.nan
            c1 = 1.0
            c2 = 1.0
            for t in range(steps + 1):
                if stop_requested(stop):  # Ctrl-C in the caller (simcore.interrupt)
                    return
                tg = t0 + t  # the global step: schedule, Adam's corrections, minibatch order
                # the whole block frozen before this step: nothing to compute (step 0 always runs:
                # it sets the divergence references)
                if 0 < t < steps:
                    idle = True
                    for k in range(gb):
                        idle = idle and 0 <= frozen[k] < tg
                    if idle:
                        continue
                final = t == steps
                record = t % record_every == 0 or final
                use_mini = minibatch and not final
                nb = batch if use_mini else n
                if use_mini and (tg % n_batches == 0 or t == 0):
                    for k in range(nl):
                        net = g0 + k if k < gb else g0  # padding lanes copy network g0
                        batch_order(seeds_all[net], tg // n_batches, n, order[k])
                pos = (tg % n_batches) * batch
                for k in range(nl):
                    loss[k] = 0.0
                    vloss[k] = 0.0
                    right[0, k] = 0.0
                    right[1, k] = 0.0
                for p in range(P):
                    for k in range(nl):
                        gr[p, k] = 0.0
                if record:
                    tacc[:] = 0.0
                for ci in range(-(-nb // chunk) + (-(-n_val // chunk) if record else 0)):
                    held, c0, cn = _chunk_plan(ci, nb, n_val, chunk)  # held: forward and loss only
                    XS = Xv if held else X
                    YS = Yv if held else Y
                    # --- the chunk's inputs (layer 0) and targets, per lane -----------------------
                    A0 = _view(A, origin, cn, d_in, nl)
                    Yc = _view(Yb, origin, cn, K, nl)
                    for s in range(cn):
                        for k in range(nl):
                            idx = order[k, pos + c0 + s] if use_mini and not held else c0 + s
                            for i in range(d_in):
                                A0[s, i, k] = XS[idx, i]
                            for j in range(K):
                                Yc[s, j, k] = YS[idx, j]
                    # --- forward ------------------------------------------------------------------
                    for l in range(n_layers):
                        fi, fo = layout[l, FAN_IN], layout[l, FAN_OUT]
                        a_in = _view(A, abase[l], cn, fi, nl)
                        y = _view(Ypre, ybase[l], cn, fo, nl)
                        # batch norm on hidden layers; `batchnorm and` first, so that numba drops
                        # the batch-norm code when the constant is False. z itself is y without
                        # batch norm (one call site of _dense_forward: its body is inlined)
                        z = _view(D1, origin, cn, fo, nl) if batchnorm and l < n_layers - 1 else y
                        _dense_forward(a_in, th, layout[l, OFF_W], layout[l, OFF_B], fi, fo, z)
                        if batchnorm and l < n_layers - 1 and held:  # the batch's statistics
                            _bn_apply(z, th, layout[l, OFF_GAMMA], layout[l, OFF_BETA], fo, y,
                                      bmean[ubase[l]:ubase[l] + fo], inv_std[ubase[l]:ubase[l] + fo])
                        elif batchnorm and l < n_layers - 1:
                            _bn_forward(z, th, layout[l, OFF_GAMMA], layout[l, OFF_BETA], fo, y,
                                        _view(Xhat, ybase[l], cn, fo, nl),
                                        inv_std[ubase[l]:ubase[l] + fo], acc, bmean[ubase[l]:ubase[l] + fo])
                        if l < n_layers - 1:
                            act_forward(act, Ypre[ybase[l]:ybase[l] + cn * fo * nl],
                                        A[abase[l + 1]:abase[l + 1] + cn * fo * nl])
                    delta = _view(D1, origin, cn, K, nl)
                    _loss_lanes(loss_code, _view(Ypre, ybase[n_layers - 1], cn, K, nl), Yc, delta,
                                vloss if held else loss, acc, n_val if held else nb)
                    if record and units > 0:
                        _count_correct(loss_code, Ypre, ybase[n_layers - 1], K * nl, nl,
                                       Yc.reshape((cn, K * nl)), 0, nl, K, cn, right[1 if held else 0])
                    if held:
                        continue
                    # --- backward: delta in D1; delta W^T into D2, times f' back into D1 -------
                    for l in range(n_layers - 1, -1, -1):
                        fi, fo = layout[l, FAN_IN], layout[l, FAN_OUT]
                        if batchnorm and l < n_layers - 1:
                            _bn_backward(delta, _view(Xhat, ybase[l], cn, fo, nl),
                                         inv_std[ubase[l]:ubase[l] + fo], th, layout[l, OFF_GAMMA],
                                         layout[l, OFF_BETA], fo, gr, _view(D2, origin, cn, fo, nl),
                                         acc)
                            D1, D2 = D2, D1
                            delta = _view(D1, origin, cn, fo, nl)
                        da = _view(D2, origin, cn, fi, nl)
                        _dense_backward(_view(A, abase[l], cn, fi, nl), th, layout[l, OFF_W],
                                        layout[l, OFF_B], fi, fo, delta, gr, da, l > 0)
                        if l > 0:  # times f'(y) below, into D1 (this delta is spent): written
                            # in place, LLVM's overlap check would take its scalar loop
                            size = cn * fi * nl
                            act_backward(act, Ypre[ybase[l - 1]:ybase[l - 1] + size],
                                         A[abase[l]:abase[l] + size], D2[:size], D1[:size])
                            delta = _view(D1, origin, cn, fi, nl)
                    # --- telemetry sums of the chunk ----------------------------------------------
                    if record:
                        for l in range(n_layers):
                            fo = layout[l, FAN_OUT]
                            size = cn * fo * nl
                            yl = _view(Ypre, ybase[l], cn, fo, nl)
                            deriv = _view(D1, origin, cn, fo, nl)
                            if l < n_layers - 1:
                                act_backward(act, Ypre[ybase[l]:ybase[l] + size],
                                             A[abase[l + 1]:abase[l + 1] + size], ones[:size],
                                             D1[:size])
                                _tele_accumulate(yl, _view(A, abase[l + 1], cn, fo, nl), deriv,
                                                 tacc[l], c0 == 0)
                            else:
                                _output_lanes(loss_code, yl, _view(D2, origin, cn, fo, nl), deriv)
                                _tele_accumulate(yl, _view(D2, origin, cn, fo, nl), deriv, tacc[l],
                                                 c0 == 0)
                # --- divergence is data -----------------------------------------------------------
                if t == 0:
                    for k in range(nl):
                        loss0[k] = loss[k] if ref[k] < 0.0 else ref[k]
                for k in range(nl):
                    if diverged_at[k] < 0 and is_diverged(loss[k], loss0[k]):
                        diverged_at[k] = tg
                    if reached_at[k] < 0 and frozen[k] < 0 and is_reached(loss[k], target[k]):
                        reached_at[k] = tg
                    frozen[k] = frozen_at(diverged_at[k], reached_at[k], stop_at_target)
                    if final:
                        final_loss[k] = loss[k]
                if record:
                    r = t // record_every if t % record_every == 0 else R - 1
                    for l in range(n_layers):
                        _tele_finish(th, gr, layout[l, OFF_W], layout[l, FAN_IN] * layout[l, FAN_OUT],
                                     nb * layout[l, FAN_OUT], tacc[l], tele)
                        for q in range(NQ):
                            for k in range(nl):
                                keep = frozen[k] < 0 or frozen[k] == tg
                                rec_layer[r, l, q, k] = tele[q, k] if keep else np.nan
                    for k in range(nl):
                        keep = frozen[k] < 0 or frozen[k] == tg
                        rec_loss[r, k] = loss[k] if keep else np.nan
                        held_out = evaluation(units, right[0, k], nb, vloss[k], right[1, k], n_val)
                        for q in range(3):
                            rec_val[r, q, k] = held_out[q] if keep else np.nan
                            if final:
                                final_val[q, k] = held_out[q]
                if final:
                    break
                # --- the update, masked per lane (a diverged network stays frozen) ----------------
                if opt == ADAM:
                    c1, c2 = adam_corrections(tg)
                # the gradient's transformations, as a torch loop: clip_grad_norm_, then the
                # optimizer's weight decay; each skipped where no lane of the block uses it
                if any_clip:
                    for k in range(nl):
                        acc[0, k] = 0.0
                    for p in range(P):
                        for k in range(nl):
                            acc[0, k] += gr[p, k] * gr[p, k]
                    for k in range(nl):
                        acc[0, k] = clip_scale(acc[0, k], clip[k]) if clip[k] > 0.0 else 1.0
                    for p in range(P):
                        for k in range(nl):
                            gr[p, k] = gr[p, k] * acc[0, k] if clip[k] > 0.0 else gr[p, k]
                if any_wd:
                    for p in range(P):
                        for k in range(nl):
                            gr[p, k] = decayed(gr[p, k], wd[k], th[p, k]) if wd[k] != 0.0 else gr[p, k]
                f = lr_factor(sched, tg)
                for k in range(nl):
                    lrt[k] = lr[k] * f
                _update_lanes(opt, th, gr, v, m, lrt, mom, frozen, c1, c2)
            # --- write the block back -------------------------------------------------------------
            for k in range(gb):
                g = g0 + k
                for p in range(P):
                    theta[p, g] = th[p, k]
                    v_all[p, g] = v[p, k]
                    m_all[p, g] = m[p, k]
                for r in range(R):
                    rec_loss_all[r, g] = rec_loss[r, k]
                    for l in range(n_layers):
                        for q in range(NQ):
                            rec_layer_all[r, l, q, g] = rec_layer[r, l, q, k]
                diverged_all[g] = diverged_at[k]
                reached_all[g] = reached_at[k]
                final_all[g] = final_loss[k]
                for q in range(3):
                    final_val_all[q, g] = final_val[q, k]
                    for r in range(R):
                        rec_val_all[r, q, g] = rec_val[r, q, k]

    return train_lanes
