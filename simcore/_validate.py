"""Input checks at the public boundary (architecture decision 8).

Every public function calls these before compiled code runs; each raises ``ValueError`` that
names the argument and says what was expected. Compiled kernels assume valid input.
"""
import numbers

import numpy as np

FLOAT_DTYPES = {"float32": np.float32, "float64": np.float64}


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
    if finite and not np.isfinite(arr).all():
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
