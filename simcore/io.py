"""Save and load networks' parameters (and, through :meth:`simcore.GridResult.save`, whole
grids) as NumPy ``.npz`` archives with a JSON header: no pickle anywhere.

The format, version :data:`FORMAT_VERSION`
-------------------------------------------
A file is an uncompressed ``.npz`` (a zip of ``.npy`` arrays, each with its CRC-32), read with
``allow_pickle=False``. Its arrays:

``simcore_header``
    UTF-8 JSON, stored as a uint8 array, holding:

    - ``format``: ``"simcore.params"`` (:func:`simcore.save_params`) or ``"simcore.grid_result"``
      (:meth:`simcore.GridResult.save`);
    - ``format_version``: :data:`FORMAT_VERSION` (2: a grid result holds ``state`` and
      ``reached_at``); files of version 1 load too, a file of another version is refused;
    - ``simcore_version``: the version of simcore that wrote it (informative);
    - what the format names (below), where nested data are *skeletons*: JSON trees whose nodes
      are ``{"list": [...]}``, ``{"tuple": [...]}``, ``{"dict": {name: node}}``, ``null``
      (None) and the leaves ``{"array": key}``, the key of an array of the archive.

every other array
    Named by its place in the tree, ``/``-separated: ``params/0/W`` is ``W`` of layer 0.
    Arrays of fewer than :data:`POOL_BELOW` numbers are stored end to end in one array per
    dtype, ``pool/<dtype>`` (reading a zip member costs ~0.3 ms, which a grid of a thousand
    networks of mixed widths would pay thousands of times), and the header's ``pooled`` maps
    each such name to ``[dtype, offset, shape]`` in its pool.

``simcore.params`` adds to the header ``network`` (the MLP's constructor arguments:
``sizes``, ``activation``, ``loss``, ``batchnorm``, ``init``, ``dtype``), ``params`` (the
skeleton of the per-layer dicts ``W`` (fan_in, fan_out), ``b``, and ``gamma``/``beta`` with
batch norm) and ``state`` (the skeleton of the batch-norm running statistics, or null).
``simcore.grid_result`` is described in :meth:`simcore.GridResult.save`.

Examples
--------
>>> import simcore
>>> net = simcore.MLP([2, 8, 1], loss="bce")
>>> params = net.init(seed=0)
>>> simcore.save_params("net.npz", net, params)          # doctest: +SKIP
>>> net2, params2, state2 = simcore.load_params("net.npz")  # doctest: +SKIP
"""
import json
import math
import os
import zipfile
import zlib

import numpy as np

from . import _validate
from .mlp import MLP

FORMAT_VERSION = 2
# versions this simcore reads: 1 has no GridResult.state nor reached_at (they load as None)
READS_VERSIONS = (1, 2)
HEADER_KEY = "simcore_header"
POOL_BELOW = 4096  # arrays of fewer numbers than this share one zip member per dtype
PARAMS_FORMAT = "simcore.params"
GRID_FORMAT = "simcore.grid_result"

__all__ = ["FORMAT_VERSION", "save_params", "load_params"]


# --- the MLP's constructor arguments ------------------------------------------------------------

def net_spec(net):
    """The constructor arguments of ``net`` as a JSON-ready dict (``MLP(**spec)`` rebuilds it)."""
    return {"sizes": list(net.sizes), "activation": net.activation, "loss": net.loss,
            "batchnorm": net.batchnorm, "init": net.init_name, "dtype": np.dtype(net.dtype).name}


def net_from_spec(spec, path):
    """``MLP(**spec)``, or a ValueError naming ``path`` when the spec is not a valid one."""
    try:
        return MLP(**spec)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: the stored network {spec!r} is not a valid MLP: {exc}") from None


def check_state(net, state):
    """``state`` (batch-norm running statistics, as :meth:`simcore.MLP.init_state` gives them) checked
    for ``net`` and copied in its dtype; a ValueError naming the entry that does not fit."""
    template = net.init_state()
    if not isinstance(state, (list, tuple)) or len(state) != len(template):
        raise ValueError(f"state must be a list of {len(template)} dicts from init_state()")
    out = []
    for l, (s, like) in enumerate(zip(state, template)):
        layer = {}
        for key, ref in like.items():
            name = f"state[{l}][{key!r}]"
            arr = _validate.array(name, s.get(key) if isinstance(s, dict) else None,
                                  dtype=net.dtype, min_rows=0)
            if arr.shape != ref.shape:
                raise ValueError(f"{name} must be a finite array of shape {ref.shape}, got {arr.shape}")
            if key == "running_var" and (arr < 0).any():
                raise ValueError(f"{name} must be >= 0")
            layer[key] = arr.copy()
        out.append(layer)
    return out


