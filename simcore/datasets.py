"""Offline data sets: seeded synthetic generators and scikit-learn's bundled real sets.

Every function returns ``(X, y)`` with ``X`` a C-contiguous float64 array of shape (n, d).

Label conventions
-----------------
* Classification: ``y`` is int64 of shape (n,) holding class labels ``0 .. K-1``.
  The perceptron wants ``{-1, +1}``: convert binary labels with :func:`to_pm1`.
* Regression (:func:`teacher_student`): ``y`` is float64, shape (n,) when ``d_out == 1``
  else (n, d_out).

Synthetic sets draw everything from one ``np.random.default_rng(seed)`` in a documented
order, so a seed fixes the data exactly. Real sets come from the copies that ship inside
scikit-learn (``load_*``; nothing is downloaded) and are standardised by default.

>>> X, y = load("moons", n=8, seed=1)
>>> X.shape, y.dtype.name
((8, 2), 'int64')
"""
import inspect
import numbers
from dataclasses import dataclass

import numpy as np

from ._validate import choice, integer, labels, real

__all__ = ["NAMES", "MarginInfo", "blobs_margin", "breast_cancer", "circles", "digits", "iris",
           "generator", "load", "moons", "spirals", "teacher_student", "to_pm1", "wine", "xor"]


# --------------------------------------------------------------------------------------------
# helpers

def _rng(seed):
    return np.random.default_rng(integer("seed", seed, minimum=0))


def _out(X, y):
    return np.ascontiguousarray(X, dtype=np.float64), np.ascontiguousarray(y, dtype=np.int64)


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def to_pm1(y):
    """Map binary labels {0, 1} to float64 {-1, +1} (the perceptron's convention).

    .. math:: y^\\pm = 2y - 1

    Parameters
    ----------
    y : array_like, shape (n,)
        Labels, each 0 or 1.

    Returns
    -------
    ndarray of float64, shape (n,)

    Raises
    ------
    ValueError
        If ``y`` is not 1-D or holds a value other than 0 and 1.

    Examples
    --------
    >>> to_pm1([0, 1, 1])
    array([-1.,  1.,  1.])
    """
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {arr.shape}")
    arr = labels("y", arr, arr.shape[0], values=(0, 1))
    return 2.0 * arr.astype(np.float64) - 1.0


# --------------------------------------------------------------------------------------------
# synthetic classification

def moons(n=256, noise=0.2, seed=0):
    """Two interleaving half circles.

    With :math:`t \\sim U(0, \\pi)` (one draw of ``ceil(n/2)`` values shared by both halves),
    class 0 is :math:`(\\cos t, \\sin t)` and class 1 is :math:`(1 - \\cos t, 1 - \\sin t - 0.5)`,
    then :math:`X \\mathrel{+}= \\text{noise} \\cdot N(0, I)` (drawn even when noise is 0).
    For even ``n`` this is exactly ``make_data`` of the grid peers (anchors/grid_peers.py).

    Parameters
    ----------
    n : int
        Samples, >= 1. The first ``ceil(n/2)`` rows are class 0, the rest class 1.
    noise : float
        Standard deviation of the Gaussian noise, >= 0.
    seed : int
        Seed of ``np.random.default_rng``, >= 0.

    Returns
    -------
    X : ndarray of float64, shape (n, 2)
    y : ndarray of int64, shape (n,), values in {0, 1}
    """
    n = integer("n", n, minimum=1)
    noise = real("noise", noise, minimum=0.0)
    rng = _rng(seed)
    n1 = n // 2
    n0 = n - n1
    t = rng.uniform(0, np.pi, n0)
    a = np.c_[np.cos(t), np.sin(t)]
    b = np.c_[1 - np.cos(t[:n1]), 1 - np.sin(t[:n1]) - 0.5]
    X = np.r_[a, b] + noise * rng.standard_normal((n, 2))
    y = np.r_[np.zeros(n0), np.ones(n1)]
    return _out(X, y)


def circles(n=256, noise=0.1, factor=0.5, seed=0):
    """Two concentric circles.

    With :math:`t \\sim U(0, 2\\pi)`, class 0 is :math:`(\\cos t, \\sin t)` and class 1 is
    :math:`\\text{factor} \\cdot (\\cos t, \\sin t)`, plus :math:`\\text{noise} \\cdot N(0, I)`.

    Parameters
    ----------
    n : int
        Samples, >= 1. The first ``ceil(n/2)`` rows are class 0 (outer), the rest class 1.
    noise : float
        Noise standard deviation, >= 0.
    factor : float
        Radius of the inner circle relative to the outer one, 0 < factor < 1.
    seed : int
        Seed, >= 0.

    Returns
    -------
    X : ndarray of float64, shape (n, 2)
    y : ndarray of int64, shape (n,), values in {0, 1}
    """
    n = integer("n", n, minimum=1)
    noise = real("noise", noise, minimum=0.0)
    factor = real("factor", factor, minimum=0.0, maximum=1.0, strict_minimum=True)
    if factor == 1.0:
        raise ValueError("factor must be < 1, got 1.0")
    rng = _rng(seed)
    n0 = n - n // 2
    t = rng.uniform(0, 2 * np.pi, n)
    r = np.where(np.arange(n) < n0, 1.0, factor)
    X = r[:, None] * np.c_[np.cos(t), np.sin(t)] + noise * rng.standard_normal((n, 2))
    y = (np.arange(n) >= n0)
    return _out(X, y)


