"""The CLI before and after work: output directories it refuses, checks that run before anything
is written, size guards (a grid of 10^9 trainings refused at once), ``run all --out ROOT``, and
reports for every outcome (every network diverged, a single network, a chunk that failed)."""
import json
import re
import time

import pytest

from studies import STUDIES, cli, runner
from studies import spec as specmod
from studies.store import Store

GRID = """
chunk_size = 2
[defaults]
steps = 10
record_every = 5
[grids.g]
data = {name = "moons", n = 32}
widths = [[3]]
lr = LR
seed = {range = SEEDS}
"""


def grid(tmp_path, lr="[0.05, 0.5]", seeds=2, extra="", name="grid.toml", study=None):
    p = tmp_path / name
    p.write_text((f'study = "{study}"\n' if study else "") + GRID.replace("LR", lr).replace("SEEDS", str(seeds)) + extra)
    return p


def _error(capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("simstudy: error: ") and "\n" not in err and "Traceback" not in err
    return err


# ------------------------------------------------------------------------------------------------
# output directories

def test_an_empty_out_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "--out is empty" in _error(capsys, ["run", str(grid(tmp_path)), "--out", ""])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.toml"]
    assert "--out is empty" in _error(capsys, ["run", "all", "--out", ""])


def test_an_out_that_is_a_file_is_refused(capsys, tmp_path):
    (tmp_path / "taken").write_text("mine")
    assert "is a file" in _error(capsys, ["run", str(grid(tmp_path)), "--out", str(tmp_path / "taken")])
    assert (tmp_path / "taken").read_text() == "mine"


def test_an_out_inside_another_runs_directory_is_refused(capsys, tmp_path):
    g = grid(tmp_path)
    run1 = tmp_path / "run1"
    assert cli.main(["run", str(g), "--out", str(run1), "--quiet"]) == 0
    parts = sorted(p.name for p in (run1 / "parts").iterdir())
    err = _error(capsys, ["run", str(g), "--out", str(run1 / "parts")])
    assert "inside the parts directory of the run in" in err
    assert "inside the parts directory" in _error(capsys, ["run", str(g), "--out", str(run1 / "parts" / "deeper")])
    assert "inside the run directory" in _error(capsys, ["run", str(g), "--out", str(run1 / "sub")])
    assert sorted(p.name for p in (run1 / "parts").iterdir()) == parts and not (run1 / "sub").exists()


def test_a_parts_directory_that_is_no_runs_does_not_make_one(capsys, tmp_path):
    """Any directory with a parts/ subdirectory counted as a run: --out beside it was refused."""
    (tmp_path / "x" / "parts").mkdir(parents=True)
    assert cli.main(["run", str(grid(tmp_path)), "--out", str(tmp_path / "x" / "sub"), "--quiet"]) == 0
    assert cli.main(["run", str(grid(tmp_path)), "--out", str(tmp_path / "x" / "parts" / "r"), "--quiet"]) == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / ".lock").touch()                    # some other program's lock
    assert cli.main(["run", str(grid(tmp_path)), "--out", str(tmp_path / "other" / "r"), "--quiet"]) == 0
    for made in (".lock.owner", "parts"):                     # a run before it wrote spec.toml
        d = tmp_path / f"locked-{made}"
        d.mkdir()
        (d / ".lock").touch()
        (d / made).mkdir() if made == "parts" else (d / made).touch()
        assert "inside the run directory" in _error(capsys, ["run", str(grid(tmp_path)), "--out", str(d / "sub")])


def test_a_grid_that_fails_its_checks_creates_nothing(capsys, tmp_path):
    out = tmp_path / "o"
    for extra in ("batch_size = 100000\n", "momentum = 0.9\n"):
        _error(capsys, ["run", str(grid(tmp_path, extra=extra)), "--out", str(out)])
        assert not out.exists()
    _error(capsys, ["run", str(grid(tmp_path)), "--out", str(out), "--workers", "2"])
    assert not out.exists()


def test_an_unreachable_scheduler_creates_nothing(capsys, tmp_path):
    pytest.importorskip("dask.distributed")
    out = tmp_path / "o"
    err = _error(capsys, ["run", str(grid(tmp_path)), "--out", str(out), "--backend", "dask",
                          "--scheduler", "tcp://127.0.0.1:9", "--quiet"])
    assert "cannot reach the Dask scheduler" in err and not out.exists()


def test_cuda_without_a_gpu_creates_nothing(capsys, tmp_path):
    try:
        from simcore.grid import cuda
        if cuda.available():
            pytest.skip("a GPU (or the simulator) is present")
    except ImportError:
        pass
    out = tmp_path / "o"
    assert "--backend cpu" in _error(capsys, ["run", str(grid(tmp_path)), "--out", str(out), "--backend", "cuda"])
    assert not out.exists()


# ------------------------------------------------------------------------------------------------
# size guards

