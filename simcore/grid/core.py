"""What both backends of the grid engine share, and nothing backend-specific: the parameter
layout's columns, the codes of the update rules, the telemetry's quantities, the divergence
test, the optimizer's per-parameter step and the minibatch order. The CPU kernels call these
functions compiled for the CPU; :mod:`simcore.grid.cuda` compiles the same source for the GPU
(``simcore._jit.gpu_device``), so each rule is written once for both.
"""
import math

from .._jit import cpu_kernel
from ..layout import FAN_IN, FAN_OUT, OFF_B, OFF_BETA, OFF_GAMMA, OFF_RUN, OFF_W
from ..optim import DEFAULT_BETAS, DEFAULT_EPS, OPT_CODE, parameter_step
from ..optim import adam_corrections as optim_adam_corrections
from ..scalar import stream_key, uniform

DIVERGE_FACTOR = 1e6      # loss > factor * initial loss counts as divergence
SATURATED = 0.01          # a unit is saturated where |f'(y)| < SATURATED
PERM_STREAM = 1 << 32     # random streams of minibatch orders start here (init uses 0, 1, 2, ...)
# Adam's constants are Optimizer's defaults (one place: simcore.optim)
(ADAM_BETA1, ADAM_BETA2), ADAM_EPS = DEFAULT_BETAS, DEFAULT_EPS
# per-layer telemetry quantities, in the order of rec_layer's third axis
QUANTITIES = ("grad_norm", "weight_norm", "preact_mean", "preact_std", "act_mean", "act_std",
              "saturated")
NQ = len(QUANTITIES)

__all__ = ["FAN_IN", "FAN_OUT", "OFF_W", "OFF_B", "OFF_GAMMA", "OFF_BETA", "OFF_RUN", "OPT_CODE",
           "DIVERGE_FACTOR", "SATURATED", "PERM_STREAM", "ADAM_BETA1", "ADAM_BETA2", "ADAM_EPS",
           "QUANTITIES", "NQ", "batch_order", "optimizer_step", "adam_corrections", "is_diverged",
           "saturated", "shifted_moments", "check_batchnorm_layout", "evaluation", "VAL_QUANTITIES",
           "SCHEDULE_CODE", "lr_factor", "clip_scale", "decayed", "is_reached", "frozen_at", "CLIP_EPS"]

# held-out telemetry, in the order of rec_val's second axis (and of final_val's first)
VAL_QUANTITIES = ("val_loss", "accuracy", "val_accuracy")
# learning-rate schedules: their codes in the kernels' schedule array
# sched = [code, warmup, warmup_start, factor, every, floor, period] (float64; see lr_factor)
SCHEDULE_CODE = {"constant": 0, "step": 1, "cosine": 2}
CLIP_EPS = 1e-6           # torch.nn.utils.clip_grad_norm_'s guard: max_norm / (norm + 1e-6)


@cpu_kernel(ordered=True)
def batch_order(seed, epoch, n, out):
    """The order of the n samples in epoch ``epoch`` of a network with ``seed``: a Fisher-Yates
    shuffle drawn from the counter-based stream (seed, PERM_STREAM + epoch); written to ``out``."""
    key = stream_key(seed, PERM_STREAM + epoch)
    for i in range(n):
        out[i] = i
    for i in range(n - 1, 0, -1):
        j = min(int(uniform(key, i) * (i + 1)), i)
        out[i], out[j] = out[j], out[i]


@cpu_kernel(ordered=True, inline=True)
def optimizer_step(opt, g, v, m, mu, c1, c2):
    """:func:`simcore.optim.parameter_step` with Adam's default betas and eps, the ones the grid
    engine trains with: (step, new v, new m) of one parameter."""
    return parameter_step(opt, g, v, m, mu, c1, c2, ADAM_BETA1, ADAM_BETA2, ADAM_EPS)


@cpu_kernel(ordered=True, inline=True)
def adam_corrections(t):
    """Adam's bias corrections of step t of the grid (counted from 0): 1 - beta^(t+1)."""
    return optim_adam_corrections(t + 1, ADAM_BETA1, ADAM_BETA2)


@cpu_kernel(ordered=True, inline=True)
def is_diverged(loss, loss0):
    """A network has diverged when its loss is non-finite or above DIVERGE_FACTOR times loss0,
    the loss it is compared with (its own at step 0, or the ``divergence_ref`` it was given)."""
    return not (math.isfinite(loss) and loss <= DIVERGE_FACTOR * max(loss0, 1e-300))