_CORNERS = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])


def xor(n=256, noise=0.25, seed=0):
    """Four clusters at :math:`(\\pm 1, \\pm 1)` labelled by the XOR of their signs.

    Row i sits at corner ``i mod 4`` of (-1,-1), (-1,1), (1,-1), (1,1), whose labels are
    0, 1, 1, 0 (the label is the centre's, so large noise may carry a point across an axis),
    plus :math:`\\text{noise} \\cdot N(0, I)`. ``xor(4, noise=0)`` gives the four exact corners.

    Parameters
    ----------
    n : int
        Samples, >= 1.
    noise : float
        Noise standard deviation, >= 0.
    seed : int
        Seed, >= 0.

    Returns
    -------
    X : ndarray of float64, shape (n, 2)
    y : ndarray of int64, shape (n,), values in {0, 1}
    """
    n = integer("n", n, minimum=1)
    noise = real("noise", noise, minimum=0.0)
    rng = _rng(seed)
    k = np.arange(n) % 4
    centre = _CORNERS[k]
    X = centre + noise * rng.standard_normal((n, 2))
    y = (centre[:, 0] > 0) != (centre[:, 1] > 0)
    return _out(X, y)


def spirals(n=256, noise=0.05, turns=1.5, n_classes=2, seed=0):
    """Interleaved Archimedean spirals, one arm per class.

    For class k of K, with :math:`s \\sim U(0, 1)`:
    :math:`r = s,\\ \\theta = 2\\pi(\\text{turns}\\, s + k/K),\\ x = r(\\cos\\theta, \\sin\\theta)
    + \\text{noise} \\cdot N(0, I)`.

    Parameters
    ----------
    n : int
        Samples, >= 1; rows are grouped by class, sizes differing by at most one.
    noise : float
        Noise standard deviation, >= 0.
    turns : float
        Turns of each arm, > 0.
    n_classes : int
        Number of arms, >= 2.
    seed : int
        Seed, >= 0.

    Returns
    -------
    X : ndarray of float64, shape (n, 2)
    y : ndarray of int64, shape (n,), values in 0 .. n_classes-1
    """
    n = integer("n", n, minimum=1)
    noise = real("noise", noise, minimum=0.0)
    turns = real("turns", turns, minimum=0.0, strict_minimum=True)
    n_classes = integer("n_classes", n_classes, minimum=2)
    rng = _rng(seed)
    y = np.arange(n) * n_classes // n          # sorted classes, sizes differing by <= 1
    s = rng.uniform(0.0, 1.0, n)
    theta = 2 * np.pi * (turns * s + y / n_classes)
    X = s[:, None] * np.c_[np.cos(theta), np.sin(theta)] + noise * rng.standard_normal((n, 2))
    return _out(X, y)


@dataclass(frozen=True, eq=False)
class MarginInfo:
    """The separating hyperplane of :func:`blobs_margin` and the margins it achieves.

    Attributes
    ----------
    w : ndarray, shape (d,)
        Unit normal :math:`w^*` of the separator.
    b : float
        Offset :math:`b^*`; class 1 lies where :math:`w^* \\cdot x + b^* > 0`.
    margin : float
        Achieved input-space geometric margin :math:`\\min_i s_i (w^* \\cdot x_i + b^*)`
        (:math:`\\|w^*\\| = 1`, :math:`s_i = \\pm 1`); always >= the requested margin.
    margin_augmented : float
        The same separator's margin with the bias folded in as a constant input 1,
        :math:`\\min_i s_i (w^* \\cdot x_i + b^*) / \\|(w^*, b^*)\\|` (Novikoff's gamma).
    radius : float
        :math:`\\max_i \\|x_i\\|`.
    radius_augmented : float
        :math:`\\max_i \\|(x_i, 1)\\|` (Novikoff's R).
    """

    w: np.ndarray
    b: float
    margin: float
    margin_augmented: float
    radius: float
    radius_augmented: float


