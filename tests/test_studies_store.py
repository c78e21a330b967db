"""The store's guarantees: parts that check themselves (truncated, corrupted, misplaced and
pre-checksum parts are found, named and recomputed), one run per directory (the lock), pid-named
temporary files that no other run deletes, and concurrent writers (Dask workers) kept apart."""
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from studies import cli, runner
from studies import spec as specmod
from studies.store import STORE_VERSION, Store, content_digest

ROOT = Path(__file__).resolve().parents[1]

SMALL = """
chunk_size = 2
[defaults]
steps = 10
record_every = 5
[grids.g]
data = {name = "moons", n = 32}
widths = [[3]]
lr = [0.05, 0.5]
seed = {range = 3}
"""


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """SMALL run once, untouched: (grid file, output directory, its results)."""
    root = tmp_path_factory.mktemp("clean")
    grid = root / "grid.toml"
    grid.write_text(SMALL)
    assert cli.main(["run", str(grid), "--out", str(root / "run"), "--quiet"]) == 0
    return grid, root / "run", runner.results(specmod.load(grid), root / "run")


def _copy_run(clean_run, tmp_path):
    grid, out, _ = clean_run
    shutil.copytree(out, tmp_path / "run")
    return grid, tmp_path / "run", sorted((tmp_path / "run" / "parts").glob("*.parquet"))


def _one_line_error(capsys, argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("simstudy: error: ") and "\n" not in err and "Traceback" not in err
    return err


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _change_a_value(path):
    """Rewrite a part with one loss changed and its metadata (key, checksum) kept: a valid
    Parquet file whose rows are not the ones its checksum describes."""
    table = pq.read_table(path)
    df = table.to_pandas()
    df.loc[0, "loss"] += 1.0
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(table.schema.metadata),
                   path)


def _without_metadata(path):
    """A part as stores wrote them before parts recorded a key and a checksum."""
    pd.read_parquet(path).to_parquet(path, index=False)


def _as_version_1(path):
    """A part whose metadata says store version 1 (as a part of an older store copied in)."""
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[b"simstudy.version"] = b"1"
    pq.write_table(table.replace_schema_metadata(meta), path)


@pytest.mark.parametrize("damage, reason", [
    (_truncate, "unreadable"),
    (_change_a_value, "checksum mismatch"),
    (_without_metadata, "no checksum"),
    (_as_version_1, "written by store version 1, not 3"),
])
def test_a_bad_part_is_named_by_report_and_recomputed_by_a_rerun(capsys, clean_run, tmp_path, damage, reason):
    grid, out, parts = _copy_run(clean_run, tmp_path)
    damage(parts[1])
    err = _one_line_error(capsys, ["report", str(out)])
    assert parts[1].name in err and reason in err
    assert cli.main(["run", str(grid), "--out", str(out)]) == 0
    log = capsys.readouterr().err
    assert f"part {parts[1].name}: {reason}" in log and "recomputing it" in log
    assert "computed 1 chunks" in log
    pd.testing.assert_frame_equal(runner.results(specmod.load(grid), out), clean_run[2])


def test_a_valid_part_copied_over_another_is_caught_by_its_key(capsys, clean_run, tmp_path):
    grid, out, parts = _copy_run(clean_run, tmp_path)
    shutil.copyfile(parts[0], parts[2])         # readable, checksum intact: only the key tells
    assert Store(out).check(parts[2].stem).startswith(f"holds chunk {parts[0].stem}")
    err = _one_line_error(capsys, ["report", str(out)])
    assert parts[2].name in err and "a part copied over another" in err
    assert cli.main(["run", str(grid), "--out", str(out), "--quiet"]) == 0
    assert "(a part copied over another); recomputing it" in capsys.readouterr().err
    df = runner.results(specmod.load(grid), out)
    assert df["point"].nunique() == 6
    pd.testing.assert_frame_equal(df, clean_run[2])


def test_the_digest_survives_a_parquet_round_trip(clean_run):
    _, out, df = clean_run
    store = Store(out)
    for p in store.parts.glob("*.parquet"):
        meta = pq.read_schema(p).metadata
        assert meta[b"simstudy.key"].decode() == p.stem
        assert meta[b"simstudy.sha256"].decode() == content_digest(pd.read_parquet(p))
        assert store.check(p.stem) is None
    one_ulp = df.copy()
    one_ulp.loc[7, "loss"] = np.nextafter(one_ulp.loc[7, "loss"], np.inf)
    assert content_digest(df) != content_digest(one_ulp)


# ------------------------------------------------------------------------------------------------
# locking and temporary files

