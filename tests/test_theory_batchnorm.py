"""The batch-norm study's theory functions in studies.theory against independent computations:
the Hessian block's top eigenvalue against the eigenvalues of an exact matrix, the
scale-variant mask against the network's layout, the weight-norm growth against a direct sum."""
import numpy as np
import pytest

from simcore import MLP, datasets
from studies import theory


def test_block_sharpness_of_a_quadratic_is_the_submatrix_eigenvalue():
    """L = 1/2 theta^T A theta: the block's Hessian is A[S, S] exactly."""
    rng = np.random.default_rng(0)
    B = rng.standard_normal((9, 9))
    A = B @ B.T + np.diag(np.arange(9.0))
    mask = np.array([1, 0, 1, 1, 0, 0, 1, 1, 0], bool)
    theta = rng.standard_normal(9)
    lam = theory.hessian_block_sharpness(lambda t: A @ t, theta, mask)
    assert lam == pytest.approx(np.linalg.eigvalsh(A[np.ix_(mask, mask)])[-1], rel=1e-8)
    assert lam < np.linalg.eigvalsh(A)[-1]           # a block's top eigenvalue is at most the whole's
    with pytest.raises(ValueError, match="mask"):
        theory.hessian_block_sharpness(lambda t: A @ t, theta, np.zeros(9, bool))
    with pytest.raises(ValueError, match="mask"):
        theory.hessian_block_sharpness(lambda t: A @ t, theta, mask[:5])


def test_scale_variant_mask():
    bn = MLP([3, 4, 5, 2], batchnorm=True)
    m = theory.bn_scale_variant_mask(bn)
    # output layer W (5x2) and b (2), gamma and beta of both hidden layers (4 + 5 each)
    assert m.sum() == 5 * 2 + 2 + 2 * 4 + 2 * 5
    d = bn.slots[0]
    assert not m[d["W"][0]:d["W"][0] + d["W"][1]].any() and m[d["gamma"][0]]
    assert theory.bn_scale_variant_mask(MLP([3, 4, 2])).all()


def test_scale_variant_sharpness_matches_dense_hessian():
    X, y = datasets.load("moons", n=40, noise=0.2, seed=1)
    net = MLP([2, 5, 5, 1], activation="tanh", loss="bce", batchnorm=True)
    params = net.init(seed=3)
    H = theory.exact_hessian(theory.mlp_grad_fn(net, X, y), net.pack(params))
    m = theory.bn_scale_variant_mask(net)
    want = np.linalg.eigvalsh(H[np.ix_(m, m)])[-1]
    assert theory.bn_scale_variant_sharpness(net, params, X, y) == pytest.approx(want, rel=1e-5)
    # the scale-invariant weights dominate the whole Hessian at initialisation
    assert np.linalg.eigvalsh(H)[-1] > 2 * want


def test_weight_norm_growth_of_orthogonal_steps():
    """Steps orthogonal to W: ||W - eta g||^2 adds eta^2 ||g||^2 each time."""
    rng = np.random.default_rng(2)
    W = rng.standard_normal(6)
    w0, norms = W @ W, []
    for _ in range(10):
        g = rng.standard_normal(6)
        g -= (g @ W) / (W @ W) * W
        norms.append(np.linalg.norm(g))
        W = W - 0.3 * g
    assert W @ W - w0 == pytest.approx(theory.bn_weight_norm_growth(0.3, norms), rel=1e-12)
    with pytest.raises(ValueError, match="grad_norms"):
        theory.bn_weight_norm_growth(0.3, [1.0, -1.0])
