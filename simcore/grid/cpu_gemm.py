r"""The grid engine's per-network strategy on the CPU: one network at a time per thread, its
layers as register-tiled matrix products (:func:`simcore.gemm.gemm`).

Why a second strategy: lanes (:mod:`simcore.grid.cpu`) give every network its own weights in
every vector, so a block's weights grow with width x lanes. Past a few dozen units they no
longer fit in cache and every sample streams them from memory again. Here one network's layer
is a plain matrix product over a chunk of samples, :math:`z = b + a W` with rows for samples,
and its weights are read once per tile of 6 samples from a panel that stays in cache
(:mod:`simcore.gemm`). The three products of a step are

.. math::
    z_l = b_l + a_{l-1} W_l,\quad
    \nabla W_l \mathrel{+}= a_{l-1}^T \delta_l,\quad
    \nabla b_l \mathrel{+}= \textstyle\sum_s \delta_{l,s},\quad
    \delta_{l-1} = (\delta_l W_l^T) \odot f'(y_{l-1})

with :math:`W_l^T` kept beside :math:`W_l` (refreshed after every update). Column counts are
padded with zeros to whole vectors; padding stays zero (its gradients are exactly zero) and never
reaches a real value, since inputs are read only up to the real fan-in.

The contract is that of ``train_lanes`` (:func:`simcore.grid.cpu.train_kernel`): same arguments,
same telemetry, same divergence rule. Every sum runs in the same order as there (biases first,
inputs in order, samples in order), and batch norm, the losses and the telemetry call the lane
kernels themselves on views of one network's buffers (a view with the columns as lanes, or with
one lane), so the two strategies agree bitwise where the order of every sum is the same.
A network that diverges (or, with ``stop_at_target``, reaches its target) is frozen at once:
only its final evaluation remains to be computed.
"""
import functools

import numpy as np

from .._jit import cpu_kernel
from ..activations import backward as act_backward, forward as act_forward
from ..gemm import gemm
from ..optim import ADAM, GD, MOMENTUM, NESTEROV
from ..interrupt import stop_requested
from ..simd import width
from ..losses import accuracy_units
from .core import (FAN_IN, FAN_OUT, NQ, OFF_B, OFF_BETA, OFF_GAMMA, OFF_W, adam_corrections,
                   batch_order, check_batchnorm_layout, clip_scale, decayed, evaluation, frozen_at,
                   is_diverged, is_reached, lr_factor, optimizer_step)
from .cpu import (_bn_apply, _bn_backward, _bn_forward, _chunk_plan, _count_correct, _empty_aligned, _loss_lanes,
                  _output_lanes, _tele_accumulate, _tele_finish, _view)

CHUNK = 96  # samples per chunk without batch norm: a multiple of the tile's 6 rows; buffers stay in L2


@cpu_kernel(ordered=True)
def _cols(buf, base, nb, ld, w):
    """The (nb, w, 1) view of the first w columns of the (nb, ld) rows stored at ``base`` of a
    flat buffer: one network's units as the lane kernels' (samples, units, lanes) with one lane."""
    return buf[base:base + nb * ld].reshape((nb, ld))[:, :w, np.newaxis]


@cpu_kernel(ordered=True)
def _to_padded(s_all, g, layout, l, ow, ob, og, w, s):
    """Layer l of network g's optimizer state s_all (a moment, v or m: P x G, column g in the
    MLP layout) into the padded s (W at ow with rows of w, b at ob, gamma and beta at og)."""
    fi, fo = layout[l, FAN_IN], layout[l, FAN_OUT]
    for i in range(fi):
        for j in range(fo):
            s[ow + i * w + j] = s_all[layout[l, OFF_W] + i * fo + j, g]
    for j in range(fo):
        s[ob + j] = s_all[layout[l, OFF_B] + j, g]
        if og >= 0:
            s[og + j] = s_all[layout[l, OFF_GAMMA] + j, g]
            s[og + w + j] = s_all[layout[l, OFF_BETA] + j, g]


@cpu_kernel(ordered=True)
def _from_padded(s, layout, l, ow, ob, og, w, s_all, g):
    """The inverse of :func:`_to_padded`: layer l of the padded s into column g of s_all."""
    fi, fo = layout[l, FAN_IN], layout[l, FAN_OUT]
    for i in range(fi):
        for j in range(fo):
            s_all[layout[l, OFF_W] + i * fo + j, g] = s[ow + i * w + j]
    for j in range(fo):
        s_all[layout[l, OFF_B] + j, g] = s[ob + j]
        if og >= 0:
            s_all[layout[l, OFF_GAMMA] + j, g] = s[og + j]
            s_all[layout[l, OFF_BETA] + j, g] = s[og + w + j]


