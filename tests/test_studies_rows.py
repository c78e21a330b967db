"""studies.rows: the column registry covers every column a chunk stores, each run's data set
arguments come back exactly as the grid gave them, and the row selections the studies share."""
import tomllib

import numpy as np
import pytest

from simcore.grid.core import QUANTITIES
from studies import rows, runner
from studies import spec as specmod
from studies.store import concat_parts

GRID = """
chunk_size = 4
[defaults]
steps = 4
record_every = 2
[grids.a]
data = {name = "moons", n = 16, noise = 0.1}
widths = [3]
lr = [0.1, 0.2]
[grids.b]
data = {name = "teacher_student", n = 12, d_in = 2, hidden = [], seed = 1}
widths = []
activation = "identity"
loss = "mse"
lr = 0.1
[grids.p]
kind = "perceptron"
data = {name = "blobs", n = 10, margin = 0.5}
epochs = 3
"""


@pytest.fixture(scope="module")
def stored():
    """The rows of GRID's chunks as the store concatenates them, and the grid's points."""
    spec = specmod.load(tomllib.loads(GRID), name="g")
    parts = [runner.compute_chunk(c) for c in runner.plan(spec)]
    return concat_parts(parts), {p["point"]: p for p in specmod.expand(spec)}


def test_every_stored_column_is_a_result_or_configuration(stored):
    data, points = stored
    assert set(QUANTITIES) <= rows.RESULT_COLUMNS
    config = {("loss_fn" if k == "loss" else k) for p in points.values() for k in p}
    config |= {f"data_{a}" for p in points.values() for a in p["data_args"]}
    assert set(data.columns) <= rows.RESULT_COLUMNS | config
    assert not rows.RESULT_COLUMNS & config - {"data_args"}


def test_data_args_come_back_as_the_grid_gave_them(stored):
    """The flat data_n column is empty where a sub-grid lacks it and a list is text there; the
    data_args column keeps integers, lists and every argument of its own sub-grid."""
    data, points = stored
    for _, row in rows.per_run(data).iterrows():
        args = rows.data_args(row)
        assert args == points[row["point"]]["data_args"]
        assert all(type(v) is type(points[row["point"]]["data_args"][k]) for k, v in args.items())
        X, y = rows.data_set(row)
        assert X.shape[0] == args["n"]
    b = rows.per_run(data[data["grid"] == "b"]).iloc[0]
    assert rows.data_args(b)["hidden"] == [] and b["data_hidden"] == "[]"
    assert rows.data_label(b) == "teacher_student(d_in=2, hidden=[], n=12, seed=1)"
    assert data[data["grid"] == "b"]["data_noise"].isna().all()


def test_row_selections(stored):
    data, _ = stored
    mlp, perc = rows.of_kind(data, "mlp"), rows.of_kind(data, "perceptron")
    assert set(mlp["grid"]) == {"a", "b"} and set(perc["grid"]) == {"p"}
    assert rows.of_kind(data.drop(columns="kind"), "mlp").empty
    one = rows.per_run(mlp)
    assert list(one.index) == list(one["point"]) == sorted(mlp["point"].unique())
    last = rows.per_run(perc, keep="last")
    np.testing.assert_array_equal(last["epoch"], perc.groupby("point")["epoch"].max())
    axes = rows.varying_axes(mlp, {"point", "grid"})
    assert {"lr", "loss_fn", "widths", "data", "activation"} <= set(axes)
    assert not set(axes) & (rows.RESULT_COLUMNS | {"point", "grid", "data_args", "steps"})
    assert rows.slug("Least squares on teacher_student(n=24)") == "least_squares_on_teacher_student_n_24"


def test_integer_columns_restores_whole_complete_columns_only():
    """A column a kind lacks reads back as float with NaN; once the rows of one kind are
    selected, the whole-valued complete ones are integers again, the others stay as they are."""
    import pandas as pd
    from studies.rows import integer_columns
    df = pd.DataFrame({"seed": [1.0, 2.0], "epochs": [3.0, np.nan], "eta": [0.5, 1.0], "n": [1.5, 2.0]})
    out = integer_columns(df, ("seed", "epochs", "n", "absent"))
    assert out["seed"].dtype == np.int64 and out["seed"].tolist() == [1, 2]
    assert out["epochs"].dtype == np.float64 and out["n"].dtype == np.float64
    assert df["seed"].dtype == np.float64  # the input is left as it was
