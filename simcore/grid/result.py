"""GridResult: what a grid of trainings returns, its long-form telemetry, and its file."""
from dataclasses import MISSING, dataclass, field, fields

import numpy as np
import pandas as pd

from .. import io
from .core import QUANTITIES, VAL_QUANTITIES


@dataclass
class GridResult:
    """The outcome of :func:`simcore.train_grid` for G networks.

    Attributes
    ----------
    final_loss : (G,) float64
        Mean loss at each network's parameters after the last step, on the full data set
        (for a diverged network: at its frozen, diverged parameters; may be inf or NaN).
    diverged : (G,) bool
    diverged_at : (G,) int64
        The step at which the loss became non-finite or exceeded 1e6 times its initial value;
        -1 if never. The network's parameters stay as they were at that step.
    params : list
        For one architecture: the MLP layout stacked on a leading G axis
        (``params[l]["W"]`` is (G, fan_in, fan_out)). For a list of networks: a list of G
        per-network parameter lists.
    record_steps : (R,) int64
        The steps at which telemetry was recorded (0, k, 2k, ..., and the last step).
    config : pandas.DataFrame
        One row per network, in the grid's order, with the columns ``network`` (0..G-1),
        ``arch`` (the layer widths joined by "-", e.g. "2-16-16-1"), ``activation``,
        ``batchnorm`` (bool), ``lr``, ``seed`` (uint64: the key of its initial draw and
        minibatch orders), ``init_scale``, ``bias_scale``, ``momentum`` (0 for an optimizer
        without it), ``strategy`` (how it was trained: "lanes", "gemm" or "cuda"),
        ``final_loss``, ``diverged``, ``diverged_at``, ``final_val_loss``, ``final_accuracy``,
        ``final_val_accuracy`` as the attributes of those names, ``n_val`` (rows of the
        held-out set, 0 without one), and the training's options: ``weight_decay`` (0: none),
        ``clip_norm`` (NaN: none), ``target_loss`` (NaN: none), ``reached_at`` as the attribute
        below, ``stop_at_target`` (bool).
    nets : list of MLP or None
        The G networks' architectures (one MLP per network, the same object for networks of one
        architecture), or None where the result was built without them.
    final_val_loss, final_accuracy, final_val_accuracy : (G,) float64 or None
        After the last step, as ``final_loss`` (also for a diverged network, at its frozen
        parameters): the mean loss over the held-out set (``train_grid(validation=...)``), the
        accuracy on the full training set and on the held-out set (bce: a unit predicts 1
        where its logit > 0; ce: the arg max, ties to the first). NaN where not defined (mse
        losses have no accuracy; no held-out set); None in a result built without them (a file
        of an older simcore).
    reached_at : (G,) int64 or None
        The first step whose loss (the one recorded at that step) was <= the network's
        ``target_loss``; -1 if never (or no target). With ``stop_at_target`` the network was
        frozen there: its telemetry ends at that step.
    state : dict or None
        What ``train_grid(..., resume=result)`` continues from: ``step`` (the steps trained so
        far), ``optimizer``, ``n`` (samples) and ``batch`` (the batch size), ``schedule`` (the
        learning-rate schedule, encoded as :meth:`simcore.LRSchedule.encode`), ``loss0`` (G,)
        (each network's divergence reference), ``diverged_at`` and ``reached_at`` (G,) (as the
        attributes, less a step found only in the last step's full-data loss of a minibatch
        training), ``v`` and ``m`` (the optimizer's moments: every network's parameters in the
        flat layout of :meth:`simcore.MLP.pack`, end to end in the grid's order). Arrays only,
        so that :meth:`save` stores it.

    ``print(res)`` gives a one-line summary; :meth:`history` the telemetry; :meth:`save` and
    :meth:`load` a file (:mod:`simcore.io`).
    """

    final_loss: np.ndarray
    diverged: np.ndarray
    diverged_at: np.ndarray
    params: list
    record_steps: np.ndarray
    config: pd.DataFrame = field(repr=False)
    _groups: list = field(repr=False)   # [(network indices, rec_loss (R, Gg), rec_layer (R, L, NQ, Gg))]
    nets: list = field(default=None, repr=False)
    final_val_loss: np.ndarray = field(default=None, repr=False)
    final_accuracy: np.ndarray = field(default=None, repr=False)
    final_val_accuracy: np.ndarray = field(default=None, repr=False)
    _val_groups: list = field(default=None, repr=False)  # [rec_val (R, 3, Gg)], one per group of _groups
    reached_at: np.ndarray = field(default=None, repr=False)
    state: dict = field(default=None, repr=False)

    def __repr__(self):
        G = len(self.final_loss)
        archs = list(dict.fromkeys(
            f"{a} {act}" + (" batchnorm" if bn else "")
            for a, act, bn in zip(self.config["arch"], self.config["activation"], self.config["batchnorm"])))
        shown = ", ".join(archs[:3]) + (f", +{len(archs) - 3} more" if len(archs) > 3 else "")
        kept = self.final_loss[~self.diverged]
        if kept.size:
            loss = f"final loss {np.nanmin(kept):.4g} to {np.nanmax(kept):.4g}"
        else:
            loss = "no final loss (all diverged)"
        n_arch = f"{len(archs)} architecture" + ("s" if len(archs) > 1 else "")
        return (f"GridResult(G={G}, {n_arch} ({shown}), {int(self.record_steps[-1])} steps, "
                f"{len(self.record_steps)} records, {int(self.diverged.sum())} diverged, {loss})")

    def history(self):
        """Long-form telemetry: one row per (network, recorded step, layer).

        Columns: ``network``, ``step``, ``layer`` (1-based, the output layer is L), ``loss`` (the
        mean loss of the batch used at that step), ``grad_norm`` (Frobenius norm of dL/dW_l),
        ``weight_norm`` (of W_l), ``preact_mean``/``preact_std`` (of the activation's input
        over samples and units: z_l, or its batch-normalised value), ``act_mean``/``act_std``
        (of a_l; for the output layer, the network's output), ``saturated`` (fraction of units
        and samples with ``|f'| < 0.01``; for the output layer the output function's derivative),
        ``val_loss`` (the mean loss over the held-out set at that step's parameters), ``accuracy``
        (on the batch used at that step) and ``val_accuracy`` (on the held-out set): per network
        and step, repeated on its layers' rows; NaN where not defined (no held-out set, mse
        losses, a result without them). Steps after a network diverged (or, with
        ``stop_at_target``, reached its target) are absent.
        """
        frames = []
        R = len(self.record_steps)
        for i, (idx, rec_loss, rec_layer) in enumerate(self._groups):
            L, Gg = rec_layer.shape[1], rec_layer.shape[3]
            cols = {
                "network": np.broadcast_to(idx[None, None, :], (R, L, Gg)).ravel(),
                "step": np.broadcast_to(self.record_steps[:, None, None], (R, L, Gg)).ravel(),
                "layer": np.broadcast_to(np.arange(1, L + 1)[None, :, None], (R, L, Gg)).ravel(),
                "loss": np.broadcast_to(rec_loss[:, None, :], (R, L, Gg)).ravel(),
            }
            rec_val = (self._val_groups[i] if self._val_groups is not None
                       else np.full((R, len(VAL_QUANTITIES), Gg), np.nan))
            for q, name in enumerate(VAL_QUANTITIES):
                cols[name] = np.broadcast_to(rec_val[:, q, None, :], (R, L, Gg)).ravel()
            for q, name in enumerate(QUANTITIES):
                cols[name] = rec_layer[:, :, q, :].ravel()
            frames.append(pd.DataFrame(cols))
        df = pd.concat(frames, ignore_index=True)
        after = self.frozen_at()[df["network"].to_numpy()]
        df = df[(after < 0) | (df["step"].to_numpy() <= after)]
        return df.sort_values(["network", "step", "layer"], kind="stable").reset_index(drop=True)

    def frozen_at(self):
        """(G,) int64: the step each network stopped training at, the step it diverged or (with
        ``stop_at_target``) reached its target, whichever came first; -1 for none."""
        frozen = np.asarray(self.diverged_at).copy()
        if self.reached_at is not None and "stop_at_target" in self.config:
            reached = np.asarray(self.reached_at)
            stop = self.config["stop_at_target"].to_numpy(bool) & (reached >= 0)
            frozen = np.where(stop & ((frozen < 0) | (reached < frozen)), reached, frozen)
        return frozen

    # --- the file ------------------------------------------------------------------------------
    def save(self, path):
        """Write this result to ``path``: a simcore ``.npz`` archive (no pickle), format
        ``"simcore.grid_result"`` of :data:`simcore.io.FORMAT_VERSION`.

        Besides the format's common keys (:mod:`simcore.io`), the JSON header holds:

        - ``fields``: for every attribute but ``config`` and ``nets``, the skeleton of its value
          (``final_loss``, ``diverged``, ``diverged_at``, ``record_steps`` are arrays of those
          names, pooled when small as every array of the format; ``params`` is ``params/<layer>/<name>`` stacked on a leading G axis for one
          architecture, ``params/<network>/<layer>/<name>`` for a list of networks; ``_groups``
          the telemetry, ``_groups/<i>/0`` the networks of group i, ``/1`` its losses (R, Gg),
          ``/2`` its per-layer quantities (R, L, NQ, Gg); ``final_val_loss``, ``final_accuracy``,
          ``final_val_accuracy`` (G,) and ``_val_groups/<i>`` the held-out telemetry of group i,
          (R, 3, Gg) of val_loss, accuracy, val_accuracy). An attribute added later with a
          default (an optimizer ``state``, say) is stored the same way, and a file without it
          loads with the default;
        - ``config``: ``{"columns": [[name, dtype], ...]}``, column i in the array ``config/<i>``
          (strings as fixed-width unicode, restored to the column's pandas dtype);
        - ``networks``: null, or ``{"architectures": [constructor arguments, ...], "index":
          skeleton}``, network g being ``architectures[index[g]]``.

        ``GridResult.load(path)`` gives back every array bitwise, the same ``config`` and
        the same :meth:`history`.

        Raises
        ------
        TypeError
            ``path`` not a path; an attribute holding something other than arrays in nested
            lists, tuples and dicts.
        """
        arrays = {}
        stored = {f.name: io.encode_tree(getattr(self, f.name), f.name, arrays)
                  for f in fields(self) if f.name not in ("config", "nets")}
        header = {"fields": stored, "config": _encode_config(self.config, arrays),
                  "networks": _encode_nets(self.nets, arrays)}
        io.write(path, io.GRID_FORMAT, header, arrays)

    @classmethod
    def load(cls, path):
        """The GridResult :meth:`save` wrote to ``path``.

        Raises
        ------
        FileNotFoundError
            No file at ``path``.
        ValueError
            Naming ``path``: not a simcore file, corrupt or truncated, of another format or
            format version, an array or attribute missing.
        """
        header, arrays = io.read(path, io.GRID_FORMAT, ("fields", "config", "networks"))
        path = io.check_path(path)
        stored = header["fields"]
        if not isinstance(stored, dict):
            raise ValueError(f"{path}: malformed header (fields is not a JSON object)")
        names = {f.name for f in fields(cls)} - {"config", "nets"}
        unknown = sorted(set(stored) - names)
        if unknown:
            raise ValueError(f"{path}: holds attributes this simcore does not know: {unknown}")
        kwargs = {"config": _decode_config(header["config"], arrays, path),
                  "nets": _decode_nets(header["networks"], arrays, path)}
        for f in fields(cls):
            if f.name in stored:
                kwargs[f.name] = io.decode_tree(stored[f.name], arrays, path)
            elif f.name in names and f.default is MISSING and f.default_factory is MISSING:
                raise ValueError(f"{path}: the attribute {f.name!r} is missing")
        return cls(**kwargs)