@cpu_kernel(ordered=True, inline=True)
def _update_loop(opt, th, gr, v, m, lr, mu, c1, c2):
    """theta <- theta - lr * step for every parameter of one network, v and m updated."""
    for p in range(th.shape[0]):
        step, vk, mk = optimizer_step(opt, gr[p], v[p], m[p], mu, c1, c2)
        v[p] = vk
        m[p] = mk
        th[p] = th[p] - lr * step


@cpu_kernel(ordered=True)
def _update(opt, th, gr, v, m, lr, mu, c1, c2):
    """The update of one network (:func:`_update_loop`), one inlined loop per optimizer, as in
    :func:`simcore.grid.cpu._update_lanes`: with the code a constant the loop vectorises."""
    if opt == GD:
        _update_loop(GD, th, gr, v, m, lr, mu, c1, c2)
    elif opt == MOMENTUM:
        _update_loop(MOMENTUM, th, gr, v, m, lr, mu, c1, c2)
    elif opt == NESTEROV:
        _update_loop(NESTEROV, th, gr, v, m, lr, mu, c1, c2)
    else:
        _update_loop(ADAM, th, gr, v, m, lr, mu, c1, c2)


@functools.lru_cache(maxsize=None)
def train_kernel(batchnorm):
    """The per-network training kernel ``train_networks``, compiled with or without batch norm
    on the hidden layers (as :func:`simcore.grid.cpu.train_kernel`)."""
    batchnorm = bool(batchnorm)

    @cpu_kernel(ordered=True)
    def train_networks(theta, layout, act, loss_code, X, Y,
                       Xv, Yv, rec_val_all, final_val_all,
                       seeds_all, lr_all, mom_all, ref_all, opt,
                       wd_all, clip_all, sched, target_all, stop_at_target, t0, v_all, m_all, reached_all,
                       steps, batch, record_every, rec_loss_all, rec_layer_all, diverged_all,
                       final_all, first_block, end_block, nl, stop):
        """Train networks [first_block * nl, end_block * nl) of theta (P, G), one after the other,
        with the arguments of ``train_lanes``; threads call it on disjoint ranges. The held-out
        set runs after the batch at recorded steps, in chunks of its own (as there)."""
        P, G = theta.shape
        R = rec_loss_all.shape[0]
        n_layers = layout.shape[0]
        n, d_in = X.shape
        K = Y.shape[1]
        minibatch = batch < n
        n_batches = n // batch
        dt = theta.dtype
        V = width(theta)
        check_batchnorm_layout(layout, batchnorm)
        chunk = n if batchnorm else min(CHUNK, n)
        n_val = Xv.shape[0]
        units = accuracy_units(loss_code, K)
        origin = np.int64(0)
        one = np.int64(1)  # a variable: grad b's product then shares grad W's compiled gemm
        # padded widths and the padded parameter layout: W_l (fi x wp), b_l, then gamma_l and beta_l
        # side by side (a (2, wp) block, as the lane kernels' th rows og and og + 1)
        wp = np.empty(n_layers, np.int64)
        pw = np.empty(n_layers, np.int64)
        pb = np.empty(n_layers, np.int64)
        pg = np.empty(n_layers, np.int64)
        pwt = np.empty(n_layers, np.int64)
        ybase = np.empty(n_layers, np.int64)
        abase = np.empty(n_layers, np.int64)
        ibase = np.empty(n_layers, np.int64)
        Pp = 0
        wt_size = 0
        y_size = 0
        a_size = 0
        max_w = K
        for l in range(n_layers):
            fi, fo = layout[l, FAN_IN], layout[l, FAN_OUT]
            wp[l] = -(-fo // V) * V
            max_w = max(max_w, wp[l])
            pw[l] = Pp
            Pp += fi * wp[l]
            pb[l] = Pp
            Pp += wp[l]
            pg[l] = -1
            if layout[l, OFF_GAMMA] >= 0:
                pg[l] = Pp
                Pp += 2 * wp[l]
            pwt[l] = wt_size
            if l > 0:
                wt_size += fo * wp[l - 1]
            ybase[l] = y_size
            ibase[l] = y_size // chunk
            y_size += chunk * wp[l]
            abase[l] = a_size
            a_size += chunk * (d_in if l == 0 else wp[l - 1])
        th = _empty_aligned(Pp, dt)
        gr = _empty_aligned(Pp, dt)
        v = _empty_aligned(Pp, dt)
        m = _empty_aligned(Pp, dt)
        Wt = _empty_aligned(max(wt_size, 1), dt)
        A = _empty_aligned(a_size, dt)       # layer inputs: X's rows, then the activations
        Ypre = _empty_aligned(y_size, dt)    # activation inputs y (z without batch norm)
        Xhat = _empty_aligned(y_size, dt)    # batch norm's x-hat
        inv_std = _empty_aligned(y_size // chunk, dt)
        bmean = np.empty(y_size // chunk, np.float64)  # the batch means of batch norm
        D1 = _empty_aligned(chunk * max_w, dt)
        D2 = _empty_aligned(chunk * max_w, dt)
        ones = _empty_aligned(chunk * max_w, dt)
        ones[:] = 1.0
        zero_row = _empty_aligned(max_w, dt)
        zero_row[:] = 0.0
        Yb = _empty_aligned(chunk * K, dt)
        order = np.empty(n, np.int64)
        acc = np.empty(3 * max_w, np.float64)
        tacc = np.empty(n_layers * 7, np.float64).reshape((n_layers, 7, 1))
        loss = np.empty(1, np.float64)
        vloss = np.empty(1, np.float64)
        right = np.empty(2, np.float64).reshape((2, 1))  # right predictions: batch, held-out set
        tele = np.empty(NQ, np.float64).reshape((NQ, 1))
        th2, gr2 = th.reshape((Pp, 1)), gr.reshape((Pp, 1))
        for g in range(first_block * nl, min(end_block * nl, G)):
            # --- the network's parameters into the padded layout; telemetry starts as NaN ----
            th[:] = 0.0
            Wt[:] = 0.0
            for l in range(n_layers):
                fi, fo = layout[l, FAN_IN], layout[l, FAN_OUT]
                for i in range(fi):
                    for j in range(fo):
                        th[pw[l] + i * wp[l] + j] = theta[layout[l, OFF_W] + i * fo + j, g]
                for j in range(fo):
                    th[pb[l] + j] = theta[layout[l, OFF_B] + j, g]
                    if pg[l] >= 0:
                        th[pg[l] + j] = theta[layout[l, OFF_GAMMA] + j, g]
                        th[pg[l] + wp[l] + j] = theta[layout[l, OFF_BETA] + j, g]
            v[:] = 0.0
            m[:] = 0.0
            # the optimizer's state where it trained before, else 0; only the moments its rule
            # changes (gradient descent changes neither, momentum not m): the others stay in
            # v_all and m_all as they are, sparing a strided gather and scatter per parameter
            for l in range(n_layers):
                if opt != GD:
                    _to_padded(v_all, g, layout, l, pw[l], pb[l], pg[l], wp[l], v)
                if opt == ADAM:
                    _to_padded(m_all, g, layout, l, pw[l], pb[l], pg[l], wp[l], m)
            for r in range(R):
                rec_loss_all[r, g] = np.nan
                for q in range(3):
                    rec_val_all[r, q, g] = np.nan
                for l in range(n_layers):
                    for q in range(NQ):
                        rec_layer_all[r, l, q, g] = np.nan
            lr, mu, seed = lr_all[g], mom_all[g], seeds_all[g]
            loss0 = 0.0
            diverged_at = diverged_all[g]
            reached_at = reached_all[g]
            frozen = frozen_at(diverged_at, reached_at, stop_at_target)
            wd, clip, target = wd_all[g], clip_all[g], target_all[g]
            t = 0
            while True:
                if stop_requested(stop):  # Ctrl-C in the caller (simcore.interrupt)
                    return
                tg = t0 + t  # the global step: schedule, Adam's corrections, minibatch order
                # W^T of every layer that passes a delta back, from the current W
                for l in range(1, n_layers):
                    # offsets and strides in locals: LLVM would reload them from their arrays
                    # after every store (they might alias Wt)
                    fi, fo, bt, ldt, bw, ldw = layout[l, FAN_IN], layout[l, FAN_OUT], pwt[l], wp[l - 1], pw[l], wp[l]
                    for j in range(fo):
                        for i in range(fi):
                            Wt[bt + j * ldt + i] = th[bw + i * ldw + j]
                final = t == steps
                record = t % record_every == 0 or final
                use_mini = minibatch and not final
                nb = batch if use_mini else n
                if use_mini and (tg % n_batches == 0 or t == 0):
                    batch_order(seed, tg // n_batches, n, order)
                pos = (tg % n_batches) * batch
                loss[0] = 0.0
                vloss[0] = 0.0
                right[:] = 0.0
                gr[:] = 0.0
                if record:
                    tacc[:] = 0.0
                for ci in range(-(-nb // chunk) + (-(-n_val // chunk) if record else 0)):
                    held, c0, cn = _chunk_plan(ci, nb, n_val, chunk)  # held: forward and loss only
                    XS = Xv if held else X
                    YS = Yv if held else Y
                    for s in range(cn):
                        idx = order[pos + c0 + s] if use_mini and not held else c0 + s
                        for i in range(d_in):
                            A[s * d_in + i] = XS[idx, i]
                        for j in range(K):
                            Yb[s * K + j] = YS[idx, j]
                    # --- forward ----------------------------------------------------------------
                    for l in range(n_layers):
                        fi, fo, w = layout[l, FAN_IN], layout[l, FAN_OUT], wp[l]
                        lda = d_in if l == 0 else wp[l - 1]
                        bn = batchnorm and l < n_layers - 1
                        if bn:  # z into D1, then batch norm into y
                            gemm(A, abase[l], lda, 1, th, pw[l], w, th, pb[l], 0, D1, origin, w, cn, w, fi)
                            if held:  # the held-out set: the batch's statistics
                                _bn_apply(_view(D1, origin, cn, 1, w), th[pg[l]:pg[l] + 2 * w].reshape((2, w)),
                                          0, 1, 1, _view(Ypre, ybase[l], cn, 1, w),
                                          bmean[ibase[l]:ibase[l] + w].reshape((1, w)),
                                          inv_std[ibase[l]:ibase[l] + w].reshape((1, w)))
                            else:
                                _bn_forward(_view(D1, origin, cn, 1, w), th[pg[l]:pg[l] + 2 * w].reshape((2, w)),
                                            0, 1, 1, _view(Ypre, ybase[l], cn, 1, w), _view(Xhat, ybase[l], cn, 1, w),
                                            inv_std[ibase[l]:ibase[l] + w].reshape((1, w)),
                                            acc[:2 * w].reshape((2, w)), bmean[ibase[l]:ibase[l] + w].reshape((1, w)))
                        else:
                            gemm(A, abase[l], lda, 1, th, pw[l], w, th, pb[l], 0, Ypre, ybase[l], w, cn, w, fi)
                        if l < n_layers - 1:
                            act_forward(act, Ypre[ybase[l]:ybase[l] + cn * w],
                                        A[abase[l + 1]:abase[l + 1] + cn * w])
                    # --- the loss, and delta = dL/dz of the output layer (padding columns 0) ------
                    wl = wp[n_layers - 1]
                    _loss_lanes(loss_code, _cols(Ypre, ybase[n_layers - 1], cn, wl, K),
                                _view(Yb, origin, cn, K, 1), _cols(D1, origin, cn, wl, K),
                                vloss if held else loss, acc[:3].reshape((3, 1)), n_val if held else nb)
                    if record and units > 0:
                        _count_correct(loss_code, Ypre, ybase[n_layers - 1], wl, 1, Yb[:cn * K].reshape((cn, K)),
                                       0, 1, K, cn, right[1 if held else 0])
                    if held:
                        continue
                    for s in range(cn):
                        for j in range(K, wl):
                            D1[s * wl + j] = 0.0
                    # --- backward: delta in D1; delta W^T into D2, times f' back into D1 -------
                    for l in range(n_layers - 1, -1, -1):
                        fi, fo, w = layout[l, FAN_IN], layout[l, FAN_OUT], wp[l]
                        lda = d_in if l == 0 else wp[l - 1]
                        if batchnorm and l < n_layers - 1:
                            _bn_backward(_view(D1, origin, cn, 1, w), _view(Xhat, ybase[l], cn, 1, w),
                                         inv_std[ibase[l]:ibase[l] + w].reshape((1, w)),
                                         th[pg[l]:pg[l] + 2 * w].reshape((2, w)), 0, 1, 1,
                                         gr[pg[l]:pg[l] + 2 * w].reshape((2, w)), _view(D2, origin, cn, 1, w),
                                         acc[:2 * w].reshape((2, w)))
                            D1, D2 = D2, D1
                        # grad W += a^T delta (a read transposed); grad b += ones^T delta, with the
                        # argument pattern of the grad W call (literal strides where they are
                        # literal there), so numba compiles one gemm for both
                        gemm(A, abase[l], 1, lda, D1, origin, w, gr, pw[l], w, gr, pw[l], w, fi, w, cn)
                        gemm(ones, origin, 1, origin, D1, origin, w, gr, pb[l], w, gr, pb[l], w, one, w, cn)
                        if l > 0:  # delta W^T, then times f'(y) of the layer below
                            gemm(D1, origin, w, 1, Wt, pwt[l], lda, zero_row, origin, 0, D2, origin, lda,
                                 cn, lda, fo)
                            size = cn * lda
                            # into D1 (this delta is spent): written in place, LLVM's overlap
                            # check would take its scalar loop
                            act_backward(act, Ypre[ybase[l - 1]:ybase[l - 1] + size],
                                         A[abase[l]:abase[l] + size], D2[:size], D1[:size])
                    # --- telemetry sums of the chunk ----------------------------------------------
                    if record:
                        for l in range(n_layers):
                            fo, w = layout[l, FAN_OUT], wp[l]
                            yl = _cols(Ypre, ybase[l], cn, w, fo)
                            if l < n_layers - 1:
                                act_backward(act, Ypre[ybase[l]:ybase[l] + cn * w],
                                             A[abase[l + 1]:abase[l + 1] + cn * w], ones[:cn * w], D1[:cn * w])
                                _tele_accumulate(yl, _cols(A, abase[l + 1], cn, w, fo), _cols(D1, origin, cn, w, fo),
                                                 tacc[l], c0 == 0)
                            else:
                                _output_lanes(loss_code, yl, _view(D2, origin, cn, fo, 1), _view(D1, origin, cn, fo, 1))
                                _tele_accumulate(yl, _view(D2, origin, cn, fo, 1), _view(D1, origin, cn, fo, 1),
                                                 tacc[l], c0 == 0)
                # --- divergence is data -----------------------------------------------------------
                lt = loss[0]
                if t == 0:
                    loss0 = lt if ref_all[g] < 0.0 else ref_all[g]
                if diverged_at < 0 and is_diverged(lt, loss0):
                    diverged_at = tg
                if reached_at < 0 and frozen < 0 and is_reached(lt, target):
                    reached_at = tg
                frozen = frozen_at(diverged_at, reached_at, stop_at_target)
                held_out = evaluation(units, right[0, 0], nb, vloss[0], right[1, 0], n_val)
                if record and (frozen < 0 or frozen == tg):
                    r = t // record_every if t % record_every == 0 else R - 1
                    for q in range(3):
                        rec_val_all[r, q, g] = held_out[q]
                    for l in range(n_layers):
                        _tele_finish(th2, gr2, pw[l], layout[l, FAN_IN] * wp[l], nb * layout[l, FAN_OUT],
                                     tacc[l], tele)
                        for q in range(NQ):
                            rec_layer_all[r, l, q, g] = tele[q, 0]
                    rec_loss_all[r, g] = lt
                if final:
                    final_all[g] = lt
                    for q in range(3):
                        final_val_all[q, g] = held_out[q]
                    break
                if frozen >= 0:  # frozen: only the final evaluation is left
                    t = steps
                    continue
                # --- the update ---------------------------------------------------------------------
                c1, c2 = adam_corrections(tg)
                # clip_grad_norm_, then the optimizer's weight decay, as a torch loop (padding is 0)
                if clip > 0.0:
                    sq = 0.0
                    for p in range(Pp):
                        sq += gr[p] * gr[p]
                    scale = clip_scale(sq, clip)
                    for p in range(Pp):
                        gr[p] = gr[p] * scale
                if wd != 0.0:
                    for p in range(Pp):
                        gr[p] = decayed(gr[p], wd, th[p])
                lr = lr_all[g] * lr_factor(sched, tg)
                _update(opt, th[:Pp], gr[:Pp], v[:Pp], m[:Pp], lr, mu, c1, c2)
                t += 1
            # --- write the network back ---------------------------------------------------------
            for l in range(n_layers):
                fi, fo = layout[l, FAN_IN], layout[l, FAN_OUT]
                for i in range(fi):
                    for j in range(fo):
                        theta[layout[l, OFF_W] + i * fo + j, g] = th[pw[l] + i * wp[l] + j]
                for j in range(fo):
                    theta[layout[l, OFF_B] + j, g] = th[pb[l] + j]
                    if pg[l] >= 0:
                        theta[layout[l, OFF_GAMMA] + j, g] = th[pg[l] + j]
                        theta[layout[l, OFF_BETA] + j, g] = th[pg[l] + wp[l] + j]
                if opt != GD:
                    _from_padded(v, layout, l, pw[l], pb[l], pg[l], wp[l], v_all, g)
                if opt == ADAM:
                    _from_padded(m, layout, l, pw[l], pb[l], pg[l], wp[l], m_all, g)
            diverged_all[g] = diverged_at
            reached_all[g] = reached_at

    return train_networks
