r"""
A learning-rate sweep: 256 networks in one call
===============================================

:func:`simcore.train_grid` trains a grid of networks in one compiled call: here 256 copies of
a 2-16-16-1 tanh network on 128 points of two moons, each with its own learning rate from
:math:`10^{-2}` to 100, all from the same initial weights (``seeds=0``). A network whose loss
turns non-finite or exceeds :math:`10^6` times its initial value is frozen and flagged
(``diverged_at``): divergence is data, never an exception.

The telemetry was recorded inside the kernel every 10 steps; :meth:`simcore.GridResult.history`
returns it as one long-form DataFrame.
"""
import time

import matplotlib.pyplot as plt
import numpy as np

import simcore

X, y = simcore.datasets.moons(128, noise=0.2, seed=0)
net = simcore.MLP([2, 16, 16, 1], activation="tanh", loss="bce")
lr = np.geomspace(1e-2, 100, 256)

t0 = time.perf_counter()
res = simcore.train_grid(net, X, y, lr=lr, steps=200, seeds=0)
print(f"256 networks x 200 steps in {time.perf_counter() - t0:.2f} s "
      f"(strategy {res.config['strategy'].iloc[0]!r}, first call includes loading the kernel)")
hist = res.history()
loss0 = hist.query("step == 0 and layer == 1")["loss"].to_numpy()
# a run thrown out of its basin may bounce at a large but finite loss: it did not train either
worse = ~res.diverged & (res.final_loss >= loss0)
print(f"diverged (frozen): {res.diverged.sum()}, ended above the initial loss: {worse.sum()}, "
      f"trained: {(~res.diverged & ~worse).sum()} of 256")
print(hist.head())

# %%
# The final loss over four decades of learning rate, and the gradient norms on the way
fig, (ax, ax_g) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
ok = ~res.diverged & ~worse
ax.loglog(lr[ok], res.final_loss[ok], ".", label="final loss below the initial one")
ax.loglog(lr[worse], res.final_loss[worse], ".", color="C1", label="final loss above the initial one")
if res.diverged.any():
    top = np.nanmax(res.final_loss[np.isfinite(res.final_loss)])
    ax.loglog(lr[res.diverged], np.full(res.diverged.sum(), top), "x", color="C3",
              label="diverged (frozen; drawn at the top)")
ax.set(xlabel=r"learning rate $\eta$", ylabel="final loss", title="200 steps, full batch")
ax.legend()
for g in (0, 100, 160):
    h = hist[(hist.network == g) & (hist.layer == 1)]
    ax_g.semilogy(h.step, h.grad_norm, label=rf"$\eta$ = {lr[g]:.2g}")
ax_g.set(xlabel="step", ylabel=r"$\|\partial L / \partial W_1\|$", title="telemetry from the kernel")
ax_g.legend()
plt.show()