# --- nested lists, tuples and dicts of arrays <-> a JSON skeleton and flat arrays ---------------

def encode_tree(tree, key, arrays):
    """The skeleton of ``tree`` (nested list / tuple / dict of arrays, or None); its arrays go
    into ``arrays`` under their ``/``-separated place, starting at ``key``."""
    if isinstance(tree, np.ndarray):
        if tree.dtype.hasobject:
            raise TypeError(f"{key} is an array of Python objects, which the format does not store")
        arrays[key] = tree
        return {"array": key}
    if tree is None:
        return None
    if isinstance(tree, dict):
        if not all(isinstance(k, str) and "/" not in k for k in tree):
            raise TypeError(f"{key} has a key that is not a string without '/': {list(tree)}")
        return {"dict": {k: encode_tree(v, f"{key}/{k}", arrays) for k, v in tree.items()}}
    if isinstance(tree, (list, tuple)):
        kind = "tuple" if isinstance(tree, tuple) else "list"
        return {kind: [encode_tree(v, f"{key}/{i}", arrays) for i, v in enumerate(tree)]}
    raise TypeError(f"{key} holds a {type(tree).__name__}; the format stores arrays in nested "
                    f"lists, tuples and dicts")


def decode_tree(node, arrays, path):
    """The nested structure a skeleton describes, from the archive's ``arrays``; a ValueError
    naming ``path`` for an array the archive lacks or a malformed node."""
    if node is None:
        return None
    if not (isinstance(node, dict) and len(node) == 1):
        raise ValueError(f"{path}: malformed header (a skeleton node {str(node)[:80]!r})")
    (kind, value), = node.items()
    if kind == "array":
        if value not in arrays:
            raise ValueError(f"{path}: the array {value!r} is missing (a truncated or edited file?)")
        return arrays[value]
    if kind == "dict" and isinstance(value, dict):
        return {k: decode_tree(v, arrays, path) for k, v in value.items()}
    if kind in ("list", "tuple") and isinstance(value, list):
        items = [decode_tree(v, arrays, path) for v in value]
        return tuple(items) if kind == "tuple" else items
    raise ValueError(f"{path}: malformed header (a skeleton node of kind {kind!r})")


# --- the archive -------------------------------------------------------------------------------

def check_path(path):
    """``path`` as a str (a TypeError naming it when it is not a str or os.PathLike)."""
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}") from None


