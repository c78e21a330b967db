r"""
The neuron, and the activations with their derivatives
======================================================

A neuron computes :math:`z = \sum_i w_i x_i + b` and outputs :math:`a = f(z)`. simcore writes
each activation :math:`f` next to its derivative :math:`f'` (:mod:`simcore.scalar`), and
backpropagation multiplies by :math:`f'(z)` at every layer, so the shape of :math:`f'` decides
how a gradient travels: sigmoid's is at most 1/4, tanh's at most 1, relu's 0 or 1.

Here the array versions (:func:`simcore.activations.apply` and
:func:`simcore.activations.derivative`) are drawn over :math:`z \in [-5, 5]` and each
derivative is checked against a central difference of the activation itself.
"""
import matplotlib.pyplot as plt
import numpy as np

import simcore

# %%
# One neuron, as a one-layer network
# ----------------------------------
# :class:`simcore.MLP` with sizes ``[3, 1]`` is a single neuron; its prediction for ``bce``
# is :math:`\sigma(w \cdot x + b)`, computed here by hand beside it.
net = simcore.MLP([3, 1], activation="identity", loss="bce")
params = net.init(seed=0, bias_scale=0.5)
x = np.array([[1.0, -2.0, 0.5]])
z = x @ params[0]["W"] + params[0]["b"]
print("z = w.x + b =", z.item())
print("sigma(z) by hand:", 1 / (1 + np.exp(-z.item())), " simcore:", net.predict(params, x).item())

# %%
# Activations and derivatives
# ---------------------------
z = np.linspace(-5, 5, 401)
h = 1e-5
fig, (ax_f, ax_df) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
for name in ("sigmoid", "tanh", "relu", "leaky_relu", "softplus"):
    a = simcore.activations.apply(name, z)
    da = simcore.activations.derivative(name, z)
    # central difference away from relu's kink, where f' has no value to compare with
    smooth = np.abs(z) > 10 * h
    fd = (simcore.activations.apply(name, z + h) - simcore.activations.apply(name, z - h)) / (2 * h)
    print(f"{name:10s} max |f' - central difference| = {np.abs(da - fd)[smooth].max():.1e}")
    ax_f.plot(z, a, label=name)
    ax_df.plot(z, da, label=name)
ax_df.axhline(0.25, color="grey", ls=":", lw=1)
ax_df.annotate("sigmoid's maximum, 1/4", (-4.8, 0.28), color="grey")
ax_f.set(xlabel="z", ylabel="f(z)", title="activations", ylim=(-1.5, 5))
ax_df.set(xlabel="z", ylabel="f'(z)", title="derivatives")
ax_f.legend()
plt.show()
