r"""The grid engine on the GPU (numba-cuda): one thread block trains one network.

The contract is that of the CPU engine's ``train_lanes`` (:func:`simcore.grid.cpu.train_kernel`:
the same arguments less the block range, same outputs, same semantics: minibatch orders from
:func:`simcore.grid.core.batch_order` of the network's seed and the epoch, telemetry every ``record_every``
steps and at the last step, the batch's loss before the update, the full-data loss at the
end, divergence freezing); only the layout of the work differs (docs/architecture.md, *One block per network on the GPU*):

* **One block per network.** Block ``b`` trains networks ``b, b + gridDim, ...`` (at most
  ``config.CUDA_MAX_BLOCKS`` blocks, so scratch memory stays bounded for any G).
* **Weights in shared memory** when parameters and gradients fit (``2 P`` values), else in
  global scratch; optimizer state and per-sample buffers live in global scratch, stored
  unit-major (``buf[unit * n + sample]``) so that consecutive threads touch consecutive words.
* **Threads split the samples** of the batch for the forward pass, the loss and the
  back-propagated deltas; they split the **parameters** for the gradients, each thread summing
  its parameter's contributions over the samples in ascending order: the same order as the CPU
  engine, so both give the same sums. Batch-norm statistics: threads split the units, each sums
  over the samples in order. Scalar reductions (the loss, telemetry sums, norms) are a fixed
  tree over the threads. Nothing depends on timing: results are deterministic.
* **Ctrl-C**: the launch is asynchronous and the caller waits in short slices
  (:func:`simcore.interrupt.wait_device`); Ctrl-C sets a flag in mapped host memory that
  thread 0 of each block reads every ``STOP_POLL_STEPS`` steps, and the block leaves together.

The math is written once (docs/architecture.md, *Write the math once*): activations, their derivatives, the stable exp/log
helpers and the counter-based generator are the functions of :mod:`simcore.scalar` compiled for
the GPU by ``simcore._jit.gpu_device`` (fastmath's CPU-only exp/log1p/tanh become the GPU's
libm); the per-output-unit loss terms and the optimizer rules below are ``@scalar`` formulas
usable on both targets.

The tests drive each device function on its own from NumPy (``tests/cuda_blocks.py``).

Importing this module imports ``numba.cuda`` (the ``cuda`` extra: ``pip install simcore[cuda]``);
:mod:`simcore` itself never imports it. Without a GPU, ``NUMBA_ENABLE_CUDASIM=1`` (set before
numba is imported) runs everything in numba's CUDA simulator.
"""
import math

import numpy as np
from numba import config as numba_config, cuda, float64 as nb_float64, float32 as nb_float32, int32 as nb_int32

from .. import config
from .. import fastmath
from .. import interrupt
from .._jit import _for_gpu, gpu_device, gpu_kernel
from ..layers import BN_EPS, bn_affine, bn_input_grad, bn_inv_std, bn_normalize
from ..losses import (CE, accuracy_units, ce_delta, ce_row_loss, correct_units, output_grad, output_unit,
                      softmax_shift, unit_loss)
from ..optim import ADAM
from ..scalar import act_deriv, act_value, normal, stream_key, uniform
from .core import (FAN_IN, FAN_OUT, NQ, OFF_B, OFF_BETA, OFF_GAMMA, OFF_W, adam_corrections,
                   batch_order, clip_scale, decayed, evaluation, frozen_at, is_diverged, is_reached,
                   lr_factor, optimizer_step, saturated, shifted_moments)

_SHARED_BYTES = 48 * 1024       # the dynamic shared memory every CUDA GPU grants a block
_SCRATCH_BYTES = 2 * 1024 ** 3  # global scratch memory the engine allows itself
# steps between two reads of the host's stop flag: the read crosses the PCIe bus, and Ctrl-C
# needs no faster answer than a few steps
STOP_POLL_STEPS = 16


def _volatile_load():
    """``load(flag)``: flag[0] of an int32 array, read from memory every time it runs.

    A volatile load in inline PTX that declares side effects and clobbers memory: numba-cuda's
    ``cuda.ldcv`` is inline asm without side effects, so LLVM hoists it out of the step loop
    and a flag the host raises later is never seen. The simulator runs kernels as Python."""
    if numba_config.ENABLE_CUDASIM:
        return lambda flag: flag[0]
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    @intrinsic
    def load(typingctx, flag):
        if not (isinstance(flag, types.Array) and flag.dtype == types.int32):
            return None

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            fnty = ir.FunctionType(ir.IntType(32), [ary.data.type])
            asm = ir.InlineAsm(fnty, "ld.volatile.global.u32 $0, [$1];", "=r,l,~{memory}",
                               side_effect=True)
            return builder.call(asm, [ary.data])
        return types.int32(flag), codegen
    return load


_load_volatile = _volatile_load()


