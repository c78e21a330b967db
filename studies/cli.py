"""``simstudy``: list, run and report studies.

    simstudy list
    simstudy run NAME|SPEC.toml|all [--preset quick|full] [--out DIR] [--backend cpu|cuda|dask]
                 [--scheduler ADDRESS] [--workers N] [--quiet]
    simstudy report DIR

A run writes ``DIR/parts/*.parquet`` (one part per chunk, resumable), ``DIR/spec.toml`` (the
grid it ran), the report (``report.html``, ``report.md``, ``claims.json``, ``figures/``) and
``index.html`` in DIR's parent. The default DIR is ``reports/<study>-<preset>`` (for a TOML
file, ``reports/<file stem>``). Errors in the input are one line on stderr and exit code 2.
"""
import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

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


def run_one(target, preset="quick", out=None, backend="cpu", scheduler=None, workers=None, quiet=False):
    """Run (or resume) one study or grid and write its report; returns the report's path."""
    spec, text, default_out = resolve(target, preset)
    out = Path(out) if out is not None else default_out
    store = runner.Store(out).prepare()   # fails early if DIR is not writable
    _write_atomic(out / "spec.toml", text)
    _write_atomic(out / "run.json", json.dumps({"target": target, "name": spec["name"],
                                                "preset": preset if target in STUDIES else None,
                                                "backend": backend}, indent=2))
    del store
    t0 = time.perf_counter()
    runner.run(spec, out, backend=backend, scheduler=scheduler, workers=workers, quiet=quiet,
               log=lambda m: print(m, file=sys.stderr))
    return report(out, seconds=time.perf_counter() - t0, quiet=quiet)


def report(out, seconds=None, quiet=False):
    """Rebuild the report of the run stored in ``out`` from its stored results."""
    out = Path(out)
    spec_file = out / "spec.toml"
    if not spec_file.exists():
        raise StudyError(f"{str(out)!r} holds no study run (no spec.toml)")
    run_info = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    spec = specmod.load(spec_file, name=run_info.get("name"))
    data = runner.results(spec, out)
    module = study_module(spec["study"])
    meta = {"study": spec["study"] or "(plain grid)", "grid": spec["name"],
            "preset": run_info.get("preset") or "-",
            "trainings": int(data["point"].nunique()), "rows stored": len(data),
            "written": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}
    if seconds is not None:
        meta["compute seconds (this run)"] = round(seconds, 1)
    rep = Report(out, title=spec["title"] if spec["title"] != spec["name"] else module.TITLE,
                 intro=spec["description"] or module.SUMMARY, meta=meta)
    module.analyse(data, spec, rep)
    path = rep.write()
    write_index(out.parent)
    if not quiet:
        n_pass = sum(c.passed for c in rep.claims)
        print(f"{spec['name']}: {n_pass} of {len(rep.claims)} claims pass; report: {path}", file=sys.stderr)
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
        if args.backend != "dask" and (args.scheduler is not None or args.workers is not None):
            raise StudyError("--scheduler and --workers go with --backend dask")
        if args.workers is not None and args.workers < 1:
            raise StudyError(f"--workers must be >= 1, got {args.workers}")
        if args.scheduler is not None and args.workers is not None:
            raise StudyError("give --scheduler (an existing cluster) or --workers (a local one), not both")
        if args.out is not None and args.target == "all":
            raise StudyError("--out names one run's directory; with 'all' each study writes "
                             "reports/<study>-<preset>")
        targets = list(STUDIES) if args.target == "all" else [args.target]
        paths = [run_one(t, args.preset, args.out, args.backend, args.scheduler, args.workers, args.quiet)
                 for t in targets]
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
