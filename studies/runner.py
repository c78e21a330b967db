"""Run a grid: group its points into chunks, train each chunk on a backend, store each part.

Points that differ only in per-network values (``lr``, ``seed``, ``init_scale``,
``bias_scale``, ``momentum``) share one :func:`simcore.train_grid` call; each group is cut into
chunks of at most ``chunk_size`` networks. A chunk's key is the hash of its configuration
(:func:`studies.store.chunk_key`), so a rerun finds the parts already stored and skips them.

Backends: ``cpu`` runs chunks one after the other in this process (the grid engine uses every
core); ``cuda`` does the same on the GPU engine; ``dask`` sends chunks to a Dask cluster whose
workers write their parts to the same store.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from simcore import datasets, perceptron
from simcore.grid import BACKENDS as GRID_BACKENDS

from . import spec as specmod
from .errors import StudyError
from .store import Store, chunk_key

BACKENDS = ("cpu", "cuda", "dask")
CLASSIFICATION_LOSSES = ("bce", "mse_sigmoid", "ce")


# --------------------------------------------------------------------------------------------
# data

_DATA_CACHE = {}


def make_data(name, args):
    """``datasets.load(name, **args)``, cached per process; ``blobs`` also returns its
    :class:`~simcore.datasets.MarginInfo`."""
    key = (name, json.dumps(args, sort_keys=True))
    if key not in _DATA_CACHE:
        kwargs = dict(args)
        if name == "blobs":
            kwargs["return_info"] = True
        try:
            out = datasets.load(name, **kwargs)
        except ValueError as e:
            raise StudyError(f"data set {name!r} with {args}: {e}") from None
        if len(_DATA_CACHE) > 64:
            _DATA_CACHE.clear()
        _DATA_CACHE[key] = out
    return _DATA_CACHE[key]


def output_width(loss, y):
    """Output units the data needs under ``loss``: classes for ce, columns of y for mse."""
    y = np.asarray(y)
    if loss == "ce":
        return int(y.max()) + 1
    if loss == "mse" and y.ndim == 2:
        return y.shape[1]
    return 1


def sizes_of(point, X, y):
    return [X.shape[1], *point["widths"], output_width(point["loss"], y)]


# --------------------------------------------------------------------------------------------
# plan

def group_key(p):
    if p["kind"] == "mlp":
        return json.dumps({k: v for k, v in p.items() if k not in specmod.MLP_PER_NETWORK + ("point",)},
                          sort_keys=True)
    return json.dumps({"grid": p["grid"], "kind": p["kind"]})


# Keys added after the store's first version: left out of a chunk's hash while at their default,
# so that parts stored before they existed still match.
_HASH_OMIT_AT_DEFAULT = {"probe_every": 0, "track_sharpness": False, "track_preact": False}


def _hashed(p):
    return {k: v for k, v in p.items() if not (k in _HASH_OMIT_AT_DEFAULT and v == _HASH_OMIT_AT_DEFAULT[k])}


def plan(spec):
    """The chunks of a grid: a list of dicts ``{key, kind, points}`` in a fixed order."""
    points = specmod.expand(spec)
    groups = {}
    for p in points:
        groups.setdefault(group_key(p), []).append(p)
    size = spec["chunk_size"]
    chunks = []
    for members in groups.values():
        for i in range(0, len(members), size):
            part = members[i:i + size]
            chunks.append({"key": chunk_key(part[0]["kind"], [_hashed(p) for p in part]), "kind": part[0]["kind"],
                           "points": part})
    return chunks


def check_data(chunks):
    """Build every data set the grid uses once, so a bad argument fails before training."""
    seen = set()
    for c in chunks:
        for p in c["points"]:
            k = (p["data"], json.dumps(p["data_args"], sort_keys=True))
            if k not in seen:
                seen.add(k)
                X, y = make_data(p["data"], p["data_args"])[:2]
                if p["kind"] == "perceptron" and np.unique(y).size != 2:
                    raise StudyError(f"grids.{p['grid']}: the perceptron needs two classes; data set "
                                     f"{p['data']!r} with {p['data_args']} has {np.unique(y).size}")
                if p["kind"] == "mlp" and p["loss"] in ("bce", "mse_sigmoid") and np.unique(y).size > 2:
                    raise StudyError(f"grids.{p['grid']}: loss {p['loss']!r} needs two classes; data set "
                                     f"{p['data']!r} has {np.unique(y).size} (use loss = \"ce\")")


# --------------------------------------------------------------------------------------------
# computing one chunk

def _config_columns(p):
    """A point's configuration as flat scalar columns (lists as text, data arguments prefixed
    ``data_``; the ``loss`` key is stored as ``loss_fn``, since ``loss`` is the measured value)."""
    cols = {}
    for k, v in p.items():
        if k == "loss":
            k = "loss_fn"
        if k == "data_args":
            for a, av in v.items():
                cols[f"data_{a}"] = json.dumps(av) if isinstance(av, (list, dict)) else av
        elif k == "widths":
            cols["widths"] = "-".join(map(str, v)) if v else "linear"
        else:
            cols[k] = v
    return cols


def _with_config(df, points, index_col):
    """Join per-point configuration columns onto rows that carry ``index_col`` (0..len-1)."""
    conf = pd.DataFrame([_config_columns(p) for p in points])
    idx = df[index_col].to_numpy()
    out = {c: conf[c].to_numpy()[idx] for c in conf.columns}
    clash = set(out) & set(df.columns)
    assert not clash, f"configuration and result columns clash: {clash}"
    out.update({c: df[c].to_numpy() for c in df.columns if c != index_col})
    return pd.DataFrame(out)


def run_mlp_chunk(points, backend="cpu"):
    """Train the chunk's networks in one :func:`simcore.train_grid` call (or one per probe
    segment); long-form rows, one per (network, recorded step, layer)."""
    from simcore import MLP

    p0 = points[0]
    X, y = make_data(p0["data"], p0["data_args"])[:2]
    sizes = sizes_of(p0, X, y)
    net = MLP(sizes, activation=p0["activation"], loss=p0["loss"], batchnorm=p0["batchnorm"],
              init=p0["init"], dtype=p0["dtype"])
    per = {k: np.array([p[k] for p in points]) for k in specmod.MLP_PER_NETWORK}
    per["seed"] = per["seed"].astype(np.uint64)
    if p0["probe_every"]:
        hist, final = _train_with_probes(net, X, y, p0, per, backend)
    else:
        res = _train(net, X, y, p0, per, 0, p0["steps"], None, backend)
        hist = res.history()
        final = pd.DataFrame({"network": np.arange(len(points)), "final_loss": res.final_loss,
                              "diverged": res.diverged, "diverged_at": res.diverged_at,
                              "final_accuracy": _accuracy(net, res.params, res.diverged, X, y)})
    hist = hist.merge(final, on="network", how="left")
    return _with_config(hist, points, "network")


def _train(net, X, y, p0, per, first, steps, params0, backend, ref=None):
    from simcore import train_grid

    batch = None if p0["batch_size"] == "full" else min(p0["batch_size"], X.shape[0])
    return train_grid(net, X, y, lr=per["lr"], steps=steps, seeds=per["seed"], params0=params0,
                      init_scale=per["init_scale"], bias_scale=per["bias_scale"],
                      optimizer=p0["optimizer"], momentum=per["momentum"], batch_size=batch,
                      record_every=p0["record_every"], divergence_ref=ref, backend=backend)


def _subset(params, idx):
    return [{k: v[idx] for k, v in layer.items()} for layer in params]


PROBE_COLUMNS = ("sharpness", "preact_p15", "preact_p50", "preact_p85")


def _probe(net, params, X, y, p0, seed):
    """Probe values of the G networks in ``params`` (stacked): sharpness (largest Hessian
    eigenvalue, compiled power iteration over all of them) and the 15/50/85th percentiles over
    samples of unit 0 of the last hidden layer's activation input."""
    G = len(params[0]["W"])
    out = {c: np.full(G, np.nan) for c in PROBE_COLUMNS}
    if p0["track_sharpness"]:
        from simcore.hessian import sharpness
        out["sharpness"] = np.asarray(sharpness(net, params, X, y, seed=seed), dtype=float)
    if p0["track_preact"]:
        for g in range(G):
            u = net.activation_inputs([{k: v[g] for k, v in layer.items()} for layer in params], X)[-1][:, 0]
            out["preact_p15"][g], out["preact_p50"][g], out["preact_p85"][g] = np.percentile(u, [15, 50, 85])
    return out