def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_prepare_removes_only_the_temporaries_of_dead_writers(tmp_path):
    store = Store(tmp_path / "s").prepare()
    host = __import__("studies.store", fromlist=["_host"])._host()
    live = store.parts / f".abc.{host}.{os.getpid()}.{'0' * 32}.tmp"          # a run still writing
    dead = store.parts / f".abc.{host}.{_dead_pid()}.{'1' * 32}.tmp"          # a killed run's
    foreign = store.parts / f".abc.otherhost.{os.getpid()}.{'2' * 32}.tmp"    # a worker elsewhere
    legacy = store.parts / f".abc.{'3' * 32}.tmp"                             # before pids were recorded
    for f in (live, dead, foreign, legacy):
        f.write_bytes(b"half a part")
    Store(tmp_path / "s").prepare()
    assert live.exists() and foreign.exists()
    assert not dead.exists() and not legacy.exists()
    old = time.time() - 2 * 24 * 3600
    os.utime(foreign, (old, old))
    Store(tmp_path / "s").prepare()
    assert not foreign.exists() and live.exists()


def test_a_second_run_on_the_same_directory_stops_and_names_the_first(capsys, tmp_path):
    """The reported bug: a run starting while another runs deleted its temporary files."""
    grid = tmp_path / "grid.toml"
    grid.write_text(SMALL.replace("steps = 10", "steps = 3000").replace("n = 32", "n = 256"))
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "studies", "run", str(grid), "--out", str(out), "--quiet"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not (out / ".lock.owner").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.02)
        assert first.poll() is None, first.communicate()
        err = _one_line_error(capsys, ["run", str(grid), "--out", str(out), "--quiet"])
        assert f"in use by another simstudy run (pid {first.pid})" in err
        assert _one_line_error(capsys, ["report", str(out)]).endswith("or give another --out")
    finally:
        _, ferr = first.communicate(timeout=120)
    assert first.returncode == 0, ferr.decode()
    spec = specmod.load(grid)
    assert all(Store(out).check(c["key"]) is None for c in runner.plan(spec))
    assert not list((out / "parts").glob(".*.tmp")) and not (out / ".lock.owner").exists()
    assert cli.main(["report", str(out)]) == 0                # the lock is free again


def test_the_lock_is_reentrant_in_one_process_and_exclusive_across(tmp_path):
    store = Store(tmp_path / "s")
    code = ("import sys; from studies.store import Store; from studies.errors import StudyError\n"
            "try:\n    Store(sys.argv[1]).lock().__enter__()\nexcept StudyError as e:\n    print(e)")
    with store.lock(), store.lock():
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], cwd=ROOT,
                             capture_output=True, text=True, timeout=60).stdout
        assert f"pid {os.getpid()}" in out
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60).stdout
    assert out == ""


def _write_parts(root, keys, rounds):
    """What a worker does: write parts (some the same as other workers') without the lock."""
    store = Store(root)
    for r in range(rounds):
        for k in keys:
            store.write(k, pd.DataFrame({"key": [k] * 50, "x": range(50)}))
    return os.getpid()


