"""Run a grid: group its points into chunks, train each chunk on a backend, store each part.

Points that differ only in per-network values (``lr``, ``seed``, ``init_scale``,
``bias_scale``, ``momentum``) share one :func:`simcore.train_grid` call; each group is cut into
chunks of at most ``chunk_size`` networks. A chunk's key is the hash of its configuration
(:func:`studies.store.chunk_key`), so a rerun finds the parts already stored and skips them.

Backends: ``cpu`` runs chunks one after the other in this process (the grid engine uses every
core); ``cuda`` does the same on the GPU engine; ``dask`` sends chunks to a Dask cluster whose
workers write their parts to the same store.
"""
import collections
import contextlib
import heapq
import itertools
import json
import math
import sys
import time

import numpy as np
import pandas as pd

from simcore import datasets, perceptron
from simcore.grid import BACKENDS as GRID_BACKENDS, record_bytes

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
            # the studies' own data sets (studies.perceptron_data) beside simcore's
            gen = specmod.STUDY_DATASETS.get(name)
            out = gen(**kwargs) if gen else datasets.load(name, **kwargs)
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


def _split(spec, gname):
    """(shared, per): the positions of the sub-grid's shared and per-network axes."""
    g = spec["grids"][gname]
    names = [k for k, _ in g["axes"]]
    per = [i for i, k in enumerate(names) if g["kind"] == "perceptron" or k in specmod.MLP_PER_NETWORK]
    return [i for i in range(len(names)) if i not in per], per


def _json(v):
    return json.dumps(v, sort_keys=True, default=str)


def _classes(vals):
    """For each position of an axis, the first position holding the same value (as a point
    records it, by its JSON); a span's values are distinct unless its floats coincide."""
    if isinstance(vals, specmod.Span):
        if vals.form == "range" or len(vals) < 2:
            return None                         # the identity: every value its own
        fn = np.geomspace if vals.form == "geomspace" else np.linspace
        arr = fn(vals.args[0], vals.args[1], len(vals))
        if np.all(arr[1:] != arr[:-1]) and (np.all(arr[1:] > arr[:-1]) or np.all(arr[1:] < arr[:-1])):
            return None
        first = {}
        return [first.setdefault(_json(vals[i]), i) for i in range(len(vals))]
    first = {}
    out = [first.setdefault(_json(v), i) for i, v in enumerate(vals)]
    return None if out == list(range(len(vals))) else out


def _group_structure(spec, gname):
    """How the shared axes of a sub-grid make train_grid groups, without listing them: two
    shared settings make the same network when every axis holds the same value, except that at
    ``depth = 1`` every ``width`` makes the same linear model. Returns (shared, per, lengths,
    classes, width, depth): ``classes[k]`` maps a shared axis's positions to the first one of
    equal value (``None``: all distinct); ``width``/``depth`` index ``shared`` (or ``None``)."""
    g = spec["grids"][gname]
    shared, per = _split(spec, gname)
    axes = [g["axes"][i] for i in shared]
    names = [k for k, _ in axes]
    lengths = [len(v) for _, v in axes]
    classes = [_classes(v) for _, v in axes]
    width = names.index("width") if g["kind"] == "mlp" and "width" in names else None
    depth = names.index("depth") if width is not None else None
    return shared, per, lengths, classes, width, depth


def _iter_groups(spec, gname):
    """The train_grid groups of one sub-grid, one at a time, in the order of their first
    point: lists of position tuples of the shared axes (several when two settings make the
    same network, e.g. ``depth = 1`` at every ``width``), with the positions of the shared and
    the per-network axes. Only one group exists at a time."""
    shared, per, lengths, classes, width, depth = _group_structure(spec, gname)
    axes = [spec["grids"][gname]["axes"][i][1] for i in shared]
    members = [None if c is None else {} for c in classes]
    for k, c in enumerate(classes):
        if c is not None:
            for i, j in enumerate(c):
                members[k].setdefault(j, []).append(i)
    linear = set() if depth is None else {i for i in range(lengths[depth]) if axes[depth][i] == 1}

    def choices(k, pos):
        if k == width and pos[depth] in linear:
            return range(lengths[width]) if pos[width] == 0 else None
        c = classes[k]
        if c is None:
            return (pos[k],)
        return members[k][pos[k]] if c[pos[k]] == pos[k] else None

    for pos in itertools.product(*[range(n) for n in lengths]):
        opts = []
        for k in range(len(lengths)):
            o = choices(k, pos)
            if o is None:
                break
            opts.append(o)
        else:
            yield list(itertools.product(*opts)), shared, per


