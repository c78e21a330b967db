r"""
Gradient descent on least squares: the 2/lambda_max threshold
=============================================================

For a linear model with mean squared error the loss is a quadratic with the constant Hessian
:math:`H = \frac{2}{N} X_{aug}^T X_{aug}` (:func:`studies.theory.ls_hessian`). Along
eigenvector :math:`i` gradient descent multiplies the error by :math:`1 - \eta\lambda_i` each
step, so it converges if and only if :math:`\eta < 2/\lambda_{max}`, fastest at
:math:`\eta^* = 2/(\lambda_{min} + \lambda_{max})`.

One :func:`simcore.train_grid` call trains 48 linear models on the same data with learning
rates on both sides of the predicted threshold; the final loss jumps where theory says.
"""
import matplotlib.pyplot as plt
import numpy as np

import simcore
from studies import theory

X, y = simcore.datasets.teacher_student(n=128, d_in=4, hidden=(), noise=0.1, seed=0)
eta_c = theory.ls_threshold(X)
eta_star = theory.ls_optimal_step(X)
print(f"predicted threshold 2/lambda_max = {eta_c:.4f}, best step eta* = {eta_star:.4f}")

net = simcore.MLP([4, 1], activation="identity", loss="mse")
lr = eta_c * np.geomspace(0.1, 1.3, 48)
res = simcore.train_grid(net, X, y, lr=lr, steps=200, seeds=0, record_every=1)

loss_star = theory.ls_solution(X, y.reshape(-1, 1)).loss
stable = res.final_loss < 2 * res.history().query("step == 0 and layer == 1")["loss"].to_numpy()
print(f"largest stable eta / predicted: {lr[stable].max() / eta_c:.3f}, "
      f"smallest unstable: {lr[~stable].min() / eta_c:.3f}")

# %%
# Left: the final loss against the learning rate, in units of the threshold. Right: loss curves
# just below and just above it.
fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
# converged runs end at L* to rounding (the difference may be 0 or below), so the axis has a floor
# of 1e-16; a diverged run is frozen where its loss passed 1e6 times its start
ax.semilogy(lr / eta_c, np.maximum(res.final_loss - loss_star, 1e-16), "o-", ms=3)
ax.axvline(1.0, color="C3", label=r"$2/\lambda_{max}$ (theory)")
ax.axvline(eta_star / eta_c, color="C2", ls="--", label=r"$\eta^*$ (theory)")
ax.set(xlabel=r"$\eta \,/\, (2/\lambda_{max})$", ylabel=r"final loss $- L^*$",
       title="200 steps of gradient descent")
ax.legend()
hist = res.history().query("layer == 1")
for g in (np.argmin(abs(lr / eta_c - 0.5)), np.argmin(abs(lr / eta_c - 0.97)),
          np.argmin(abs(lr / eta_c - 1.03))):
    h = hist[hist.network == g]
    ax_t.semilogy(h.step, h.loss - loss_star, label=rf"$\eta$ = {lr[g] / eta_c:.2f} $\cdot 2/\lambda_{{max}}$")
ax_t.set(xlabel="step", ylabel=r"loss $- L^*$", title="below and above the threshold")
ax_t.legend()
plt.show()
