"""Rosenblatt's perceptron (Rosenblatt 1958) and Novikoff's mistake bound (Novikoff 1962).

Labels are ``{-1, +1}`` (ints or floats; :func:`simcore.datasets.to_pm1` converts 0/1).
Training starts from :math:`w = 0, b = 0` and visits the samples of epoch e in the order
``rng.permutation(n)``, the e-th such call on ``rng = np.random.default_rng(seed)``. On each
sample with :math:`y_i (w \\cdot x_i + b) \\le 0` (a mistake, ties included) it updates

.. math:: w \\leftarrow w + \\eta\\, y_i x_i, \\qquad b \\leftarrow b + \\eta\\, y_i,

and it stops after the first epoch without a mistake (converged) or after ``max_epochs``.

Novikoff: if some :math:`(w^*, b^*)` separates the data with margin
:math:`\\gamma = \\min_i y_i (w^* \\cdot x_i + b^*) / \\|(w^*, b^*)\\| > 0` and
:math:`R = \\max_i \\|(x_i, 1)\\|` (the bias folded in as a constant input 1), the perceptron
makes at most :math:`(R / \\gamma)^2` mistakes in total, whatever the order and whatever
:math:`\\eta` (from :math:`w = 0` a step size only rescales every iterate).

The epoch loop is a compiled kernel; the public functions validate and wrap.
"""
from dataclasses import dataclass

import numpy as np

from . import config
from ._jit import cpu_kernel
from ._validate import array, integer, labels, real

__all__ = ["PerceptronResult", "margin", "novikoff_bound", "predict", "radius", "train"]

# Permutations are drawn in blocks of at most this many indices (epochs x n), so memory stays
# bounded however large max_epochs is; the stream is the same as one permutation per epoch.
_BLOCK = 1 << 20


@cpu_kernel
def _epochs(X, y, eta, orders, w, b, mistakes_per_epoch, start):
    """Run one block of perceptron epochs in place.

    .. math:: y_i (w \\cdot x_i + b) \\le 0 \\implies w \\mathrel{+}= \\eta y_i x_i,\\
              b \\mathrel{+}= \\eta y_i

    ``orders[e]`` is epoch ``start + e``'s visiting order; ``w`` is updated in place and the
    mistakes of each epoch go to ``mistakes_per_epoch[start + e]``. Returns ``(b, epochs run,
    converged)``, stopping after the first mistake-free epoch.
    """
    n, d = X.shape
    for e in range(orders.shape[0]):
        m = 0
        for k in range(n):
            i = orders[e, k]
            z = 0.0
            for j in range(d):
                z += w[j] * X[i, j]
            z += b
            if y[i] * z <= 0.0:
                step = eta * y[i]
                for j in range(d):
                    w[j] += step * X[i, j]
                b += step
                m += 1
        mistakes_per_epoch[start + e] = m
        if m == 0:
            return b, e + 1, True
    return b, orders.shape[0], False


