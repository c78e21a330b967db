"""Grids as data: read a study's TOML grid, check it, and expand it into training points.

A grid file looks like this (every value may be a scalar, a list (an *axis*), or a range table)::

    study = "convergence"          # the analysis to apply (omit for a plain grid report)
    title = "Least squares"        # optional
    chunk_size = 256               # networks per stored chunk (optional)

    [defaults]                     # keys shared by every sub-grid (optional); a momentum here
    steps = 300                    # applies to the sub-grids whose optimizer uses one

    [grids.least_squares]          # one or more named sub-grids
    kind = "mlp"                   # "mlp" (simcore.train_grid) or "perceptron"
    data = {name = "teacher_student", n = 200, d_in = 4, hidden = 0}
    widths = []                    # hidden widths: [] is a linear model; [[8], [8, 8]] is an axis
    activation = "identity"
    loss = "mse"
    lr = {geomspace = [0.01, 1.0, 13]}
    seed = {range = 8}

Each sub-grid is the Cartesian product of its axes, in the order the keys appear. Range tables:
``{geomspace = [a, b, n]}``, ``{linspace = [a, b, n]}``, ``{range = n}`` or
``{range = [start, stop]}`` (integers, stop excluded).
"""
import inspect
import itertools
import math
import numbers
import tomllib
from pathlib import Path

import numpy as np

from simcore import datasets
from simcore.optim import OPT_CODE
from simcore.init import INITS
from simcore.losses import LOSS_CODE
from simcore.scalar import ACTIVATIONS

from .errors import StudyError
from .perceptron_data import DATASETS as STUDY_DATASETS

# data set names: simcore's generators and the studies' own (studies.perceptron_data)
DATA_NAMES = tuple(datasets.NAMES) + tuple(STUDY_DATASETS)

KINDS = ("mlp", "perceptron")
TOP_KEYS = {"study", "title", "description", "chunk_size", "defaults", "grids"}
DEFAULT_CHUNK = 256


# --------------------------------------------------------------------------------------------
# value checks: each takes (where, value) and returns the normalised value or raises StudyError

def _str_in(choices):
    def check(where, v):
        if not isinstance(v, str) or v not in choices:
            raise StudyError(f"{where} must be one of {sorted(choices)}, got {v!r}")
        return v
    return check


def _int(minimum=None):
    def check(where, v):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise StudyError(f"{where} must be an integer, got {v!r}")
        if minimum is not None and v < minimum:
            raise StudyError(f"{where} must be >= {minimum}, got {v}")
        return int(v)
    return check


def _real(minimum=None, strict=False, below=None):
    def check(where, v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v):
            raise StudyError(f"{where} must be a finite number, got {v!r}")
        v = float(v)
        if minimum is not None and (v < minimum or (strict and v == minimum)):
            raise StudyError(f"{where} must be {'>' if strict else '>='} {minimum}, got {v}")
        if below is not None and v >= below:
            raise StudyError(f"{where} must be < {below}, got {v}")
        return v
    return check


def _bool(where, v):
    if not isinstance(v, bool):
        raise StudyError(f"{where} must be true or false, got {v!r}")
    return v


def _widths(where, v):
    if not isinstance(v, list) or not all(isinstance(w, numbers.Integral) and not isinstance(w, bool)
                                          and w >= 1 for w in v):
        raise StudyError(f"{where} must be a list of positive integers (hidden widths), got {v!r}")
    return [int(w) for w in v]


def _batch_size(where, v):
    if v == "full":
        return v
    return _int(1)(where, v)


MLP_KEYS = {
    "data": None,  # handled separately
    "widths": _widths,
    "depth": _int(1),
    "width": _int(1),
    "activation": _str_in(ACTIVATIONS),
    "loss": _str_in(LOSS_CODE),
    "init": _str_in(INITS),
    "init_scale": _real(0.0),
    "bias_scale": _real(0.0),
    "batchnorm": _bool,
    "optimizer": _str_in(OPT_CODE),
    "momentum": _real(0.0, below=1.0),
    "lr": _real(0.0),
    "batch_size": _batch_size,
    "steps": _int(1),
    "record_every": _int(1),
    "seed": _int(0),
    "dtype": _str_in(("float32", "float64")),
    # probes: measurements between segments of training (full-batch gd only, see runner)
    "probe_every": _int(0),
    "track_sharpness": _bool,
    "track_preact": _bool,
    # batchnorm study: a held-out split, and probes of accuracy and of the input before batch norm
    "holdout": _real(0.0, below=1.0),
    "track_prenorm": _bool,
    "track_accuracy": _bool,
    # vanishing-gradients: the share of dead relu units, probed
    "track_dead": _bool,
}
MLP_DEFAULTS = {"activation": "tanh", "loss": "bce", "init": "glorot", "init_scale": 1.0,
                "bias_scale": 0.0, "batchnorm": False, "optimizer": "gd", "momentum": 0.0,  # see make_point
                "batch_size": "full", "steps": 200, "record_every": 10, "seed": 0, "dtype": "float64",
                "probe_every": 0, "track_sharpness": False, "track_preact": False,
                "holdout": 0.0, "track_prenorm": False, "track_accuracy": False,
                "track_dead": False}
