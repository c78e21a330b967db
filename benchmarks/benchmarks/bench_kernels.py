"""The kernel modules: activations, losses, layers (dense, batch norm), optimizer updates.

Each kernel is timed on prepared arrays (``*_kernel`` and the raw loops, what the network calls)
and, where it has one, through its validating public function.
"""
import numpy as np

import simcore
from simcore import activations, layers, losses, optim
from simcore.scalar import ACT_CODE

from .common import DTYPES, Benchmark, normal, rng, with_slow


class Activations(Benchmark):
    """a = f(z) (``apply``) and dz = da * f'(z) (the ``backward`` loop) for every activation."""
    params = [list(activations.NAMES), with_slow([1_000, 1_000_000], [10_000_000]), DTYPES]
    param_names = ["activation", "size", "dtype"]

    def setup(self, name, size, dtype):
        self.code = ACT_CODE[name]
        self.z = normal(size, dtype, seed=0, scale=3.0)
        self.a = activations.apply(name, self.z)  # compiles forward
        self.da = normal(size, dtype, seed=1)
        self.dz = np.empty_like(self.z)
        activations.backward(self.code, self.z, self.a, self.da, self.dz)  # compiles backward

    def time_apply(self, name, size, dtype):
        activations.apply(name, self.z)

    def time_backward(self, name, size, dtype):
        activations.backward(self.code, self.z, self.a, self.da, self.dz)


class Losses(Benchmark):
    """Value and dL/dz of each loss: the ``loss_grad`` kernel and the public function.

    Logits (n, 1) for mse, mse_sigmoid and bce, (n, 10) for ce.
    """
    params = [list(losses.NAMES), with_slow([1024], [1_000_000]), DTYPES]
    param_names = ["loss", "n", "dtype"]

    def setup(self, name, n, dtype):
        k = 10 if name == "ce" else 1
        self.code = losses.LOSS_CODE[name]
        self.fn = getattr(losses, name)
        self.z = normal((n, k), dtype, seed=0, scale=2.0)
        r = rng(1)
        if name == "ce":
            self.y = r.integers(0, k, n)
        elif name == "bce":
            self.y = r.integers(0, 2, (n, k))
        else:
            self.y = r.random((n, k))
        self.Y = losses.encode_targets(name, self.y, n, k, self.z.dtype)
        self.dz = np.empty_like(self.z)
        losses.loss_grad(self.code, self.z, self.Y, self.dz)
        self.fn(self.z, self.y)

    def time_loss_grad(self, name, n, dtype):
        losses.loss_grad(self.code, self.z, self.Y, self.dz)

    def time_public(self, name, n, dtype):
        self.fn(self.z, self.y)


# (batch n, layer width): a W1 hidden layer and a layer of the [64, 256, 256, 10] network
SHAPES = ["256x16", "1024x256"]
SLOW_SHAPES = ["4096x1024"]


def _shape(shape):
    n, width = shape.split("x")
    return int(n), int(width)


class Dense(Benchmark):
    """z = a W + b and its backward (dW, db, da) for a width x width layer."""
    params = [with_slow(SHAPES, SLOW_SHAPES), DTYPES]
    param_names = ["n x width", "dtype"]

    def setup(self, shape, dtype):
        n, width = _shape(shape)
        self.a = normal((n, width), dtype, seed=0)
        self.W = normal((width, width), dtype, seed=1, scale=width ** -0.5)
        self.b = normal(width, dtype, seed=2)
        self.delta = normal((n, width), dtype, seed=3)
        self.z = np.empty((n, width), dtype)
        self.dW, self.db, self.da = np.empty_like(self.W), np.empty_like(self.b), np.empty_like(self.a)
        layers.dense_forward(self.a, self.W, self.b)
        layers.dense_backward(self.a, self.W, self.delta)

    def time_forward(self, shape, dtype):
        layers.dense_forward(self.a, self.W, self.b)

    def time_backward(self, shape, dtype):
        layers.dense_backward(self.a, self.W, self.delta)

    def time_forward_kernel(self, shape, dtype):
        layers.dense_forward_kernel(self.a, self.W, self.b, self.z)

    def time_backward_kernel(self, shape, dtype):
        layers.dense_backward_kernel(self.a, self.W, self.delta, self.dW, self.db, self.da, True)