@cpu_kernel(ordered=True, inline=True)
def saturated(deriv):
    """1.0 where a unit counts as saturated (``|f'(y)| < SATURATED``), else 0.0: summed and
    divided by the count, the telemetry's ``saturated`` fraction."""
    return 1.0 if abs(deriv) < SATURATED else 0.0


@cpu_kernel(ordered=True, inline=True)
def shifted_moments(shift, sum_d, sum_d2, m):
    r"""Mean and standard deviation of m values x from the sums of :math:`d = x - c` and
    :math:`d^2` about a shift c (the first value): :math:`\bar x = c + \bar d`,
    :math:`s = \sqrt{\max(\overline{d^2} - \bar d^2, 0)}`; the shift keeps the variance exact
    when the values are nearly constant far from zero."""
    mean_d = sum_d / m
    return shift + mean_d, math.sqrt(max(sum_d2 / m - mean_d * mean_d, 0.0))


@cpu_kernel(ordered=True)
def check_batchnorm_layout(layout, batchnorm):
    """Refuse a layout whose hidden layers do (not) have batch norm against a kernel compiled
    without (with) it."""
    n_layers = layout.shape[0]
    for l in range(n_layers):
        if (layout[l, OFF_GAMMA] >= 0) != (batchnorm and l < n_layers - 1):
            raise ValueError("layout's batch-norm layers do not match the kernel's setting")


@cpu_kernel(ordered=True, inline=True)
def evaluation(units, right, m, val_loss, val_right, m_val):
    r"""(val_loss, accuracy, val_accuracy) of one network at one recorded step, from its sums:
    ``right`` and ``val_right`` right predictions (:func:`simcore.losses.correct_units`) over
    ``m`` training and ``m_val`` held-out samples, ``units`` predictions per sample
    (:func:`simcore.losses.accuracy_units`): accuracy = right / (m units). NaN where not
    defined: accuracies without units (mse losses), the held-out values without a held-out
    set (m_val = 0)."""
    acc = right / (m * units) if units > 0 else math.nan
    if m_val == 0:
        return math.nan, acc, math.nan
    return val_loss, acc, (val_right / (m_val * units) if units > 0 else math.nan)


@cpu_kernel(ordered=True, inline=True)
def lr_factor(sched, t):
    r"""The factor of the learning rate at (global) step t, :math:`\eta_t = \eta\,f(t)`, of the
    schedule ``sched`` = [code, w, s0, gamma, every, floor, T] (:class:`simcore.LRSchedule`):
    warmup :math:`f = s_0 + (1 - s_0)\,t / w` for :math:`t < w`; then with :math:`u = t - w`:
    constant 1; step :math:`\gamma^{\lfloor u / every \rfloor}`; cosine
    :math:`floor + (1 - floor)(1 + \cos(\pi \min(u, T) / T)) / 2`."""
    w = int(sched[1])
    if t < w:
        return sched[2] + (1.0 - sched[2]) * t / w
    u = t - w
    code = int(sched[0])
    if code == 1:
        return sched[3] ** float(u // int(sched[4]))
    if code == 2:
        period = sched[6]
        return sched[5] + (1.0 - sched[5]) * (1.0 + math.cos(math.pi * min(u, period) / period)) / 2.0
    return 1.0


@cpu_kernel(ordered=True, inline=True)
def clip_scale(sum_sq, max_norm):
    r"""The factor global-norm clipping multiplies a network's gradients by, as
    ``torch.nn.utils.clip_grad_norm_``: :math:`\min(1, c / (\lVert g \rVert_2 + 10^{-6}))` with
    :math:`\lVert g \rVert_2 = \sqrt{\sum g^2}` over all of the network's gradients."""
    return min(max_norm / (math.sqrt(sum_sq) + CLIP_EPS), 1.0)


@cpu_kernel(ordered=True, inline=True)
def decayed(g, wd, theta):
    r"""L2 weight decay as ``torch.optim``'s ``weight_decay``: :math:`g + \lambda \theta`, the
    gradient the optimizer's rule then sees (Adam's too: not AdamW)."""
    return g + wd * theta


@cpu_kernel(ordered=True, inline=True)
def is_reached(loss, target):
    """A network has reached its target when its loss is <= it (never for a NaN target)."""
    return loss <= target


@cpu_kernel(ordered=True, inline=True)
def frozen_at(diverged_at, reached_at, stop_at_target):
    """The step from which a network is frozen (no more updates): the step it diverged, or with
    ``stop_at_target`` the step it reached its target, whichever came first; -1 while it trains."""
    if stop_at_target and reached_at >= 0 and (diverged_at < 0 or reached_at < diverged_at):
        return reached_at
    return diverged_at