def test_a_grid_of_a_billion_trainings_is_refused_at_once(capsys, tmp_path):
    """The reported bug: 59 s of silence, then MemoryError."""
    out = tmp_path / "o"
    t0 = time.perf_counter()
    err = _error(capsys, ["run", str(grid(tmp_path, seeds=10**9 // 2)), "--out", str(out)])
    assert time.perf_counter() - t0 < 10
    assert "1,000,000,000 trainings" in err and "--yes" in err and "TiB of results" in err
    assert not out.exists()


def test_a_grid_of_many_results_is_refused_and_a_million_trainings_start_in_seconds(capsys, tmp_path):
    few_but_long = grid(tmp_path, extra="steps = 10000000\nrecord_every = 1\n")
    assert "GiB of results" in _error(capsys, ["run", str(few_but_long), "--out", str(tmp_path / "o")])
    t0 = time.perf_counter()
    spec = specmod.load(grid(tmp_path, lr="{geomspace = [0.001, 1.0, 1000]}", seeds=1000, name="m.toml"))
    est = runner.preflight(spec, yes=True)
    line = runner.describe(spec, est)
    first = next(runner.iter_chunks(spec))
    assert time.perf_counter() - t0 < 10
    assert line.startswith("m: 1,000,000 trainings in 500,000 chunks; about ") and "roughly" in line
    assert [p["point"] for p in first["points"]] == [0, 1]
    with pytest.raises(specmod.StudyError, match="1,000,001 trainings"):
        runner.check_size(specmod.load(grid(tmp_path, lr="{geomspace = [0.001, 1.0, 1000]}",
                                            seeds=1000, extra="[grids.h]\ndata = 'xor'\nwidths = []\nlr = 0.1\n",
                                            name="m1.toml")))


@pytest.mark.parametrize("axes, trainings", [
    # 10^6 train_grid groups over shared axes: 79 s of planning before the first line
    ('data = "moons"\nwidth = {range = [1, 1001]}\ndepth = {range = [2, 1002]}\n', "1,000,000"),
    # 10^5 data sets along a data axis: check_data built every one, 28 s of silence
    ('data = {name = "moons", n = 32, seed = {range = 100000}}\nwidths = [[4]]\n', "100,000"),
])
def test_grids_of_many_groups_or_data_sets_start_in_seconds(capsys, tmp_path, monkeypatch, axes, trainings):
    g = tmp_path / "many.toml"
    g.write_text(f"[grids.g]\n{axes}lr = 0.1\nsteps = 10\n")

    def first_chunk(chunk, backend="cpu"):
        raise KeyboardInterrupt              # stop at the first chunk: nothing trains

    monkeypatch.setattr(runner, "compute_chunk", first_chunk)
    t0 = time.perf_counter()
    assert cli.main(["run", str(g), "--out", str(tmp_path / "o"), "--yes"]) == 130
    assert time.perf_counter() - t0 < 10
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"many: {trainings} trainings in {trainings} chunks; about "), err[0]


def test_a_chunk_past_simcores_per_call_limit_is_refused_before_anything_is_made(capsys, tmp_path, monkeypatch):
    """preflight counted each chunk's telemetry but never held it against simcore.config.MAX_GIB:
    the directory was made and every chunk then failed with train_grid's ValueError."""
    from simcore import config
    g = tmp_path / "big.toml"
    g.write_text(grid(tmp_path, seeds=128).read_text().replace("chunk_size = 2", "chunk_size = 256")
                 .replace("steps = 10", "steps = 200").replace("record_every = 5", "record_every = 1"))
    monkeypatch.setattr(config, "MAX_GIB", 2.0**-10)          # 1 MiB, read at call time
    out = tmp_path / "o"
    err = _error(capsys, ["run", str(g), "--out", str(out), "--yes"])
    assert "grids.g: a chunk of 256 networks (chunk_size = 256) needs " in err
    assert "past simcore's limit of 1 MiB" in err and "0.0 GiB" not in err
    fits = int(re.search(r"a chunk_size of at most (\d+), or a larger record_every", err).group(1))
    assert not out.exists()
    spec = specmod.load(g)
    spec["chunk_size"] = fits
    runner.preflight(spec)                                     # the advice is right: it fits now
    spec["chunk_size"] = fits + 1
    with pytest.raises(specmod.StudyError, match="past simcore's limit"):
        runner.preflight(spec)


def test_the_rough_time_counts_the_work_around_each_chunk(tmp_path):
    """A grid of many small chunks, mostly data, frames and Parquet, was estimated at "0 s"."""
    spec = specmod.load(grid(tmp_path, lr="0.1", seeds=2000))
    spec["chunk_size"] = 1
    est = runner.preflight(spec)
    assert est["seconds"] >= 2000 * runner.CHUNK_OVERHEAD_S
    assert "min of compute (a rough guess)" in runner.describe(spec, est)


def test_the_run_prints_its_size_before_training(capsys, tmp_path):
    assert cli.main(["run", str(grid(tmp_path)), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("grid: 4 trainings in 2 chunks; about ") and "of compute" in err[0]
    assert any(line.startswith(f"index of the runs in {str(tmp_path)!r}: {tmp_path / 'index.html'}") for line in err)


# ------------------------------------------------------------------------------------------------
# run all --out ROOT

def test_run_all_writes_each_study_under_root_and_its_index(capsys, tmp_path, monkeypatch):
    presets = tmp_path / "presets"
    presets.mkdir()
    kinds = {"perceptron": "[grids.p]\nkind = 'perceptron'\ndata = {name = 'blobs', n = 20}\nepochs = 3\n"}
    for name in STUDIES:
        body = kinds.get(name, GRID.replace("LR", "0.1").replace("SEEDS", "1"))
        (presets / f"{name}.quick.toml").write_text(f'study = "{name}"\n' + body)
    monkeypatch.setattr(cli, "preset_path", lambda name, preset: presets / f"{name}.{preset}.toml")
    root = tmp_path / "root"
    assert cli.main(["run", "all", "--out", str(root), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(root / "index.html")
    index = (root / "index.html").read_text()
    for name in STUDIES:
        assert (root / f"{name}-quick" / "report.html").exists() and f"{name}-quick/report.html" in index
    # every run is checked before the first one writes: a bad preset last stops them all
    (presets / "batchnorm.quick.toml").write_text('study = "batchnorm"\n' + GRID.replace("LR", "-1.0").replace("SEEDS", "1"))
    assert "grids.g.lr must be >= 0" in _error(capsys, ["run", "all", "--out", str(tmp_path / "root2")])
    assert not (tmp_path / "root2").exists()


# ------------------------------------------------------------------------------------------------
# reports for every outcome

def _report_md(out):
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    cells = [c.strip().lower() for line in md.splitlines() if line.startswith("|") for c in line.split("|")]
    cells += [c.lower() for c in re.findall(r"<td[^>]*>([^<]*)</td>", html)]
    assert not {"nan", "none", "<na>"} & set(cells)
    return md


@pytest.mark.parametrize("study", [None, *STUDIES])
def test_a_grid_where_every_network_diverges_gets_a_report(capsys, tmp_path, study):
    """The reported bug: KeyError "['final_accuracy'] not in index", exit 1."""
    out = tmp_path / "o"
    assert cli.main(["run", str(grid(tmp_path, lr="1e300", seeds=3, study=study)), "--out", str(out), "--quiet"]) == 0
    md = _report_md(out)
    if study is None:
        assert "Every one of the 3 trainings diverged" in md and "| n/a" in md
    claims = json.loads((out / "claims.json").read_text())
    assert claims["trainings"] == 3


@pytest.mark.parametrize("study", [None, *STUDIES])
def test_a_grid_of_one_network_gets_a_report(capsys, tmp_path, study):
    out = tmp_path / "o"
    assert cli.main(["run", str(grid(tmp_path, lr="0.1", seeds=1, study=study)), "--out", str(out), "--quiet"]) == 0
    md = _report_md(out)
    if study is None:
        assert "(mlp, 1 training)" in md and "A single training" in md


def test_a_run_where_one_chunk_failed_reports_the_rest_and_names_it(capsys, tmp_path, monkeypatch):
    g = grid(tmp_path, seeds=3)
    spec = specmod.load(g)
    bad = runner.plan(spec)[1]["key"]
    real = runner.compute_chunk

    def flaky(chunk, backend="cpu"):
        if chunk["key"] == bad:
            raise RuntimeError("the node ran out of memory")
        return real(chunk, backend)

    monkeypatch.setattr(runner, "compute_chunk", flaky)
    out = tmp_path / "o"
    assert cli.main(["run", str(g), "--out", str(out), "--quiet"]) == 2
    log, err = capsys.readouterr().err.strip().splitlines()     # said as it happens, then at the end
    assert log == f"chunk {bad} (grids.g points 2-3) failed: RuntimeError: the node ran out of memory"
    assert err.startswith("simstudy: error: ")
    assert "1 of 3 chunks failed (first: grids.g points 2-3: RuntimeError: the node ran out of memory)" in err
    assert str(out / "report.html") in err
    md = _report_md(out)
    assert "Failed chunks (1)" in md and bad in md and "chunks failed: 1" in md and "trainings: 4" in md
    with pytest.raises(specmod.StudyError, match="1 chunks of 'grid' failed"):
        runner.results(spec, out)
    monkeypatch.setattr(runner, "compute_chunk", real)
    assert cli.main(["run", str(g), "--out", str(out), "--quiet"]) == 0       # a rerun retries it
    assert Store(out).failure(bad) is None and "Failed chunks" not in _report_md(out)
    assert runner.results(spec, out)["point"].nunique() == 6