def _group_sizes(spec, gname):
    """``{shared settings in a group: number of such groups}`` of one sub-grid, counted from
    its axes (equal values and the linear ``depth = 1`` merge as in :func:`_iter_groups`)."""
    shared, per, lengths, classes, width, depth = _group_structure(spec, gname)
    axes = [spec["grids"][gname]["axes"][i][1] for i in shared]

    def sizes(k):                       # {class size: classes} of shared axis k
        c = classes[k]
        return {1: lengths[k]} if c is None else collections.Counter(collections.Counter(c).values())

    out = collections.Counter({1: 1})
    for k in range(len(lengths)):
        if k == width:
            continue                    # counted with depth
        if k == depth:
            c = classes[depth]
            n_equal = collections.Counter(c) if c is not None else None
            factor, by_width = collections.Counter(), sizes(width)
            for i in range(lengths[depth]):
                if c is not None and c[i] != i:
                    continue
                n = 1 if c is None else n_equal[i]
                if axes[depth][i] == 1:     # a linear model: every width the same
                    factor[n * lengths[width]] += 1
                else:
                    for m, cnt in by_width.items():
                        factor[n * m] += cnt
        else:
            factor = sizes(k)
        out = _times(out, factor)
    return out


def _times(a, b):
    out = collections.Counter()
    for m, c in a.items():
        for m2, c2 in b.items():
            out[m * m2] += c * c2
    return out


def _members(spec, gname, offset, combos, shared, per):
    """The points of one group in point order: for each shared setting, the product of the
    per-network axes (merged by point number when a group has several settings)."""
    axes = spec["grids"][gname]["axes"]
    lengths = [len(v) for _, v in axes]
    strides = [math.prod(lengths[i + 1:]) for i in range(len(lengths))]
    per_lengths = [lengths[i] for i in per]

    def stream(pos):
        full = [0] * len(axes)
        for i, j in zip(shared, pos):
            full[i] = j
        for flat in range(math.prod(per_lengths)):
            for i, n in zip(reversed(per), reversed(per_lengths)):
                flat, full[i] = divmod(flat, n)
            yield offset + sum(j * s for j, s in zip(full, strides)), tuple(full)

    for index, full in heapq.merge(*[stream(pos) for pos in combos]):
        yield specmod.make_point(spec, gname, full, index)


def iter_chunks(spec):
    """The chunks of a grid, one at a time (a dict ``{key, kind, points}`` each), in a fixed
    order: points of one train_grid group, cut into chunks of ``chunk_size``. Only one chunk's
    points exist at a time, so a grid of 10^6 points starts at once."""
    size = spec["chunk_size"]
    offset = 0
    for gname, n in specmod.count(spec).items():
        for combos, shared, per in _iter_groups(spec, gname):
            part = []
            for p in _members(spec, gname, offset, combos, shared, per):
                part.append(p)
                if len(part) == size:
                    yield _chunk(part)
                    part = []
            if part:
                yield _chunk(part)
        offset += n


def _chunk(points):
    return {"key": chunk_key(points[0]["kind"], points), "kind": points[0]["kind"], "points": points}


def plan(spec):
    """The chunks of a grid: a list of dicts ``{key, kind, points}`` in a fixed order."""
    return list(iter_chunks(spec))


