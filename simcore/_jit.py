"""The one place where numba decorators are applied.

Every compiled function in simcore goes through one of these, so cache and fastmath flags
are set once (see :mod:`simcore.config`).

``scalar``      a scalar formula (activation, its derivative, a stable exp/log); compiled for the
                CPU with :func:`numba.njit` and inlined by LLVM into the loops that call it.
``cpu_kernel``  a loop over arrays, compiled for the CPU.

Both use ``error_model="numpy"``: a float division by zero gives inf or NaN instead of raising.
That is what training needs (divergence is data), and it is also what lets LLVM vectorise a
loop containing ``/`` (numba's default "python" model puts a raising check on every division).
"""
from numba import njit

from . import config


def scalar(func):
    """Compile a scalar formula for the CPU (inlined into callers by LLVM)."""
    return njit(cache=config.CACHE, fastmath=config.FASTMATH, error_model="numpy")(func)


def cpu_kernel(func=None, *, parallel=False):
    """Compile an array kernel for the CPU (releasing the GIL, so Python threads can run
    kernels side by side)."""
    def wrap(f):
        return njit(cache=config.CACHE, fastmath=config.FASTMATH, parallel=parallel,
                    error_model="numpy", nogil=True)(f)
    return wrap if func is None else wrap(func)
