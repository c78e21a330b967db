"""A short example training: a 2-16-16-1 tanh MLP learns two moons by full-batch gradient descent.

Run with ``python -m simcore.demo`` (``make demo``). Prints the loss every 50 steps and the
training accuracy at the end.
"""
import time

import numpy as np

import simcore


def main(steps=500, eta=0.5, seed=0):
    X, y = simcore.datasets.moons(256, noise=0.2, seed=seed)
    net = simcore.MLP([2, 16, 16, 1], activation="tanh", loss="bce", init="glorot")
    params = net.init(seed=seed)
    opt = simcore.Optimizer("gd", eta=eta)
    print(f"{net}\ntwo moons, n={len(y)}, full-batch gradient descent, eta={eta}")
    t0 = time.perf_counter()
    for step in range(steps + 1):
        loss, grads = net.loss_and_grad(params, X, y)
        if step % 50 == 0:
            print(f"step {step:4d}  loss {loss:.6f}")
        if step < steps:
            opt.step(params, grads)
    acc = np.mean((net.predict(params, X) > 0.5) == y)
    print(f"training accuracy {acc:.3f}  ({time.perf_counter() - t0:.2f} s including compilation)")
    return loss, acc


if __name__ == "__main__":
    main()