def chunk_count(spec):
    """The number of chunks of ``spec``, counted from the axes (no point or group is built)."""
    total = 0
    for gname in spec["grids"]:
        _, per = _split(spec, gname)
        axes = spec["grids"][gname]["axes"]
        n_per = math.prod(len(axes[i][1]) for i in per)
        total += sum(count * -(-m * n_per // spec["chunk_size"])
                     for m, count in _group_sizes(spec, gname).items())
    return total


# check_data builds at most this many data sets of a sub-grid before training: every value of
# a short list axis, the two ends of a long or range one; the rest are checked chunk by chunk
_DATA_SAMPLE = 64


def _data_settings(spec):
    """A bounded sample of each sub-grid's data sets: ``(grid, kind, name, args, axes as a
    dict)`` for at most :data:`_DATA_SAMPLE` settings of its data axes."""
    for gname, g in spec["grids"].items():
        data = [(k, v) for k, v in g["axes"] if k.startswith("data.")]
        positions = [range(len(v)) if not isinstance(v, specmod.Span) and len(v) <= 16
                     else sorted({0, len(v) - 1}) for _, v in data]
        for pos in itertools.islice(itertools.product(*positions), _DATA_SAMPLE):
            args = {k[5:]: v[i] for (k, v), i in zip(data, pos)}
            yield gname, g["kind"], args.pop("name"), dict(sorted(args.items())), dict(g["axes"])


def check_data(spec):
    """Build a sample of the data sets the grid uses (``_data_settings``), so that a bad
    argument fails before training: the perceptron and binary losses need two classes, a batch
    size at most the sample count (as ``simcore.train_grid`` requires). Every chunk checks its
    own data sets again when it is computed (:func:`~studies.runner.check_chunk_data`)."""
    for gname, kind, name, args, axes in _data_settings(spec):
        sizes = axes.get("batch_size", [])
        if isinstance(sizes, specmod.Span):       # a range: its largest value is its last
            sizes = [sizes[len(sizes) - 1]]
        _check_data_set(gname, kind, name, args, axes.get("loss", [specmod.MLP_DEFAULTS["loss"]]), sizes)


def check_chunk_data(points):
    """:func:`check_data` for the data sets of one chunk's points (StudyError naming the
    sub-grid and the data set)."""
    seen = set()
    for p in points:
        key = (p["data"], json.dumps(p["data_args"], sort_keys=True), p.get("loss"), p.get("batch_size"))
        if key in seen:
            continue
        seen.add(key)
        mlp = p["kind"] == "mlp"
        _check_data_set(p["grid"], p["kind"], p["data"], p["data_args"], [p["loss"]] if mlp else [],
                        [p["batch_size"]] if mlp else [])


def _check_data_set(gname, kind, name, args, losses, batch_sizes):
    X, y = make_data(name, args)[:2]
    classes = np.unique(y).size
    if kind == "perceptron" and classes != 2:
        raise StudyError(f"grids.{gname}: the perceptron needs two classes; data set "
                         f"{name!r} with {args} has {classes}")
    if kind != "mlp":
        return
    binary = [lo for lo in losses if lo in ("bce", "mse_sigmoid")]
    if binary and classes > 2:
        raise StudyError(f"grids.{gname}: loss {binary[0]!r} needs two classes; data set "
                         f"{name!r} has {classes} (use loss = \"ce\")")
    for b in batch_sizes:
        if b != "full" and b > X.shape[0]:
            raise StudyError(f"grids.{gname}.batch_size ({b}) exceeds the {X.shape[0]} samples of "
                             f"data set {name!r} with {args}; use at most {X.shape[0]} or \"full\"")


# --------------------------------------------------------------------------------------------
# computing one chunk

def _config_columns(p):
    """A point's configuration as flat scalar columns (lists as text; the ``loss`` key is stored
    as ``loss_fn``, since ``loss`` is the measured value). The data set's arguments are stored
    twice: whole, as the canonical JSON text ``data_args`` (the grid's values exactly, read back
    by :func:`studies.rows.data_args`), and one ``data_<name>`` column each, to group and plot by
    (a column another sub-grid lacks reads back empty there)."""
    cols = {}
    for k, v in p.items():
        if k == "loss":
            k = "loss_fn"
        if k == "data_args":
            cols["data_args"] = json.dumps(v, sort_keys=True)
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
    held = None
    if p0["holdout"] > 0:
        X, y, Xh, yh = split_holdout(X, y, p0["holdout"], p0["grid"])
        held = (Xh, yh)
    per = {k: np.array([p[k] for p in points]) for k in specmod.MLP_PER_NETWORK}
    per["seed"] = per["seed"].astype(np.uint64)
    if p0["probe_every"]:
        hist, final = _train_with_probes(net, X, y, p0, per, backend, held=held)
    else:
        res = _train(net, X, y, p0, per, 0, p0["steps"], None, backend, held=held)
        hist = res.history()
        final = _final(res.final_loss, res.diverged, res.diverged_at,
                       _accuracy(net, res.params, res.diverged, X, y), res.final_val_loss,
                       res.final_val_accuracy)
    hist = hist.merge(final, on="network", how="left")
    return _with_config(hist, points, "network")


# per-network outcome columns of an MLP chunk (on every row of the network); the held-out ones
# are NaN without a held-out split (holdout = 0) and for a diverged network
FINAL_COLUMNS = ("final_loss", "diverged", "diverged_at", "final_accuracy", "final_val_loss",
                 "final_val_accuracy")
# the result columns of a perceptron chunk's rows (one per run and epoch)
PERCEPTRON_COLUMNS = ("epoch", "mistakes", "cumulative_mistakes", "total_mistakes", "converged",
                      "epochs_run", "radius", "margin", "bound", "final_accuracy")


def _final(final_loss, diverged, diverged_at, accuracy, val_loss, val_accuracy):
    """One row per network 0..G-1 with its :data:`FINAL_COLUMNS`; the held-out values (from
    :func:`simcore.train_grid`'s kernel) NaN for a diverged network, as its accuracy."""
    gone = np.asarray(diverged, bool)
    values = (final_loss, diverged, diverged_at, accuracy, np.where(gone, np.nan, val_loss),
              np.where(gone, np.nan, val_accuracy))
    return pd.DataFrame({"network": np.arange(len(final_loss)), **dict(zip(FINAL_COLUMNS, values))})


def _train(net, X, y, p0, per, first, steps, params0, backend, ref=None, held=None):
    from simcore import train_grid

    batch = None if p0["batch_size"] == "full" else p0["batch_size"]
    # train_grid refuses a momentum for an optimizer that ignores it (gd, sgd, adam)
    extra = {"momentum": per["momentum"]} if p0["optimizer"] in specmod.MOMENTUM_OPTIMIZERS else {}
    return train_grid(net, X, y, lr=per["lr"], steps=steps, seeds=per["seed"], params0=params0,
                      init_scale=per["init_scale"], bias_scale=per["bias_scale"],
                      optimizer=p0["optimizer"], batch_size=batch, record_every=p0["record_every"],
                      validation=held, divergence_ref=ref, backend=backend, **extra)


def _subset(params, idx):
    return [{k: v[idx] for k, v in layer.items()} for layer in params]


PROBE_COLUMNS = ("sharpness", "preact_p15", "preact_p50", "preact_p85")
# probe columns present only when their flag is on (so other grids' rows keep their columns)
PRENORM_COLUMNS = ("prenorm_p15", "prenorm_p50", "prenorm_p85")
ACCURACY_COLUMNS = ("train_accuracy", "holdout_accuracy")
# vanishing-gradients: the share of hidden relu units never active over the data (track_dead)
DEAD_COLUMNS = ("dead_share",)
# the held-out split's permutation is drawn from this seed, the same for every network
HOLDOUT_SEED = 0


def split_holdout(X, y, fraction, grid="?"):
    """(X_train, y_train, X_held, y_held): a fixed random permutation of the samples (seed
    ``HOLDOUT_SEED``), its first ``round(fraction * n)`` held out, the rest, in their original
    order, for training."""
    n = X.shape[0]
    n_held = int(round(fraction * n))
    if n_held < 1 or n - n_held < 2:
        raise StudyError(f"grids.{grid}.holdout = {fraction} holds out {n_held} of {n} samples; it "
                         f"must leave at least 1 held-out and 2 training samples")
    held = np.sort(np.random.default_rng(HOLDOUT_SEED).permutation(n)[:n_held])
    train = np.setdiff1d(np.arange(n), held)
    y = np.asarray(y)
    return X[train], y[train], X[held], y[held]


def _labels(out):
    """The class a network's output picks: argmax of several outputs, probability > 1/2 of one."""
    return out.argmax(axis=1) if out.ndim == 2 else (out > 0.5).astype(int)


def _logit_accuracy(logits, y):
    """Accuracy of the class the logits pick: argmax for several outputs, logit > 0 (probability
    > 1/2) for one; NaN if a logit is not finite."""
    if not np.isfinite(logits).all():
        return np.nan
    pred = logits.argmax(axis=1) if logits.shape[1] > 1 else (logits[:, 0] > 0).astype(int)
    return float(np.mean(pred == np.asarray(y)))


def _held_out_logits(net, params, fw, Xh):
    """The logits of one network on held-out ``Xh``; with batch norm, normalised by the
    statistics of ``fw`` (:meth:`simcore.MLP.forward` on the training set; full-batch
    training: those are the population statistics)."""
    return net.forward(params, Xh, fw.state() if net.batchnorm else None).logits


def holdout_accuracy(net, params, X, Xh, yh):
    """Accuracy of one network on held-out (Xh, yh), batch norm normalised by the training
    set X's statistics (``_held_out_logits``)."""
    return _logit_accuracy(_held_out_logits(net, params, net.forward(params, X), Xh), yh)


def _probe(net, params, X, y, p0, seed, held=None):
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
    if p0["track_prenorm"] or p0["track_accuracy"]:
        extra = ((PRENORM_COLUMNS if p0["track_prenorm"] else ())
                 + (ACCURACY_COLUMNS if p0["track_accuracy"] else ()))
        out.update({c: np.full(G, np.nan) for c in extra})
        from threadpoolctl import threadpool_limits
        # one network's small matrix products: BLAS threads cost more than they save here
        with threadpool_limits(1, user_api="blas"):
            for g in range(G):
                # one forward pass gives z, the training accuracy and the held-out statistics
                one = [{k: v[g] for k, v in layer.items()} for layer in params]
                fw = net.forward(one, X)
                if p0["track_prenorm"]:
                    u = fw.z[-1][:, 0]
                    if np.isfinite(u).all():
                        out["prenorm_p15"][g], out["prenorm_p50"][g], out["prenorm_p85"][g] = \
                            np.percentile(u, [15, 50, 85])
                if p0["track_accuracy"]:
                    out["train_accuracy"][g] = _logit_accuracy(fw.logits, y)
                    if held is not None:
                        out["holdout_accuracy"][g] = _logit_accuracy(
                            _held_out_logits(net, one, fw, held[0]), held[1])
    if p0.get("track_dead"):
        # a relu unit is dead on the data when its activation input is <= 0 for every sample
        out.update({c: np.full(G, np.nan) for c in DEAD_COLUMNS})
        for g in range(G):
            ys = net.activation_inputs([{k: v[g] for k, v in layer.items()} for layer in params], X)
            if all(np.isfinite(u).all() for u in ys):
                out["dead_share"][g] = float(np.mean(np.concatenate([(u <= 0).all(axis=0) for u in ys])))
    return out


def _train_with_probes(net, X, y, p0, per, backend, held=None):
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
    probes = [_probe_frame(net, params, X, y, p0, alive, 0, held)]
    final_loss, diverged_at = np.full(G, np.nan), np.full(G, -1, np.int64)
    final_val = np.full((2, G), np.nan)  # held-out loss and accuracy at each network's end
    final_params = [None] * G
    loss0 = None      # each network's initial loss: the divergence test of every segment uses it
    frames = []
    start = 0
    while start < steps and alive.size:
        seg = min(every, steps - start)
        sub = {k: v[alive] for k, v in per.items()}
        res = _train(net, X, y, p0, sub, start, seg, params, backend,
                     ref=None if loss0 is None else loss0[alive], held=held)
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
        final_val[:, alive] = res.final_val_loss, res.final_val_accuracy
        hit = res.diverged
        diverged_at[alive[hit]] = res.diverged_at[hit] + start
        for c, g in enumerate(alive):
            final_params[g] = [{k: v[c] for k, v in layer.items()} for layer in res.params]
        keep = ~hit
        params = _subset(res.params, np.flatnonzero(keep))
        alive = alive[keep]
        start += seg
        if alive.size:
            probes.append(_probe_frame(net, params, X, y, p0, alive, start, held))
    hist = pd.concat(frames, ignore_index=True)
    hist = hist.merge(pd.concat(probes, ignore_index=True), on=["network", "step"], how="left")
    hist = hist.sort_values(["network", "step", "layer"], kind="stable").reset_index(drop=True)
    diverged = diverged_at >= 0
    acc = np.full(G, np.nan)
    for g in range(G):
        if not diverged[g]:
            acc[g] = _accuracy(net, [{k: v[None] for k, v in layer.items()} for layer in final_params[g]],
                               np.zeros(1, bool), X, y)[0]
    final = _final(final_loss, diverged, diverged_at, acc, final_val[0], final_val[1])
    return hist, final


def _probe_frame(net, params, X, y, p0, networks, step, held=None):
    vals = _probe(net, params, X, y, p0, seed=step, held=held)
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
        acc[g] = float(np.mean(_labels(out) == y))
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
    check_chunk_data(chunk["points"])
    try:
        if chunk["kind"] == "mlp":
            return run_mlp_chunk(chunk["points"], backend=backend)
        return run_perceptron_chunk(chunk["points"])
    except ValueError as e:
        raise StudyError(f"grids.{chunk['points'][0]['grid']}: {e}") from None


def execute_chunk(chunk, root, backend="cpu"):
    """Compute one chunk and store its part unless an intact one is there (what a Dask worker
    runs: it writes without the lock, which its client holds); returns the key."""
    store = Store(root)
    if store.check(chunk["key"]) is not None:
        store.write(chunk["key"], compute_chunk(chunk, backend))
    return chunk["key"]


# --------------------------------------------------------------------------------------------
# sizes: what a grid will cost, told (and bounded) before any work

#: Trainings past which ``simstudy run`` refuses a grid unless told ``--yes``.
MAX_TRAININGS = 10**6
#: Bytes of results past which ``simstudy run`` refuses a grid unless told ``--yes``.
MAX_RESULT_BYTES = 8 * 2**30
# floating-point operations per second of the grid engine, for the rough time: on the CPU the
# full presets ran at 4-5 GFLOP/s (24 for batchnorm's wide networks, the per-network strategy);
# the GPU figure is a guess ten times that, not a measurement
CPU_FLOPS = 5e9
GPU_FLOPS = 5e10
# and the work around the training, measured on the CPU (data, history frames, accuracy,
# Parquet): about 0.05 s a chunk of one network, 0.19 s a chunk of 256 small ones
CHUNK_OVERHEAD_S = 0.05
NETWORK_OVERHEAD_S = 5e-4


def _records(p):
    return p["steps"] // p["record_every"] + 2


def _cost(p, data):
    """(result bytes, chunk buffer bytes for one network, flops or None) of training point ``p``."""
    cols = len(p) + 12
    if p["kind"] == "mlp":
        rows = (_records(p) - 1) * p["depth"]
        telemetry = _records(p) * record_bytes(p["depth"])
    else:
        rows, telemetry = p["epochs"], 0
    flops = None
    if data:
        X, y = make_data(p["data"], p["data_args"])[:2]
        if p["kind"] == "mlp":
            sizes = sizes_of(p, X, y)
            batch = X.shape[0] if p["batch_size"] == "full" else min(p["batch_size"], X.shape[0])
            flops = 6 * p["steps"] * batch * sum(a * b for a, b in zip(sizes, sizes[1:]))
        else:
            flops = 2 * p["epochs"] * X.size
    return rows * cols * 8, telemetry + rows * cols * 8, flops


# a sub-grid with more train_grid groups than this is estimated from its first and last point
_GROUPS_COUNTED = 10**4


def estimate(spec, data=True):
    """What running ``spec`` costs: ``trainings``, ``result_bytes`` (the long-form rows the
    report loads: one row per recorded step and layer, 8 bytes a column), ``chunk_bytes`` (the
    largest chunk's telemetry buffer, ``simcore.grid.record_bytes`` a record and network, and
    its rows) and ``flops`` (``6 * steps * batch * weights`` a network;
    ``None`` with ``data=False``, which builds no data set). Counted per train_grid group (all
    its networks cost the same), or from two points for a sub-grid of very many groups."""
    counts = specmod.count(spec)
    out = {"trainings": sum(counts.values()), "result_bytes": 0, "chunk_bytes": 0,
           "flops": 0 if data else None, "call": None}
    size = spec["chunk_size"]
    for gname, n in counts.items():
        axes = spec["grids"][gname]["axes"]
        names = [k for k, _ in axes]
        per = [i for i, k in enumerate(names) if spec["grids"][gname]["kind"] == "perceptron"
               or k in specmod.MLP_PER_NETWORK]
        n_per = math.prod(len(axes[i][1]) for i in per)
        if n // n_per <= _GROUPS_COUNTED:
            samples = [(len(combos) * n_per, _group_point(spec, gname, combos[0], per))
                       for combos, _, _ in _iter_groups(spec, gname)]
        else:
            ends = [[0] * len(axes), [len(v) - 1 for _, v in axes]]
            samples = [(n / 2, specmod.make_point(spec, gname, pos, 0)) for pos in ends]
        for members, p in samples:
            rows, chunk, flops = _cost(p, data)
            out["result_bytes"] += members * rows
            out["chunk_bytes"] = max(out["chunk_bytes"], min(size, members) * chunk)
            if data:
                out["flops"] += members * flops
                call = _call_bytes(p, min(size, int(members)))
                if out["call"] is None or call[0] > out["call"][0]:
                    out["call"] = call
    return out


def _call_bytes(p, G):
    """(bytes, point, G, a function of G giving the bytes) of the largest memory one simcore
    call of a chunk of ``G`` networks like ``p`` asks for, as simcore counts it against
    ``simcore.config.MAX_GIB``: train_grid's telemetry (one segment's steps with probes), or a
    perceptron's mistake counts."""
    if p["kind"] != "mlp":
        return 8 * p["epochs"], p, G, lambda g: 8 * p["epochs"]
    from simcore import MLP
    from simcore.grid import telemetry_bytes

    X, y = make_data(p["data"], p["data_args"])[:2]
    net = MLP(sizes_of(p, X, y), activation=p["activation"], loss=p["loss"], batchnorm=p["batchnorm"],
              init=p["init"], dtype=p["dtype"])
    steps = min(p["probe_every"], p["steps"]) if p["probe_every"] else p["steps"]

    def need(g):
        return telemetry_bytes(net, g, steps, p["record_every"])
    return need(G), p, G, need


def check_call_size(spec, est):
    """Refuse (StudyError, whatever --yes says) a grid one of whose chunks simcore would
    refuse: its train_grid telemetry past ``simcore.config.MAX_GIB`` (read now)."""
    from simcore import config
    if est.get("call") is None:
        return
    try:
        limit = config.limit_bytes()
    except ValueError as e:
        raise StudyError(str(e)) from None
    need, p, G, of = est["call"]
    if need <= limit:
        return
    where = f"grids.{p['grid']}"
    if p["kind"] != "mlp":
        raise StudyError(f"{where}: epochs = {p['epochs']} may record {_size(need)} of mistake counts, "
                         f"past simcore's limit of {_size(limit)} per call (simcore.config.MAX_GIB, "
                         f"env SIMCORE_MAX_GIB); lower epochs")
    fits = 0
    lo, hi = 1, G
    while lo <= hi:                       # the largest chunk of such networks that fits
        mid = (lo + hi) // 2
        if of(mid) <= limit:
            fits, lo = mid, mid + 1
        else:
            hi = mid - 1
    how = (f"a chunk_size of at most {fits}" if fits else "a larger record_every (or fewer steps)")
    raise StudyError(f"{where}: a chunk of {G} networks (chunk_size = {spec['chunk_size']}) needs "
                     f"{_size(need)} of telemetry in one train_grid call ({p['steps']} steps, record_every "
                     f"= {p['record_every']}, {p['depth']} layers), past simcore's limit of {_size(limit)} "
                     f"(simcore.config.MAX_GIB, env SIMCORE_MAX_GIB); use {how}"
                     + (", or a larger record_every" if fits else ""))


def _group_point(spec, gname, shared_pos, per):
    full, it = [], iter(shared_pos)
    for i in range(len(spec["grids"][gname]["axes"])):
        full.append(0 if i in per else next(it))
    return specmod.make_point(spec, gname, full, 0)


def _size(b):
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{b:.0f} B"


def _duration(s):
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 86400 * 2:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.3g} days"