def test_concurrent_writers_to_one_store_leave_only_intact_parts(tmp_path):
    store = Store(tmp_path / "s").prepare()
    keys = [f"k{i:02d}" for i in range(8)]
    with concurrent.futures.ProcessPoolExecutor(4) as pool:
        pids = set(pool.map(_write_parts, [store.root] * 4, [keys] * 4, [5] * 4))
    threads = [threading.Thread(target=_write_parts, args=(store.root, keys[::-1], 5)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(pids) >= 2
    assert all(store.check(k) is None for k in keys)
    assert not list(store.parts.glob(".*.tmp"))
    assert store.read(keys)["key"].tolist() == [k for k in keys for _ in range(50)]


def test_dask_workers_write_one_store_and_every_part_verifies(tmp_path):
    pytest.importorskip("dask.distributed")
    grid = tmp_path / "grid.toml"
    grid.write_text(SMALL.replace("chunk_size = 2", "chunk_size = 1"))
    out = tmp_path / "dask"
    assert cli.main(["run", str(grid), "--out", str(out), "--backend", "dask", "--workers", "2", "--quiet"]) == 0
    spec = specmod.load(grid)
    chunks = runner.plan(spec)
    assert len(chunks) == 6 and all(Store(out).check(c["key"]) is None for c in chunks)
    assert not list((out / "parts").glob(".*.tmp"))
    with Store(out).lock():                                # the client's lock is released
        pass


# ------------------------------------------------------------------------------------------------
# what Parquet does not keep: NaN bit patterns and missing values

def _negative_nan():
    with np.errstate(invalid="ignore"):
        nan = np.float64(-np.inf) + np.float64(np.inf)
    if not np.signbit(nan):                                  # not x86: make one
        nan = np.array([0xfff8000000000000], dtype=np.uint64).view(np.float64)[0]
    return nan


def test_a_part_with_a_negative_nan_or_missing_values_verifies(tmp_path):
    nan = _negative_nan()
    assert np.isnan(nan) and np.signbit(nan)
    df = pd.DataFrame({"loss": np.array([1.0, nan, -0.0, np.nan]),
                       "other_nan": np.array([0xfff0000000000001, 0x7ff4000000000000, 0, 1],
                                             dtype=np.uint64).view(np.float64),
                       "text": ["a", None, "c", np.nan],
                       "maybe": pd.array([1, None, 3, 4], dtype="Int64"),
                       "flag": [True, False, True, False]})
    store = Store(tmp_path / "s").prepare()
    store.write("k", df)
    assert store.check("k") is None
    back = store.load("k")
    assert np.signbit(back["loss"].to_numpy()[2])            # -0.0 is kept, and counted
    assert content_digest(back) == content_digest(df)
    changed = df.copy()
    changed.loc[2, "loss"] = 0.0
    assert content_digest(changed) != content_digest(df)


def test_a_grid_whose_networks_make_negative_nans_runs_and_reports(capsys, tmp_path):
    """The reported grid (relu at lr 1e300 gives inf - inf), in small: every rerun and the
    report said "checksum mismatch"."""
    grid = tmp_path / "grid.toml"
    grid.write_text('[grids.g]\ndata = {name = "moons", n = 16}\nwidths = [[4, 4]]\n'
                    'lr = [1e300, 1e10]\nactivation = ["relu", "tanh"]\nloss = ["bce", "mse"]\n'
                    'steps = 8\nrecord_every = 4\nseed = {range = 2}\n')
    out = tmp_path / "run"
    assert cli.main(["run", str(grid), "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    spec = specmod.load(grid)
    assert all(Store(out).check(c["key"]) is None for c in runner.plan(spec))
    assert runner.results(spec, out)["final_loss"].isna().any()      # the diverged networks'
    assert cli.main(["run", str(grid), "--out", str(out), "--quiet"]) == 0
    assert "checksum" not in capsys.readouterr().err


def test_another_thread_is_refused_the_lock_like_another_process(tmp_path):
    """The lock was keyed by directory alone: a second thread entered it as if re-entrant, and
    when the first holder left it released the file lock under the second one."""
    store = Store(tmp_path / "s")
    code = ("import sys; from studies.store import Store; from studies.errors import StudyError\n"
            "try:\n    Store(sys.argv[1]).lock().__enter__()\nexcept StudyError as e:\n    print(e)")
    entered, may_leave = threading.Event(), threading.Event()
    seen = []

    def other_thread():
        try:
            with Store(tmp_path / "s").lock():
                seen.append("entered")
        except Exception as e:          # noqa: BLE001 -- the test looks at what it was
            seen.append(e)

    def holder():
        with Store(tmp_path / "s").lock(), Store(tmp_path / "s").lock():
            entered.set()
            may_leave.wait(30)

    first = threading.Thread(target=holder)
    first.start()
    assert entered.wait(30)
    second = threading.Thread(target=other_thread)
    second.start()
    second.join(30)
    assert len(seen) == 1 and isinstance(seen[0], specmod.StudyError), seen
    assert "another thread of this process" in str(seen[0])
    may_leave.set()
    first.join(30)
    with store.lock():                              # released once, at depth 0, and free again
        with store.lock():
            pass
        out = subprocess.run([sys.executable, "-c", code, str(store.root)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60).stdout
        assert f"pid {os.getpid()}" in out          # still held after the inner block left
    assert not (store.root / ".lock.owner").exists()


def test_a_store_records_its_version(clean_run):
    _, out, _ = clean_run
    assert json.loads((out / "store.json").read_text()) == {"format": "simstudy", "version": STORE_VERSION}
    assert Store(out).version() == STORE_VERSION == 3
    assert Store(out / "nowhere").version() is None      # a new store: no parts, no record


_OLD = "give another --out, or delete"
_NEW = "a newer simstudy wrote it"


@pytest.mark.parametrize("record, message, advice", [
    ('{"format": "simstudy", "version": 1}', "holds results of store version 1, this simstudy reads "
                                             "and writes version 3: version 3 stores the held-out", _OLD),
    ('{"format": "simstudy", "version": 2}', "holds results of store version 2, this simstudy reads "
                                             "and writes version 3", _OLD),
    (None, "holds results of store version 1", _OLD),   # parts from before versions were recorded
    ('{"version": 4}', "store version 4, this simstudy reads and writes version 3", _NEW),
    ("not json", "is not a simstudy store version record", "give another --out"),
    ('{"version": "2"}', "records version '2', not an integer", "give another --out"),
])
def test_a_store_of_another_version_is_refused_by_run_and_report(capsys, clean_run, tmp_path, record,
                                                                  message, advice):
    """Its parts are neither reused nor mixed with new ones: run and report stop at once with
    one line saying what to do, and nothing in the directory changes."""
    grid, out, parts = _copy_run(clean_run, tmp_path)
    if record is None:
        (out / "store.json").unlink()
    else:
        (out / "store.json").write_text(record)
    before = sorted(p.name for p in (out / "parts").iterdir())
    for argv in (["run", str(grid), "--out", str(out)], ["report", str(out)]):
        err = _one_line_error(capsys, argv)
        assert message in err and advice in err and str(out) in err
    assert sorted(p.name for p in (out / "parts").iterdir()) == before


def test_a_fresh_directory_becomes_a_store_of_this_version(tmp_path):
    store = Store(tmp_path / "new").prepare()
    assert store.version() == STORE_VERSION
    assert json.loads((tmp_path / "new" / "store.json").read_text())["version"] == STORE_VERSION