def _encode_config(config, arrays):
    """The config's header entry; its columns go into ``arrays`` as ``config/<i>``."""
    columns = []
    for i, name in enumerate(config.columns):
        col = config[name]
        kind = str(col.dtype)
        if isinstance(col.dtype, np.dtype) and col.dtype.kind in "biuf":
            arrays[f"config/{i}"] = col.to_numpy()
        elif all(isinstance(v, str) for v in col):
            arrays[f"config/{i}"] = np.array(col.tolist(), dtype=str)
        else:
            raise TypeError(f"config column {name!r} ({kind}) holds values other than numbers and "
                            f"strings, which the format does not store")
        columns.append([str(name), kind])
    return {"columns": columns}


def _decode_config(entry, arrays, path):
    try:
        columns = entry["columns"]
        data = {}
        for i, (name, kind) in enumerate(columns):
            key = f"config/{i}"
            if key not in arrays:
                raise ValueError(f"{path}: the array {key!r} is missing (a truncated or edited file?)")
            values = arrays[key]
            data[name] = values if values.dtype.kind in "biuf" else pd.array(values.tolist(), dtype=kind)
    except (TypeError, KeyError):
        raise ValueError(f"{path}: malformed header (config)") from None
    return pd.DataFrame(data)


def _encode_nets(nets, arrays):
    """The networks' header entry: each distinct architecture once, and an index per network."""
    if nets is None:
        return None
    specs, index = {}, []
    for m in nets:
        key = tuple(sorted((k, str(v)) for k, v in io.net_spec(m).items()))
        index.append(specs.setdefault(key, (len(specs), io.net_spec(m)))[0])
    return {"architectures": [spec for _, spec in specs.values()],
            "index": io.encode_tree(np.array(index, np.int64), "nets/index", arrays)}


def _decode_nets(entry, arrays, path):
    if entry is None:
        return None
    try:
        built = [io.net_from_spec(spec, path) for spec in entry["architectures"]]
        index = io.decode_tree(entry["index"], arrays, path)
        return [built[i] for i in index.tolist()]
    except (TypeError, KeyError, IndexError, AttributeError):
        raise ValueError(f"{path}: malformed header (networks)") from None