def check_size(spec, yes=False):
    """Refuse (StudyError) a grid past :data:`MAX_TRAININGS` trainings or
    :data:`MAX_RESULT_BYTES` of results unless ``yes``; counts from the axes' lengths, so a
    grid of 10^9 points is refused at once. Returns :func:`estimate` without the flops."""
    est = estimate(spec, data=False)
    n, b = est["trainings"], est["result_bytes"]
    if not yes and (n > MAX_TRAININGS or b > MAX_RESULT_BYTES):
        raise StudyError(f"grid {spec['name']!r} has {n:,} trainings and about {_size(b)} of results, "
                         f"past the {MAX_TRAININGS:,} trainings or {_size(MAX_RESULT_BYTES)} that run "
                         f"without --yes; shrink the grid (fewer seeds or axis values, a larger "
                         f"record_every) or pass --yes")
    return est


def preflight(spec, backend="cpu", scheduler=None, workers=None, yes=False):
    """Every check that can fail before work starts, none touching the disk: the backend and
    its options, a GPU for ``cuda``, the grid's size (:func:`check_size`), its data sets
    (:func:`check_data`) and each chunk's memory in one simcore call (:func:`check_call_size`).
    Returns the :func:`estimate` of the grid, with a rough time (compute and per-chunk work)."""
    if backend not in BACKENDS:
        raise StudyError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend != "dask" and (scheduler is not None or workers is not None):
        raise StudyError("--scheduler and --workers go with --backend dask")
    if workers is not None and workers < 1:
        raise StudyError(f"--workers must be >= 1, got {workers}")
    if scheduler is not None and workers is not None:
        raise StudyError("give --scheduler (an existing cluster) or --workers (a local one), not both")
    if backend == "cuda":
        _require_gpu()
    check_size(spec, yes)
    check_data(spec)
    est = estimate(spec)
    check_call_size(spec, est)
    est["seconds"] = (est["flops"] / (GPU_FLOPS if backend == "cuda" else CPU_FLOPS)
                      + CHUNK_OVERHEAD_S * chunk_count(spec) + NETWORK_OVERHEAD_S * est["trainings"])
    return est