def available():
    """True when kernels can run: a CUDA GPU with its driver, or the simulator."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install counts as none
        return False


def require_gpu():
    """Raise ``ValueError`` naming the alternatives when there is neither a GPU nor the simulator."""
    if not available():
        raise ValueError(
            "backend='cuda' needs an NVIDIA GPU with a working CUDA driver, and numba.cuda found "
            "none; use backend='cpu', or set NUMBA_ENABLE_CUDASIM=1 before numba is imported to "
            "run the CUDA simulator (slow: for tests only)")


# GPU builds of the formulas (same source; fastmath's CPU primitives become libm)
_act_value = gpu_device(act_value)
_act_deriv = gpu_device(act_deriv)
_unit_loss = gpu_device(unit_loss)
_ce_row_loss = gpu_device(ce_row_loss)
_ce_delta = gpu_device(ce_delta)
_output_grad = gpu_device(output_grad)
_output_unit = gpu_device(output_unit)
_softmax_shift = gpu_device(softmax_shift)
_correct_units = gpu_device(correct_units)
_accuracy_units = gpu_device(accuracy_units)
_evaluation = gpu_device(evaluation)
_optimizer_step = gpu_device(optimizer_step)
_adam_corrections = gpu_device(adam_corrections)
_is_diverged = gpu_device(is_diverged)
_saturated = gpu_device(saturated)
_shifted_moments = gpu_device(shifted_moments)
_bn_inv_std = gpu_device(bn_inv_std)
_bn_normalize = gpu_device(bn_normalize)
_bn_affine = gpu_device(bn_affine)
_bn_input_grad = gpu_device(bn_input_grad)
_stream_key = gpu_device(stream_key)
_normal = gpu_device(normal)
_uniform = gpu_device(uniform)
_batch_order = gpu_device(batch_order)
_lr_factor = gpu_device(lr_factor)
_clip_scale = gpu_device(clip_scale)
_decayed = gpu_device(decayed)
_is_reached = gpu_device(is_reached)
_frozen_at = gpu_device(frozen_at)
_exp = _for_gpu(fastmath.exp)


# --- block-level device functions (the threads of one block cooperate) -------------------------
# Per-sample buffers are flat and unit-major: value (unit j, sample s) of a buffer region that
# starts at ``base`` is buf[base + j * ns + s], ns = the number of samples of the data set.

@gpu_device
def _block_sum(red, nv, x0, x1, x2, x3, x4):
    """Sum x0..x{nv-1} over the threads of the block in a fixed tree order; the sums are left
    in red[0], red[T], ..., red[(nv-1) T] (T = threads; a power of two)."""
    tid = cuda.threadIdx.x
    T = cuda.blockDim.x
    cuda.syncthreads()
    red[tid] = x0
    if nv > 1:
        red[T + tid] = x1
    if nv > 2:
        red[2 * T + tid] = x2
    if nv > 3:
        red[3 * T + tid] = x3
    if nv > 4:
        red[4 * T + tid] = x4
    cuda.syncthreads()
    half = T // 2
    while half > 0:
        if tid < half:
            for q in range(nv):
                red[q * T + tid] += red[q * T + tid + half]
        cuda.syncthreads()
        half //= 2


@gpu_device
def _dense_forward(a, ab, th, ow, ob, fi, fo, z, zb, nb, ns):
    """z = a W + b for the nb samples (threads over samples; sums over i in order)."""
    for s in range(cuda.threadIdx.x, nb, cuda.blockDim.x):
        for j in range(fo):
            acc = th[ob + j]
            for i in range(fi):
                acc += a[ab + i * ns + s] * th[ow + i * fo + j]
            z[zb + j * ns + s] = acc


@gpu_device
def _act_forward(act, y, yb, a, ab, fo, nb, ns):
    """a = f(y) elementwise (threads over samples)."""
    for s in range(cuda.threadIdx.x, nb, cuda.blockDim.x):
        for j in range(fo):
            a[ab + j * ns + s] = _act_value(act, y[yb + j * ns + s])


@gpu_device
def _dense_grad(a, ab, delta, db, gr, ow, ob, fi, fo, nb, ns):
    """dW = a^T delta and db = sum_s delta (threads over parameters, each summing its samples in
    ascending order, as the CPU engine does)."""
    nw = fi * fo
    for q in range(cuda.threadIdx.x, nw + fo, cuda.blockDim.x):
        if q < nw:
            i = q // fo
            pa = ab + i * ns
            pd = db + (q - i * fo) * ns
            acc = a[pa] * delta[pd]
            for s in range(1, nb):
                acc += a[pa + s] * delta[pd + s]
            gr[ow + q] = acc
        else:
            pd = db + (q - nw) * ns
            acc = delta[pd]
            for s in range(1, nb):
                acc += delta[pd + s]
            gr[ob + q - nw] = acc


@gpu_device
def _dense_backward_data(th, ow, fi, fo, delta, db, act, y, yb, a, ab, out, ob, nb, ns):
    """out = (delta W^T) * f'(y, a): the delta of the layer below (threads over samples)."""
    for s in range(cuda.threadIdx.x, nb, cuda.blockDim.x):
        for i in range(fi):
            w = ow + i * fo
            acc = delta[db + s] * th[w]
            for j in range(1, fo):
                acc += delta[db + j * ns + s] * th[w + j]
            out[ob + i * ns + s] = acc
            p = i * ns + s
            out[ob + p] = out[ob + p] * _act_deriv(act, y[yb + p], a[ab + p])


