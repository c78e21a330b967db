"""Tunables read once from the environment (``SIMCORE_*``), in one place.

``SIMCORE_CACHE``     "1" (default) caches compiled kernels on disk (numba ``cache=True``);
                      "0" compiles afresh in every process (to measure cold compile time).
``SIMCORE_FASTMATH``  "1" (default) lets LLVM contract to FMA and reassociate sums so loops
                      vectorise; "0" gives strict IEEE evaluation order.

The fastmath subset never contains ``nnan``/``ninf``: divergence detection relies on
``isfinite`` and on infinities propagating honestly.
"""
import os


def _flag(name, default):
    value = os.environ.get(name, default).strip().lower()
    return value not in ("0", "false", "no", "off", "")


CACHE = _flag("SIMCORE_CACHE", "1")
FASTMATH = {"nsz", "arcp", "contract", "reassoc"} if _flag("SIMCORE_FASTMATH", "1") else False
