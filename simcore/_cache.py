"""numba's on-disk cache, made to notice changes anywhere in simcore.

numba keys a cached kernel on the contents of the kernel's own source file only. simcore's
kernels inline formulas from other modules (scalar.py's activations into the grid engine,
simd.py's vectors into its dense layers), so after an edit of scalar.py the grid engine's
cached machine code would still hold the old formula, silently. The compile flags
(``SIMCORE_FASTMATH``) change the code without changing any source at all.

The locators below take over for source files inside the simcore package: they put the cache
where numba's own would (``NUMBA_CACHE_DIR``, else ``__pycache__`` beside the source, else the
user's cache directory) and stamp every entry with numba's own stamp *and* a digest of all of
simcore's sources and the fastmath flags. Any change to any of them makes every cached kernel
stale, and it is compiled afresh: a cold start (docs/benchmarks.md, "Compile time") after an edit or an
upgrade, never a wrong result. Hashing the sources is cheap next to importing numba.
"""
import hashlib
import os

from numba.core import caching

from . import config

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def compile_opt_level():
    """The LLVM optimisation level simcore's kernels compile at: ``config.OPT``
    (``SIMCORE_OPT``), or numba's own when that is None."""
    from numba.core import config as numba_config
    return config.OPT if config.OPT is not None else int(numba_config.OPT)


def package_digest(package_dir=PACKAGE_DIR, fastmath=config.FASTMATH, opt=None):
    """sha256 of the compile flags (fastmath, and simcore's optimisation level ``opt``, default
    the one in force) and of every .py file under ``package_dir`` (names and contents, in a
    fixed order)."""
    if opt is None:
        opt = compile_opt_level()
    h = hashlib.sha256(repr((sorted(fastmath) if fastmath else None, int(opt))).encode())
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, package_dir).encode() + b"\0")
            with open(path, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


PACKAGE_STAMP = package_digest()


def _in_package(py_file):
    return os.path.abspath(py_file).startswith(PACKAGE_DIR + os.sep)


def _stamped(base):
    """``base`` (a numba locator class), for simcore's files only, with the package stamp."""
    class Locator(base):
        def get_source_stamp(self):
            return (super().get_source_stamp(), PACKAGE_STAMP)

        def get_disambiguator(self):
            # a twin for compiled callers (simcore._jit) shares its function's name and line
            return super().get_disambiguator() + ("-callee" if self.simcore_twin else "")

        @classmethod
        def from_function(cls, py_func, py_file):
            if not _in_package(py_file):
                return None  # someone else's function: numba's own locators take it
            locator = super().from_function(py_func, py_file)
            if locator is not None:
                locator.simcore_twin = getattr(py_func, "simcore_twin", False)
            return locator

    Locator.__name__ = Locator.__qualname__ = "Simcore" + base.__name__
    return Locator


LOCATORS = [_stamped(caching.UserProvidedCacheLocator), _stamped(caching.InTreeCacheLocator),
            _stamped(caching.UserWideCacheLocator)]
# numba consults its locators in order for every function compiled with cache=True; ours go first
if not any(getattr(c, "__name__", "").startswith("Simcore") for c in caching.CacheImpl._locator_classes):
    caching.CacheImpl._locator_classes[:0] = LOCATORS
