"""The study runner: grid files, chunking, the Parquet store, resuming, Dask, and the CLI's errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studies import cli, runner
from studies import spec as specmod
from studies.errors import StudyError
from studies.store import Store, chunk_key

ROOT = Path(__file__).resolve().parents[1]

TINY = """
title = "tiny"
chunk_size = 4
[defaults]
steps = 20
record_every = 5
[grids.nets]
data = {name = "moons", n = 64, noise = 0.1}
widths = [[4], [3, 3]]
activation = ["tanh", "relu"]
lr = [0.05, 0.5]
seed = {range = 3}
[grids.perc]
kind = "perceptron"
data = {name = "blobs", n = 40, margin = [0.1, 0.3]}
epochs = 30
seed = {range = 2}
"""


def write(tmp_path, text, name="grid.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------------------
# grid files

def test_expand_counts_and_order(tmp_path):
    spec = specmod.load(write(tmp_path, TINY))
    points = specmod.expand(spec)
    nets = [p for p in points if p["grid"] == "nets"]
    perc = [p for p in points if p["grid"] == "perc"]
    assert len(nets) == 2 * 2 * 2 * 3 and len(perc) == 2 * 2
    assert [p["point"] for p in points] == list(range(len(points)))
    assert {tuple(p["widths"]) for p in nets} == {(4,), (3, 3)}
    assert {p["depth"] for p in nets} == {2, 3}
    assert all(p["data_args"] == {"n": 64, "noise": 0.1} for p in nets)
    assert all(p["steps"] == 20 and p["record_every"] == 5 for p in nets)   # from [defaults]
    assert "steps" not in perc[0]                                           # defaults only where allowed
    assert [p["data_args"]["margin"] for p in perc] == [0.1, 0.1, 0.3, 0.3]


def test_range_forms_and_depth(tmp_path):
    spec = specmod.load(write(tmp_path, """
