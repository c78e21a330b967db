r"""Learning-rate schedules of the grid engine: :class:`LRSchedule`, the shape the networks of a
grid share; each network's peak learning rate is its own ``lr``.

The learning rate of step t (counted from 0 over the whole training, across resumed calls) is
:math:`\eta_t = \eta\,f(t)`, with :math:`f` computed in the kernels by
:func:`simcore.grid.core.lr_factor` (one function for the CPU and the GPU):

=============  ======================================================================================
warmup         :math:`f(t) = s_0 + (1 - s_0)\,t / w` for :math:`t < w` (``warmup`` w, ``warmup_start``
               :math:`s_0`; PyTorch's ``LinearLR(start_factor=s0, total_iters=w)``), then the kind
               below at :math:`u = t - w`
constant       :math:`f = 1`
step           :math:`f = \gamma^{\lfloor u / every \rfloor}` (``factor`` :math:`\gamma`; ``StepLR``)
cosine         :math:`f = floor + (1 - floor)\,(1 + \cos(\pi \min(u, T) / T)) / 2` (``period`` T,
               default the call's steps less the warmup, so that the last step reaches ``floor``;
               ``CosineAnnealingLR(T_max=T, eta_min=floor * lr)``, held at the floor after T)
=============  ======================================================================================
"""
from dataclasses import dataclass, replace

import numpy as np

from .. import _validate
from .core import SCHEDULE_CODE, lr_factor

KINDS = tuple(SCHEDULE_CODE)
# each kind's own settings; given to another kind they would change nothing: a ValueError
_USED_BY = {"factor": "step", "every": "step", "floor": "cosine", "period": "cosine"}
_DEFAULTS = {"factor": 0.1, "floor": 0.0}

__all__ = ["LRSchedule", "KINDS"]


@dataclass(frozen=True)
class LRSchedule:
    r"""The shape of the learning rate over the steps, :math:`\eta_t = \eta\,f(t)` (module
    docstring: the formulas).

    Parameters
    ----------
    kind : {"constant", "step", "cosine"}
    factor : float > 0, optional
        step: the factor :math:`\gamma` every ``every`` steps; default 0.1.
    every : int >= 1
        step: steps between two decays (required).
    floor : float in [0, 1], optional
        cosine: the factor the rate decays to (``eta_min / lr`` in PyTorch); default 0.
    period : int >= 1, optional
        cosine: the steps the decay takes after the warmup; default the call's ``steps`` less
        ``warmup`` (give it to continue a training in several calls).
    warmup : int >= 0
        Steps of linear warmup before the kind's own shape (0: none).
    warmup_start : float in [0, 1]
        The factor at step 0 of the warmup; default 0.

    A setting of another kind (``every`` with "cosine", ...) is a ValueError.

    Examples
    --------
    >>> LRSchedule("cosine", floor=0.01, warmup=20).factors(steps=100)[[0, 10, 20, 100]]
    array([0.  , 0.5 , 1.  , 0.01])
    """

    kind: str = "constant"
    factor: float = None
    every: int = None
    floor: float = None
    period: int = None
    warmup: int = 0
    warmup_start: float = 0.0

    def __post_init__(self):
        _validate.choice("kind", self.kind, KINDS)
        for name, kind in _USED_BY.items():
            if getattr(self, name) is not None and self.kind != kind:
                raise ValueError(f"LRSchedule: {name} is a setting of kind {kind!r}; kind "
                                 f"{self.kind!r} would ignore {name}={getattr(self, name)!r}")
        if self.kind == "step":
            if self.every is None:
                raise ValueError("LRSchedule: kind 'step' needs every (the steps between two decays)")
            object.__setattr__(self, "every", _validate.integer("every", self.every, minimum=1))
            factor = _DEFAULTS["factor"] if self.factor is None else self.factor
            object.__setattr__(self, "factor", _validate.real("factor", factor, 0.0, strict_minimum=True))
        if self.kind == "cosine":
            floor = _DEFAULTS["floor"] if self.floor is None else self.floor
            object.__setattr__(self, "floor", _validate.real("floor", floor, 0.0, 1.0))
            if self.period is not None:
                object.__setattr__(self, "period", _validate.integer("period", self.period, minimum=1))
        object.__setattr__(self, "warmup", _validate.integer("warmup", self.warmup, minimum=0))
        object.__setattr__(self, "warmup_start",
                           _validate.real("warmup_start", self.warmup_start, 0.0, 1.0))

    def resolved(self, steps):
        """This schedule for a call of ``steps`` steps: a cosine's default period filled in
        (``steps - warmup``, at least 1)."""
        if self.kind == "cosine" and self.period is None:
            return replace(self, period=max(steps - self.warmup, 1))
        return self

    def encode(self, steps):
        """The float64 array the kernels read: [code, warmup, warmup_start, factor, every,
        floor, period] (:func:`simcore.grid.core.lr_factor`)."""
        s = self.resolved(steps)
        return np.array([SCHEDULE_CODE[s.kind], s.warmup, s.warmup_start,
                         1.0 if s.factor is None else s.factor, 1 if s.every is None else s.every,
                         0.0 if s.floor is None else s.floor, 1 if s.period is None else s.period],
                        np.float64)

    @classmethod
    def decode(cls, sched):
        """The schedule :meth:`encode` wrote (period resolved)."""
        kind = KINDS[int(sched[0])]
        step, cosine = kind == "step", kind == "cosine"
        return cls(kind, factor=float(sched[3]) if step else None, every=int(sched[4]) if step else None,
                   floor=float(sched[5]) if cosine else None, period=int(sched[6]) if cosine else None,
                   warmup=int(sched[1]), warmup_start=float(sched[2]))

    def factors(self, steps):
        """f(0), ..., f(steps) as a float64 array: the values the kernels use (the same compiled
        function), so ``lr * factors(steps)[t]`` is the rate of step t."""
        sched = self.encode(steps)
        return np.array([lr_factor(sched, t) for t in range(steps + 1)])