def _train_with_probes(net, X, y, p0, per, backend):
    """Full-batch gradient descent in segments of ``probe_every`` steps, probing between them.

    Gradient descent carries no state but the parameters, so the segments continue the same
    trajectory as one call would; the record at a segment's first step repeats the previous
    segment's last and is dropped. A network that diverges stays frozen at that step: it is
    left out of later segments (its rows end there, as in one call).
    """
    from simcore.grid import initial_params

    G = per["lr"].size
    steps, every = p0["steps"], p0["probe_every"]
    alive = np.arange(G)
    params = initial_params(net, per["seed"], per["init_scale"], per["bias_scale"])
    probes = [_probe_frame(net, params, X, y, p0, alive, 0)]
    final_loss, diverged_at = np.full(G, np.nan), np.full(G, -1, np.int64)
    final_params = [None] * G
    loss0 = None      # each network's initial loss: the divergence test of every segment uses it
    frames = []
    start = 0
    while start < steps and alive.size:
        seg = min(every, steps - start)
        sub = {k: v[alive] for k, v in per.items()}
        res = _train(net, X, y, p0, sub, start, seg, params, backend,
                     ref=None if loss0 is None else loss0[alive])
        h = res.history()
        if loss0 is None:
            at0 = h[(h["step"] == 0) & (h["layer"] == 1)].set_index("network")["loss"]
            loss0 = np.abs(at0.reindex(np.arange(G)).to_numpy(dtype=float))
        h["network"] = alive[h["network"].to_numpy()]
        h["step"] += start
        if start > 0:
            h = h[h["step"] > start]
        frames.append(h)
        final_loss[alive] = res.final_loss
        hit = res.diverged
        diverged_at[alive[hit]] = res.diverged_at[hit] + start
        for c, g in enumerate(alive):
            final_params[g] = [{k: v[c] for k, v in layer.items()} for layer in res.params]
        keep = ~hit
        params = _subset(res.params, np.flatnonzero(keep))
        alive = alive[keep]
        start += seg
        if alive.size:
            probes.append(_probe_frame(net, params, X, y, p0, alive, start))
    hist = pd.concat(frames, ignore_index=True)
    hist = hist.merge(pd.concat(probes, ignore_index=True), on=["network", "step"], how="left")
    hist = hist.sort_values(["network", "step", "layer"], kind="stable").reset_index(drop=True)
    diverged = diverged_at >= 0
    acc = np.full(G, np.nan)
    for g in range(G):
        if not diverged[g]:
            acc[g] = _accuracy(net, [{k: v[None] for k, v in layer.items()} for layer in final_params[g]],
                               np.zeros(1, bool), X, y)[0]
    final = pd.DataFrame({"network": np.arange(G), "final_loss": final_loss, "diverged": diverged,
                          "diverged_at": diverged_at, "final_accuracy": acc})
    return hist, final