[grids.g]
data = "xor"
depth = [2, 4]
width = 5
lr = {geomspace = [0.001, 0.1, 3]}
init_scale = {linspace = [0.5, 1.5, 3]}
seed = {range = [10, 12]}
"""))
    points = specmod.expand(spec)
    assert len(points) == 2 * 3 * 3 * 2
    assert {tuple(p["widths"]) for p in points} == {(5,), (5, 5, 5)}
    np.testing.assert_allclose(sorted({p["lr"] for p in points}), [0.001, 0.01, 0.1])
    assert {p["seed"] for p in points} == {10, 11}


@pytest.mark.parametrize("text, message", [
    ("[grids.g]\ndata = 'moons'\nwidths = [4]\nlr = 0.1\nfoo = 1\n", "unknown key(s) ['foo']"),
    ("bogus = 1\n[grids.g]\ndata = 'moons'\nwidths = [4]\nlr = 0.1\n", "unknown top-level key(s) ['bogus']"),
    ("[grids.g]\ndata = 'moons'\nwidths = [4]\nlr = []\n", "grids.g.lr is an empty axis"),
    ("[grids.g]\ndata = 'moons'\nwidths = [4]\nlr = 'fast'\n", "grids.g.lr must be a finite number"),
    ("[grids.g]\ndata = 'moons'\nwidths = [4]\nlr = -1.0\n", "grids.g.lr must be >= 0"),
    ("[grids.g]\ndata = 'moons'\nwidths = [4]\nlr = 0.1\nsteps = 2.5\n", "grids.g.steps must be an integer"),
    ("[grids.g]\ndata = 'moons'\nwidths = [4]\nlr = 0.1\nactivation = 'swish'\n", "grids.g.activation must be one of"),
    ("[grids.g]\ndata = 'moons'\nwidths = [4]\nlr = 0.1\nbatchnorm = 'yes'\n", "batchnorm must be true or false"),
    ("[grids.g]\ndata = 'mnist'\nwidths = [4]\nlr = 0.1\n", "grids.g.data.name must be one of"),
    ("[grids.g]\ndata = {name = 'moons', bogus = 3}\nwidths = [4]\nlr = 0.1\n", "'bogus' is not an argument of data set 'moons'"),
    ("[grids.g]\ndata = 'moons'\nlr = 0.1\n", "needs widths"),
    ("[grids.g]\ndata = 'moons'\nwidths = [4]\n", "needs an lr key"),
    ("[grids.g]\nwidths = [4]\nlr = 0.1\n", "needs a data key"),
    ("[grids.g]\ndata = 'moons'\nwidths = [4]\nlr = {geomspace = [0, 1, 3]}\n", "geomspace needs start and stop > 0"),
    ("[grids.g]\ndata = 'moons'\nwidths = [4]\nlr = {logspace = [0, 1, 3]}\n", "unknown range form 'logspace'"),
    ("[grids.g]\nkind = 'svm'\ndata = 'moons'\n", "grids.g.kind must be one of"),
    ("[grids.g]\ndata = 'moons'\nwidths = [4, 0]\nlr = 0.1\n", "list of positive integers"),
    ("title = 'no grids'\n", "needs at least one [grids.NAME] table"),
    ("[grids.g\ndata = 'moons'\n", "is not valid TOML"),
])
def test_malformed_grids_name_the_problem(tmp_path, text, message):
    with pytest.raises(StudyError) as e:
        specmod.load(write(tmp_path, text))
    assert message in str(e.value)


# ------------------------------------------------------------------------------------------------
# plan and store

def test_plan_groups_per_network_values_and_keys_are_stable(tmp_path):
    spec = specmod.load(write(tmp_path, TINY))
    chunks = runner.plan(spec)
    # nets: 4 architectures x activation groups of 2 lr x 3 seeds = 6 points -> chunks of 4 and 2
    sizes = sorted(len(c["points"]) for c in chunks if c["kind"] == "mlp")
    assert sizes == [2, 2, 2, 2, 4, 4, 4, 4]
    for c in chunks:
        if c["kind"] == "mlp":
            shared = {k: v for k, v in c["points"][0].items() if k not in specmod.MLP_PER_NETWORK + ("point",)}
            for p in c["points"]:
                assert {k: p[k] for k in shared} == shared
    again = runner.plan(specmod.load(write(tmp_path, TINY, "copy.toml")))
    assert [c["key"] for c in chunks] == [c["key"] for c in again]
    assert len({c["key"] for c in chunks}) == len(chunks)
    changed = dict(chunks[0]["points"][0], lr=0.123)
    assert chunk_key("mlp", [changed] + chunks[0]["points"][1:]) != chunks[0]["key"]


def test_store_writes_atomically_and_ignores_temporaries(tmp_path):
    store = Store(tmp_path / "s").prepare()
    df = pd.DataFrame({"a": [1, 2, 3]})
    store.write("abc", df)
    assert store.has("abc") and not list(store.parts.glob(".*.tmp"))
    (store.parts / ".dead.1234.tmp").write_bytes(b"half a parquet file")   # left by a killed run
    Store(tmp_path / "s").prepare()
    assert not list(store.parts.glob(".*.tmp"))
    pd.testing.assert_frame_equal(store.read(["abc"]), df)
    with pytest.raises(StudyError, match="1 of 2 chunks have no results"):
        store.read(["abc", "missing"])


def test_run_stores_long_form_rows_with_configuration(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["run", str(write(tmp_path, TINY)), "--out", str(out), "--quiet"]) == 0
    spec = specmod.load(out / "spec.toml")
    df = runner.results(spec, out)
    nets = df[df["kind"] == "mlp"]
    assert nets["point"].nunique() == 24
    # one row per (network, recorded step, layer): steps 0, 5, ..., 20 and 2 or 3 layers
    rows = nets.groupby("point").size()
    depth = nets.groupby("point")["depth"].first()
    assert (rows == 5 * depth).all()
    for col in ("lr", "seed", "activation", "widths", "loss_fn", "data", "data_n", "grad_norm",
                "final_loss", "final_accuracy", "diverged"):
        assert col in df.columns
    perc = df[df["kind"] == "perceptron"]
    assert perc["point"].nunique() == 4 and (perc["total_mistakes"] <= perc["bound"]).all()
    for name in ("report.html", "report.md", "claims.json", "figures"):
        assert (out / name).exists()
    assert (tmp_path / "index.html").exists()
    assert json.loads((out / "claims.json").read_text())["claims"] == []
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html          # standalone: figures embedded

    # a rerun computes nothing and the report rebuilds from the store alone
    before = {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir()}
    assert cli.main(["run", str(tmp_path / "grid.toml"), "--out", str(out), "--quiet"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "parts").iterdir()} == before
    (out / "report.html").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert (out / "report.html").exists()


def test_same_network_same_numbers_in_any_chunking(tmp_path):
    """A network's results depend on its own configuration only, not on its chunk-mates."""
    a = specmod.load(write(tmp_path, TINY))
    b = specmod.load(write(tmp_path, TINY.replace("chunk_size = 4", "chunk_size = 1"), "b.toml"))
    runner.run(a, tmp_path / "a", quiet=True)
    runner.run(b, tmp_path / "b", quiet=True)
    pd.testing.assert_frame_equal(runner.results(a, tmp_path / "a"), runner.results(b, tmp_path / "b"))


