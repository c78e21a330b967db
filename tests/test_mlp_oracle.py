"""PyTorch oracle: MLP.loss_and_grad against torch.nn + autograd on many random architectures."""
import numpy as np
import pytest
import torch

import simcore
from conftest import flat, max_rel_err
from simcore.activations import NAMES as ACTS
from simcore.losses import NAMES as LOSSES
from torch_oracle import torch_loss_and_grad, torch_model

torch.set_num_threads(1)


def random_case(i, dtype):
    """Architecture i of the sweep: cycles every activation x loss x batch-norm setting."""
    rng = np.random.default_rng(1000 + i)
    act = ACTS[i % len(ACTS)]
    loss = LOSSES[(i // len(ACTS)) % len(LOSSES)]
    bn = bool((i // (len(ACTS) * len(LOSSES))) % 2) if i < 48 else bool(i % 2)
    depth = int(rng.integers(1, 5))
    n_in = int(rng.integers(1, 6))
    n_out = int(rng.integers(2, 5)) if loss == "ce" else int(rng.integers(1, 3))
    sizes = [n_in] + [int(w) for w in rng.integers(1, 9, depth - 1)] + [n_out]
    if bn and len(sizes) == 2:
        sizes.insert(1, 3)  # batch norm needs a hidden layer to sit on
    init = simcore.init.INITS[i % len(simcore.init.INITS)]
    net = simcore.MLP(sizes, activation=act, loss=loss, batchnorm=bn, init=init, dtype=dtype)
    params = net.init(seed=i, scale=float(rng.uniform(0.5, 2.0)), bias_scale=float(rng.uniform(0, 0.5)))
    if bn:  # move gamma and beta off their defaults so their gradients are exercised
        for p in params[:-1]:
            p["gamma"][:] = rng.uniform(0.5, 1.5, p["gamma"].shape)
            p["beta"][:] = rng.normal(0, 0.3, p["beta"].shape)
    n = int(rng.integers(2, 40))
    X = rng.normal(size=(n, n_in)) * 1.5
    if loss == "ce":
        y = rng.integers(0, n_out, n)
    elif loss == "bce":
        y = rng.integers(0, 2, n) if n_out == 1 else rng.integers(0, 2, (n, n_out))
    elif loss == "mse_sigmoid":
        y = rng.uniform(0, 1, n) if n_out == 1 else rng.uniform(0, 1, (n, n_out))
    else:
        y = rng.normal(size=n) if n_out == 1 else rng.normal(size=(n, n_out))
    return net, params, X.astype(dtype), y


N_CASES = 60


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-4)])
def test_loss_and_grad_matches_torch(dtype, tol):
    covered = set()
    for i in range(N_CASES):
        net, params, X, y = random_case(i, dtype)
        covered.add((net.activation, net.loss, net.batchnorm))
        loss, grads = net.loss_and_grad(params, X, y)
        tloss, tgrads, _ = torch_loss_and_grad(net, params, X, y)
        assert abs(loss - tloss) <= tol * max(abs(tloss), 1e-3), (i, net, loss, tloss)
        # error relative to the largest entry of the whole gradient (some entries are exactly
        # zero in theory, e.g. a bias or beta just before batch norm, and come out as +-1e-17)
        g, tg = flat(grads), flat(tgrads)
        assert max_rel_err(g, tg) <= tol, (i, net, max_rel_err(g, tg))
    acts = {c[0] for c in covered}
    losses = {c[1] for c in covered}
    assert acts == set(ACTS) and losses == set(LOSSES) and {c[2] for c in covered} == {True, False}
    assert len({(a, lo, b) for a, lo, b in covered}) == len(ACTS) * len(LOSSES) * 2


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_batchnorm_eval_mode_matches_torch_after_training(activation):
    rng = np.random.default_rng(7)
    net = simcore.MLP([3, 6, 5, 2], activation=activation, loss="ce", batchnorm=True)
    params = net.init(seed=3)
    state = net.init_state()
    model, _ = torch_model(net, params)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sgd = simcore.Optimizer("sgd", eta=0.1)
    for step in range(5):
        X = rng.normal(size=(16, 3)) + step * 0.2
        y = rng.integers(0, 2, 16)
        loss, grads = net.loss_and_grad(params, X, y, state=state)
        opt.zero_grad()
        tloss, _, _ = torch_loss_and_grad(net, params, X, y, model=model)
        opt.step()
        sgd.step(params, grads)
        assert abs(loss - tloss) < 1e-10
    bns = [m for m in model if isinstance(m, torch.nn.BatchNorm1d)]
    for l, bn in enumerate(bns):
        assert max_rel_err(state[l]["running_mean"], bn.running_mean.numpy()) < 1e-10
        assert max_rel_err(state[l]["running_var"], bn.running_var.numpy()) < 1e-10
    model.eval()
    Xt = rng.normal(size=(7, 3))
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor(Xt)), dim=1).numpy()
    assert max_rel_err(net.predict(params, Xt, state=state), probs) < 1e-10
