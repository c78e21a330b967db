"""Data sets of the perceptron study that the engine does not generate: the construction on which
the perceptron makes exactly Novikoff's number of mistakes.

``hadamard(k, seed)``: the rows of the Sylvester-Hadamard matrix H_k (k a power of two), whose
first column is all ones, read as bias-augmented inputs z_i = (1, x_i): the data set is
X = H_k[:, 1:] (k points in k - 1 dimensions, entries +-1) with balanced labels drawn from
``seed``. Why the perceptron makes exactly (R / gamma*)^2 = k mistakes on it, in every visiting
order, is proved in :mod:`studies.perceptron`.

The runner and the spec read :data:`DATASETS` beside ``simcore.datasets``: the same calling
convention (keyword arguments, ``(X, y)`` with labels 0/1, a ``ValueError`` naming a bad
argument).
"""
import numpy as np

from simcore import _validate


def sylvester_hadamard(k):
    """The Sylvester-Hadamard matrix of order k (a power of two >= 1), entries +-1:
    H_1 = [1], H_2m = [[H_m, H_m], [H_m, -H_m]]; H H^T = k I and its first column is all ones."""
    H = np.ones((1, 1))
    while H.shape[0] < k:
        H = np.block([[H, H], [H, -H]])
    return H


def hadamard(k=8, seed=0):
    """k points x_i = H_k[i, 1:] in k - 1 dimensions, labels a random balanced assignment.

    The augmented inputs (1, x_i) are the rows of H_k: pairwise orthogonal, of norm sqrt(k).

    Parameters
    ----------
    k : int
        Points, a power of two >= 2 (both classes present).
    seed : int
        Seed of the labels, >= 0.

    Returns
    -------
    X : ndarray of float64, shape (k, k - 1)
    y : ndarray of int64, shape (k,), values in {0, 1}, k/2 of each
    """
    k = _validate.integer("k", k, minimum=2)
    if k & (k - 1):
        raise ValueError(f"k must be a power of two (Sylvester's construction), got {k}")
    seed = _validate.integer("seed", seed, minimum=0)
    H = sylvester_hadamard(k)
    y = np.random.default_rng(seed).permutation(np.arange(k) % 2).astype(np.int64)
    return np.ascontiguousarray(H[:, 1:], dtype=np.float64), y


#: The study's own data sets, by name, beside :data:`simcore.datasets.NAMES`.
DATASETS = {"hadamard": hadamard}