@dataclass(frozen=True, eq=False)
class PerceptronResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    w : ndarray of float64, shape (d,)
        Weights.
    b : float
        Bias.
    mistakes : int
        Total number of updates.
    epochs : int
        Epochs run (the last one is mistake-free when converged).
    converged : bool
        Whether an epoch made no mistake.
    mistakes_per_epoch : ndarray of int64, shape (epochs,)
        Updates in each epoch.
    """

    w: np.ndarray
    b: float
    mistakes: int
    epochs: int
    converged: bool
    mistakes_per_epoch: np.ndarray

    def predict(self, X):
        """Labels in {-1, +1} for the rows of ``X``; see :func:`predict`."""
        return predict(self.w, self.b, X)


def _data(X, y):
    X = array("X", X, ndim=2, dtype=np.float64)
    y = np.asarray(y)
    if y.dtype.kind == "b":
        raise ValueError("y must take values in [-1, 1], got booleans")
    y = labels("y", y, X.shape[0], values=(-1, 1))
    return X, np.ascontiguousarray(y, dtype=np.float64)


def train(X, y, lr=1.0, max_epochs=100, seed=0):
    """Train a perceptron with Rosenblatt's rule from :math:`w = 0, b = 0`.

    Epoch e visits the samples in the order ``rng.permutation(n)`` (the e-th call on
    ``rng = np.random.default_rng(seed)``); each mistake, :math:`y_i (w \\cdot x_i + b) \\le 0`,
    triggers :math:`w \\mathrel{+}= \\eta y_i x_i,\\ b \\mathrel{+}= \\eta y_i`. Training stops
    after an epoch without mistakes or after ``max_epochs``.

    Parameters
    ----------
    X : array_like, shape (n, d)
        Finite real inputs (computed in float64).
    y : array_like, shape (n,)
        Labels, each -1 or +1 (ints or floats).
    lr : float
        Step size :math:`\\eta > 0`.
    max_epochs : int
        Epoch limit, >= 1.
    seed : int
        Seed of the visiting orders, >= 0.

    Returns
    -------
    PerceptronResult

    Raises
    ------
    ValueError
        Naming the argument: X not 2-D, empty or not finite; y of the wrong shape or with a
        value other than -1 and +1; lr not > 0 and finite; max_epochs or seed not an integer
        or out of range; max_epochs whose mistake counts (8 bytes each) could pass
        ``simcore.config.MAX_GIB``.

    Examples
    --------
    >>> res = train([[0.0, 1.0], [1.0, 0.0]], [1, -1])
    >>> res.converged, res.mistakes
    (True, 2)
    """
    X, y = _data(X, y)
    eta = real("lr", lr, minimum=0.0, strict_minimum=True)
    max_epochs = integer("max_epochs", max_epochs, minimum=1)
    seed = integer("seed", seed, minimum=0)
    n, d = X.shape
    need = 8 * max_epochs  # mistakes_per_epoch, if no epoch is mistake-free
    if need > config.limit_bytes():
        raise ValueError(f"max_epochs={max_epochs} may record {need / 2**30:.1f} GiB of mistake "
                         f"counts, over the limit of {config.MAX_GIB:g} GiB (simcore.config.MAX_GIB, "
                         f"env SIMCORE_MAX_GIB); lower max_epochs (or raise the limit)")
    rng = np.random.default_rng(seed)
    w = np.zeros(d)
    b = 0.0
    # blocks of 8, 16, 32, ... epochs up to _BLOCK indices: a run that converges early draws
    # few orders and stores few counts, however large max_epochs is
    largest = max(1, _BLOCK // n)
    block = min(8, largest)
    done, converged, counts = 0, False, []
    while done < max_epochs and not converged:
        size = min(block, max_epochs - done)
        block = min(2 * block, largest)
        # One permutation per row, same stream as `size` calls of rng.permutation(n).
        orders = rng.permuted(np.broadcast_to(np.arange(n, dtype=np.int64), (size, n)), axis=1)
        m = np.zeros(size, dtype=np.int64)
        b, ran, converged = _epochs(X, y, eta, orders, w, b, m, 0)
        counts.append(m[:ran])
        done += ran
    mistakes_per_epoch = np.concatenate(counts)
    return PerceptronResult(w=w, b=float(b), mistakes=int(mistakes_per_epoch.sum()),
                            epochs=int(done), converged=bool(converged),
                            mistakes_per_epoch=mistakes_per_epoch)


def predict(w, b, X):
    """Perceptron labels :math:`\\operatorname{sign}(w \\cdot x + b)`, with 0 mapped to -1.

    Parameters
    ----------
    w : array_like, shape (d,)
    b : float
    X : array_like, shape (n, d)

    Returns
    -------
    ndarray of float64, shape (n,), values in {-1, +1}
    """
    w = array("w", w, ndim=1, dtype=np.float64)
    b = real("b", b)
    X = array("X", X, ndim=2, dtype=np.float64)
    if X.shape[1] != w.shape[0]:
        raise ValueError(f"X must have {w.shape[0]} columns to match w, got shape {X.shape}")
    return np.where(X @ w + b > 0, 1.0, -1.0)


def margin(X, y, w, b, augmented=True):
    """Geometric margin of the hyperplane :math:`(w, b)` on labelled data.

    .. math:: \\gamma = \\min_i \\frac{y_i (w \\cdot x_i + b)}{\\|(w, b)\\|}

    With ``augmented`` (the default) the bias is folded in as a constant input,
    :math:`x \\to (x, 1)`, so the norm is that of :math:`(w, b)`: the :math:`\\gamma` of
    Novikoff's bound (Novikoff 1962). With ``augmented=False`` it is :math:`\\|w\\|`, the
    Euclidean distance of the closest point to the plane. Negative when (w, b) misclassifies
    some point.

    Parameters
    ----------
    X : array_like, shape (n, d)
    y : array_like, shape (n,), values in {-1, +1}
    w : array_like, shape (d,)
    b : float
    augmented : bool

    Returns
    -------
    float
    """
    X, y = _data(X, y)
    w = array("w", w, ndim=1, dtype=np.float64)
    if w.shape[0] != X.shape[1]:
        raise ValueError(f"w must have shape ({X.shape[1]},) to match X, got {w.shape}")
    b = real("b", b)
    if not isinstance(augmented, (bool, np.bool_)):
        raise ValueError(f"augmented must be True or False, got {augmented!r}")
    norm = np.sqrt(w @ w + b * b) if augmented else np.sqrt(w @ w)
    if norm == 0:
        raise ValueError("w must not be zero" + (" (with b)" if augmented else ""))
    return float(np.min(y * (X @ w + b)) / norm)


def radius(X, augmented=True):
    """Radius of the data, :math:`R = \\max_i \\|(x_i, 1)\\|` (or :math:`\\max_i \\|x_i\\|`).

    Parameters
    ----------
    X : array_like, shape (n, d)
    augmented : bool
        Fold the bias in as a constant input 1 (Novikoff's R).

    Returns
    -------
    float
    """
    X = array("X", X, ndim=2, dtype=np.float64)
    if not isinstance(augmented, (bool, np.bool_)):
        raise ValueError(f"augmented must be True or False, got {augmented!r}")
    sq = np.einsum("ij,ij->i", X, X) + (1.0 if augmented else 0.0)
    return float(np.sqrt(sq.max()))


def novikoff_bound(R, gamma):
    """Novikoff's (1962) perceptron mistake bound :math:`(R / \\gamma)^2`.

    Holds for training from :math:`w = 0` with the bias folded in, :math:`R = \\max_i
    \\|(x_i, 1)\\|` and :math:`\\gamma` the augmented margin of any separator (:func:`margin`).

    Parameters
    ----------
    R : float
        Radius, > 0.
    gamma : float
        Margin, > 0.

    Returns
    -------
    float

    Examples
    --------
    >>> novikoff_bound(2.0, 0.5)
    16.0
    """
    R = real("R", R, minimum=0.0, strict_minimum=True)
    gamma = real("gamma", gamma, minimum=0.0, strict_minimum=True)
    return (R / gamma) ** 2