@gpu_device
def _bn_forward(z, zb, th, og, obeta, fo, y, yb, xh, xb, istd, ib, st, nb, ns):
    """Training-mode batch norm of z into y, with xhat and 1/sqrt(var + eps) kept for the
    backward pass; st (float64, >= fo) receives the batch means."""
    for j in range(cuda.threadIdx.x, fo, cuda.blockDim.x):
        p = zb + j * ns
        mu = 0.0
        for s in range(nb):
            mu += z[p + s]
        mu /= nb
        var = 0.0
        for s in range(nb):
            d = z[p + s] - mu
            var += d * d
        istd[ib + j] = _bn_inv_std(var / nb, BN_EPS)
        st[j] = mu
    cuda.syncthreads()
    for s in range(cuda.threadIdx.x, nb, cuda.blockDim.x):
        for j in range(fo):
            xh[xb + j * ns + s] = _bn_normalize(z[zb + j * ns + s], st[j], istd[ib + j])
            y[yb + j * ns + s] = _bn_affine(th[og + j], xh[xb + j * ns + s], th[obeta + j])


@gpu_device
def _bn_apply(z, zb, th, og, obeta, fo, y, yb, istd, ib, st, mb, nb, ns):
    """Batch norm of held-out z into y with the training batch's statistics: the means st[mb + j]
    (float64) and 1/sqrt(var + eps) istd[ib + j] that :func:`_bn_forward` computed."""
    for s in range(cuda.threadIdx.x, nb, cuda.blockDim.x):
        for j in range(fo):
            y[yb + j * ns + s] = _bn_affine(th[og + j], _bn_normalize(z[zb + j * ns + s], st[mb + j], istd[ib + j]),
                                            th[obeta + j])


@gpu_device
def _bn_backward(dy, dyb, xh, xb, istd, ib, th, og, obeta, fo, gr, dz, dzb, st, nb, ns):
    """Backward of training-mode batch norm: dgamma, dbeta into gr, dz from dy; st (float64,
    >= 2 fo) holds the per-unit sums."""
    for j in range(cuda.threadIdx.x, fo, cuda.blockDim.x):
        s0 = 0.0
        s1 = 0.0
        for s in range(nb):
            v = dy[dyb + j * ns + s]
            s0 += v
            s1 += v * xh[xb + j * ns + s]
        gr[obeta + j] = s0
        gr[og + j] = s1
        st[2 * j] = s0
        st[2 * j + 1] = s1
    cuda.syncthreads()
    for s in range(cuda.threadIdx.x, nb, cuda.blockDim.x):
        for j in range(fo):
            p = j * ns + s
            dz[dzb + p] = _bn_input_grad(dy[dyb + p], xh[xb + p], th[og + j], istd[ib + j], nb,
                                         st[2 * j], st[2 * j + 1])


@gpu_device
def _loss_block(code, z, zb, Y, sidx, delta, db, K, nb, ns, red):
    """Mean loss over the nb samples (rows sidx[s] of Y) and dL/dz into delta; every thread
    returns the same value (fixed-order tree sum)."""
    part = 0.0
    inv_m = 1.0 / (nb * K)
    for s in range(cuda.threadIdx.x, nb, cuda.blockDim.x):
        r = sidx[s]
        if code == CE:  # softmax cross-entropy with log-sum-exp
            zmax = 1.0 * z[zb + s]
            for j in range(1, K):
                zmax = max(zmax, z[zb + j * ns + s])
            tot = 0.0
            zy = 0.0
            for j in range(K):
                zj = z[zb + j * ns + s]
                e = _exp(zj - zmax)
                delta[db + j * ns + s] = e
                tot += e
                zy += Y[r, j] * zj
            part += _ce_row_loss(zmax, tot, zy) / nb
            inv = 1.0 / tot
            for j in range(K):
                delta[db + j * ns + s] = _ce_delta(delta[db + j * ns + s], inv, Y[r, j]) / nb
        else:
            for j in range(K):
                value, d = _unit_loss(code, z[zb + j * ns + s], Y[r, j])
                part += value * inv_m
                delta[db + j * ns + s] = d * inv_m
    _block_sum(red, 1, part, 0.0, 0.0, 0.0, 0.0)
    return red[0]


