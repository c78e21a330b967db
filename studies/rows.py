"""The stored rows as every study reads them: which columns are results and which are
configuration, the rows of one kind of training, one row per training, each training's data set
and a label for it.

And the one measurement two studies share, the threshold bracket on an eta axis
(:func:`bracket`: convergence and lr-sensitivity).

The rows are long-form (:func:`studies.runner.compute_chunk`): one per (network, recorded step,
layer) for an MLP, one per (run, epoch) for a perceptron, with the point's configuration as
columns. Rows of sub-grids that lack a column read back empty (NaN, ``<NA>``) there, so a
study selects its rows first and reads the configuration of those.
"""
import json
import re

import numpy as np

from simcore.grid.core import QUANTITIES, VAL_QUANTITIES

from . import runner

# GridResult.history()'s columns: the loss, the held-out values (NaN without a held-out split)
# and the per-layer telemetry quantities of the grid engine
HISTORY_COLUMNS = ("network", "step", "layer", "loss") + VAL_QUANTITIES + QUANTITIES
# every column a chunk's rows hold that is a result, not configuration
RESULT_COLUMNS = frozenset(HISTORY_COLUMNS + runner.FINAL_COLUMNS + runner.PROBE_COLUMNS
                           + runner.PRENORM_COLUMNS + runner.ACCURACY_COLUMNS + runner.DEAD_COLUMNS
                           + runner.PERCEPTRON_COLUMNS)


def of_kind(data, kind):
    """The rows of trainings of ``kind`` (``"mlp"`` or ``"perceptron"``); none if the rows
    hold no such column (an empty store)."""
    if "kind" not in data.columns:
        return data.iloc[0:0]
    return data[data["kind"] == kind]


def integer_columns(rows, columns):
    """``rows`` with each of ``columns`` that is present, complete and whole-valued as int64
    again: rows of several kinds share one frame, so a column one kind lacks reads back as float
    with NaN, and the rows a study selected hold integers in it."""
    rows = rows.copy()
    for c in columns:
        if c in rows.columns and rows[c].notna().all() and (rows[c] % 1 == 0).all():
            rows[c] = rows[c].astype(np.int64)
    return rows


def per_run(rows, keep="first"):
    """One row per training (per-run values repeat on every row of a run), indexed by
    ``point`` and keeping the column; ``keep="last"``: a run's last stored row."""
    return rows.drop_duplicates("point", keep=keep).set_index("point", drop=False)


def varying_axes(rows, not_axes=()):
    """Configuration columns (neither results nor ``not_axes`` nor ``data_args``, whose
    arguments vary as the ``data_<name>`` columns do) that take more than one value in ``rows``."""
    skip = RESULT_COLUMNS | set(not_axes) | {"data_args"}
    return [c for c in rows.columns if c not in skip and rows[c].nunique(dropna=False) > 1]


def data_args(row):
    """The data set's arguments of the training in ``row``, exactly as the grid gave them (the
    ``data_args`` column), for :func:`studies.runner.make_data`."""
    return json.loads(row["data_args"])


def data_set(row):
    """``(X, y)`` the training in ``row`` was trained on (the whole data set, before any
    held-out split)."""
    return runner.make_data(row["data"], data_args(row))[:2]


def data_label(row):
    """``name(arg=value, ...)`` of the data set in ``row``, or the name alone."""
    args = data_args(row)
    return row["data"] + ("(" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")" if args else "")


def slug(label):
    """``label`` as a figure-name fragment: lower case, runs of other characters as ``_``."""
    return re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_")[:40]


def bracket(etas, stable):
    """The measured threshold on an eta axis: ``(lo, hi, monotone)``, lo the largest eta whose
    runs and those of every smaller eta are stable, hi the next eta (the smallest with an
    unstable run above lo); monotone when no eta above hi is stable again. NaN where missing.
    Convergence calls it with "converged" for stable, lr-sensitivity with "did not diverge"."""
    etas = np.asarray(etas, dtype=np.float64)
    stable = np.asarray(stable, dtype=bool)
    order = np.argsort(etas)
    etas, stable = etas[order], stable[order]
    if not stable[0]:
        return np.nan, float(etas[0]), not stable.any()
    if stable.all():
        return float(etas[-1]), np.nan, True
    k = int(np.argmin(stable))          # the first unstable eta
    return float(etas[k - 1]), float(etas[k]), not stable[k:].any()