def _probe_frame(net, params, X, y, p0, networks, step):
    vals = _probe(net, params, X, y, p0, seed=step)
    return pd.DataFrame({"network": networks, "step": np.full(networks.size, step, np.int64), **vals})


def _accuracy(net, stacked, diverged, X, y):
    """Training accuracy of each network at its final parameters (NaN for regression and for
    diverged networks); batch norm in training mode (the full data set's statistics)."""
    G = len(diverged)
    acc = np.full(G, np.nan)
    if net.loss not in CLASSIFICATION_LOSSES:
        return acc
    y = np.asarray(y)
    for g in range(G):
        if diverged[g]:
            continue
        params = [{k: v[g] for k, v in layer.items()} for layer in stacked]
        out = net.predict(params, X)
        if not np.isfinite(out).all():
            continue
        pred = out.argmax(axis=1) if out.ndim == 2 else (out > 0.5).astype(int)
        acc[g] = float(np.mean(pred == y))
    return acc


def run_perceptron_chunk(points):
    """Train one perceptron per point (the epoch loop is compiled); rows per (point, epoch)."""
    frames = []
    for i, p in enumerate(points):
        data = make_data(p["data"], p["data_args"])
        X, y = data[0], datasets.to_pm1(data[1])
        if len(data) == 3:   # blobs: the margin is known by construction
            gamma, R = data[2].margin_augmented, data[2].radius_augmented
        else:
            gamma, R = np.nan, perceptron.radius(X)
        r = perceptron.train(X, y, lr=p["lr"], max_epochs=p["epochs"], seed=p["seed"])
        E = r.epochs
        frames.append(pd.DataFrame({
            "index": np.full(E, i), "epoch": np.arange(1, E + 1),
            "mistakes": r.mistakes_per_epoch, "cumulative_mistakes": np.cumsum(r.mistakes_per_epoch),
            "total_mistakes": np.full(E, r.mistakes), "converged": np.full(E, r.converged),
            "epochs_run": np.full(E, E), "radius": np.full(E, R), "margin": np.full(E, gamma),
            "bound": np.full(E, perceptron.novikoff_bound(R, gamma) if gamma > 0 else np.nan),
            "final_accuracy": np.full(E, float(np.mean(r.predict(X) == y)))}))
    return _with_config(pd.concat(frames, ignore_index=True), points, "index")