@gpu_device
def _right_block(code, z, zb, Y, sidx, K, nb, ns, red):
    """Right predictions over the nb samples (rows sidx[s] of Y; :func:`simcore.losses.correct_units`);
    every thread returns the same value (fixed-order tree sum)."""
    part = 0.0
    for s in range(cuda.threadIdx.x, nb, cuda.blockDim.x):
        part += _correct_units(code, z, zb + s, ns, Y, sidx[s], 0, 1, K)
    _block_sum(red, 1, part, 0.0, 0.0, 0.0, 0.0)
    return red[0]


@gpu_device
def _forward(fb, lofs, d1, th, layout, act, st, L, nb, ns, held):
    """The forward pass of the nb samples whose inputs are in fb from lofs[0, 0]: every layer's
    z (or batch norm's y) and activations into fb. Batch norm: the batch's statistics, kept
    (the means in st from lofs[l, 4]); with ``held`` (the held-out set) those kept."""
    for l in range(L):
        fi = layout[l, FAN_IN]
        fo = layout[l, FAN_OUT]
        if layout[l, OFF_GAMMA] >= 0:
            _dense_forward(fb, lofs[l, 0], th, layout[l, OFF_W], layout[l, OFF_B], fi, fo,
                           fb, d1, nb, ns)
            cuda.syncthreads()
            if held:
                _bn_apply(fb, d1, th, layout[l, OFF_GAMMA], layout[l, OFF_BETA], fo, fb, lofs[l, 1],
                          fb, lofs[l, 3], st, lofs[l, 4], nb, ns)
            else:
                _bn_forward(fb, d1, th, layout[l, OFF_GAMMA], layout[l, OFF_BETA], fo, fb,
                            lofs[l, 1], fb, lofs[l, 2], fb, lofs[l, 3], st, nb, ns)
                cuda.syncthreads()
                for j in range(cuda.threadIdx.x, fo, cuda.blockDim.x):
                    st[lofs[l, 4] + j] = st[j]  # the batch means, for the held-out set
        else:
            _dense_forward(fb, lofs[l, 0], th, layout[l, OFF_W], layout[l, OFF_B], fi, fo,
                           fb, lofs[l, 1], nb, ns)
        cuda.syncthreads()
        if l < L - 1:
            _act_forward(act, fb, lofs[l, 1], fb, lofs[l + 1, 0], fo, nb, ns)
            cuda.syncthreads()


@gpu_device
def _output_value(code, z, zb, j, s, K, ns):
    """The network's output for unit j of sample s from the logits (:func:`simcore.losses.output_unit`)."""
    zmax, total = z[zb + s], 1.0
    if code == CE:
        zmax, total = _softmax_shift(z[zb + s:zb + K * ns:ns])
    return _output_unit(code, z[zb + j * ns + s], zmax, total)


@gpu_device
def _tele_sums(last, loss_code, act, y, yb, a, ab, fo, nb, ns, red):
    """Sums of y - c_y, (y - c_y)^2, a - c_a, (a - c_a)^2 and of saturated units over the
    layer's nb x fo values (shifts: the first value), into red[0], red[T], ..., red[4 T];
    returns the shifts (c_y, c_a)."""
    cy = 1.0 * y[yb]
    if last:
        ca = _output_value(loss_code, y, yb, 0, 0, fo, ns)
    else:
        ca = 1.0 * a[ab]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    s4 = 0.0
    for s in range(cuda.threadIdx.x, nb, cuda.blockDim.x):
        for j in range(fo):
            yv = y[yb + j * ns + s]
            if last:
                av = _output_value(loss_code, y, yb, j, s, fo, ns)
                deriv = _output_grad(loss_code, yv, av)
            else:
                av = a[ab + j * ns + s]
                deriv = _act_deriv(act, yv, av)
            d = yv - cy
            s0 += d
            s1 += d * d
            d = av - ca
            s2 += d
            s3 += d * d
            s4 += _saturated(deriv)
    _block_sum(red, 5, s0, s1, s2, s3, s4)
    return cy, ca


@gpu_device
def _norms(th, gr, ow, nw, red):
    """Sums of gr^2 and th^2 over the layer's weights into red[0], red[T]."""
    sg = 0.0
    sw = 0.0
    for p in range(ow + cuda.threadIdx.x, ow + nw, cuda.blockDim.x):
        sg += gr[p] * gr[p]
        sw += th[p] * th[p]
    _block_sum(red, 2, sg, sw, 0.0, 0.0, 0.0)


@gpu_device
def _update(opt, th, gr, v, m, P, lr, mu, c1, c2, alive):
    """The optimizer's step on every parameter (threads over parameters), unless frozen."""
    for p in range(cuda.threadIdx.x, P, cuda.blockDim.x):
        step, nv, nm = _optimizer_step(opt, gr[p], v[p], m[p], mu, c1, c2)
        if alive:
            th[p] = th[p] - lr * step
            v[p] = nv
            m[p] = nm


