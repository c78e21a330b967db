"""Tunables read once from the environment (``SIMCORE_*``), in one place.

``SIMCORE_CACHE``     "1" (default) caches compiled kernels on disk (numba ``cache=True``);
                      "0" compiles afresh in every process (to measure cold compile time).
``SIMCORE_FASTMATH``  "1" (default) lets LLVM contract to FMA and reassociate sums so loops
                      vectorise; "0" gives strict IEEE evaluation order. The grid engine's
                      kernels never reassociate (``FASTMATH_ORDERED``, see ``_jit.cpu_kernel``).
``SIMCORE_WIDE_VECTORS``  "1" (default) lets LLVM's loop vectoriser use whole 512-bit registers
                      on a CPU with AVX-512 (it prefers 256-bit ones there by default), see
                      ``simcore._jit``; "0" leaves numba's choice.
``SIMCORE_OPT``       numba's optimisation level (0-3) for simcore's own kernels, default 2;
                      "numba" keeps numba's level (``NUMBA_OPT``, default 3) for them too. Left
                      unset while ``NUMBA_OPT`` is set, the user's level applies. Only simcore's
                      compilations are affected (``simcore._jit``).
``SIMCORE_CUDA_THREADS``     threads per block of the CUDA grid engine (a power of two, default
                      128); one block trains one network, its threads split the samples.
``SIMCORE_CUDA_MAX_BLOCKS``  at most this many blocks are launched (default 4096); each block
                      trains networks blockIdx, blockIdx + gridDim, ... so the per-block scratch
                      memory stays bounded whatever G is.
``SIMCORE_MAX_GIB``   the most memory (GiB, default 4) one call may allocate for its results
                      (the grid engine's telemetry, trained parameters and optimizer state): a
                      call that would need more is refused with
                      a ValueError before anything is allocated. ``simcore.config.MAX_GIB`` may
                      also be set at run time.

The fastmath subset never contains ``nnan``/``ninf``: divergence detection relies on
``isfinite`` and on infinities propagating honestly.
"""
import math
import os


def _flag(name, default):
    value = os.environ.get(name, default).strip().lower()
    return value not in ("0", "false", "no", "off", "")


CACHE = _flag("SIMCORE_CACHE", "1")
FASTMATH = {"nsz", "arcp", "contract", "reassoc"} if _flag("SIMCORE_FASTMATH", "1") else False
# for kernels whose sums must run in the source's order: no reassociation, no x/y -> x*(1/y)
FASTMATH_ORDERED = (FASTMATH - {"reassoc", "arcp"}) if FASTMATH else False
WIDE_VECTORS = _flag("SIMCORE_WIDE_VECTORS", "1")


def _opt_level():
    """SIMCORE_OPT as an int 0-3, or None for numba's own level."""
    raw = os.environ.get("SIMCORE_OPT")
    if raw is None:
        return None if "NUMBA_OPT" in os.environ else 2
    raw = raw.strip().lower()
    if raw == "numba":
        return None
    if raw not in ("0", "1", "2", "3"):
        raise ValueError(f"SIMCORE_OPT must be 0, 1, 2, 3 or 'numba', got {os.environ['SIMCORE_OPT']!r}")
    return int(raw)


OPT = _opt_level()


def _int(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {os.environ[name]!r}") from None


CUDA_THREADS = _int("SIMCORE_CUDA_THREADS", 128)
CUDA_MAX_BLOCKS = _int("SIMCORE_CUDA_MAX_BLOCKS", 4096)


def _positive(value):
    """Whether ``value`` is a finite real number > 0 (the rule for MAX_GIB, however it is set)."""
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value) and value > 0)


def _real(name, default):
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        raise ValueError(f"{name} must be a number, got {os.environ[name]!r}") from None
    if not _positive(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


MAX_GIB = _real("SIMCORE_MAX_GIB", 4.0)


def limit_bytes():
    """``MAX_GIB`` in bytes, checked (it may have been set at run time)."""
    if not _positive(MAX_GIB):
        raise ValueError(f"simcore.config.MAX_GIB must be a finite number > 0, got {MAX_GIB!r}")
    return float(MAX_GIB) * 2**30
