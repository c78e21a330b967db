"""Input checks at the public boundary (docs/architecture.md, *Checked at the boundary*).

Every public function calls these before compiled code runs; each raises ``ValueError`` that
names the argument and says what was expected. Compiled kernels assume valid input.
"""
import numbers

import numpy as np

from ._jit import cpu_kernel

FLOAT_DTYPES = {"float32": np.float32, "float64": np.float64}


# --- compiled counts behind the per-call checks -----------------------------------------------
# On the small arrays of a training step (a few hundred numbers) numpy's fixed cost per call
# dominates: ``np.isfinite(a).all()`` is two calls and a temporary (~1.5 us), the 0/1 test of
# binary labels three calls and an ``all`` (~2.5 us), while a call of a compiled loop costs
# ~0.2-0.4 us. The loops only *count* (no early exit, no float arithmetic), so LLVM vectorises
# them and they beat numpy on large arrays too. They are given ``arr.ravel()``: 1-D and
# C-contiguous (a view when ``arr`` is C-contiguous, else a copy, 1-D strided views included),
# so each dtype compiles once (twice with read-only arrays).

@cpu_kernel
def _count_finite(a):
    """Number of finite entries of the 1-D float array ``a``."""
    inf = np.inf
    count = 0
    for i in range(a.size):
        # a comparison, which is False for NaN (unordered) and for +-inf. Not an arithmetic
        # trick such as ``x - x == 0``: fastmath's reassoc lets LLVM fold that to 0.
        count += abs(a[i]) < inf
    return count


@cpu_kernel
def _count_zero_one(a):
    """Number of entries of the 1-D array ``a`` equal to 0 or 1 (NaN is neither)."""
    count = 0
    for i in range(a.size):
        x = a[i]
        count += (x == 0) | (x == 1)
    return count


_COMPILED_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))  # native byte order only
# label dtypes given to the compiled count; any other dtype takes the numpy path (same result)
_COMPILED_LABELS = _COMPILED_FLOATS + (np.dtype(np.int64), np.dtype(np.int32))


def all_finite(arr):
    """True when the float array ``arr`` holds no NaN and no inf."""
    if arr.dtype in _COMPILED_FLOATS:
        return _count_finite(arr.ravel()) == arr.size
    return bool(np.isfinite(arr).all())  # float16, longdouble, byte-swapped '>f8', ints


def dtype_of(name, dtype):
    """Return np.float32 or np.float64 for a dtype given as a string, type or np.dtype."""
    key = None
    if dtype is not None:  # np.dtype(None) would silently mean float64
        try:
            key = np.dtype(dtype).name
        except TypeError:
            pass
    if key not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be 'float32' or 'float64', got {dtype!r}")
    return FLOAT_DTYPES[key]


def choice(name, value, choices):
    """Check that ``value`` is one of ``choices`` (names, e.g. activations)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def integer(name, value, minimum=None, maximum=None):
    """Check an integer (bool rejected) within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def real(name, value, minimum=None, maximum=None, strict_minimum=False):
    """Check a finite real number within bounds (``strict_minimum`` excludes the minimum)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None:
        if strict_minimum and value <= minimum:
            raise ValueError(f"{name} must be > {minimum}, got {value}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def array(name, x, ndim=None, dtype=None, finite=True, min_rows=1):
    """Return ``x`` as a C-contiguous float array after checking it.

    Parameters
    ----------
    name : str
        The argument's name, used in the error message.
    x : array_like
        Real numbers (bool, complex, object and strings are rejected).
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.
    dtype : np.float32 or np.float64, optional
        Convert to this dtype; by default float32 stays float32 and anything else becomes float64.
    finite : bool
        Reject NaN and inf.
    min_rows : int
        Minimum length of the first axis.
    """
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} must be a numeric array, got {type(x).__name__}: {exc}") from None
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if arr.ndim >= 1 and arr.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} row(s), got shape {arr.shape}")
    if dtype is None:
        dtype = np.float32 if arr.dtype == np.float32 else np.float64
    arr = np.asarray(arr, dtype=dtype, order="C")  # unlike np.ascontiguousarray, keeps 0-d as 0-d
    if finite and not all_finite(arr):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return arr


def labels(name, y, n, n_classes=None, values=None):
    """Check a 1-D label vector of length ``n`` (integer classes or a set of allowed values)."""
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if arr.dtype.kind not in "iuf" and arr.dtype.kind != "b":
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if values is not None:  # NaN and inf fail this check too
        if (tuple(values) == (0, 1) and arr.dtype in _COMPILED_LABELS
                and _count_zero_one(arr.ravel()) == arr.size):
            return arr  # all 0/1 by one compiled pass; a bad entry is found and named below
        ok = arr == values[0]
        for v in values[1:]:
            ok |= arr == v
        if not ok.all():
            raise ValueError(f"{name} must take values in {list(values)}, got {arr[~ok][0]!r}")
        return arr
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    if n_classes is not None:
        if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer class labels")
        if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise ValueError(f"{name} must hold labels in [0, {n_classes - 1}], "
                             f"got range [{arr.min()}, {arr.max()}]")
    return arr
