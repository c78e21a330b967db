r"""
Vanishing gradients by depth, against mean-field theory
=======================================================

Backpropagation multiplies the error signal :math:`\delta_l = \partial L/\partial z_l` by
:math:`W_{l+1}^T` and :math:`f'(z_l)` at each layer. For weights
:math:`N(0, \sigma_w^2/\text{fan\_in})` mean-field theory (Poole et al. 2016; Schoenholz et al.
2017) predicts the expected growth of :math:`\ln\|\delta_l\|` per layer towards the input,
:math:`\tfrac12\ln\chi_1` with :math:`\chi_1 = \sigma_w^2 E[f'(\sqrt{q}\,z)^2]`, where
:math:`q` follows the variance map layer by layer; at width :math:`N` the first-order
correction is :math:`-\frac{1}{4N}(3E f'^4/(E f'^2)^2 - 1)`
(:func:`studies.theory.finite_width_log_growth`).

Deep tanh networks on one input, 24 seeds per :math:`\sigma_w^2`: ordered
(:math:`\sigma_w^2 < 1`, gradients vanish), critical (1) and chaotic (> 1, they grow). The
measured :math:`\ln\|\delta_l\|` comes from the kernel's telemetry at step 0:
:math:`\|\partial L/\partial W_l\| = \|a_{l-1}\|\,\|\delta_l\|` for a single input.
"""
import matplotlib.pyplot as plt
import numpy as np

import simcore
from studies import theory

depth, width, seeds = 24, 32, 24
X = np.random.default_rng(0).standard_normal((1, width))
y = np.zeros((1, 1))
net = simcore.MLP([width] + [width] * (depth - 1) + [1], activation="tanh", loss="mse",
                  init="normal")
sigma_w2 = np.array([0.6, 1.0, 1.8])
scale = np.repeat(np.sqrt(sigma_w2), seeds)
res = simcore.train_grid(net, X, y, lr=0.0, steps=1, seeds=np.arange(scale.size),
                         init_scale=scale, record_every=1)
h = res.history().query("step == 0")

# %%
# :math:`\|\delta_l\|` from the telemetry: :math:`\|a_{l-1}\| = \sqrt{N(\text{std}^2 + \text{mean}^2)}`
# of the layer below (the input for l = 1)
g = h.pivot(index="network", columns="layer", values="grad_norm").to_numpy()
rms = np.sqrt(h.pivot(index="network", columns="layer", values="act_std").to_numpy() ** 2
              + h.pivot(index="network", columns="layer", values="act_mean").to_numpy() ** 2)
a_prev = np.hstack([np.full((g.shape[0], 1), np.linalg.norm(X)), np.sqrt(width) * rms[:, :-1]])
log_delta = np.log(g / a_prev)

fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
layers = np.arange(1, depth + 1)
# the slope is fitted away from the input (q relaxing) and the output (fan-out 1), as the study does
fit = np.arange(max(3, depth // 5 + 1), depth - max(2, depth // 10) + 1)
for k, s2 in enumerate(sigma_w2):
    rows = log_delta[k * seeds:(k + 1) * seeds]
    slopes = np.array([-np.polyfit(fit, r[fit - 1], 1)[0] for r in rows])
    mean = rows.mean(0) - rows.mean(0)[fit[-1] - 1]
    se = rows.std(0, ddof=1) / np.sqrt(seeds)
    ax.errorbar(layers[:-1], mean[:-1], yerr=se[:-1], fmt="o", ms=3, color=f"C{k}",
                label=rf"measured, $\sigma_w^2$ = {s2}")
    # predicted: the growth per layer along the variance trajectory (q[l - 1] = Var z_l),
    # summed from the top of the fitted layers towards the input
    q = theory.variance_trajectory("tanh", s2, 0.0, s2 * np.sum(X ** 2) / width, depth)
    u = np.zeros(depth + 1)
    for l in range(fit[-1] - 1, 0, -1):
        u[l] = u[l + 1] + theory.finite_width_log_growth("tanh", s2, 0.0, width, q=q[l - 1])
    pred = -np.polyfit(fit, u[fit], 1)[0]
    ax.plot(layers[:fit[-1]], u[1:fit[-1] + 1] - u[fit[-1]], color=f"C{k}", lw=1.5)
    print(f"sigma_w^2 = {s2}: growth of ln||delta_l|| per layer towards the input: measured "
          f"{slopes.mean():+.4f} +- {slopes.std(ddof=1) / np.sqrt(seeds):.4f}, predicted {pred:+.4f} "
          f"(wide limit at q*: {theory.log_gradient_growth('tanh', s2, 0.0):+.4f})")
ax.axvspan(fit[0], fit[-1], color="grey", alpha=0.1, label="fitted layers")
ax.set(xlabel="layer l", ylabel=r"$\ln\|\delta_l\|$ (relative)",
       title=f"tanh, depth {depth}, width {width}: lines are mean-field theory")
ax.legend()
plt.show()
