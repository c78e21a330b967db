"""The TOML reader's rules: the momentum default and the options an optimizer ignores (the same
rule as simcore.train_grid), the batch size checked against the data, streaming planning equal
to planning from every point, and a property test: any dict gives a spec or a StudyError."""
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studies import runner
from studies import spec as specmod
from studies.errors import StudyError
from studies.store import chunk_key


def table(**grid):
    base = {"data": {"name": "moons", "n": 32}, "widths": [3], "lr": 0.1, "steps": 4, "record_every": 2}
    return {"chunk_size": 3, "grids": {"g": {**base, **grid}}}


# ------------------------------------------------------------------------------------------------
# one rule for defaults and ignored options

@pytest.mark.parametrize("optimizer", ["gd", "sgd", "adam"])
def test_momentum_with_an_optimizer_that_ignores_it_is_refused(optimizer):
    with pytest.raises(StudyError, match=f"grids.g.momentum: optimizer '{optimizer}' ignores momentum"):
        specmod.load(table(optimizer=optimizer, momentum=0.9))
    with pytest.raises(StudyError, match=r"\[defaults\].momentum: no sub-grid uses it"):
        specmod.load({**table(optimizer=optimizer), "defaults": {"momentum": 0.5}})
    with pytest.raises(StudyError, match=r"grids.g.momentum \(set in \[defaults\]\)"):
        specmod.load({**table(optimizer=["momentum", optimizer]), "defaults": {"momentum": 0.5}})
    with pytest.raises(StudyError, match="grids.g.momentum"):
        specmod.load(table(optimizer=["momentum", optimizer], momentum=0.9))


def test_a_momentum_in_defaults_applies_to_the_sub_grids_that_use_one():
    """A momentum in [defaults] made every gd sub-grid an error."""
    doc = table(optimizer="gd")
    doc["grids"]["m"] = {**doc["grids"]["g"], "optimizer": "nesterov"}
    doc["grids"]["s"] = {**doc["grids"]["g"], "optimizer": "sgd", "batch_size": 8}
    spec = specmod.load({**doc, "defaults": {"momentum": 0.5}})
    mu = {p["grid"]: p["momentum"] for p in specmod.expand(spec)}
    assert mu == {"g": 0.0, "m": 0.5, "s": 0.0}
    assert spec["grids"]["g"]["axes"] == specmod.load(table(optimizer="gd"))["grids"]["g"]["axes"]
    own = {**doc, "defaults": {"momentum": 0.5}}
    own["grids"]["g"] = {**doc["grids"]["g"], "momentum": 0.7}    # its own key: still a mistake
    with pytest.raises(StudyError, match=r"grids.g.momentum: optimizer 'gd' ignores momentum"):
        specmod.load(own)
    perceptron = {"grids": {"p": {"kind": "perceptron", "data": "blobs"}}, "defaults": {"momentum": 0.5}}
    with pytest.raises(StudyError, match=r"\[defaults\].momentum: no sub-grid uses it"):
        specmod.load(perceptron)


def test_momentum_defaults_to_simcores_and_is_passed_only_where_used(monkeypatch):
    import simcore
    from simcore.optim import Optimizer

    default = Optimizer("momentum").momentum if hasattr(Optimizer("momentum"), "momentum") else 0.9
    spec = specmod.load(table(optimizer=["gd", "momentum", "nesterov"]))
    mu = {p["optimizer"]: p["momentum"] for p in specmod.expand(spec)}
    assert mu == {"gd": 0.0, "momentum": default, "nesterov": default}
    assert specmod.expand(specmod.load(table(optimizer="momentum", momentum=0.5)))[0]["momentum"] == 0.5
    calls = []
    real = simcore.train_grid

    def spy(*args, **kwargs):
        calls.append((kwargs["optimizer"], kwargs.get("momentum")))
        return real(*args, **kwargs)

    monkeypatch.setattr(simcore, "train_grid", spy)
    for c in runner.plan(spec):
        runner.compute_chunk(c)
    assert [(o, None if m is None else list(m)) for o, m in calls] == [
        ("gd", None), ("momentum", [default]), ("nesterov", [default])]


def test_momentum_without_a_key_trains_with_the_default_not_like_gd():
    spec = specmod.load(table(optimizer=["gd", "momentum"], lr=0.5, steps=20))
    rows = [runner.compute_chunk(c).drop_duplicates("point") for c in runner.plan(spec)]
    gd, mom = (float(r["final_loss"].iloc[0]) for r in rows)
    assert gd != mom


def test_batch_size_past_the_sample_count_is_refused_like_the_api():
    spec = specmod.load(table(batch_size=[8, 100000]))
    with pytest.raises(StudyError, match=r"grids.g.batch_size \(100000\) exceeds the 32 samples"):
        runner.check_data(spec)
    runner.check_data(specmod.load(table(batch_size=[8, 32])))


# ------------------------------------------------------------------------------------------------
# streaming planning

def _plan_from_every_point(spec):
    """The plan as it was made before planning streamed: expand, group, cut."""
    groups = {}
    for p in specmod.expand(spec):
        groups.setdefault(runner.group_key(p), []).append(p)
    size = spec["chunk_size"]
    return [chunk_key(m[0]["kind"], m[i:i + size])
            for m in groups.values() for i in range(0, len(m), size)]


