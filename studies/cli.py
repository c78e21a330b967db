"""``simstudy``: list, run and report studies::

    simstudy list
    simstudy run NAME|SPEC.toml|all [--preset quick|full] [--out DIR] [--backend cpu|cuda|dask]
                 [--scheduler ADDRESS] [--workers N] [--quiet] [--yes]
    simstudy report DIR

A run writes ``DIR/parts/*.parquet`` (one part per chunk, resumable), ``DIR/spec.toml`` (the
grid it ran), the report (``report.html``, ``report.md``, ``claims.json``, ``figures/``) and
``index.html`` in DIR's parent (its path is printed). The default DIR is
``reports/<study>-<preset>`` (for a TOML file, ``reports/<file stem>``); ``run all --out ROOT``
writes ``ROOT/<study>-<preset>`` for each study and ``ROOT/index.html``. Every check (the grid,
the output directory, the backend, the scheduler, the grid's size) runs before anything is
written; a second run on a directory in use stops with a message naming the first one's pid.
Errors in the input are one line on stderr and exit code 2.
"""
import argparse
import contextlib
import datetime
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

from . import PRESETS, STUDIES, preset_path, study_module
from . import runner
from . import spec as specmod
from .errors import StudyError
from .report import Report, write_index

DEFAULT_ROOT = Path("reports")


def resolve(target, preset):
    """(spec, spec text, default output directory) of a study name or a TOML file."""
    if target in STUDIES:
        path = preset_path(target, preset)
        if not path.exists():
            raise StudyError(f"study {target!r} has no {preset!r} preset ({path.name})")
        text = path.read_text()
        spec = specmod.load(path, name=target)
        if spec["study"] != target:
            raise StudyError(f"preset {path.name} declares study {spec['study']!r}, expected {target!r}")
        return spec, text, DEFAULT_ROOT / f"{target}-{preset}"
    path = Path(target)
    if path.suffix == ".toml" or path.exists():
        spec = specmod.load(path)
        if spec["study"] is not None and spec["study"] not in STUDIES:
            raise StudyError(f"{path.name}: study must be one of {sorted(STUDIES)} or left out, "
                             f"got {spec['study']!r}")
        return spec, path.read_text(), DEFAULT_ROOT / path.stem
    raise StudyError(f"unknown study {target!r}; known studies: {', '.join(sorted(STUDIES))} "
                     f"(or give a path to a TOML grid)")


def _write_atomic(path, text):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _is_run_dir(d):
    """A run's directory is one simstudy wrote: its spec.toml, or the lock a run takes first
    (``.lock``, with the holder's ``.lock.owner`` or the parts/ made next; a ``.lock`` alone is
    anybody's, pytest's for one). A parts/ directory alone is not a run."""
    return (d / "spec.toml").is_file() or ((d / ".lock").is_file()
                                          and ((d / ".lock.owner").is_file() or (d / "parts").is_dir()))


def check_out(out, flag="--out"):
    """Refuse an output directory that is empty, an existing file, or inside another run's
    directory (one with a spec.toml or a .lock; its parts/ above all: a run there would mix its
    parts with that run's)."""
    if str(out).strip() == "":
        raise StudyError(f"{flag} is empty; give a directory")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StudyError(f"{flag} {str(out)!r} is a file, not a directory")
    here = out.resolve()
    for d in (here, *here.parents):
        if d.name == "parts" and _is_run_dir(d.parent):
            raise StudyError(f"{flag} {str(out)!r} is inside the parts directory of the run in "
                             f"{str(d.parent)!r}; give a directory outside it")
    for d in here.parents:
        if _is_run_dir(d):
            raise StudyError(f"{flag} {str(out)!r} is inside the run directory {str(d)!r}; "
                             f"give a directory outside it")
    return out


def prepare_run(target, preset="quick", out=None, backend="cpu", scheduler=None, workers=None,
                yes=False, quiet=False):
    """Resolve and check one run before anything is written: (spec, its TOML text, output
    directory)."""
    spec, text, default_out = resolve(target, preset)
    out = check_out(out if out is not None else default_out)
    runner.preflight(spec, backend, scheduler, workers, yes)
    return spec, text, out


def run_one(target, preset="quick", out=None, backend="cpu", scheduler=None, workers=None, quiet=False,
            yes=False, prepared=None, index=True):
    """Run (or resume) one study or grid and write its report; returns the report's path.

    Every check (the grid, the output directory, the backend, the Dask scheduler, the size)
    runs before the output directory is created. The directory is locked for the whole run
    (:meth:`studies.store.Store.lock`). If some chunks failed the report covers the rest and
    says which failed; then StudyError names them."""
    spec, text, out = prepared or prepare_run(target, preset, out, backend, scheduler, workers, yes, quiet)
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(runner.dask_client(scheduler, workers)) if backend == "dask" else None
        store = stack.enter_context(runner.Store(out).lock())
        store.prepare()   # fails early if DIR is not writable
        _write_atomic(out / "spec.toml", text)
        _write_atomic(out / "run.json", json.dumps({"target": target, "name": spec["name"],
                                                    "preset": preset if target in STUDIES else None,
                                                    "backend": backend}, indent=2))
        t0 = time.perf_counter()
        failed = None
        try:
            runner.run(spec, out, backend=backend, scheduler=scheduler, workers=workers, quiet=quiet,
                       log=lambda m: print(m, file=sys.stderr), yes=yes, client=client)
        except runner.ChunksFailed as e:
            failed = e
        path = report(out, seconds=time.perf_counter() - t0, quiet=quiet, index=index)
    if failed is not None:
        raise StudyError(f"{failed}; the report of the rest, which lists them: {path}")
    return path


