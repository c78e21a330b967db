"""Workload W1 (copied unchanged in substance from the project's anchor shared/anchors/grid_peers.py,
so the repository is self-contained), done by the peers a user would otherwise pick, for side-by-side measurement.

W1: train G small MLPs (2-H-H-1, tanh hidden layers, sigmoid output with binary cross-entropy
from logits) full-batch on one shared 2-D two-moons data set (n samples) for S steps of plain
gradient descent; network g has its own initial weights (Glorot normal, zero biases, drawn
here from one seed so every implementation starts from the same numbers) and its own learning
rate lr[g] = geomspace(1e-2, 3.0, G)[g]. The result is each network's final loss: the mean loss at its parameters after S steps.

Implementations: torch_loop (a plain PyTorch training loop per network), torch_batched (stacked
weights, baddbmm, autograd), jax (jit(vmap(train)) with lax.scan over steps).
Needs: pip install jax jaxlib torch==2.13.0   (torch 2.13.0 is the CPU build on these machines)
Run:   python grid_peers.py jax --G 256 --dtype float64
Prints one JSON line: seconds (excluding JAX compile), trainings_per_s, gflops (3x forward flops),
and the median/first/last final loss, which any correct implementation reproduces to ~1e-12 in
float64 given the same initial weights (init_params below).
"""
import argparse, os, time, json, sys
import numpy as np

def make_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n // 2)
    a = np.c_[np.cos(t), np.sin(t)]
    b = np.c_[1 - np.cos(t), 1 - np.sin(t) - 0.5]
    X = np.r_[a, b] + 0.2 * rng.standard_normal((n, 2))
    y = np.r_[np.zeros(n // 2), np.ones(n // 2)]
    return X, y

def init_params(G, H, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    def glorot(fi, fo):
        return rng.standard_normal((G, fi, fo)) * np.sqrt(2.0 / (fi + fo))
    return [glorot(2, H).astype(dtype), np.zeros((G, H), dtype),
            glorot(H, H).astype(dtype), np.zeros((G, H), dtype),
            glorot(H, 1).astype(dtype), np.zeros((G, 1), dtype)]

def flops(n, H, S):
    fwd = 2 * n * (2 * H + H * H + H)
    return 3 * fwd * S  # fwd + ~2x for backward

def lrs_for(G):
    return np.geomspace(1e-2, 3.0, G)

def run_torch_loop(X, y, P, lr, S, dtype):
    import torch
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    Xt = torch.tensor(X, dtype=tdt); yt = torch.tensor(y, dtype=tdt)[:, None]
    G = P[0].shape[0]; out = np.empty(G)
    for g in range(G):
        m = torch.nn.Sequential(torch.nn.Linear(2, P[0].shape[2]), torch.nn.Tanh(),
                                torch.nn.Linear(P[2].shape[1], P[2].shape[2]), torch.nn.Tanh(),
                                torch.nn.Linear(P[4].shape[1], 1)).to(tdt)
        with torch.no_grad():
            for li, k in zip((0, 2, 4), (0, 2, 4)):
                m[li].weight.copy_(torch.tensor(P[k][g].T)); m[li].bias.copy_(torch.tensor(P[k + 1][g]))
        opt = torch.optim.SGD(m.parameters(), lr=float(lr[g]))
        lossf = torch.nn.BCEWithLogitsLoss()
        for _ in range(S):
            opt.zero_grad(); loss = lossf(m(Xt), yt); loss.backward(); opt.step()
        with torch.no_grad():
            out[g] = lossf(m(Xt), yt).item()
    return out

def run_torch_batched(X, y, P, lr, S, dtype):
    import torch
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    Xt = torch.tensor(X, dtype=tdt); yt = torch.tensor(y, dtype=tdt)[None, :, None]
    W = [torch.tensor(p, dtype=tdt).requires_grad_() for p in P]
    lrt = torch.tensor(lr, dtype=tdt)
    G = P[0].shape[0]
    Xb = Xt.expand(G, *Xt.shape)
    def per_net_loss():
        h = torch.tanh(torch.baddbmm(W[1][:, None, :], Xb, W[0]))
        h = torch.tanh(torch.baddbmm(W[3][:, None, :], h, W[2]))
        z = torch.baddbmm(W[5][:, None, :], h, W[4])
        return torch.nn.functional.binary_cross_entropy_with_logits(z, yt.expand_as(z), reduction="none").mean(dim=(1, 2))
    for _ in range(S):
        gr = torch.autograd.grad(per_net_loss().sum(), W)
        with torch.no_grad():
            for w, gw in zip(W, gr):
                w -= lrt.view(-1, *([1] * (w.dim() - 1))) * gw
    with torch.no_grad():
        return per_net_loss().numpy()

def run_jax_vmap(X, y, P, lr, S, dtype):
    import jax, jax.numpy as jnp
    if dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    Xj = jnp.asarray(X, dtype); yj = jnp.asarray(y, dtype)[:, None]
    def loss(p):
        h = jnp.tanh(Xj @ p[0] + p[1]); h = jnp.tanh(h @ p[2] + p[3]); z = h @ p[4] + p[5]
        return jnp.mean(jnp.logaddexp(0, z) - yj * z)
    def train(p, eta):
        def step(p, _):
            l, g = jax.value_and_grad(loss)(p)
            return [a - eta * b for a, b in zip(p, g)], l
        p, _ = jax.lax.scan(step, p, None, length=S)
        return loss(p)
    f = jax.jit(jax.vmap(train))
    Pj = [jnp.asarray(p, dtype) for p in P]
    r = f(Pj, jnp.asarray(lr, dtype)); r.block_until_ready()  # compile+run once
    return np.asarray(r), f, Pj, jnp.asarray(lr, dtype)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("impl"); ap.add_argument("--G", type=int, default=256); ap.add_argument("--H", type=int, default=16)
    ap.add_argument("--S", type=int, default=500); ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--dtype", default="float64")
    a = ap.parse_args()
    dtype = np.dtype(a.dtype).type
    X, y = make_data(a.n); X = X.astype(dtype); y = y.astype(dtype)
    P = init_params(a.G, a.H, dtype=dtype); lr = lrs_for(a.G).astype(dtype)
    t0 = time.perf_counter()
    if a.impl == "jax":
        _, f, Pj, lj = run_jax_vmap(X, y, P, lr, a.S, dtype); tc = time.perf_counter() - t0
        t0 = time.perf_counter(); r = np.asarray(f(Pj, lj).block_until_ready()); dt = time.perf_counter() - t0
    else:
        fn = {"torch_loop": run_torch_loop, "torch_batched": run_torch_batched}[a.impl]
        tc = 0.0; r = fn(X, y, P, lr, a.S, dtype); dt = time.perf_counter() - t0
    fl = flops(a.n, a.H, a.S) * a.G
    print(json.dumps(dict(impl=a.impl, G=a.G, H=a.H, S=a.S, n=a.n, dtype=a.dtype, seconds=round(dt, 4),
                          compile_s=round(tc, 3), trainings_per_s=round(a.G / dt, 2), gflops=round(fl / dt / 1e9, 3),
                          loss_median=float(np.nanmedian(r)), loss_first=float(r[0]), loss_last=float(r[-1]))))

if __name__ == "__main__":
    main()