def blobs_margin(n=256, d=2, margin=0.1, radius=1.0, seed=0, return_info=False):
    """Linearly separable points with a margin set by construction.

    Draw a unit normal :math:`w^* = g / \\|g\\|` (:math:`g \\sim N(0, I_d)`), an offset
    :math:`b^* \\sim U(-1/2, 1/2) \\cdot \\text{radius} / \\sqrt{d}`, and n points uniform in the
    ball of the given radius. Each point's side is :math:`s_i = \\operatorname{sign}(w^* \\cdot
    x_i + b^*)` (+1 at 0); then each point moves away from the plane by the margin,
    :math:`x_i \\leftarrow x_i + \\text{margin}\\, s_i w^*`, so that
    :math:`s_i (w^* \\cdot x_i + b^*) = |w^* \\cdot x_i^{old} + b^*| + \\text{margin}
    \\ge \\text{margin}` and :math:`\\|x_i\\| \\le \\text{radius} + \\text{margin}`.
    Labels are :math:`y_i = (s_i + 1)/2`. Small n may give a single class.

    Parameters
    ----------
    n : int
        Samples, >= 1.
    d : int
        Dimension, >= 1.
    margin : float
        Minimum distance of every point from the separating hyperplane, > 0.
    radius : float
        Radius of the ball the points are drawn from (before the shift), > 0.
    seed : int
        Seed, >= 0.
    return_info : bool
        Also return a :class:`MarginInfo` with the separator, the exact margins achieved
        (input space and bias-augmented) and the radii.

    Returns
    -------
    X : ndarray of float64, shape (n, d)
    y : ndarray of int64, shape (n,), values in {0, 1}
    info : MarginInfo
        Only when ``return_info`` is True.
    """
    n = integer("n", n, minimum=1)
    d = integer("d", d, minimum=1)
    margin = real("margin", margin, minimum=0.0, strict_minimum=True)
    radius = real("radius", radius, minimum=0.0, strict_minimum=True)
    return_info = _flag("return_info", return_info)
    rng = _rng(seed)
    g = rng.standard_normal(d)
    while not np.linalg.norm(g) > 0:  # probability zero; keeps w* a unit vector regardless
        g = rng.standard_normal(d)
    w = g / np.linalg.norm(g)
    b = float(rng.uniform(-0.5, 0.5) * radius / np.sqrt(d))
    u = rng.standard_normal((n, d))
    norms = np.linalg.norm(u, axis=1)
    norms[norms == 0] = 1.0
    r = radius * rng.uniform(0.0, 1.0, n) ** (1.0 / d)
    X = u / norms[:, None] * r[:, None]
    s = np.where(X @ w + b >= 0, 1.0, -1.0)
    X = X + margin * s[:, None] * w[None, :]
    y = (s > 0)
    X, y = _out(X, y)
    if not return_info:
        return X, y
    dist = s * (X @ w + b)
    sq = np.einsum("ij,ij->i", X, X)
    info = MarginInfo(w=w, b=b, margin=float(dist.min()),
                      margin_augmented=float(dist.min() / np.sqrt(1.0 + b * b)),
                      radius=float(np.sqrt(sq.max())),
                      radius_augmented=float(np.sqrt(sq.max() + 1.0)))
    return X, y, info


# --------------------------------------------------------------------------------------------
# synthetic regression

def _hidden(value):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    try:
        sizes = tuple(value)
    except TypeError:
        raise ValueError(f"hidden must be an integer or a sequence of integers, got {value!r}") from None
    return tuple(integer("hidden", h, minimum=1) for h in sizes)