def compute_chunk(chunk, backend="cpu"):
    """The rows of one chunk. simcore's ValueError (input it rejects) becomes a StudyError
    naming the sub-grid; any other exception is a bug and keeps its traceback."""
    try:
        if chunk["kind"] == "mlp":
            return run_mlp_chunk(chunk["points"], backend=backend)
        return run_perceptron_chunk(chunk["points"])
    except ValueError as e:
        raise StudyError(f"grids.{chunk['points'][0]['grid']}: {e}") from None


def execute_chunk(chunk, root, backend="cpu"):
    """Compute one chunk and store its part (what a Dask worker runs); returns the key."""
    store = Store(root)
    if not store.has(chunk["key"]):
        store.write(chunk["key"], compute_chunk(chunk, backend))
    return chunk["key"]


# --------------------------------------------------------------------------------------------
# running a grid

def _progress(total, initial, quiet, desc):
    from tqdm.auto import tqdm
    disable = quiet or not sys.stderr.isatty()
    return tqdm(total=total, initial=initial, unit="chunk", desc=desc, disable=disable,
                dynamic_ncols=True)


def run(spec, out, backend="cpu", scheduler=None, workers=None, quiet=False, log=print):
    """Compute every chunk of ``spec`` not yet stored under ``out``; return the chunks.

    Interrupting (Ctrl-C, SIGKILL) loses at most the chunks in flight: stored parts stay and
    the next call skips them.
    """
    if backend not in BACKENDS:
        raise StudyError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "cuda":
        _require_gpu()
    if backend != "dask" and (scheduler is not None or workers is not None):
        raise StudyError("--scheduler and --workers go with --backend dask")
    store = Store(out).prepare()
    chunks = plan(spec)
    check_data(chunks)
    todo = [c for c in chunks if not store.has(c["key"])]
    n_net = sum(len(c["points"]) for c in chunks)
    if not quiet:
        log(f"{spec['name']}: {n_net} trainings in {len(chunks)} chunks, "
            f"{len(chunks) - len(todo)} already stored in {out}")
    t0 = time.perf_counter()
    if todo:
        if backend == "dask":
            _run_dask(todo, store, len(chunks), scheduler, workers, quiet, spec["name"])
        else:
            grid_backend = "cuda" if backend == "cuda" else "cpu"
            with _progress(len(chunks), len(chunks) - len(todo), quiet, spec["name"]) as bar:
                for c in todo:
                    store.write(c["key"], compute_chunk(c, grid_backend))
                    bar.update(1)
    if not quiet:
        log(f"{spec['name']}: computed {len(todo)} chunks in {time.perf_counter() - t0:.1f} s")
    return chunks


def _require_gpu():
    """Fail before any training when the CUDA backend cannot run here."""
    if "cuda" not in GRID_BACKENDS:
        raise StudyError("--backend cuda is not available in this simcore; use --backend cpu or dask")
    try:
        from simcore.grid.cuda import require_gpu
        require_gpu()
    except ImportError:
        raise StudyError("--backend cuda needs numba-cuda (pip install 'simcore[cuda]'); "
                         "use --backend cpu or dask") from None
    except ValueError as e:
        raise StudyError(str(e).replace("backend='cpu'", "--backend cpu")) from None


def _run_dask(todo, store, total, scheduler, workers, quiet, desc):
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise StudyError("--backend dask needs dask[distributed] (pip install 'dask[distributed]')") from None
    cluster = None
    try:
        if scheduler is not None:
            try:
                client = Client(scheduler, timeout="5s")
            except (OSError, TimeoutError) as e:
                raise StudyError(f"cannot reach the Dask scheduler at {scheduler!r}: {e}") from None
        else:
            n = workers or 1
            if n < 1:
                raise StudyError(f"--workers must be >= 1, got {n}")
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            client = Client(cluster)
        with client:
            root = str(store.root.resolve())
            futures = [client.submit(execute_chunk, c, root, "cpu", key=f"chunk-{c['key']}", pure=False)
                       for c in todo]
            with _progress(total, total - len(todo), quiet, desc) as bar:
                for f in as_completed(futures):
                    f.result()   # re-raise a worker's error here
                    bar.update(1)
    finally:
        if cluster is not None:
            cluster.close()


def results(spec, out):
    """The grid's stored rows, in point order (raises StudyError if some chunk is missing)."""
    chunks = plan(spec)
    df = Store(out).read([c["key"] for c in chunks])
    order = [c for c in ("point", "step", "epoch", "layer") if c in df.columns]
    return df.sort_values(order, kind="stable").reset_index(drop=True)
