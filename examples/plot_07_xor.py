r"""
XOR: a perceptron against a 2-2-1 MLP
=====================================

XOR is not linearly separable, so the perceptron never finishes an epoch without a mistake:
its weights stay bounded (the perceptron cycling theorem, Block and Levin 1970) and the
mistakes pile up at a steady rate. One hidden layer of two units is enough to solve it:
a 2-2-1 network trained by full-batch gradient descent on cross-entropy solves XOR from most
initial weights. The runs that stall are not in local minima (for this network every
stationary point at finite weights is a saddle or a global minimum, Sprinkhuizen-Kuyper and
Boers 1998): some of the four clusters merge into one saturated hidden code and the loss creeps
towards a plateau such as :math:`\tfrac12\ln 2` (two opposite clusters merged) or
:math:`\ln 2`.

64 networks with different initial weights are trained in one :func:`simcore.train_grid` call.
"""
import matplotlib.pyplot as plt
import numpy as np

import simcore
from simcore import perceptron

X, y01 = simcore.datasets.xor(200, noise=0.2, seed=0)
y = simcore.datasets.to_pm1(y01)

p = perceptron.train(X, y, max_epochs=200, seed=0)
print(f"perceptron: converged {p.converged}, {p.mistakes} mistakes in {p.epochs} epochs, "
      f"accuracy {np.mean(p.predict(X) == y):.2f}")

net = simcore.MLP([2, 2, 1], activation="tanh", loss="bce")
res = simcore.train_grid(net, X, y01, lr=1.0, steps=1500, seeds=np.arange(64), record_every=50)


def network(g):
    """Network g's parameters, out of the grid's stacked ones (a leading axis of 64)."""
    return [{k: v[g] for k, v in layer.items()} for layer in res.params]


accuracy = np.array([np.mean((net.predict(network(g), X) > 0.5) == y01) for g in range(64)])
solved = accuracy > 0.95
print(f"2-2-1 MLP: {solved.sum()} of 64 initial weights solve XOR (accuracy > 0.95); "
      f"final losses of the others: {np.round(np.sort(res.final_loss[~solved]), 3)}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
ax = axes[0]
ax.plot(np.cumsum(p.mistakes_per_epoch))
ax.set(xlabel="epoch", ylabel="cumulative mistakes", title="perceptron: never converges")

best = int(np.argmin(res.final_loss))
g = np.linspace(-2, 2, 200)
G = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
for ax, (title, prob) in zip(axes[1:], [
        ("perceptron's line", (perceptron.predict(p.w, p.b, G) > 0).astype(float)),
        ("2-2-1 MLP (lowest final loss)", net.predict(network(best), G))]):
    ax.contourf(g, g, prob.reshape(200, 200), levels=20, cmap="RdBu_r", alpha=0.6)
    ax.scatter(X[:, 0], X[:, 1], c=y01, cmap="RdBu_r", s=8, edgecolors="k", linewidths=0.3)
    ax.set(title=title, xlim=(-2, 2), ylim=(-2, 2), aspect="equal")
hist = res.history().query("layer == 2")
ax_in = axes[2].inset_axes([0.62, 0.05, 0.35, 0.3])
for n in range(64):
    h = hist[hist.network == n]
    ax_in.plot(h.step, h.loss, color="C2" if solved[n] else "C3", lw=0.6)
ax_in.axhline(0.5 * np.log(2), color="grey", lw=0.6, ls=":")
ax_in.set(yscale="log", xticks=[], yticks=[], title="loss (red: stalled)", facecolor="white")
ax_in.title.set_fontsize(7)
plt.show()