KILL_GRID = """
chunk_size = 2
[grids.g]
data = {name = "moons", n = 256}
widths = [16, 16]
steps = 400
record_every = 50
lr = [0.1, 0.2]
seed = {range = 6}
"""


def _simstudy(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "studies", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_sigkill_then_resume_gives_the_uninterrupted_results(tmp_path):
    grid = write(tmp_path, KILL_GRID)
    out = tmp_path / "killed"
    proc = _simstudy("run", str(grid), "--out", str(out), "--quiet")
    parts = out / "parts"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if parts.exists() and list(parts.glob("*.parquet")):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = len(list(parts.glob("*.parquet")))
    assert 1 <= stored < 6, "the run should have been killed part-way"
    assert cli.main(["run", str(grid), "--out", str(out), "--quiet"]) == 0
    assert len(list(parts.glob("*.parquet"))) == 6
    clean = tmp_path / "clean"
    assert cli.main(["run", str(grid), "--out", str(clean), "--quiet"]) == 0
    spec = specmod.load(grid)
    pd.testing.assert_frame_equal(runner.results(spec, out), runner.results(spec, clean))


def test_dask_local_cluster_matches_the_local_run(tmp_path):
    pytest.importorskip("dask.distributed")
    grid = write(tmp_path, TINY)
    assert cli.main(["run", str(grid), "--out", str(tmp_path / "local"), "--quiet"]) == 0
    assert cli.main(["run", str(grid), "--out", str(tmp_path / "dask"), "--backend", "dask",
                     "--workers", "2", "--quiet"]) == 0
    spec = specmod.load(grid)
    pd.testing.assert_frame_equal(runner.results(spec, tmp_path / "local"),
                                  runner.results(spec, tmp_path / "dask"))


# ------------------------------------------------------------------------------------------------
# the CLI's errors: one line, exit code 2, no traceback

def _cli_error(capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("simstudy: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_unknown_study(capsys):
    err = _cli_error(capsys, ["run", "no-such-study"])
    assert "unknown study 'no-such-study'" in err and "convergence" in err


def test_malformed_grid_file(capsys, tmp_path):
    err = _cli_error(capsys, ["run", str(write(tmp_path, "[grids.g]\ndata = 'moons'\nwidths = [4]\nlr = 0.1\nlrr = 2\n")),
                              "--out", str(tmp_path / "o")])
    assert "unknown key(s) ['lrr']" in err
    assert not (tmp_path / "o").exists()        # nothing written for a grid that does not parse


def test_missing_grid_file(capsys, tmp_path):
    assert "does not exist" in _cli_error(capsys, ["run", str(tmp_path / "nope.toml")])


def test_unwritable_output_directory(capsys, tmp_path):
    grid = write(tmp_path, TINY)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    err = _cli_error(capsys, ["run", str(grid), "--out", str(blocker / "run")])   # parent is a file
    assert "is not writable" in err
    if os.geteuid() != 0:                                                          # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            assert "is not writable" in _cli_error(capsys, ["run", str(grid), "--out", str(locked / "run")])
        finally:
            locked.chmod(0o700)


def test_bad_data_argument_fails_before_training(capsys, tmp_path):
    grid = write(tmp_path, "[grids.g]\ndata = {name = 'moons', n = -5}\nwidths = [4]\nlr = 0.1\n")
    err = _cli_error(capsys, ["run", str(grid), "--out", str(tmp_path / "o")])
    assert "data set 'moons'" in err and "n must be >= 1" in err
    assert not list((tmp_path / "o" / "parts").glob("*.parquet"))


def test_a_bad_data_set_past_the_checked_sample_fails_its_chunk_by_name(tmp_path):
    """check_data builds a sample of a long data axis (its ends); a bad value inside it fails
    its own chunk, named, and the others are stored."""
    sizes = [*range(16, 24), 4, *range(24, 32)]      # 17 values: only the ends are built first
    spec = specmod.load(write(tmp_path, f"[grids.g]\ndata = {{name = 'moons', n = {sizes}}}\n"
                                        f"widths = [[2]]\nlr = 0.1\nsteps = 2\nrecord_every = 1\n"
                                        f"batch_size = 8\n"))
    runner.check_data(spec)
    assert len(list(runner._data_settings(spec))) == 2
    with pytest.raises(runner.ChunksFailed, match=r"1 of 17 chunks failed .*batch_size \(8\) exceeds the 4 samples"):
        runner.run(spec, tmp_path / "o", quiet=True, log=lambda m: None)
    assert len(list((tmp_path / "o" / "parts").glob("*.parquet"))) == 16


def test_unreachable_scheduler_keeps_what_was_computed(capsys, tmp_path):
    pytest.importorskip("dask.distributed")
    grid = write(tmp_path, TINY)
    out = tmp_path / "run"
    assert cli.main(["run", str(grid), "--out", str(out), "--quiet"]) == 0
    victim = sorted((out / "parts").iterdir())[0]
    victim.unlink()                       # one chunk left to compute: the scheduler is needed
    parts = sorted(p.name for p in (out / "parts").iterdir())
    err = _cli_error(capsys, ["run", str(grid), "--out", str(out), "--backend", "dask",
                              "--scheduler", "tcp://127.0.0.1:9", "--quiet"])
    assert "cannot reach the Dask scheduler" in err
    assert sorted(p.name for p in (out / "parts").iterdir()) == parts


def test_option_mistakes(capsys, tmp_path):
    assert "go with --backend dask" in _cli_error(capsys, ["run", str(write(tmp_path, TINY)), "--workers", "2"])
    assert "--workers must be >= 1" in _cli_error(capsys, ["run", str(tmp_path / "grid.toml"),
                                                           "--backend", "dask", "--workers", "0"])
    assert "holds no study run" in _cli_error(capsys, ["report", str(tmp_path)])


def test_cuda_backend_without_a_gpu(capsys, tmp_path):
    try:
        from simcore.grid import cuda
        if cuda.available():
            pytest.skip("a GPU (or the simulator) is present")
    except ImportError:
        pass
    err = _cli_error(capsys, ["run", str(write(tmp_path, TINY)), "--out", str(tmp_path / "o"),
                              "--backend", "cuda", "--quiet"])
    assert "--backend cpu" in err


def test_list_names_every_study(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "convergence" in out and "perceptron" in out


PROBED = """
chunk_size = 8
[grids.g]
data = {name = "moons", n = 48}
widths = [5, 4]
activation = "tanh"
loss = "mse"
steps = 23
record_every = 2
lr = [0.5, 4.0, 1e4]
seed = {range = 2}
"""


def test_probes_keep_the_trajectory_of_one_call(tmp_path):
    plain = specmod.load(write(tmp_path, PROBED))
    probed = specmod.load(write(tmp_path, PROBED + "probe_every = 6\ntrack_preact = true\n", "p.toml"))
    runner.run(plain, tmp_path / "plain", quiet=True)
    runner.run(probed, tmp_path / "probed", quiet=True)
    a, b = runner.results(plain, tmp_path / "plain"), runner.results(probed, tmp_path / "probed")
    assert b["diverged"].any()                     # lr = 1e4 diverges: frozen, rows end there
    cols = [c for c in a.columns if c not in ("probe_every", "track_preact", "chunk")]
    pd.testing.assert_frame_equal(a[cols], b[cols], check_dtype=False)
    probes = b.dropna(subset=["preact_p50"]).drop_duplicates(["point", "step"])
    alive = probes[~probes["diverged"]]
    assert sorted(alive["step"].unique()) == [0, 6, 12, 18, 23]
    # the probe equals a direct computation from the stored configuration
    from simcore import MLP
    from simcore.grid import initial_params
    X, y = runner.make_data("moons", {"n": 48})
    net = MLP([2, 5, 4, 1], activation="tanh", loss="mse")
    first = alive[alive["step"] == 0].iloc[0]
    params = initial_params(net, [int(first["seed"])])
    u = net.activation_inputs([{k: v[0] for k, v in layer.items()} for layer in params], X)[-1][:, 0]
    np.testing.assert_allclose([first["preact_p15"], first["preact_p50"], first["preact_p85"]],
                               np.percentile(u, [15, 50, 85]))
    assert np.isnan(b["sharpness"]).all()           # not tracked


@pytest.mark.parametrize("extra, message", [
    ("probe_every = 6\n", "nothing is tracked"),
    ("track_preact = true\n", "need probe_every >= 1"),
    ("probe_every = 5\ntrack_preact = true\n", "must be a multiple of record_every"),
    ("probe_every = 6\ntrack_preact = true\noptimizer = 'adam'\n", "probes need full-batch gradient descent"),
    ("probe_every = 6\ntrack_preact = true\nbatch_size = 8\n", "probes need full-batch gradient descent"),
])
def test_probe_settings_are_checked(tmp_path, extra, message):
    with pytest.raises(StudyError, match=message):
        specmod.load(write(tmp_path, PROBED + extra))


def test_sharpness_probe_matches_a_direct_call(tmp_path):
    spec = specmod.load(write(tmp_path, PROBED + "probe_every = 12\ntrack_sharpness = true\n"))
    runner.run(spec, tmp_path / "s", quiet=True)
    df = runner.results(spec, tmp_path / "s")
    first = df[(df["step"] == 0) & (df["layer"] == 1)].iloc[0]
    from simcore import MLP
    from simcore.grid import initial_params
    from simcore.hessian import sharpness
    X, y = runner.make_data("moons", {"n": 48})
    net = MLP([2, 5, 4, 1], activation="tanh", loss="mse")
    direct = sharpness(net, initial_params(net, [int(first["seed"])]), X, y, seed=0)
    np.testing.assert_allclose(first["sharpness"], direct[0], rtol=1e-12)
    assert df.dropna(subset=["sharpness"])["step"].max() > 0


def test_integer_configuration_stays_integer_across_sub_grids(tmp_path):
    spec = specmod.load(write(tmp_path, TINY))
    runner.run(spec, tmp_path / "r", quiet=True)
    df = runner.results(spec, tmp_path / "r")
    assert str(df["steps"].dtype) == "Int64"            # absent from the perceptron's rows
    assert str(df["epochs"].dtype) == "Int64"           # absent from the networks' rows
    assert df.loc[df["grid"] == "nets", "steps"].eq(20).all()
    assert df.loc[df["grid"] == "perc", "epochs"].eq(30).all()
    assert df.loc[df["grid"] == "perc", "steps"].isna().all()
