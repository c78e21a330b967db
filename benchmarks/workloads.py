"""The workloads of the peers suite (``benchmarks/peers.py``) and their JAX implementation.

Every workload trains G MLPs of one architecture, full-batch gradient descent, each network
with its own learning rate ``lrs(w, G)[g]`` and its own Glorot-normal initial weights drawn here
from one seed (zero biases; batch norm's gamma 1, beta 0), so simcore and JAX start from the
same numbers and must reach the same losses.

- ``W1``: 2-16-16-1 tanh, BCE from logits, 256 two-moons samples, G = 256, 500 steps (the
  project's anchor workload, ``w1_peers.py``);
- ``W1-bn``: W1 with batch norm on both hidden layers;
- ``H32`` ... ``H256``: W1's shape 2-H-H-1 at width H, G = 128, 100 steps (``H16`` is W1's
  shape at the sweep's G and steps);
- ``digits``: 64-100-100-100-10 sigmoid, softmax cross-entropy, scikit-learn's 1797 digits
  (standardised), G = 32, 50 steps (Ioffe & Szegedy's MNIST network, scaled).

``flops(w)`` counts the useful arithmetic per training as the anchor does: three times the
forward pass's 2 n sum(fan_in x fan_out) per step.
"""
import numpy as np

from w1_peers import make_data as _moons  # the anchor's two moons

BN_EPS = 1e-5  # simcore.layers.BN_EPS (JAX's side must not import simcore)


def _digits():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = np.asarray(X, np.float64)
    sd = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0), y.astype(np.int64)


def _w(sizes, G, S, activation="tanh", loss="bce", data="moons", batchnorm=False):
    return dict(sizes=list(sizes), G=G, S=S, activation=activation, loss=loss, data=data,
                batchnorm=batchnorm)


WORKLOADS = {
    "W1": _w([2, 16, 16, 1], 256, 500),
    "W1-bn": _w([2, 16, 16, 1], 256, 500, batchnorm=True),
    **{f"H{H}": _w([2, H, H, 1], 128, 100) for H in (16, 32, 64, 128, 256)},
    "digits": _w([64, 100, 100, 100, 10], 32, 50, activation="sigmoid", loss="ce", data="digits"),
}


def data(w):
    """(X, y) of workload w (float64; y labels for ce, 0/1 for bce)."""
    return _moons(256) if w["data"] == "moons" else _digits()


def init_params(w, G, dtype, seed=0):
    """Per-layer dicts of stacked parameters (a leading G axis), simcore's ``params0`` layout."""
    rng = np.random.default_rng(seed)
    sizes = w["sizes"]
    out = []
    for l, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
        d = {"W": (rng.standard_normal((G, fi, fo)) * np.sqrt(2.0 / (fi + fo))).astype(dtype),
             "b": np.zeros((G, fo), dtype)}
        if w["batchnorm"] and l < len(sizes) - 2:
            d["gamma"] = np.ones((G, fo), dtype)
            d["beta"] = np.zeros((G, fo), dtype)
        out.append(d)
    return out


def lrs(w, G):
    return np.geomspace(1e-2, 3.0, G)


def flops(w, n, S):
    """Useful FLOPs of one training of S steps on n samples (3x the forward pass)."""
    sizes = w["sizes"]
    return 3 * 2 * n * sum(fi * fo for fi, fo in zip(sizes[:-1], sizes[1:])) * S


def run_jax(w, G, S, dtype, repeat):
    """Train with JAX jit(vmap(scan)); returns (final losses, seconds per call (median), compile s)."""
    import time
    import jax
    import jax.numpy as jnp
    if dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    X, y = data(w)
    K = w["sizes"][-1]
    Xj = jnp.asarray(X, dtype)
    Yj = jnp.asarray(np.eye(K)[y] if w["loss"] == "ce" else y[:, None], dtype)
    f_act = jnp.tanh if w["activation"] == "tanh" else jax.nn.sigmoid
    n_layers = len(w["sizes"]) - 1

    def logits(p):
        a = Xj
        for l in range(n_layers):
            z = a @ p[l]["W"] + p[l]["b"]
            if l == n_layers - 1:
                return z
            if "gamma" in p[l]:
                mean = z.mean(axis=0)
                var = ((z - mean) ** 2).mean(axis=0)
                z = p[l]["gamma"] * (z - mean) / jnp.sqrt(var + BN_EPS) + p[l]["beta"]
            a = f_act(z)

    def loss(p):
        z = logits(p)
        if w["loss"] == "ce":
            return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.sum(Yj * z, axis=1))
        return jnp.mean(jnp.logaddexp(0, z) - Yj * z)

    def train(p, eta):
        def step(p, _):
            g = jax.grad(loss)(p)
            return jax.tree_util.tree_map(lambda a, b: a - eta * b, p, g), None
        p, _ = jax.lax.scan(step, p, None, length=S)
        return loss(p)

    f = jax.jit(jax.vmap(train))
    P = [{k: jnp.asarray(v) for k, v in d.items()} for d in init_params(w, G, dtype)]
    lr = jnp.asarray(lrs(w, G), dtype)
    t = time.perf_counter()
    r = f(P, lr).block_until_ready()
    compile_s = time.perf_counter() - t
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = f(P, lr).block_until_ready()
        ts.append(time.perf_counter() - t)
    return np.asarray(r, np.float64), float(np.median(ts)), compile_s


def run_simcore(w, G, S, dtype, repeat, strategy="auto", nudge=False):
    """Train with simcore.train_grid; returns (final losses, seconds per call (median), first-call s,
    the strategy it ran). ``nudge``: every input moved by one ulp (towards +inf), to measure how
    much a network's trajectory amplifies a rounding difference."""
    import time
    import simcore
    X, y = data(w)
    if nudge:
        X = np.nextafter(X, np.inf)
    net = simcore.MLP(w["sizes"], activation=w["activation"], loss=w["loss"], dtype=np.dtype(dtype).name,
                      batchnorm=w["batchnorm"])
    P = init_params(w, G, dtype)
    lr = lrs(w, G)
    t = time.perf_counter()
    simcore.train_grid(net, X, y, lr=lr[:2], steps=1, params0=[{k: v[:2] for k, v in d.items()} for d in P],
                       strategy=strategy)
    first_s = time.perf_counter() - t
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        res = simcore.train_grid(net, X, y, lr=lr, steps=S, params0=P, record_every=S, strategy=strategy)
        ts.append(time.perf_counter() - t)
    return res.final_loss, float(np.median(ts)), first_s, str(res.config["strategy"].iloc[0])
