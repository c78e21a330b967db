r"""
Batch norm's gradient growth at initialisation
==============================================

Batch normalisation makes a layer's input unit-variance whatever the scale of the weights, and
backpropagating through the normalisation divides by the standard deviation of the layer below.
Yang et al. (2019, "A mean field theory of batch normalization") find that at initialisation
the gradient then *grows* towards the input by a factor

.. math:: \lambda_{BN}(f) = \frac{E[f'(z)^2]}{\mathrm{Var}[f(z)]},\qquad z \sim N(0, 1)

per layer in squared norm, whatever the initialisation (the weights' :math:`\sigma_w^2`
cancels): :math:`\ln\|\partial L/\partial W_l\|` rises by :math:`\tfrac12\ln\lambda_{BN}` per
layer (:func:`studies.theory.bn_log_gradient_growth`); relu's :math:`\lambda_{BN} = 1/(1 - 1/\pi)`.

Deep batch-normalised relu and tanh networks, Glorot and He initial weights, one batch of 128
samples, step 0 of :func:`simcore.train_grid`'s telemetry. The wide, large-batch limit is the
dashed line; the solid line is the same theory at this width and batch, by Monte Carlo of random
Gaussian networks in plain NumPy (:func:`studies.theory.random_mlp_telemetry`, independent of
simcore's kernels).
"""
import matplotlib.pyplot as plt
import numpy as np

import simcore
from studies import theory

depth, width, seeds = 16, 48, 8
X, y = simcore.datasets.teacher_student(n=128, d_in=8, hidden=(16,), seed=0)
sizes = [8] + [width] * (depth - 1) + [1]

fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
layers = np.arange(1, depth + 1)
fit = np.arange(3, depth - 1)   # away from the input layer and the un-normalised output layer
for k, (act, init) in enumerate([("relu", "glorot"), ("relu", "he"), ("tanh", "glorot")]):
    net = simcore.MLP(sizes, activation=act, loss="mse", init=init, batchnorm=True)
    res = simcore.train_grid(net, X, y, lr=0.0, steps=1, seeds=np.arange(seeds), record_every=1)
    g = res.history().query("step == 0").pivot(index="network", columns="layer", values="grad_norm")
    log_g = np.log(g.to_numpy())
    slopes = np.array([-np.polyfit(fit, r[fit - 1], 1)[0] for r in log_g])
    wide = theory.bn_log_gradient_growth(act)
    sigma_w2 = theory.sigma_w2_of_init(init, width, width)
    mc = theory.random_mlp_telemetry(act, X, y, width, depth, sigma_w2=sigma_w2, batchnorm=True,
                                     seeds=64, first_sigma_w2=theory.sigma_w2_of_init(init, 8, width))
    mc_slopes = np.array([-np.polyfit(fit, r[fit - 1], 1)[0] for r in np.log(mc["grad_norm"])])
    finite = mc_slopes.mean()
    mean = log_g.mean(0) - log_g.mean(0)[fit[-1] - 1]
    ax.plot(layers, mean, "o", ms=4, color=f"C{k}", label=f"{act}, {init}: measured")
    ax.plot(fit, finite * (fit[-1] - fit), color=f"C{k}", lw=1.2)
    ax.plot(fit, wide * (fit[-1] - fit), color=f"C{k}", lw=1, ls="--")
    print(f"{act:4s} {init:6s}: growth of ln||dL/dW_l|| per layer towards the input "
          f"{slopes.mean():.3f} +- {slopes.std(ddof=1) / np.sqrt(seeds):.3f}; theory at this width "
          f"and batch {finite:.3f} +- {mc_slopes.std(ddof=1) / np.sqrt(mc_slopes.size):.3f}, "
          f"wide limit 1/2 ln lambda_BN = {wide:.3f}")
ax.set(xlabel="layer l", ylabel=r"$\ln\|\partial L/\partial W_l\|$ (relative)",
       title="batch norm at initialisation: lines are theory")
ax.legend()
plt.show()