# per-network values: points that differ only in these share one train_grid call
MLP_PER_NETWORK = ("lr", "seed", "init_scale", "bias_scale", "momentum")

PERCEPTRON_KEYS = {"data": None, "lr": _real(0.0, strict=True), "epochs": _int(1), "seed": _int(0)}
PERCEPTRON_DEFAULTS = {"lr": 1.0, "epochs": 100, "seed": 0}

SCHEMA = {"mlp": (MLP_KEYS, MLP_DEFAULTS), "perceptron": (PERCEPTRON_KEYS, PERCEPTRON_DEFAULTS)}


# --------------------------------------------------------------------------------------------
# axes

class Span:
    """A range-table axis kept as its rule (``range``, ``linspace`` or ``geomspace``): its
    length is known at once and its values are made only when used, so that a grid of 10^9
    points can be counted and refused without building them.

    ``check`` normalises each value as it is read. Its checks (type, bounds) are monotone and a
    span's values lie between its first and last, so checking those two checks them all.
    """

    def __init__(self, form, args, check=None):
        self.form, self.args, self.check = form, args, check
        if form == "range":
            self._n = max(0, args[1] - args[0])
        else:
            self._n = int(args[2])
        self._values = None

    def with_check(self, where, check):
        """The same span, each value normalised by ``check`` (its two ends checked now)."""
        out = Span(self.form, self.args, lambda v: check(where, v))
        if out._n:
            out[0], out[out._n - 1]
        return out

    def __len__(self):
        return self._n

    def _raw(self, i):
        if self.form == "range":
            return self.args[0] + i
        if self._values is None:
            fn = np.geomspace if self.form == "geomspace" else np.linspace
            self._values = fn(self.args[0], self.args[1], self._n)
        return float(self._values[i])

    def __getitem__(self, i):
        if not -self._n <= i < self._n:
            raise IndexError(i)
        v = self._raw(i % self._n)
        return self.check(v) if self.check else v

    def __iter__(self):
        return (self[i] for i in range(self._n))


def _finite(x):
    try:
        return bool(np.isfinite(float(x)))
    except OverflowError:
        return False


def _axis_values(where, value, list_is_axis=True):
    """The values a key takes: a :class:`Span` for a range table, a list as is, a scalar alone."""
    if isinstance(value, dict):
        if len(value) != 1:
            raise StudyError(f"{where} must be a value, a list or one of {{geomspace, linspace, range}} "
                             f"= [...], got {value!r}")
        (form, args), = value.items()
        if form in ("geomspace", "linspace"):
            if (not isinstance(args, list) or len(args) != 3
                    or not all(isinstance(a, numbers.Real) and not isinstance(a, bool) for a in args)
                    or not isinstance(args[2], numbers.Integral) or args[2] < 1
                    or not all(_finite(a) for a in args[:2])):
                raise StudyError(f"{where}: {form} takes [start, stop, count] with finite start and "
                                 f"stop and an integer count >= 1, got {args!r}")
            if form == "geomspace" and (args[0] <= 0 or args[1] <= 0):
                raise StudyError(f"{where}: geomspace needs start and stop > 0, got {args!r}")
            return Span(form, [float(args[0]), float(args[1]), int(args[2])])
        if form == "range":
            if isinstance(args, numbers.Integral) and not isinstance(args, bool):
                args = [0, args]
            if (not isinstance(args, list) or len(args) != 2
                    or not all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in args)):
                raise StudyError(f"{where}: range takes a count or [start, stop] of integers, got {args!r}")
            return Span("range", [int(args[0]), int(args[1])])
        raise StudyError(f"{where}: unknown range form {form!r}; use geomspace, linspace or range")
    if isinstance(value, list) and list_is_axis:
        return value
    return [value]