def report(out, seconds=None, quiet=False, index=True):
    """Rebuild the report of the run stored in ``out`` from its stored results (and, with
    ``index``, ``index.html`` in ``out``'s parent); returns the report's path."""
    out = Path(out)
    spec_file = out / "spec.toml"
    if not spec_file.exists():
        raise StudyError(f"{str(out)!r} holds no study run (no spec.toml)")
    with runner.Store(out).lock():
        run_info = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
        spec = specmod.load(spec_file, name=run_info.get("name"))
        data, failed = runner.stored(spec, out)
        module = study_module(spec["study"])
        n_train = int(data["point"].nunique()) if "point" in data.columns else 0
        meta = {"study": spec["study"] or "(plain grid)", "grid": spec["name"],
                "preset": run_info.get("preset") or "-", "trainings": n_train, "rows stored": len(data),
                "written": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}
        if failed:
            meta["chunks failed"] = len(failed)
        if seconds is not None:
            meta["compute seconds (this run)"] = round(seconds, 1)
        rep = Report(out, title=spec["title"] if spec["title"] != spec["name"] else module.TITLE,
                     intro=spec["description"] or module.SUMMARY, meta=meta)
        if failed:
            rep.heading(f"Failed chunks ({len(failed)})")
            rep.text(f"{len(failed)} chunks raised while training; their trainings are missing from "
                     f"everything below. Run the same command again to retry them.")
            rep.table(pd.DataFrame([{"chunk": f["key"], "sub-grid": f["grid"],
                                     "points": f"{f['points'][0]}-{f['points'][1]}", "error": f["error"]}
                                    for f in failed]), "Chunks that failed, and the error each raised")
        if n_train:
            module.analyse(data, spec, rep)
        else:
            rep.text("No training finished, so there is nothing to analyse.")
        path = rep.write()
    if index:
        idx = write_index(out.parent)
        if not quiet:
            print(f"index of the runs in {str(out.parent)!r}: {idx}", file=sys.stderr)
    if not quiet:
        print(f"{spec['name']}: {rep.headline()}; report: {path}", file=sys.stderr)
    return path


def _parser():
    p = argparse.ArgumentParser(prog="simstudy", description="Run simcore's studies and grids.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the studies and their presets")
    r = sub.add_parser("run", help="run (or resume) a study, a TOML grid, or all studies")
    r.add_argument("target", help="a study name, a path to a TOML grid, or 'all'")
    r.add_argument("--preset", choices=PRESETS, default="quick", help="study preset (default quick)")
    r.add_argument("--out", help="output directory (default reports/<study>-<preset>)")
    r.add_argument("--backend", choices=runner.BACKENDS, default="cpu")
    r.add_argument("--scheduler", help="address of a running Dask scheduler (with --backend dask)")
    r.add_argument("--workers", type=int, help="start a local Dask cluster of N workers (with --backend dask)")
    r.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    r.add_argument("--yes", action="store_true",
                   help=f"run a grid past {runner.MAX_TRAININGS:,} trainings or "
                        f"{runner.MAX_RESULT_BYTES // 2**30} GiB of results")
    rep = sub.add_parser("report", help="rebuild the report of a stored run")
    rep.add_argument("dir")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            for name in STUDIES:
                mod = study_module(name)
                presets = [pr for pr in PRESETS if preset_path(name, pr).exists()]
                print(f"{name:22s} {mod.TITLE}  [presets: {', '.join(presets)}]")
            return 0
        if args.command == "report":
            path = report(args.dir)
            print(path)
            return 0
        targets = list(STUDIES) if args.target == "all" else [args.target]
        if args.target == "all":
            root = check_out(args.out) if args.out is not None else DEFAULT_ROOT
            outs = [root / f"{t}-{args.preset}" for t in targets]
        else:
            outs = [args.out]
        # every run is checked before the first one writes anything
        prepared = [prepare_run(t, args.preset, o, args.backend, args.scheduler, args.workers, args.yes,
                                args.quiet) for t, o in zip(targets, outs)]
        paths = [run_one(t, args.preset, backend=args.backend, scheduler=args.scheduler,
                         workers=args.workers, quiet=args.quiet, yes=args.yes, prepared=pr)
                 for t, pr in zip(targets, prepared)]
        print(paths[-1].parent.parent / "index.html" if len(paths) > 1 else paths[0])
        return 0
    except StudyError as e:
        print(f"simstudy: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("simstudy: interrupted; finished chunks are stored, run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
