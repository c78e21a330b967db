import doctest

import numpy as np
import pytest

from simcore import datasets as D


def grid_peers_make_data(n=256, seed=0):
    """Reference: make_data from /work/shared/anchors/grid_peers.py, copied verbatim."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n // 2)
    a = np.c_[np.cos(t), np.sin(t)]
    b = np.c_[1 - np.cos(t), 1 - np.sin(t) - 0.5]
    X = np.r_[a, b] + 0.2 * rng.standard_normal((n, 2))
    y = np.r_[np.zeros(n // 2), np.ones(n // 2)]
    return X, y


CLASSIFIERS = {  # name -> (kwargs, d, n_classes)
    "moons": ({}, 2, 2),
    "circles": ({}, 2, 2),
    "xor": ({}, 2, 2),
    "spirals": ({"n_classes": 3}, 2, 3),
    "blobs": ({"d": 5}, 5, 2),
}
SYNTHETIC = [*CLASSIFIERS, "teacher_student"]
REAL = {"iris": (150, 4, 3), "wine": (178, 13, 3), "breast_cancer": (569, 30, 2),
        "digits": (1797, 64, 10)}


def test_names():
    assert set(D.NAMES) == {"moons", "circles", "xor", "spirals", "blobs", "teacher_student",
                            "iris", "wine", "breast_cancer", "digits"}


@pytest.mark.parametrize("name", list(CLASSIFIERS))
@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_classification_shapes_dtypes_labels(name, n):
    kwargs, d, k = CLASSIFIERS[name]
    X, y = D.load(name, n=n, seed=3, **kwargs)
    assert X.shape == (n, d) and X.dtype == np.float64 and X.flags.c_contiguous
    assert y.shape == (n,) and y.dtype == np.int64
    assert np.isfinite(X).all()
    assert y.min() >= 0 and y.max() <= k - 1
    if n >= 100:
        assert set(np.unique(y)) == set(range(k))  # every class present


@pytest.mark.parametrize("name", SYNTHETIC)
def test_determinism(name):
    a = D.load(name, seed=5)
    b = D.load(name, seed=5)
    c = D.load(name, seed=6)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("n", [256, 64, 10])
@pytest.mark.parametrize("seed", [0, 1, 42])
def test_moons_matches_grid_peers(n, seed):
    X, y = D.moons(n, 0.2, seed=seed)
    X_ref, y_ref = grid_peers_make_data(n, seed)
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(y, y_ref)


def test_moons_odd_n_balanced():
    X, y = D.moons(7, noise=0.0, seed=0)
    assert np.bincount(y).tolist() == [4, 3]
    # noise 0: class 0 on the unit upper half circle, class 1 on its shifted mirror
    np.testing.assert_allclose(np.hypot(*X[y == 0].T), 1.0)
    np.testing.assert_allclose(np.hypot(X[y == 1, 0] - 1, X[y == 1, 1] - 0.5), 1.0)


def test_circles_radii():
    X, y = D.circles(50, noise=0.0, factor=0.3, seed=1)
    r = np.hypot(*X.T)
    np.testing.assert_allclose(r[y == 0], 1.0)
    np.testing.assert_allclose(r[y == 1], 0.3)


def test_xor_exact_corners():
    X, y = D.xor(4, noise=0.0, seed=123)
    np.testing.assert_array_equal(X, [[-1, -1], [-1, 1], [1, -1], [1, 1]])
    np.testing.assert_array_equal(y, [0, 1, 1, 0])
    X, y = D.xor(400, noise=0.1, seed=0)
    np.testing.assert_array_equal(y, (X[:, 0] > 0) != (X[:, 1] > 0))  # noise too small to cross


def test_spirals_class_sizes():
    _, y = D.spirals(10, n_classes=3, seed=0)
    assert np.bincount(y).tolist() in ([4, 3, 3], [3, 4, 3], [3, 3, 4])


@pytest.mark.parametrize("d", [1, 2, 10])
@pytest.mark.parametrize("margin", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blobs_margin_achieved(d, margin, seed):
    X, y, info = D.blobs_margin(300, d=d, margin=margin, radius=2.0, seed=seed, return_info=True)
    assert X.shape == (300, d) and y.dtype == np.int64
    s = 2.0 * y - 1.0
    np.testing.assert_allclose(np.linalg.norm(info.w), 1.0)
    dist = s * (X @ info.w + info.b)
    assert dist.min() >= margin * (1 - 1e-12)
    assert info.margin == pytest.approx(dist.min(), rel=1e-12)
    assert info.margin_augmented == pytest.approx(
        dist.min() / np.sqrt(1 + info.b ** 2), rel=1e-12)
    norms = np.linalg.norm(X, axis=1)
    assert norms.max() <= 2.0 + margin + 1e-12
    assert info.radius == pytest.approx(norms.max(), rel=1e-12)
    assert info.radius_augmented == pytest.approx(np.sqrt(norms.max() ** 2 + 1), rel=1e-12)
    # the default path returns the same data
    X2, y2 = D.blobs_margin(300, d=d, margin=margin, radius=2.0, seed=seed)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)


@pytest.mark.parametrize("d_out", [1, 3])
def test_teacher_student(d_out):
    X, y, teacher = D.teacher_student(200, d_in=4, d_out=d_out, hidden=(8, 5), noise=0.0,
                                      seed=2, return_teacher=True)
    assert X.shape == (200, 4) and X.dtype == np.float64
    assert y.dtype == np.float64
    assert y.shape == ((200,) if d_out == 1 else (200, d_out))
    assert [W.shape for W, _ in teacher] == [(4, 8), (8, 5), (5, d_out)]
    a = np.tanh(np.tanh(X @ teacher[0][0] + teacher[0][1]) @ teacher[1][0] + teacher[1][1])
    np.testing.assert_allclose(y.reshape(200, -1), a @ teacher[2][0] + teacher[2][1])
    # noise adds exactly noise * N(0, 1) on top of the same teacher and inputs
    X2, y2 = D.teacher_student(200, d_in=4, d_out=d_out, hidden=(8, 5), noise=0.5, seed=2)
    np.testing.assert_array_equal(X, X2)
    resid = (y2 - y).ravel()
    assert 0.4 < resid.std() < 0.6


def test_teacher_linear_and_int_hidden():
    X, y = D.teacher_student(10, hidden=(), noise=0.0)
    assert y.shape == (10,)
    X, y = D.teacher_student(10, hidden=3)
    assert y.shape == (10,)


@pytest.mark.parametrize("name", list(REAL))
def test_real_sets(name):
    n, d, k = REAL[name]
    X, y = D.load(name)
    assert X.shape == (n, d) and X.dtype == np.float64 and X.flags.c_contiguous
    assert y.shape == (n,) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(k))
    sd = X.std(axis=0)
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-10)
    constant = sd < 1e-12
    np.testing.assert_allclose(sd[~constant], 1.0)
    np.testing.assert_array_equal(X[:, constant], 0.0)
    raw, y_raw = D.load(name, standardize=False)
    np.testing.assert_array_equal(y_raw, y)
    assert raw.min() >= 0  # these sets are nonnegative measurements
    if name == "digits":
        assert constant.any()  # a few pixels are always 0: must not become NaN


def test_to_pm1():
    out = D.to_pm1(np.array([0, 1, 1, 0]))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [-1, 1, 1, -1])
    np.testing.assert_array_equal(D.to_pm1([0.0, 1.0]), [-1, 1])


BAD = [
    (D.moons, {"n": 0}, "n"),
    (D.moons, {"n": 2.5}, "n"),
    (D.moons, {"n": True}, "n"),
    (D.moons, {"noise": -0.1}, "noise"),
    (D.moons, {"noise": float("nan")}, "noise"),
    (D.moons, {"seed": -1}, "seed"),
    (D.moons, {"seed": 1.0}, "seed"),
    (D.circles, {"factor": 0.0}, "factor"),
    (D.circles, {"factor": 1.0}, "factor"),
    (D.circles, {"noise": -1}, "noise"),
    (D.xor, {"n": -4}, "n"),
    (D.xor, {"noise": float("inf")}, "noise"),
    (D.spirals, {"n_classes": 1}, "n_classes"),
    (D.spirals, {"turns": 0}, "turns"),
    (D.spirals, {"n": "10"}, "n"),
    (D.blobs_margin, {"margin": 0.0}, "margin"),
    (D.blobs_margin, {"margin": -1.0}, "margin"),
    (D.blobs_margin, {"radius": 0.0}, "radius"),
    (D.blobs_margin, {"d": 0}, "d"),
    (D.blobs_margin, {"return_info": 1}, "return_info"),
    (D.teacher_student, {"d_in": 0}, "d_in"),
    (D.teacher_student, {"d_out": 0}, "d_out"),
    (D.teacher_student, {"hidden": (4, 0)}, "hidden"),
    (D.teacher_student, {"hidden": 2.5}, "hidden"),
    (D.teacher_student, {"noise": -0.5}, "noise"),
    (D.iris, {"standardize": "yes"}, "standardize"),
    (D.digits, {"standardize": 1}, "standardize"),
]


@pytest.mark.parametrize("func, kwargs, arg", BAD,
                         ids=[f"{f.__name__}-{a}-{i}" for i, (f, _, a) in enumerate(BAD)])
def test_bad_parameters(func, kwargs, arg):
    with pytest.raises(ValueError, match=rf"^{arg}\b"):
        func(**kwargs)


def test_load_bad_name_lists_names():
    with pytest.raises(ValueError, match=r"^name\b") as exc:
        D.load("mnist")
    for name in D.NAMES:
        assert name in str(exc.value)
    with pytest.raises(ValueError, match=r"^name\b"):
        D.load(3)


def test_load_bad_keyword():
    with pytest.raises(ValueError, match=r"^factor\b"):
        D.load("moons", factor=0.5)


@pytest.mark.parametrize("y, msg", [([0, 2], "y must take values"), ([-1, 1], "y must take"),
                                    ([[0, 1]], "y must be 1-D")])
def test_to_pm1_bad(y, msg):
    with pytest.raises(ValueError, match=msg):
        D.to_pm1(y)


def test_doctests():
    failures, _ = doctest.testmod(D)
    assert failures == 0
