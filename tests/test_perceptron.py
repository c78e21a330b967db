import doctest
import math

import numpy as np
import pytest

from simcore import datasets as D
from simcore import perceptron as P


def naive_train(X, y, lr=1.0, max_epochs=100, seed=0):
    """Plain NumPy perceptron: same rule, same visiting order (rng.permutation per epoch)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = X.shape
    rng = np.random.default_rng(seed)
    w, b = np.zeros(d), 0.0
    per_epoch = []
    for _ in range(max_epochs):
        m = 0
        for i in rng.permutation(n):
            if y[i] * (w @ X[i] + b) <= 0:
                w = w + lr * y[i] * X[i]
                b = b + lr * y[i]
                m += 1
        per_epoch.append(m)
        if m == 0:
            break
    return w, b, np.array(per_epoch)


def integer_data(n, d, seed, separable):
    """Small-integer data: every sum is exact, so fast and naive results must be identical."""
    rng = np.random.default_rng(seed)
    X = rng.integers(-5, 6, size=(n, d)).astype(np.float64)
    if separable:
        w = rng.integers(-3, 4, size=d)
        w[0] = w[0] or 1
        s = X @ w + 1
        X, s = X[s != 0], s[s != 0]
        y = np.sign(s)
    else:
        y = rng.choice([-1.0, 1.0], size=n)
    return X, y


def check_same(res, ref):
    w, b, per_epoch = ref
    np.testing.assert_array_equal(res.w, w)
    assert res.b == b
    np.testing.assert_array_equal(res.mistakes_per_epoch, per_epoch)
    assert res.mistakes == per_epoch.sum()
    assert res.epochs == len(per_epoch)
    assert res.converged == (per_epoch[-1] == 0)


@pytest.mark.parametrize("separable", [True, False])
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("lr", [1.0, 0.5, 2.0])
def test_matches_naive_exact(separable, seed, lr):
    X, y = integer_data(60, 4, seed, separable)
    res = P.train(X, y, lr=lr, max_epochs=30, seed=seed)
    check_same(res, naive_train(X, y, lr=lr, max_epochs=30, seed=seed))


@pytest.mark.parametrize("seed", range(5))
def test_matches_naive_real_valued(seed):
    X, y01 = D.moons(80, noise=0.3, seed=seed)
    y = D.to_pm1(y01)
    res = P.train(X, y, lr=0.1, max_epochs=20, seed=seed)
    w, b, per_epoch = naive_train(X, y, lr=0.1, max_epochs=20, seed=seed)
    # fastmath may reorder the dot product: equal up to rounding, same mistakes
    np.testing.assert_allclose(res.w, w, rtol=1e-12, atol=1e-12)
    assert res.b == pytest.approx(b, abs=1e-12)
    np.testing.assert_array_equal(res.mistakes_per_epoch, per_epoch)


def test_block_boundaries_do_not_change_the_stream(monkeypatch):
    X, y = integer_data(7, 2, 0, separable=False)
    ref = naive_train(X, y, max_epochs=50, seed=3)
    for block in (1, 7 * 3, 7 * 50, 10 ** 6):  # 1 epoch, 3 epochs, all, default
        monkeypatch.setattr(P, "_BLOCK", block)
        check_same(P.train(X, y, max_epochs=50, seed=3), ref)


def test_int_labels_and_float32_inputs():
    X, y = integer_data(30, 3, 1, separable=True)
    a = P.train(X.astype(np.float32), y.astype(np.int64), seed=4)
    b = P.train(X, y, seed=4)
    np.testing.assert_array_equal(a.w, b.w)
    assert a.w.dtype == np.float64 and a.mistakes_per_epoch.dtype == np.int64


def test_result_fields_and_predict():
    X, y, _ = D.blobs_margin(100, d=3, margin=0.2, seed=1, return_info=True)
    y = D.to_pm1(y)
    res = P.train(X, y, max_epochs=1000)
    assert res.converged
    assert isinstance(res.b, float) and isinstance(res.mistakes, int)
    assert isinstance(res.epochs, int) and isinstance(res.converged, bool)
    assert res.mistakes_per_epoch.shape == (res.epochs,) and res.mistakes_per_epoch[-1] == 0
    pred = res.predict(X)
    np.testing.assert_array_equal(pred, y)
    np.testing.assert_array_equal(P.predict(res.w, res.b, X), pred)
    assert set(np.unique(pred)) <= {-1.0, 1.0}
    with pytest.raises(AttributeError):
        res.b = 1.0  # frozen
    np.testing.assert_array_equal(P.predict([1.0, 0.0], 0.0, [[0.0, 1.0]]), [-1.0])  # 0 -> -1


def test_converges_on_separable_sets():
    for seed in range(10):
        X, y = D.blobs_margin(200, d=4, margin=0.1, seed=seed)
        res = P.train(X, D.to_pm1(y), max_epochs=10_000, seed=seed)
        assert res.converged
        assert P.margin(X, D.to_pm1(y), res.w, res.b) > 0


@pytest.mark.parametrize("margin", [0.02, 0.05, 0.2, 1.0])
@pytest.mark.parametrize("d", [2, 8])
def test_novikoff_bound_never_exceeded(margin, d):
    for seed in range(25):
        X, y01, info = D.blobs_margin(150, d=d, margin=margin, radius=1.0, seed=seed,
                                      return_info=True)
        y = 2.0 * y01 - 1.0
        # R and gamma computed independently of the library, bias folded in as input 1
        Xa = np.c_[X, np.ones(len(X))]
        u = np.r_[info.w, info.b]
        gamma = np.min(y * (Xa @ u)) / np.linalg.norm(u)
        R = np.max(np.linalg.norm(Xa, axis=1))
        assert gamma > 0
        assert gamma == pytest.approx(P.margin(X, y, info.w, info.b), rel=1e-12)
        assert R == pytest.approx(P.radius(X), rel=1e-12)
        bound = (R / gamma) ** 2
        assert P.novikoff_bound(R, gamma) == pytest.approx(bound)
        # every epoch before convergence makes >= 1 mistake, so this many epochs must suffice
        max_epochs = math.floor(bound) + 2
        for lr in (1.0, 0.3):
            res = P.train(X, y, lr=lr, max_epochs=max_epochs, seed=seed)
            assert res.converged
            assert res.mistakes <= bound


def test_lr_does_not_matter_from_zero():
    X, y = D.blobs_margin(100, d=3, margin=0.05, seed=2)
    y = D.to_pm1(y)
    base = P.train(X, y, lr=1.0, max_epochs=1000, seed=7)
    for lr in (0.25, 4.0):  # powers of two: scaling is exact
        res = P.train(X, y, lr=lr, max_epochs=1000, seed=7)
        np.testing.assert_array_equal(res.mistakes_per_epoch, base.mistakes_per_epoch)
        np.testing.assert_array_equal(res.w, lr * base.w)


def test_xor_never_converges():
    X, y01 = D.xor(4, noise=0.0)
    y = D.to_pm1(y01)
    totals = []
    for epochs in (1, 5, 20, 100, 1000):
        res = P.train(X, y, max_epochs=epochs, seed=1)
        assert not res.converged
        assert res.epochs == epochs
        assert (res.mistakes_per_epoch >= 1).all()
        totals.append(res.mistakes)
    assert all(a < b for a, b in zip(totals, totals[1:]))
    # noisy XOR clusters are not separable either
    X, y01 = D.xor(200, noise=0.2, seed=0)
    res = P.train(X, D.to_pm1(y01), max_epochs=200)
    assert not res.converged


def test_margin_and_radius():
    X = np.array([[1.0, 0.0], [-1.0, 0.0]])
    y = np.array([1.0, -1.0])
    assert P.margin(X, y, [1.0, 0.0], 0.0) == pytest.approx(1.0)
    assert P.margin(X, y, [3.0, 0.0], 1.0, augmented=False) == pytest.approx(2.0 / 3.0)
    assert P.margin(X, y, [3.0, 0.0], 1.0) == pytest.approx(2.0 / np.sqrt(10.0))
    assert P.margin(X, y, [3.0, 0.0], 4.0) == pytest.approx(-1.0 / 5.0)  # misclassifies (-1, 0)
    assert P.radius(X) == pytest.approx(np.sqrt(2.0))
    assert P.radius(X, augmented=False) == pytest.approx(1.0)
    assert P.novikoff_bound(3.0, 0.5) == pytest.approx(36.0)


GOOD_X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
GOOD_Y = np.array([1.0, -1.0, 1.0])

BAD_TRAIN = [
    ({"X": [1.0, 2.0, 3.0]}, "X"),
    ({"X": np.zeros((3, 2, 1))}, "X"),
    ({"X": np.zeros((0, 2)), "y": np.zeros(0)}, "X"),
    ({"X": np.where(np.eye(3, 2) > 0, np.nan, 1.0)}, "X"),
    ({"X": np.where(np.eye(3, 2) > 0, np.inf, 1.0)}, "X"),
    ({"X": np.array([["a", "b"]] * 3)}, "X"),
    ({"X": GOOD_X.astype(complex)}, "X"),
    ({"y": [1.0, -1.0]}, "y"),
    ({"y": [[1.0, -1.0, 1.0]]}, "y"),
    ({"y": [0, 1, 1]}, "y"),
    ({"y": [0.0, 1.0, 1.0]}, "y"),
    ({"y": [2.0, -1.0, 1.0]}, "y"),
    ({"y": [np.nan, -1.0, 1.0]}, "y"),
    ({"y": [True, False, True]}, "y"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -1.0}, "lr"),
    ({"lr": np.inf}, "lr"),
    ({"lr": np.nan}, "lr"),
    ({"lr": "1"}, "lr"),
    ({"max_epochs": 0}, "max_epochs"),
    ({"max_epochs": 10.0}, "max_epochs"),
    ({"max_epochs": True}, "max_epochs"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"seed": None}, "seed"),
]


@pytest.mark.parametrize("kwargs, arg", BAD_TRAIN,
                         ids=[f"{a}-{i}" for i, (_, a) in enumerate(BAD_TRAIN)])
def test_train_bad_inputs(kwargs, arg):
    args = {"X": GOOD_X, "y": GOOD_Y, **kwargs}
    with pytest.raises(ValueError, match=rf"^{arg}\b"):
        P.train(**args)


def test_labels_message():
    with pytest.raises(ValueError, match=r"y must take values in \[-1, 1\]"):
        P.train(GOOD_X, [0, 1, 1])


@pytest.mark.parametrize("call, arg", [
    (lambda: P.novikoff_bound(0.0, 1.0), "R"),
    (lambda: P.novikoff_bound(1.0, 0.0), "gamma"),
    (lambda: P.novikoff_bound(1.0, -0.1), "gamma"),
    (lambda: P.novikoff_bound(np.inf, 1.0), "R"),
    (lambda: P.margin(GOOD_X, GOOD_Y, [0.0, 0.0], 0.0), "w"),
    (lambda: P.margin(GOOD_X, GOOD_Y, [1.0, 0.0, 0.0], 0.0), "w"),
    (lambda: P.margin(GOOD_X, [0, 1, 1], [1.0, 0.0], 0.0), "y"),
    (lambda: P.margin(GOOD_X, GOOD_Y, [1.0, 0.0], np.nan), "b"),
    (lambda: P.radius([[np.nan, 1.0]]), "X"),
    (lambda: P.predict([1.0, 0.0], 0.0, [[1.0, 2.0, 3.0]]), "X"),
    (lambda: P.predict([[1.0, 0.0]], 0.0, GOOD_X), "w"),
])
def test_helpers_bad_inputs(call, arg):
    with pytest.raises(ValueError, match=rf"^{arg}\b"):
        call()


def test_doctests():
    failures, _ = doctest.testmod(P)
    assert failures == 0
