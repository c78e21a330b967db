r"""
The perceptron against Novikoff's bound
=======================================

Rosenblatt's perceptron starts from :math:`w = 0, b = 0` and on every mistake
:math:`y_i(w \cdot x_i + b) \le 0` adds :math:`\eta y_i x_i` to :math:`w` and :math:`\eta y_i`
to :math:`b`. Novikoff (1962): on data separable with margin :math:`\gamma` (the bias folded in
as a constant input, :math:`z_i = (x_i, 1)`, :math:`R = \max_i\|z_i\|`) it makes at most

.. math:: \Big(\frac{R}{\gamma}\Big)^2

mistakes, in any visiting order, for any :math:`\eta`. Here :func:`simcore.datasets.blobs_margin`
builds separable data with a margin set by construction, :func:`simcore.perceptron.train` runs
Rosenblatt's rule from eight visiting orders, and the mistakes are drawn against the bound
with the construction's margin and with the true maximum margin
(:func:`studies.perceptron.max_margin`, the hard-margin SVM in the augmented space, solved
exactly).
"""
import matplotlib.pyplot as plt
import numpy as np

import simcore
from simcore import perceptron
from studies.perceptron import max_margin

margins = np.geomspace(0.02, 0.5, 9)
rows = []
for m in margins:
    X, y01, info = simcore.datasets.blobs_margin(200, d=2, margin=m, seed=1, return_info=True)
    y = simcore.datasets.to_pm1(y01)
    gamma_star = max_margin(X, y)["gamma"]
    R = info.radius_augmented
    mistakes = [perceptron.train(X, y, max_epochs=1000, seed=s).mistakes for s in range(8)]
    rows.append((m, perceptron.novikoff_bound(R, info.margin_augmented),
                 perceptron.novikoff_bound(R, gamma_star), mistakes))
    print(f"margin {m:.3f}: mistakes {min(mistakes)}-{max(mistakes)}, bound with the construction's "
          f"margin {rows[-1][1]:.0f}, with the maximum margin {rows[-1][2]:.0f}")
assert all(max(r[3]) <= r[2] for r in rows), "Novikoff's bound is a theorem: a violation is a bug"

fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
for m, _, _, mistakes in rows:
    ax.plot([m] * len(mistakes), mistakes, "o", color="C0", ms=3, alpha=0.6)
ax.plot(margins, [r[1] for r in rows], "--", color="C3", label=r"$(R/\gamma)^2$, the construction's margin")
ax.plot(margins, [r[2] for r in rows], color="C3", label=r"$(R/\gamma^*)^2$, the maximum margin")
ax.plot([], [], "o", color="C0", ms=3, label="mistakes, 8 visiting orders")
ax.set(xscale="log", yscale="log", xlabel="margin set by construction",
       ylabel="mistakes until an epoch without one", title="200 points in the plane")
ax.legend()
plt.show()
