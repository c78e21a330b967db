"""Kernels compiled for a code fixed at compile time (simcore._jit.specialised), the activation
loops built with it, and the grid engine's kernel per setting (simcore.grid.cpu.train_kernel)."""
import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

import simcore
from simcore import activations
from simcore._jit import specialised
from simcore.grid import LANES
from simcore.grid.cpu import NQ, train_kernel
from simcore.losses import encode_targets
from simcore.scalar import ACT_CODE


def _make_pick():
    """A fresh specialised stub ``pick(code, x)``: x + 1 for code 0, 2x otherwise; with the two
    functions its branches call (fresh, so nothing is compiled yet)."""
    @njit
    def add(x):
        return x + 1.0

    @njit
    def mul(x):
        return x * 2.0

    @specialised
    def pick(c):
        """pick(code, x): x + 1 for code 0, 2x otherwise."""
        def kernel(code, x):
            if c == 0:
                return add(x)
            return mul(x)
        return kernel
    return pick, add, mul


def _caller(stub, code):
    @njit
    def call(x):
        return stub(code, x)  # code: a closure variable, a compile-time constant
    return call


def test_only_the_branch_of_the_code_is_compiled():
    pick, add, mul = _make_pick()
    assert _caller(pick, 0)(3.0) == 4.0
    assert add.signatures and not mul.signatures  # the other branch was never typed
    assert _caller(pick, 1)(3.0) == 6.0
    assert mul.signatures


def test_a_literal_code_works_too():
    pick = _make_pick()[0]

    @njit
    def call(x):
        return pick(1, x)
    assert call(5.0) == 10.0


def test_code_must_be_a_compile_time_constant():
    pick = _make_pick()[0]

    @njit
    def call(code, x):
        return pick(code, x)
    with pytest.raises(TypingError, match="compile-time constant"):
        call(0, 1.0)


def test_stub_is_not_for_python():
    pick = _make_pick()[0]
    with pytest.raises(TypeError, match="for compiled code"):
        pick(0, 1.0)
    assert pick.__name__ == "pick" and "2x otherwise" in pick.__doc__


def _activation_caller(code):
    @njit
    def call(z, a, da, dz):
        activations.forward_fixed(code, z, a)
        activations.backward_fixed(code, z, a, da, dz)
    return call


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", activations.NAMES)
def test_fixed_activation_loops_equal_the_runtime_ones(name, dtype):
    z = np.concatenate([np.linspace(-40, 40, 997), [0.0, -0.0, 1e-300, -1e-30, 700.0, -700.0]])
    z = z.astype(dtype)
    rng = np.random.default_rng(0)
    da = rng.standard_normal(z.size).astype(dtype)
    a, dz = np.empty_like(z), np.empty_like(z)
    _activation_caller(ACT_CODE[name])(z, a, da, dz)
    a_ref, dz_ref = np.empty_like(z), np.empty_like(z)
    activations.forward(ACT_CODE[name], z, a_ref)
    activations.backward(ACT_CODE[name], z, a_ref, da, dz_ref)
    assert a.dtype == dtype
    np.testing.assert_array_equal(a, a_ref)
    np.testing.assert_array_equal(dz, dz_ref)
    np.testing.assert_array_equal(a, activations.apply(name, z))  # the NumPy-tested public one


def test_one_kernel_per_setting():
    a = train_kernel(ACT_CODE["tanh"], 2, 0, False)
    assert train_kernel(np.int64(ACT_CODE["tanh"]), 2, 0, np.bool_(False)) is a
    assert train_kernel(ACT_CODE["relu"], 2, 0, False) is not a
    assert train_kernel(ACT_CODE["tanh"], 2, 0, True) is not a


def _kernel_args(net, X, y, steps=2):
    """The arguments of a grid kernel for one network (G = 1), as simcore.grid passes them."""
    theta = np.ascontiguousarray(net.pack(net.init(seed=0))[:, None])
    Y = encode_targets(net.loss, y, X.shape[0], net.sizes[-1], net.dtype)
    R = steps + 1
    return (theta, net.layout, X, Y, np.zeros(1, np.uint64), np.full(1, 0.1), np.zeros(1),
            np.full(1, -1.0), steps, X.shape[0], 1, np.empty((R, 1)),
            np.empty((R, net.n_layers, NQ, 1)), np.empty(1, np.int64), np.empty(1), 0, 1, LANES)


def test_kernel_refuses_a_layout_of_another_batchnorm_setting():
    """train_grid always picks the kernel from the network; a kernel called by hand with a
    network of the other batch-norm setting must refuse rather than skip or misread layers."""
    X, y = simcore.datasets.moons(24, seed=0)
    bn_net = simcore.MLP([2, 4, 1], batchnorm=True)
    plain = train_kernel(bn_net._act, bn_net._loss, 0, False)
    with pytest.raises(ValueError, match="batch-norm"):
        plain(*_kernel_args(bn_net, X, y))
    net = simcore.MLP([2, 4, 1])
    args = _kernel_args(net, X, y)
    with pytest.raises(ValueError, match="batch-norm"):
        train_kernel(net._act, net._loss, 0, True)(*args)
    plain(*args)  # the matching setting trains
    assert np.isfinite(args[-4][0]) and args[-5][0] == -1