@pytest.mark.parametrize("grids", [
    # per-network axes before and between the shared ones
    {"g": {"lr": [0.1, 0.2, 0.3], "data": {"name": "moons", "n": [16, 24]}, "seed": {"range": 2},
           "widths": [[2], [3, 3]], "activation": ["tanh", "relu"]}},
    # depth 1 at two widths: one network twice over, one train_grid group
    {"g": {"data": "xor", "depth": [1, 2], "width": [3, 5], "seed": {"range": 4}, "lr": 0.1}},
    # a value repeated on a shared axis
    {"g": {"data": "xor", "widths": [[2], [3], [2]], "lr": [0.1, 0.2]},
     "p": {"kind": "perceptron", "data": {"name": "blobs", "n": 20, "margin": [0.1, 0.2]}, "seed": {"range": 3}}},
])
def test_streaming_plan_equals_the_plan_from_every_point(grids):
    spec = specmod.load({"chunk_size": 3, "grids": grids})
    chunks = runner.plan(spec)
    assert [c["key"] for c in chunks] == _plan_from_every_point(spec)
    assert runner.chunk_count(spec) == len(chunks)
    assert sorted(p["point"] for c in chunks for p in c["points"]) == list(range(sum(specmod.count(spec).values())))


def test_range_axes_are_counted_without_being_built():
    spec = specmod.load(table(lr={"geomspace": [1e-3, 1.0, 10**6]}, seed={"range": 10**6}))
    assert specmod.count(spec) == {"g": 10**12}
    lr = dict(spec["grids"]["g"]["axes"])["lr"]
    np.testing.assert_array_equal(list(specmod.Span("geomspace", [1e-3, 1.0, 7])), np.geomspace(1e-3, 1.0, 7))
    assert lr[0] == 1e-3 and math.isclose(lr[len(lr) - 1], 1.0)
    with pytest.raises(StudyError, match="grids.g.seed must be >= 0"):
        specmod.load(table(seed={"range": [-3, 5]}))
    with pytest.raises(StudyError, match="grids.g.steps must be an integer"):
        specmod.load(table(steps={"linspace": [1, 5, 3]}))


# ------------------------------------------------------------------------------------------------
# property test of the reader

KEYS = sorted(set(specmod.MLP_KEYS) | set(specmod.PERCEPTRON_KEYS) | {"kind", "depth", "width", "bogus"})
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**12) | st.integers(), st.floats(allow_nan=True),
                    st.sampled_from(["moons", "xor", "blobs", "full", "gd", "momentum", "adam", "tanh", "mse",
                                     "ce", "perceptron", "mlp", "float32", "", "geomspace"]))
ranges = st.one_of(
    st.fixed_dictionaries({"range": st.one_of(st.integers(-5, 10**15), st.lists(st.integers(-5, 50), max_size=3))}),
    st.fixed_dictionaries({"geomspace": st.lists(st.one_of(st.integers(-2, 10**20), st.floats()), max_size=4)}),
    st.fixed_dictionaries({"logspace": st.lists(st.integers(0, 3), max_size=3)}),
    st.fixed_dictionaries({"linspace": st.lists(st.one_of(st.integers(-2, 100), st.floats()), max_size=4)}))
values = st.recursive(st.one_of(scalars, ranges), lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["name", "n", "noise", "seed", "hidden", "range"]), inner,
                                        max_size=3), max_leaves=6)
grid_tables = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)
good_start = st.fixed_dictionaries({"data": st.sampled_from(["moons", "xor", {"name": "blobs", "n": 12}]),
                                    "widths": st.sampled_from([[], [3], [[2], [2, 2]]]),
                                    "lr": st.sampled_from([0.1, [0.1, 1e300]])})
# plausible settings, so that a fair share of the documents are valid grids
near_good = st.dictionaries(st.sampled_from(["steps", "record_every", "seed", "optimizer", "activation",
                                             "batch_size", "momentum", "batchnorm", "loss", "probe_every"]),
                            st.sampled_from([1, 2, 10, "gd", "momentum", "tanh", "full", 0.5, True,
                                             "ce", {"range": 3}, [1, 2]]), max_size=3)
documents = st.fixed_dictionaries(
    {"grids": st.dictionaries(st.sampled_from(["a", "b"]), st.one_of(
        grid_tables, values, st.builds(lambda a, b: {**a, **b}, good_start, grid_tables),
        st.builds(lambda a, b: {**a, **b}, good_start, near_good)), max_size=2)},
    optional={"defaults": st.one_of(grid_tables, values), "chunk_size": values, "study": values,
              "title": values, "bogus": values})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_dict_gives_a_spec_or_a_study_error(doc):
    try:
        spec = specmod.load(doc)
    except StudyError:
        return
    n = sum(specmod.count(spec).values())
    assert n >= 1
    est = runner.estimate(spec, data=False)
    assert est["trainings"] == n and est["result_bytes"] > 0
    if n <= 64:
        points = specmod.expand(spec)
        assert [p["point"] for p in points] == list(range(n))
        json.dumps(points, default=str)