def _checked(where, vals, check):
    """The axis ``vals`` with every value normalised by ``check`` (a span lazily)."""
    if not len(vals):
        raise StudyError(f"{where} is an empty axis")
    if isinstance(vals, Span):
        return vals.with_check(where, check)
    return [check(where, v) for v in vals]


def _data_axes(where, value):
    """Axes of the ``data`` key: ``"name"``, ``["a", "b"]`` or ``{name = ..., arg = ...}``."""
    if isinstance(value, (str, list)):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise StudyError(f"{where} must be a data set name, a list of names, or a table with a name "
                         f"and the generator's arguments, got {value!r}")
    axes = []
    for key, v in value.items():
        vals = _axis_values(f"{where}.{key}", v, list_is_axis=key != "hidden" or
                            (isinstance(v, list) and v and isinstance(v[0], list)))
        if not vals:
            raise StudyError(f"{where}.{key} is an empty axis")
        if key == "name":
            for n in vals:
                if not isinstance(n, str) or n not in DATA_NAMES:
                    raise StudyError(f"{where}.name must be one of {sorted(DATA_NAMES)}, got {n!r}")
        axes.append((f"data.{key}", vals))
    return axes


def _check_data(where, name, args):
    """Build nothing; check that the generator takes these arguments (values are checked when
    the data is made, before any training)."""
    allowed = inspect.signature(STUDY_DATASETS.get(name) or datasets.generator(name)).parameters
    for key in args:
        if key not in allowed or key == "return_info":
            raise StudyError(f"{where}: {key!r} is not an argument of data set {name!r}; it takes "
                             f"{sorted(k for k in allowed if k != 'return_info')}")


def _check_probes(where, p):
    """Probes split training into segments of ``probe_every`` steps; that is exact only for
    full-batch gradient descent (no optimizer state, no minibatch order to carry over)."""
    tracking = (p["track_sharpness"] or p["track_preact"] or p["track_prenorm"] or p["track_accuracy"]
                or p["track_dead"])
    if not tracking and p["probe_every"] == 0:
        return
    if tracking and p["probe_every"] == 0:
        raise StudyError(f"{where}: track_sharpness/track_preact/track_prenorm/track_accuracy/track_dead need "
                         f"probe_every >= 1 (steps between probes)")
    if not tracking:
        raise StudyError(f"{where}: probe_every is set but nothing is tracked "
                         f"(track_sharpness, track_preact, track_prenorm or track_accuracy)")
    if p["optimizer"] not in ("gd", "sgd") or p["batch_size"] != "full":
        raise StudyError(f"{where}: probes need full-batch gradient descent (optimizer = \"gd\", "
                         f"batch_size = \"full\"), got optimizer {p['optimizer']!r}, batch_size {p['batch_size']!r}")
    if p["probe_every"] % p["record_every"]:
        raise StudyError(f"{where}: probe_every ({p['probe_every']}) must be a multiple of record_every "
                         f"({p['record_every']})")
    if p["track_preact"] and p["depth"] < 2:
        raise StudyError(f"{where}: track_preact needs a hidden layer")
    if p["track_prenorm"] and p["depth"] < 2:
        raise StudyError(f"{where}: track_prenorm needs a hidden layer")
    if p["track_dead"] and (p["activation"] != "relu" or p["depth"] < 2):
        raise StudyError(f"{where}: track_dead needs relu hidden layers (activation = \"relu\", depth >= 2), "
                         f"got activation {p['activation']!r}, depth {p['depth']}")
    if p["track_accuracy"] and p["loss"] not in ("bce", "mse_sigmoid", "ce"):
        raise StudyError(f"{where}: track_accuracy needs a classification loss (bce, mse_sigmoid or "
                         f"ce), got loss {p['loss']!r}")