@gpu_device
def _transform_grads(th, gr, P, clip, wd, red):
    """clip_grad_norm_ (clip > 0), then the optimizer's weight decay (wd != 0), on the block's
    network (threads over parameters, each the parameters its _update handles)."""
    if clip > 0.0:
        sq = 0.0
        for p in range(cuda.threadIdx.x, P, cuda.blockDim.x):
            sq += gr[p] * gr[p]
        _block_sum(red, 1, sq, 0.0, 0.0, 0.0, 0.0)
        scale = _clip_scale(red[0], clip)
        for p in range(cuda.threadIdx.x, P, cuda.blockDim.x):
            gr[p] = gr[p] * scale
    if wd != 0.0:
        for p in range(cuda.threadIdx.x, P, cuda.blockDim.x):
            gr[p] = _decayed(gr[p], wd, th[p])


@gpu_device
def _train_network(g, th, gr, v, m, fb, st, order, sidx, red, lofs, d1, d2, theta, layout, act,
                   loss_code, X, Y,
                   Xv, Yv, vidx, rec_val, final_val,
                   seeds, lrs, moms, refs, opt, wds, clips, sched, targets,
                   stop_at_target, t0, v_all, m_all, reached_all, steps, batch, record_every,
                   rec_loss, rec_layer, diverged_all, final_all, stop, halt):
    """Train network g with the whole block (see the module docstring); th, gr are its
    parameters and gradients (shared or global), v, m the optimizer's state, fb the per-sample
    float scratch, st float64 scratch, order/sidx int64 scratch of n, red shared float64;
    ``stop`` the host's Ctrl-C flag (mapped memory), ``halt`` one shared int32. At recorded
    steps the held-out set (Xv, Yv; rows vidx = 0, 1, ...) runs forward after the telemetry,
    before the update, into rec_val (R, 3, G) and final_val (3, G)."""
    tid = cuda.threadIdx.x
    T = cuda.blockDim.x
    P = theta.shape[0]
    L = layout.shape[0]
    n = X.shape[0]
    d_in = X.shape[1]
    K = Y.shape[1]
    R = rec_loss.shape[0]
    n_val = Xv.shape[0]
    ns = max(n, n_val)  # the per-sample buffers' stride: room for the batch or the held-out set
    units = _accuracy_units(loss_code, K)
    minibatch = batch < n
    n_batches = n // batch
    for p in range(tid, P, T):
        th[p] = theta[p, g]
        v[p] = v_all[p, g]
        m[p] = m_all[p, g]
    seed = seeds[g]
    lr = lrs[g]
    mu = moms[g]
    ref = refs[g]
    dv = diverged_all[g]
    reached = reached_all[g]
    frozen = _frozen_at(dv, reached, stop_at_target)
    alive = frozen < 0
    loss0 = 0.0
    c1 = 1.0
    c2 = 1.0
    cuda.syncthreads()
    for t in range(steps + 1):
        # Ctrl-C (simcore.interrupt): thread 0 reads the host's flag and the whole block leaves
        # together (a barrier is never skipped by part of a block); the next write of halt comes
        # after the barriers of a whole step
        if t % STOP_POLL_STEPS == 0:
            if tid == 0:
                halt[0] = _load_volatile(stop)
            cuda.syncthreads()
            if halt[0] != 0:
                break
        tg = t0 + t  # the global step: schedule, Adam's corrections, minibatch order
        # frozen before this step: only the final evaluation is left (step 0 always runs: it
        # sets the divergence reference)
        if 0 < t < steps and 0 <= frozen < tg:
            continue
        final = t == steps
        record = t % record_every == 0 or final
        use_mini = minibatch and not final
        nb = batch if use_mini else n
        if use_mini and (tg % n_batches == 0 or t == 0):
            if tid == 0:
                _batch_order(seed, tg // n_batches, n, order)
            cuda.syncthreads()
        pos = (tg % n_batches) * batch
        a0 = lofs[0, 0]
        for s in range(tid, nb, T):
            idx = order[pos + s] if use_mini else s
            sidx[s] = idx
            for i in range(d_in):
                fb[a0 + i * ns + s] = X[idx, i]
        cuda.syncthreads()
        # --- forward -----------------------------------------------------------------------
        _forward(fb, lofs, d1, th, layout, act, st, L, nb, ns, False)
        loss = _loss_block(loss_code, fb, lofs[L - 1, 1], Y, sidx, fb, d1, K, nb, ns, red)
        # --- divergence is data --------------------------------------------------------------
        if t == 0:
            loss0 = loss if ref < 0.0 else ref
        if dv < 0 and _is_diverged(loss, loss0):
            dv = tg
        if reached < 0 and frozen < 0 and _is_reached(loss, targets[g]):
            reached = tg
        frozen = _frozen_at(dv, reached, stop_at_target)
        alive = frozen < 0
        keep = alive or frozen == tg
        # --- backward: the delta of layer l in cur, the one below built in oth ---------------
        cur = d1
        oth = d2
        for l in range(L - 1, -1, -1):
            fi = layout[l, FAN_IN]
            fo = layout[l, FAN_OUT]
            if layout[l, OFF_GAMMA] >= 0:
                _bn_backward(fb, cur, fb, lofs[l, 2], fb, lofs[l, 3], th, layout[l, OFF_GAMMA],
                             layout[l, OFF_BETA], fo, gr, fb, oth, st, nb, ns)
                cuda.syncthreads()
                cur, oth = oth, cur
            _dense_grad(fb, lofs[l, 0], fb, cur, gr, layout[l, OFF_W], layout[l, OFF_B], fi, fo,
                        nb, ns)
            if l > 0:
                _dense_backward_data(th, layout[l, OFF_W], fi, fo, fb, cur, act, fb,
                                     lofs[l - 1, 1], fb, lofs[l, 0], fb, oth, nb, ns)
                cur, oth = oth, cur
            cuda.syncthreads()
        # --- telemetry -------------------------------------------------------------------------
        if record:
            r = t // record_every if t % record_every == 0 else R - 1
            if tid == 0:
                rec_loss[r, g] = loss if keep else math.nan
            for l in range(L):
                fo = layout[l, FAN_OUT]
                last = l == L - 1
                ab = 0 if last else lofs[l + 1, 0]
                cy, ca = _tele_sums(last, loss_code, act, fb, lofs[l, 1], fb, ab, fo, nb, ns, red)
                cnt = nb * fo
                mean_y, sd_y = _shifted_moments(cy, red[0], red[T], cnt)
                mean_a, sd_a = _shifted_moments(ca, red[2 * T], red[3 * T], cnt)
                sat = red[4 * T] / cnt
                _norms(th, gr, layout[l, OFF_W], layout[l, FAN_IN] * fo, red)
                if tid == 0:
                    if keep:
                        rec_layer[r, l, 0, g] = math.sqrt(red[0])
                        rec_layer[r, l, 1, g] = math.sqrt(red[T])
                        rec_layer[r, l, 2, g] = mean_y
                        rec_layer[r, l, 3, g] = sd_y
                        rec_layer[r, l, 4, g] = mean_a
                        rec_layer[r, l, 5, g] = sd_a
                        rec_layer[r, l, 6, g] = sat
                    else:
                        for q in range(NQ):
                            rec_layer[r, l, q, g] = math.nan
            # --- the held-out set at the same parameters (the batch's buffers are free now) ----
            right = _right_block(loss_code, fb, lofs[L - 1, 1], Y, sidx, K, nb, ns, red)
            vloss = 0.0
            vright = 0.0
            if n_val > 0:
                for s in range(tid, n_val, T):
                    for i in range(d_in):
                        fb[a0 + i * ns + s] = Xv[s, i]
                cuda.syncthreads()
                _forward(fb, lofs, d1, th, layout, act, st, L, n_val, ns, True)
                vloss = _loss_block(loss_code, fb, lofs[L - 1, 1], Yv, vidx, fb, d1, K, n_val, ns, red)
                vright = _right_block(loss_code, fb, lofs[L - 1, 1], Yv, vidx, K, n_val, ns, red)
            e0, e1, e2 = _evaluation(units, right, nb, vloss, vright, n_val)
            if tid == 0:
                rec_val[r, 0, g] = e0 if keep else math.nan
                rec_val[r, 1, g] = e1 if keep else math.nan
                rec_val[r, 2, g] = e2 if keep else math.nan
                if final:
                    final_val[0, g] = e0
                    final_val[1, g] = e1
                    final_val[2, g] = e2
            cuda.syncthreads()
        if final:
            if tid == 0:
                final_all[g] = loss
            break
        # --- the update (a diverged network stays frozen) ------------------------------------
        if opt == ADAM:
            c1, c2 = _adam_corrections(tg)
        _transform_grads(th, gr, P, clips[g], wds[g], red)
        _update(opt, th, gr, v, m, P, lr * _lr_factor(sched, tg), mu, c1, c2, alive)
        cuda.syncthreads()
    for p in range(tid, P, T):
        theta[p, g] = th[p]
        v_all[p, g] = v[p]
        m_all[p, g] = m[p]
    if tid == 0:
        diverged_all[g] = dv
        reached_all[g] = reached
    cuda.syncthreads()


# --- kernels -----------------------------------------------------------------------------------

_KERNELS = {}


def _numba_dtype(dtype):
    return nb_float32 if np.dtype(dtype) == np.float32 else nb_float64


def _train_kernel(dtype, tpb, shared):
    """The engine's kernel for float dtype, tpb threads a block, weights in shared memory or not."""
    key = ("train", np.dtype(dtype).name, tpb, shared)
    if key in _KERNELS:
        return _KERNELS[key]
    dt = _numba_dtype(dtype)
    red_size = 5 * tpb

    if shared:
        def kernel(theta, layout, act, loss_code, X, Y,
                   Xv, Yv, vidx, rec_val, final_val,
                   seeds, lrs, moms, refs, opt, wds, clips, sched,
                   targets, stop_at_target, t0, v_all, m_all, reached_all, steps, batch,
                   record_every, rec_loss, rec_layer, diverged_all, final_all, lofs, d1, d2,
                   fbuf, sbuf, ibuf, wbuf, stop):
            red = cuda.shared.array(red_size, nb_float64)
            halt = cuda.shared.array(1, nb_int32)
            sh = cuda.shared.array(0, dt)
            b = cuda.blockIdx.x
            P = theta.shape[0]
            n = X.shape[0]
            th = sh[0:P]
            gr = sh[P:2 * P]
            w = wbuf[b]
            ib = ibuf[b]
            g = b
            while g < theta.shape[1]:
                _train_network(g, th, gr, w[0:P], w[P:2 * P], fbuf[b], sbuf[b], ib[0:n],
                               ib[n:2 * n], red, lofs, d1, d2, theta, layout, act, loss_code, X,
                               Y,
                               Xv, Yv, vidx, rec_val, final_val,
                               seeds, lrs, moms, refs, opt, wds, clips, sched, targets,
                               stop_at_target, t0, v_all, m_all, reached_all, steps, batch, record_every,
                               rec_loss, rec_layer, diverged_all, final_all, stop,
                               halt)
                g += cuda.gridDim.x
    else:
        def kernel(theta, layout, act, loss_code, X, Y,
                   Xv, Yv, vidx, rec_val, final_val,
                   seeds, lrs, moms, refs, opt, wds, clips, sched,
                   targets, stop_at_target, t0, v_all, m_all, reached_all, steps, batch,
                   record_every, rec_loss, rec_layer, diverged_all, final_all, lofs, d1, d2,
                   fbuf, sbuf, ibuf, wbuf, stop):
            red = cuda.shared.array(red_size, nb_float64)
            halt = cuda.shared.array(1, nb_int32)
            b = cuda.blockIdx.x
            P = theta.shape[0]
            n = X.shape[0]
            w = wbuf[b]
            ib = ibuf[b]
            g = b
            while g < theta.shape[1]:
                _train_network(g, w[0:P], w[P:2 * P], w[2 * P:3 * P], w[3 * P:4 * P], fbuf[b],
                               sbuf[b], ib[0:n], ib[n:2 * n], red, lofs, d1, d2, theta, layout,
                               act, loss_code, X, Y,
                               Xv, Yv, vidx, rec_val, final_val,
                               seeds, lrs, moms, refs, opt, wds, clips,
                               sched, targets, stop_at_target, t0, v_all, m_all, reached_all,
                               steps, batch, record_every, rec_loss, rec_layer, diverged_all, final_all, stop,
                               halt)
                g += cuda.gridDim.x

    kernel.__name__ = f"train_{np.dtype(dtype).name}_{'shared' if shared else 'global'}"
    _KERNELS[key] = gpu_kernel(kernel)
    return _KERNELS[key]


def threads_per_block():
    """``config.CUDA_THREADS``, checked: a power of two in [1, 1024]."""
    tpb = int(config.CUDA_THREADS)
    if tpb < 1 or tpb > 1024 or tpb & (tpb - 1):
        raise ValueError(f"SIMCORE_CUDA_THREADS must be a power of two in [1, 1024], got {tpb}")
    return tpb


def new_stop_flag():
    """The kernel's stop flag: host memory the device reads (mapped), zero."""
    stop = cuda.mapped_array(1, np.int32)
    stop[0] = 0
    return stop


def _wait(stop):
    """Wait for the launched kernel (launches are asynchronous), Ctrl-C stopping it; the
    simulator runs a launch to its end before returning, so there is nothing to wait for."""
    if numba_config.ENABLE_CUDASIM:
        return
    done = cuda.event()
    done.record()
    interrupt.wait_device(done.query, stop, cuda.synchronize)


def _scratch_layout(layout, n):
    """Offsets of the per-block float scratch: lofs[l] = (input a, y, xhat, inv_std) bases of
    layer l, then the two delta buffers; returns (lofs, d1, d2, size, max_width). lofs[l, 4]:
    where layer l's batch means start in the float64 scratch st (after 2 max_width values),
    st_size its length."""
    L = layout.shape[0]
    lofs = np.zeros((L, 5), np.int64)
    max_w = int(max(layout[:, FAN_IN].max(), layout[:, FAN_OUT].max()))
    off = 0
    for l in range(L):
        lofs[l, 0] = off
        off += n * int(layout[l, FAN_IN])
    for l in range(L):
        lofs[l, 1] = off
        off += n * int(layout[l, FAN_OUT])
    for l in range(L):
        if layout[l, OFF_GAMMA] >= 0:
            lofs[l, 2] = off
            off += n * int(layout[l, FAN_OUT])
    for l in range(L):
        if layout[l, OFF_GAMMA] >= 0:
            lofs[l, 3] = off
            off += int(layout[l, FAN_OUT])
    st_off = 2 * max_w
    for l in range(L):
        if layout[l, OFF_GAMMA] >= 0:
            lofs[l, 4] = st_off
            st_off += int(layout[l, FAN_OUT])
    d1 = off
    d2 = off + n * max_w
    return lofs, d1, d2, d2 + n * max_w, max_w, st_off


def train_blocks_cuda(theta, layout, act, loss_code, X, Y,
                      Xv, Yv, rec_val_all, final_val_all,
                      seeds_all, lr_all, mom_all, ref_all,
                      opt, wd_all, clip_all, sched, target_all, stop_at_target, t0, v_all, m_all,
                      reached_all, steps, batch, record_every, rec_loss_all, rec_layer_all, diverged_all,
                      final_all, stop=None):
    """Train the G networks of one architecture on the GPU; the contract of the CPU's
    ``train_lanes`` (:func:`simcore.grid.cpu.train_kernel`; without the block range): theta
    (P, G) is updated in place, telemetry written to rec_loss_all (R, G) and rec_layer_all
    (R, L, NQ, G), the step of divergence (-1: none) to diverged_all (G,) and the full-data
    loss at the end to final_all; the held-out set (Xv, Yv; no rows: none) as there, into
    rec_val_all (R, 3, G) and final_val_all (3, G). The training's options (weight decay,
    clipping, the schedule, targets, and a resumed state: ``t0``, the moments v_all and m_all,
    diverged_all and reached_all read and written back) as in ``train_lanes``.

    The call waits for the kernel in short slices, so Ctrl-C stops it within
    ``STOP_POLL_STEPS`` steps (:func:`simcore.interrupt.wait_device`) and raises
    KeyboardInterrupt. ``stop`` (a mapped int32 array of one element, :func:`new_stop_flag`)
    is for tests: raised, by them or from another thread, it ends every network's training at
    its next poll and the call returns what was trained by then."""
    require_gpu()
    P, G = theta.shape
    n = X.shape[0]
    dtype = theta.dtype
    tpb = threads_per_block()
    # the per-sample stride ns of the kernel: room for the batch or the held-out set
    lofs, d1, d2, fsize, max_w, st_size = _scratch_layout(layout, max(n, Xv.shape[0]))
    shared = 2 * P * dtype.itemsize + 5 * tpb * 8 <= _SHARED_BYTES
    per_block = (fsize + (2 if shared else 4) * P) * dtype.itemsize + st_size * 8 + 2 * n * 8
    nblk = max(1, min(G, int(config.CUDA_MAX_BLOCKS), _SCRATCH_BYTES // per_block))
    kernel = _train_kernel(dtype, tpb, shared)
    if stop is None:
        stop = new_stop_flag()
    dev = cuda.to_device
    d_theta = dev(theta)
    d_rec_loss = dev(rec_loss_all)
    d_rec_layer = dev(rec_layer_all)
    d_div = dev(diverged_all)
    d_final = dev(final_all)
    d_rec_val = dev(rec_val_all)
    d_final_val = dev(final_val_all)
    d_v = dev(v_all)
    d_m = dev(m_all)
    d_reached = dev(reached_all)
    fbuf = cuda.device_array((nblk, fsize), dtype)
    sbuf = cuda.device_array((nblk, st_size), np.float64)
    ibuf = cuda.device_array((nblk, 2 * n), np.int64)
    wbuf = cuda.device_array((nblk, (2 if shared else 4) * P), dtype)
    shared_bytes = 2 * P * dtype.itemsize if shared else 0
    kernel[nblk, tpb, 0, shared_bytes](
        d_theta, dev(np.ascontiguousarray(layout)), int(act), int(loss_code), dev(X), dev(Y),
        dev(Xv), dev(Yv), dev(np.arange(max(Xv.shape[0], 1), dtype=np.int64)), d_rec_val, d_final_val,
        dev(seeds_all), dev(lr_all), dev(mom_all), dev(ref_all), int(opt), dev(wd_all),
        dev(clip_all), dev(sched), dev(target_all), bool(stop_at_target), int(t0), d_v, d_m, d_reached,
        int(steps), int(batch),
        int(record_every), d_rec_loss, d_rec_layer, d_div, d_final, dev(lofs), d1, d2, fbuf, sbuf,
        ibuf, wbuf, stop)
    _wait(stop)
    d_theta.copy_to_host(theta)
    d_rec_loss.copy_to_host(rec_loss_all)
    d_rec_layer.copy_to_host(rec_layer_all)
    d_div.copy_to_host(diverged_all)
    d_final.copy_to_host(final_all)
    d_rec_val.copy_to_host(rec_val_all)
    d_final_val.copy_to_host(final_val_all)
    d_v.copy_to_host(v_all)
    d_m.copy_to_host(m_all)
    d_reached.copy_to_host(reached_all)