def describe(spec, est):
    """One line: the grid's trainings, chunks, memory and rough time."""
    return (f"{spec['name']}: {est['trainings']:,} trainings in {chunk_count(spec):,} chunks; about "
            f"{_size(est['result_bytes'])} of results, {_size(est['chunk_bytes'])} per chunk while "
            f"training, roughly {_duration(est['seconds'])} of compute (a rough guess)")


# --------------------------------------------------------------------------------------------
# running a grid

def _progress(total, initial, quiet, desc):
    from tqdm.auto import tqdm
    disable = quiet or not sys.stderr.isatty()
    return tqdm(total=total, initial=initial, unit="chunk", desc=desc, disable=disable,
                dynamic_ncols=True)


class ChunksFailed(StudyError):
    """Some chunks raised while computing; the rest are stored (and :func:`stored` reads them)."""


def _failure_text(exc):
    return f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__


def _todo(chunks, store, log, skipped):
    """The chunks without an intact part; a bad part is logged (which one, why) and redone,
    ``skipped()`` is called for each intact one."""
    for c in chunks:
        why = store.check(c["key"])
        if why is None:
            skipped()
            continue
        if why != "missing":
            log(f"part {c['key']}.parquet: {why}; recomputing it")
        yield c


def run(spec, out, backend="cpu", scheduler=None, workers=None, quiet=False, log=print, yes=False,
        client=None):
    """Compute every chunk of ``spec`` without an intact part under ``out``; return the number
    of chunks computed.

    Checks come first (:func:`preflight`), then the store is locked (a second run on ``out``
    fails at once, see :meth:`studies.store.Store.lock`). Every stored part is verified; a bad one is named
    in a log line and recomputed. A chunk that raises is recorded (``parts/<key>.failed.json``)
    and the others go on; :class:`ChunksFailed` is raised at the end. Interrupting (Ctrl-C,
    SIGKILL) loses at most the chunks in flight: stored parts stay and the next call skips them.
    ``client``: a connected Dask client (``backend="dask"``) to use instead of making one.
    """
    est = preflight(spec, backend, scheduler, workers, yes)
    say = (lambda m: None) if quiet else log
    say(describe(spec, est))
    with contextlib.ExitStack() as stack:
        if backend == "dask" and client is None:
            client = stack.enter_context(dask_client(scheduler, workers))
        store = Store(out)
        stack.enter_context(store.lock())
        store.prepare()
        total = chunk_count(spec)
        t0 = time.perf_counter()
        bar = stack.enter_context(_progress(total, 0, quiet, spec["name"]))
        todo = _todo(iter_chunks(spec), store, log, lambda: bar.update(1))
        if backend == "dask":
            done, failed = _run_dask(todo, store, client, bar, log)
        else:
            grid_backend = "cuda" if backend == "cuda" else "cpu"
            done, failed = 0, []
            for c in todo:
                try:
                    store.write(c["key"], compute_chunk(c, grid_backend))
                    done += 1
                except Exception as e:      # the other chunks still run; the report says which failed
                    failed.append(_record_failure(store, c, e, log))
                bar.update(1)
    say(f"{spec['name']}: computed {done} chunks in {time.perf_counter() - t0:.1f} s, "
        f"{total - done - len(failed)} were stored already")
    if failed:
        raise ChunksFailed(f"{len(failed)} of {total} chunks failed (first: {failed[0]['where']}: "
                           f"{failed[0]['error']})")
    return done