class BatchNorm(Benchmark):
    """Batch normalisation: training forward (running statistics updated), eval, backward."""
    params = [with_slow(SHAPES, SLOW_SHAPES), DTYPES]
    param_names = ["n x width", "dtype"]

    def setup(self, shape, dtype):
        n, width = _shape(shape)
        self.z = normal((n, width), dtype, seed=0, scale=2.0)
        self.gamma = 1.0 + normal(width, dtype, seed=1, scale=0.1)
        self.beta = normal(width, dtype, seed=2, scale=0.1)
        self.dy = normal((n, width), dtype, seed=3)
        self.rm, self.rv = np.zeros(width, dtype), np.ones(width, dtype)
        self.y, self.xhat = np.empty_like(self.z), np.empty_like(self.z)
        self.inv_std = np.empty(width, dtype)
        self.dz = np.empty_like(self.z)
        self.dgamma, self.dbeta = np.empty_like(self.gamma), np.empty_like(self.beta)
        _, self.cache = layers.batchnorm_forward(self.z, self.gamma, self.beta, self.rm, self.rv)
        layers.batchnorm_forward(self.z, self.gamma, self.beta, self.rm, self.rv, training=False)
        layers.batchnorm_backward(self.dy, self.cache, self.gamma)

    def time_forward(self, shape, dtype):
        layers.batchnorm_forward(self.z, self.gamma, self.beta, self.rm, self.rv)

    def time_forward_eval(self, shape, dtype):
        layers.batchnorm_forward(self.z, self.gamma, self.beta, self.rm, self.rv, training=False)

    def time_backward(self, shape, dtype):
        layers.batchnorm_backward(self.dy, self.cache, self.gamma)

    def time_forward_kernel(self, shape, dtype):
        layers.batchnorm_forward_kernel(self.z, self.gamma, self.beta, self.y, self.xhat,
                                        self.inv_std, self.rm, self.rv, True, 0.1, 1e-5)

    def time_backward_kernel(self, shape, dtype):
        layers.batchnorm_backward_kernel(self.dy, self.xhat, self.inv_std, self.gamma, self.dz,
                                         self.dgamma, self.dbeta)


class Optimizers(Benchmark):
    """One in-place update of a flat parameter vector: gd, momentum (heavy ball), Adam.

    The same gradient is applied at every call; eta is small, so parameters stay finite however
    many times asv repeats a body.
    """
    params = [with_slow([1_000, 1_000_000], [10_000_000]), DTYPES]
    param_names = ["size", "dtype"]

    def setup(self, size, dtype):
        self.theta = normal(size, dtype, seed=0)
        self.grad = normal(size, dtype, seed=1)
        self.m, self.v = np.zeros(size, dtype), np.zeros(size, dtype)
        optim.gd_step(self.theta, self.grad, 1e-6)
        optim.momentum_step(self.theta, self.grad, self.v, 1e-6, 0.9, False)
        optim.adam_step(self.theta, self.grad, self.m, self.v, 1, 1e-6, 0.9, 0.999, 1e-8)

    def time_gd_step(self, size, dtype):
        optim.gd_step(self.theta, self.grad, 1e-6)

    def time_momentum_step(self, size, dtype):
        optim.momentum_step(self.theta, self.grad, self.v, 1e-6, 0.9, False)

    def time_adam_step(self, size, dtype):
        optim.adam_step(self.theta, self.grad, self.m, self.v, 10, 1e-6, 0.9, 0.999, 1e-8)


class OptimizerStep(Benchmark):
    """``Optimizer.step`` on the parameters of an MLP [64, 256, 256, 10] (validation included)."""
    params = [["gd", "momentum", "adam"]]
    param_names = ["optimizer"]

    def setup(self, name):
        net = simcore.MLP([64, 256, 256, 10], activation="tanh", loss="ce")
        self.params = net.init(seed=0)
        self.grads = net.init(seed=1)
        self.opt = simcore.Optimizer(name, eta=1e-6)
        self.opt.step(self.params, self.grads)

    def time_step(self, name):
        self.opt.step(self.params, self.grads)