def teacher_student(n=256, d_in=2, d_out=1, hidden=(16,), noise=0.1, seed=0,
                    return_teacher=False):
    """Regression targets from a random teacher MLP: :math:`y = f(x) + \\text{noise}\\, \\epsilon`.

    The teacher has tanh hidden layers and a linear output,
    :math:`a_0 = x,\\ a_l = \\tanh(a_{l-1} W_l + b_l),\\ f(x) = a_{L-1} W_L + b_L`, with
    :math:`W_l \\sim N(0, 1/\\text{fan\\_in})` and :math:`b_l \\sim N(0, 0.1^2)`. Inputs are
    :math:`x \\sim N(0, I_{d_{in}})` and :math:`\\epsilon \\sim N(0, I)`, so the best possible
    MSE is :math:`\\text{noise}^2`. Draw order: teacher (layer by layer, W then b), X, noise,
    so the teacher does not depend on n.

    Parameters
    ----------
    n : int
        Samples, >= 1.
    d_in, d_out : int
        Input and output dimensions, >= 1.
    hidden : int or sequence of int
        Hidden layer widths, each >= 1 (an empty sequence gives a linear teacher).
    noise : float
        Noise standard deviation, >= 0.
    seed : int
        Seed, >= 0.
    return_teacher : bool
        Also return the teacher's parameters as a list of ``(W, b)`` pairs.

    Returns
    -------
    X : ndarray of float64, shape (n, d_in)
    y : ndarray of float64, shape (n,) if d_out == 1 else (n, d_out)
    teacher : list of (ndarray, ndarray)
        Only when ``return_teacher`` is True; ``W`` of shape (fan_in, fan_out).
    """
    n = integer("n", n, minimum=1)
    d_in = integer("d_in", d_in, minimum=1)
    d_out = integer("d_out", d_out, minimum=1)
    sizes = _hidden(hidden)
    noise = real("noise", noise, minimum=0.0)
    return_teacher = _flag("return_teacher", return_teacher)
    rng = _rng(seed)
    widths = (d_in,) + sizes + (d_out,)
    teacher = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        W = rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)
        b = 0.1 * rng.standard_normal(fan_out)
        teacher.append((W, b))
    X = rng.standard_normal((n, d_in))
    a = X
    for W, b in teacher[:-1]:
        a = np.tanh(a @ W + b)
    W, b = teacher[-1]
    y = a @ W + b + noise * rng.standard_normal((n, d_out))
    if d_out == 1:
        y = y[:, 0]
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    return (X, y, teacher) if return_teacher else (X, y)


# --------------------------------------------------------------------------------------------
# real data sets (scikit-learn's bundled copies, never downloaded)

def _standardize(X):
    mu = X.mean(axis=0)
    sd = X.std(axis=0)
    # constant features become 0 rather than 0/0
    return (X - mu) / np.where(sd > 0, sd, 1.0)


def _real(loader_name, standardize):
    standardize = _flag("standardize", standardize)
    import sklearn.datasets
    X, y = getattr(sklearn.datasets, loader_name)(return_X_y=True)
    X = np.asarray(X, dtype=np.float64)
    if standardize:
        X = _standardize(X)
    return _out(X, y)


_REAL_DOC = """{title} from scikit-learn's bundled copy ({shape}, {k} classes; no download).

    Parameters
    ----------
    standardize : bool
        Scale each feature to zero mean and unit variance (population std); constant
        features become 0.

    Returns
    -------
    X : ndarray of float64, shape {shape}
    y : ndarray of int64, shape ({n},), values in 0 .. {km1}
    """


def iris(standardize=True):
    return _real("load_iris", standardize)


def wine(standardize=True):
    return _real("load_wine", standardize)


def breast_cancer(standardize=True):
    return _real("load_breast_cancer", standardize)


def digits(standardize=True):
    return _real("load_digits", standardize)


for _f, _title, _n, _d, _k in ((iris, "Fisher's iris", 150, 4, 3), (wine, "Wine", 178, 13, 3),
                               (breast_cancer, "Wisconsin breast cancer", 569, 30, 2),
                               (digits, "8x8 handwritten digits", 1797, 64, 10)):
    _f.__doc__ = _REAL_DOC.format(title=_title, shape=f"({_n}, {_d})", n=_n, k=_k, km1=_k - 1)
del _f, _title, _n, _d, _k


# --------------------------------------------------------------------------------------------
# registry

_REGISTRY = {
    "moons": moons,
    "circles": circles,
    "xor": xor,
    "spirals": spirals,
    "blobs": blobs_margin,
    "teacher_student": teacher_student,
    "iris": iris,
    "wine": wine,
    "breast_cancer": breast_cancer,
    "digits": digits,
}

#: The data sets :func:`load` and :func:`generator` know, by name.
NAMES = tuple(_REGISTRY)


def generator(name):
    """The function that builds data set ``name`` (one of :data:`NAMES`): its signature lists
    the arguments :func:`load` accepts for it."""
    return _REGISTRY[choice("name", name, NAMES)]


def load(name, **kwargs):
    """Build the data set called ``name`` with the generator's keyword arguments.

    Parameters
    ----------
    name : str
        One of :data:`NAMES`: "moons", "circles", "xor", "spirals", "blobs"
        (:func:`blobs_margin`), "teacher_student", "iris", "wine", "breast_cancer", "digits".
    **kwargs
        Passed to the generator (e.g. ``n``, ``noise``, ``seed``).

    Returns
    -------
    tuple
        What the generator returns, ``(X, y)`` by default.

    Raises
    ------
    ValueError
        If ``name`` is unknown or an argument is invalid.
        A keyword the generator does not take is also a ``ValueError`` naming it.
    """
    func = generator(name)
    allowed = inspect.signature(func).parameters
    for key in kwargs:
        if key not in allowed:
            raise ValueError(f"{key} is not an argument of {name!r}; it takes {sorted(allowed)}")
    return func(**kwargs)