def _record_failure(store, chunk, exc, log):
    pts = chunk["points"]
    rec = {"key": chunk["key"], "grid": pts[0]["grid"], "points": [pts[0]["point"], pts[-1]["point"]],
           "where": f"grids.{pts[0]['grid']} points {pts[0]['point']}-{pts[-1]['point']}",
           "error": _failure_text(exc)}
    store.record_failure(chunk["key"], rec)
    log(f"chunk {chunk['key']} ({rec['where']}) failed: {rec['error']}")
    return rec


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


@contextlib.contextmanager
def dask_client(scheduler=None, workers=None):
    """A Dask client: connected to ``scheduler`` (StudyError if it cannot be reached) or to a
    local cluster of ``workers`` processes (default 1), closed afterwards."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise StudyError("--backend dask needs dask[distributed] (pip install 'dask[distributed]')") from None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="5s")
        except (OSError, TimeoutError) as e:
            raise StudyError(f"cannot reach the Dask scheduler at {scheduler!r}: {e}") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=workers or 1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def _run_dask(todo, store, client, bar, log):
    """Send the chunks to the cluster, a few per worker at a time (so that a large grid is
    never held whole); the workers write the parts. Returns (computed, failure records)."""
    from dask.distributed import as_completed

    root = str(store.root.resolve())
    window = 4 * max(1, len(client.scheduler_info().get("workers", {})))
    pending = {}
    done, failed = 0, []
    todo = iter(todo)

    def submit(n):
        for c in itertools.islice(todo, n):
            f = client.submit(execute_chunk, c, root, "cpu", key=f"chunk-{c['key']}", pure=False)
            pending[f.key] = c
            queue.add(f)

    queue = as_completed([])
    submit(window)
    for f in queue:
        c = pending.pop(f.key)
        try:
            f.result()      # a worker's error is raised here
            done += 1
        except Exception as e:
            failed.append(_record_failure(store, c, e, log))
        bar.update(1)
        submit(1)
    return done, failed


def stored(spec, out):
    """(the grid's stored rows in point order, the failure records of chunks that failed).
    StudyError if a chunk has neither a part nor a failure record (the run did not finish), or
    if a part is bad (it names the part)."""
    store = Store(out)
    store.check_version()
    keys, failed = [], []
    for c in iter_chunks(spec):
        rec = store.failure(c["key"]) if not store.has(c["key"]) else None
        (failed if rec is not None else keys).append(rec if rec is not None else c["key"])
    df = store.read(keys)
    order = [c for c in ("point", "step", "epoch", "layer") if c in df.columns]
    if order:
        df = df.sort_values(order, kind="stable").reset_index(drop=True)
    return df, failed


def results(spec, out):
    """The grid's stored rows, in point order (raises StudyError if some chunk is missing,
    failed or bad)."""
    df, failed = stored(spec, out)
    if failed:
        raise StudyError(f"{len(failed)} chunks of {spec['name']!r} failed (first: {failed[0]['where']}: "
                         f"{failed[0]['error']}); run the study again to retry them")
    return df
