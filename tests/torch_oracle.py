"""Build the same network in PyTorch (torch.nn) and compute its loss and gradients by autograd."""
import numpy as np
import torch

TORCH_ACT = {
    "identity": torch.nn.Identity,
    "sigmoid": torch.nn.Sigmoid,
    "tanh": torch.nn.Tanh,
    "relu": torch.nn.ReLU,
    "leaky_relu": lambda: torch.nn.LeakyReLU(0.01),
    "softplus": lambda: torch.nn.Softplus(beta=1.0, threshold=1e9),  # exact log(1 + e^z)
}


def torch_model(net, params):
    tdt = torch.float64 if net.dtype == np.float64 else torch.float32
    mods = []
    for l, p in enumerate(params):
        lin = torch.nn.Linear(*p["W"].shape).to(tdt)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(p["W"].T))
            lin.bias.copy_(torch.tensor(p["b"]))
        mods.append(lin)
        if l < len(params) - 1:
            if "gamma" in p:
                bn = torch.nn.BatchNorm1d(p["W"].shape[1]).to(tdt)
                with torch.no_grad():
                    bn.weight.copy_(torch.tensor(p["gamma"]))
                    bn.bias.copy_(torch.tensor(p["beta"]))
                mods.append(bn)
            mods.append(TORCH_ACT[net.activation]())
    return torch.nn.Sequential(*mods).to(tdt), tdt


def torch_loss(net, z, y, tdt):
    F = torch.nn.functional
    if net.loss == "ce":
        return F.cross_entropy(z, torch.tensor(np.asarray(y), dtype=torch.long))
    yt = torch.tensor(np.asarray(y), dtype=tdt).reshape(z.shape)
    if net.loss == "bce":
        return F.binary_cross_entropy_with_logits(z, yt)
    if net.loss == "mse_sigmoid":
        return F.mse_loss(torch.sigmoid(z), yt)
    return F.mse_loss(z, yt)


def torch_loss_and_grad(net, params, X, y, model=None):
    """(loss, grads like params, model) by torch autograd in training mode."""
    if model is None:
        model, tdt = torch_model(net, params)
    else:
        tdt = next(model.parameters()).dtype
    model.train()
    model.zero_grad()
    loss = torch_loss(net, model(torch.tensor(X, dtype=tdt)), y, tdt)
    loss.backward()
    grads, mods = [], [m for m in model if isinstance(m, (torch.nn.Linear, torch.nn.BatchNorm1d))]
    it = iter(mods)
    for p in params:
        lin = next(it)
        g = {"W": lin.weight.grad.numpy().T.copy(), "b": lin.bias.grad.numpy().copy()}
        if "gamma" in p:
            bn = next(it)
            g["gamma"] = bn.weight.grad.numpy().copy()
            g["beta"] = bn.bias.grad.numpy().copy()
        grads.append(g)
    return loss.item(), grads, model
