"""Write grid_defaults.json: the SHA-256 of train_grid's results at default options (no schedule,
weight decay, clipping or target), written by the commit before those options existed (bfea97a,
run with its simcore on PYTHONPATH); tests/test_grid_training.py checks that today's engine
still gives them bitwise. Usage: python tests/data/make_grid_defaults.py OUT.json"""
import hashlib
import json
import sys

import numpy as np

import simcore


def cases():
    """(name, train_grid keyword arguments) of the stored runs: every optimizer, minibatches,
    batch norm, and learning rates up to divergence, on both CPU strategies."""
    X, y = simcore.datasets.moons(24, seed=3)
    lr = np.geomspace(0.05, 400.0, 34)  # 34 networks: two blocks of lanes; the largest diverge
    runs = [("gd", None, False, "mse"), ("momentum", None, True, "bce"), ("nesterov", 5, False, "mse"),
            ("adam", 6, False, "bce"), ("sgd", 8, True, "mse")]
    for strategy in ("lanes", "gemm"):
        for opt, bs, bn, loss in runs:
            net = simcore.MLP([2, 5, 4, 1], activation="tanh", loss=loss, batchnorm=bn)
            yield (f"{strategy}-{opt}-{bs}-{bn}-{loss}",
                   dict(net=net, X=X, y=y, lr=lr, steps=13, optimizer=opt, batch_size=bs,
                        record_every=4, strategy=strategy))


def host():
    """The CPU the digests hold for (the explicit vectors and FMAs round per instruction set)."""
    from llvmlite import binding
    return f"{binding.get_host_cpu_name()} {binding.get_host_cpu_features().flatten()}"


def digest(a):
    """SHA-256 of an array's dtype, shape and bytes."""
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()


# the history's columns at bfea97a (later ones, such as the held-out columns, are new data)
HISTORY_COLUMNS = ["network", "step", "layer", "loss", "grad_norm", "weight_norm", "preact_mean",
                   "preact_std", "act_mean", "act_std", "saturated"]


def arrays(res):
    """The arrays of a result the stored file holds."""
    return {"final_loss": res.final_loss, "diverged_at": res.diverged_at,
            "theta": np.concatenate([res.params[l][k].reshape(len(res.final_loss), -1)
                                     for l in range(len(res.params)) for k in sorted(res.params[l])], axis=1),
            "history": res.history()[HISTORY_COLUMNS].to_numpy(np.float64)}


if __name__ == "__main__":
    out = {"host": host()}
    for name, kwargs in cases():
        for key, value in arrays(simcore.train_grid(**kwargs)).items():
            out[f"{name}/{key}"] = digest(value)
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