def load(path_or_text, name=None):
    """Parse and check a grid. ``path_or_text`` is a path to a TOML file or a dict already
    parsed. Returns the spec dict with ``name`` (the file's stem unless given)."""
    if isinstance(path_or_text, dict):
        raw = path_or_text
        name = name or raw.get("study", "grid")
    else:
        path = Path(path_or_text)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise StudyError(f"grid file {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise StudyError(f"{path.name} is not valid TOML: {e}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise StudyError(f"cannot read grid file {str(path)!r}: {e}") from None
        name = name or path.stem
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise StudyError(f"unknown top-level key(s) {sorted(unknown)} in grid {name!r}; "
                         f"allowed: {sorted(TOP_KEYS)}")
    for key in ("study", "title", "description"):
        if key in raw and not isinstance(raw[key], str):
            raise StudyError(f"{key} must be a string, got {raw[key]!r}")
    chunk = _int(1)("chunk_size", raw.get("chunk_size", DEFAULT_CHUNK))
    defaults = raw.get("defaults", {})
    grids = raw.get("grids")
    if not isinstance(defaults, dict):
        raise StudyError("[defaults] must be a table")
    if not isinstance(grids, dict) or not grids:
        raise StudyError(f"grid {name!r} needs at least one [grids.NAME] table")
    known = set().union(*(k for k, _ in SCHEMA.values()))
    unknown = set(defaults) - known
    if unknown:
        raise StudyError(f"unknown key(s) {sorted(unknown)} in [defaults]; allowed: {sorted(known)}")
    momentum_used = False      # whether some sub-grid's optimizer uses a momentum
    spec = {"name": name, "study": raw.get("study"), "title": raw.get("title", name),
            "description": raw.get("description", ""), "chunk_size": chunk, "grids": {}}
    for gname, table in grids.items():
        if not isinstance(table, dict):
            raise StudyError(f"grids.{gname} must be a table")
        kind = table.get("kind", "mlp")
        if kind not in KINDS:
            raise StudyError(f"grids.{gname}.kind must be one of {list(KINDS)}, got {kind!r}")
        keys, _ = SCHEMA[kind]
        # [defaults] fills in the keys this kind takes
        merged = {**{k: v for k, v in defaults.items() if k in keys}, **table}
        merged.pop("kind", None)
        unknown = set(merged) - set(keys)
        if unknown:
            raise StudyError(f"unknown key(s) {sorted(unknown)} in grids.{gname} (kind {kind!r}); "
                             f"allowed: {sorted(keys)} and kind")
        if "data" not in merged:
            raise StudyError(f"grids.{gname} needs a data key")
        if kind == "mlp":
            if "lr" not in merged:
                raise StudyError(f"grids.{gname} needs an lr key")
            if "widths" in merged and ("depth" in merged or "width" in merged):
                raise StudyError(f"grids.{gname}: give widths, or depth and width, not both")
            if ("depth" in merged) != ("width" in merged):
                raise StudyError(f"grids.{gname}: depth and width go together")
            if "widths" not in merged and "depth" not in merged:
                raise StudyError(f"grids.{gname} needs widths (hidden layer widths) or depth and width")
        axes = []
        for key, value in merged.items():
            where = f"grids.{gname}.{key}"
            if key == "data":
                axes.extend(_data_axes(where, value))
                continue
            is_axis = key != "widths" or (isinstance(value, list) and bool(value)
                                          and isinstance(value[0], list))
            axes.append((key, _checked(where, _axis_values(where, value, list_is_axis=is_axis), keys[key])))
        if kind == "mlp":
            # a momentum in [defaults] is for the sub-grids whose optimizer uses it: the others
            # drop it (one in the sub-grid's own table stays a mistake there)
            from_defaults = "momentum" in defaults and "momentum" not in table
            uses = any(o in MOMENTUM_OPTIMIZERS for o in dict(axes).get("optimizer", [MLP_DEFAULTS["optimizer"]]))
            momentum_used = momentum_used or uses
            if from_defaults and not uses:
                axes = [(k, v) for k, v in axes if k != "momentum"]
            _check_momentum(gname, dict(axes), from_defaults)
        names = dict(axes)["data.name"]
        arg_keys = [k[5:] for k, _ in axes if k.startswith("data.") and k != "data.name"]
        for n in names:
            _check_data(f"grids.{gname}.data", n, arg_keys)
        spec["grids"][gname] = {"kind": kind, "axes": axes}
        _check_sample(spec, gname)
    if "momentum" in defaults and not momentum_used:
        uses = {g: sorted(set(dict(spec["grids"][g]["axes"]).get("optimizer", [MLP_DEFAULTS["optimizer"]])))
                for g in spec["grids"] if spec["grids"][g]["kind"] == "mlp"}
        raise StudyError(f"[defaults].momentum: no sub-grid uses it (a momentum applies only to optimizer "
                         f"\"momentum\" or \"nesterov\"; the sub-grids' optimizers: "
                         f"{', '.join(f'grids.{g}: {o}' for g, o in uses.items()) or 'none (no mlp sub-grid)'}); "
                         f"drop it or use one of those optimizers")
    return spec


# optimizers that use a momentum coefficient, and its default (simcore.optim.Optimizer's)
MOMENTUM_OPTIMIZERS = ("momentum", "nesterov")
DEFAULT_MOMENTUM = 0.9


def _check_momentum(gname, axes, from_defaults):
    """A ``momentum`` key with an optimizer that ignores it is a mistake, as in
    :func:`simcore.train_grid`: refuse it rather than train something else than was asked."""
    if "momentum" not in axes:
        return
    ignoring = sorted({o for o in axes.get("optimizer", [MLP_DEFAULTS["optimizer"]])
                       if o not in MOMENTUM_OPTIMIZERS})
    if ignoring:
        src = " (set in [defaults])" if from_defaults else ""
        raise StudyError(f"grids.{gname}.momentum{src}: optimizer {ignoring[0]!r} ignores momentum; "
                         f"drop the key or use optimizer = \"momentum\" or \"nesterov\" "
                         f"(default momentum {DEFAULT_MOMENTUM})")


# at most this many points of a sub-grid are built by load() to check it; planning checks all
_SAMPLE_POINTS = 4096
# axes whose values decide the checks a point goes through (the rest are numbers in range)
_RULE_AXES = {"batchnorm", "widths", "depth", "width", "probe_every", "track_sharpness",
              "track_preact", "optimizer", "batch_size", "record_every", "track_prenorm",
              "track_accuracy", "loss", "track_dead", "activation"}


def _check_sample(spec, gname):
    """Build the points of sub-grid ``gname`` that differ in the axes the checks look at (each
    such axis at its values, or its two ends if it is long; every other axis at its first
    value), so that a bad combination fails here without expanding the grid."""
    g = spec["grids"][gname]
    positions = []
    for key, vals in g["axes"]:
        if key in _RULE_AXES:
            positions.append(range(len(vals)) if len(vals) <= 64 else [0, len(vals) - 1])
        else:
            positions.append([0])
    for i, pos in enumerate(itertools.product(*positions)):
        if i >= _SAMPLE_POINTS:
            break
        make_point(spec, gname, pos, 0)


def count(spec):
    """The number of trainings in each sub-grid, ``{name: count}``, from its axes' lengths."""
    return {gname: math.prod(len(v) for _, v in g["axes"]) for gname, g in spec["grids"].items()}


def make_point(spec, gname, positions, index):
    """Point number ``index``: sub-grid ``gname`` with axis ``i`` at its ``positions[i]``-th
    value, as a flat dict (checked: batch norm needs a hidden layer, probes need full-batch
    gradient descent). Optimizers with momentum default it to 0.9 (``simcore.optim``); the
    others record 0.0, the value they never use."""
    g = spec["grids"][gname]
    kind = g["kind"]
    p = {"grid": gname, "kind": kind, **SCHEMA[kind][1]}
    data_args = {}
    for (key, vals), i in zip(g["axes"], positions):
        v = vals[i]
        if key.startswith("data."):
            if key == "data.name":
                p["data"] = v
            else:
                data_args[key[5:]] = v
        else:
            p[key] = v
    p["data_args"] = dict(sorted(data_args.items()))
    if kind == "mlp":
        if "depth" in p:
            p["widths"] = [p.pop("width")] * (p.pop("depth") - 1)
        p["depth"] = len(p["widths"]) + 1
        if p["batchnorm"] and p["depth"] < 2:
            raise StudyError(f"grids.{gname}: batchnorm needs at least one hidden layer")
        if p["optimizer"] in MOMENTUM_OPTIMIZERS and not any(k == "momentum" for k, _ in g["axes"]):
            p["momentum"] = DEFAULT_MOMENTUM
        _check_probes(f"grids.{gname}", p)
    p["point"] = index
    return p


def expand(spec):
    """The grid's points: a list of flat dicts (one per training), numbered by ``point``.
    (It builds every point: the runner plans large grids without it.)"""
    points = []
    for gname, g in spec["grids"].items():
        for pos in itertools.product(*[range(len(v)) for _, v in g["axes"]]):
            points.append(make_point(spec, gname, pos, len(points)))
    return points
