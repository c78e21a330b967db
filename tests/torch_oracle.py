"""The same network in PyTorch (torch.nn, built by :func:`simcore.interop.to_torch`), its loss and
gradients by autograd."""
import copy

import numpy as np
import torch

from simcore.interop import from_torch, to_torch, torch_loss as loss_module, torch_targets


def torch_model(net, params):
    """(torch.nn.Sequential computing net's logits, its torch dtype)."""
    model = to_torch(net, params)
    return model, next(model.parameters()).dtype


def torch_loss(net, z, y):
    """net's mean loss of torch logits z against simcore's targets y."""
    return loss_module(net)(z, torch_targets(net, y))


def torch_grads(net, model):
    """The gradients autograd left in ``model``'s parameters, in simcore's layout (from_torch of
    a copy of the module holding them as its values)."""
    holder = copy.deepcopy(model)
    with torch.no_grad():
        for p, q in zip(model.parameters(), holder.parameters()):
            q.copy_(p.grad)
    return from_torch(holder, loss=net.loss)[1]


def torch_loss_and_grad(net, params, X, y, model=None):
    """(loss, grads like params, model) by torch autograd in training mode."""
    if model is None:
        model, tdt = torch_model(net, params)
    else:
        tdt = next(model.parameters()).dtype
    model.train()
    model.zero_grad()
    loss = torch_loss(net, model(torch.tensor(np.asarray(X), dtype=tdt)), y)
    loss.backward()
    return loss.item(), torch_grads(net, model), model