def write(path, fmt, header, arrays):
    """Write ``arrays`` and the JSON ``header`` (with format, versions added) to ``path``.

    The archive goes to a temporary file beside ``path`` first and replaces it at the end, so an
    interrupted save never leaves a truncated file under the name.
    """
    from . import __version__
    path = check_path(path)
    members, pooled, pools, used = {}, {}, {}, {}
    for key, arr in arrays.items():
        if arr.size < POOL_BELOW and arr.dtype.kind in "biuf" and arr.dtype.isnative:
            dt = arr.dtype.name
            pooled[key] = [dt, used.get(dt, 0), list(arr.shape)]
            pools.setdefault(dt, []).append(arr.reshape(-1))
            used[dt] = used.get(dt, 0) + arr.size
        else:
            members[key] = arr
    members.update({f"pool/{dt}": np.concatenate(parts) for dt, parts in pools.items()})
    head = {"format": fmt, "format_version": FORMAT_VERSION, "simcore_version": __version__,
            **header, "pooled": pooled}
    text = json.dumps(head, allow_nan=False).encode("utf-8")
    arrays = {HEADER_KEY: np.frombuffer(text, np.uint8), **members}
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read(path, fmt, keys):
    """(header, arrays) of the simcore file ``path`` of format ``fmt``, every array read (and its
    CRC checked) now; a ValueError naming ``path`` for a file that is not a simcore archive, is
    corrupt or truncated, of another format or version, or whose header lacks one of ``keys``."""
    path = check_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path {path!r} is not a file")
    try:
        archive = np.load(path, allow_pickle=False)
        if isinstance(archive, np.lib.npyio.NpzFile):
            with archive:
                arrays = {k: archive[k] for k in archive.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        # ValueError: what np.load raises for a file that is no .npy/.npz (or holds pickles)
        raise ValueError(f"{path}: not a simcore file, or a corrupt or truncated one "
                         f"({type(exc).__name__}: {exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not a simcore file (a single .npy array, not an .npz archive)")
    if HEADER_KEY not in arrays:
        raise ValueError(f"{path}: not a simcore file (an .npz archive without {HEADER_KEY!r})")
    try:
        header = json.loads(arrays.pop(HEADER_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: corrupt header ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt header (not a JSON object)")
    got = header.get("format")
    if got != fmt:
        hint = {PARAMS_FORMAT: "simcore.load_params", GRID_FORMAT: "simcore.GridResult.load"}.get(got)
        raise ValueError(f"{path}: holds {got!r}, not {fmt!r}"
                         + (f" (read it with {hint})" if hint else ""))
    version = header.get("format_version")
    if version not in READS_VERSIONS:
        from . import __version__
        raise ValueError(f"{path}: format version {version!r} (written by simcore "
                         f"{header.get('simcore_version')}); simcore {__version__} reads versions "
                         f"{', '.join(map(str, READS_VERSIONS))}")
    missing = [k for k in keys + ("pooled",) if k not in header]
    if missing:
        raise ValueError(f"{path}: the header lacks {', '.join(map(repr, missing))}")
    return header, _unpool(header["pooled"], arrays, path)


def _unpool(pooled, arrays, path):
    """The archive's arrays with each pooled one as a view of its slice of ``pool/<dtype>``."""
    out = {k: v for k, v in arrays.items() if not k.startswith("pool/")}
    pools = {k[len("pool/"):]: v for k, v in arrays.items() if k.startswith("pool/")}
    pools = {dt: v for dt, v in pools.items() if v.ndim == 1 and v.dtype.name == dt}
    if not isinstance(pooled, dict):
        raise ValueError(f"{path}: malformed header (pooled is not a JSON object)")
    for key, entry in pooled.items():
        try:
            dt, offset, shape = entry
            offset, shape = int(offset), tuple(int(n) for n in shape)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: malformed header (pooled entry of {key!r})") from None
        pool = pools.get(dt)
        size = math.prod(shape)
        if pool is None or not 0 <= offset <= pool.size - size:
            raise ValueError(f"{path}: the array {key!r} is missing (its pool 'pool/{dt}' is absent "
                             "or too short: a truncated or edited file?)")
        out[key] = pool[offset:offset + size].reshape(shape)
    return out


# --- parameters of one network -----------------------------------------------------------------

def save_params(path, net, params, state=None):
    """Save one network's architecture, parameters and (optionally) batch-norm statistics.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write (no suffix is added; ``.npz`` is the convention).
    net : MLP
    params : list of dict
        As :meth:`MLP.init` returns them; stored in the net's dtype.
    state : list of dict, optional
        Batch-norm running statistics (:meth:`simcore.MLP.init_state`).

    Raises
    ------
    TypeError
        ``net`` not an MLP, ``path`` not a path.
    ValueError
        ``params`` or ``state`` not shaped for ``net`` (as :meth:`MLP.pack` says).

    See the module docstring for the format.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be an MLP, got {type(net).__name__}")
    arrays = {}
    header = {"network": net_spec(net),
              "params": encode_tree(net.unpack(net.pack(params)), "params", arrays),
              "state": None}
    if state is not None:
        header["state"] = encode_tree(check_state(net, state), "state", arrays)
    write(path, PARAMS_FORMAT, header, arrays)


def load_params(path):
    """Load what :func:`simcore.save_params` wrote.

    Returns
    -------
    net : MLP
        Built from the stored constructor arguments.
    params : list of dict
        Bitwise the saved values, in the net's dtype.
    state : list of dict or None
        The batch-norm running statistics, when they were saved.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Naming ``path``: not a simcore file, corrupt or truncated, of another format or format
        version, an array missing, or parameters not shaped for the stored network.
    """
    header, arrays = read(path, PARAMS_FORMAT, ("network", "params", "state"))
    path = check_path(path)
    spec = header["network"]
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: malformed header (network is not a JSON object)")
    net = net_from_spec(spec, path)
    params = decode_tree(header["params"], arrays, path)
    state = decode_tree(header["state"], arrays, path)
    try:
        params = net.unpack(net.pack(params))
        if state is not None:
            state = check_state(net, state)
    except ValueError as exc:
        raise ValueError(f"{path}: the stored arrays do not fit {net!r}: {exc}") from None
    return net, params, state
