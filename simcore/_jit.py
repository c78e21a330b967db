"""The one place where numba decorators are applied.

Every compiled function in simcore goes through one of these, so cache and fastmath flags
are set once (see :mod:`simcore.config`).

``scalar``      a scalar formula (activation, its derivative, a stable exp/log); compiled for the
                CPU with :func:`numba.njit` and inlined by LLVM into the loops that call it.
``cpu_kernel``  a loop over arrays, compiled for the CPU.
"""
from numba import njit

from . import config


def scalar(func):
    """Compile a scalar formula for the CPU (inlined into callers by LLVM)."""
    return njit(cache=config.CACHE, fastmath=config.FASTMATH)(func)


def cpu_kernel(func=None, *, parallel=False):
    """Compile an array kernel for the CPU."""
    def wrap(f):
        return njit(cache=config.CACHE, fastmath=config.FASTMATH, parallel=parallel)(f)
    return wrap if func is None else wrap(func)
