"""The theory pages' figures: every study's quick preset, run when the docs are built.

At ``builder-inited`` each study's quick preset (``studies/specs/<name>.quick.toml``) runs through
:func:`studies.cli.run_one` into a cache, ``docs/_build/quick_presets/<key>/<name>/``, keyed by a
hash of the code that makes the figures (every ``.py`` file under ``simcore/`` and ``studies/``
without its docstrings, every ``.toml`` there, and the versions of Python and of the libraries
in ``LIBRARIES``): a build whose key is already there reuses it, any change to that code reruns
all five. From each run's ``claims.json`` this writes ``docs/generated/quick_presets/<name>.md``
(which its theory page includes): the headline figures that draw theory over the measured
points, each prediction with predicted beside measured, and the report itself beside them.
"""
import ast
import hashlib
import json
import os
import re
import shutil
import sys
import time
from importlib import metadata
from pathlib import Path

from sphinx.util import logging

LOG = logging.getLogger(__name__)

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
CACHE = DOCS / "_build" / "quick_presets"
OUT = DOCS / "generated" / "quick_presets"
# the libraries whose version can change a study's numbers or figures
LIBRARIES = ("numba", "numpy", "scipy", "scikit-learn", "pandas", "matplotlib")


def _code(path):
    """The bytes of ``path`` that can change a result: a ``.py`` file's syntax tree without its
    docstrings (so a docstring or comment edit reuses the runs), a ``.toml`` file whole."""
    if path.suffix != ".py":
        return path.read_bytes()
    tree = ast.parse(path.read_bytes())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


def code_key():
    """sha256 (16 hex digits) of the code a quick preset's figures depend on."""
    versions = " ".join(f"{d} {metadata.version(d)}" for d in LIBRARIES)
    h = hashlib.sha256(f"python {sys.version} {versions}\n".encode())
    files = sorted(p for d in ("simcore", "studies") for p in (ROOT / d).rglob("*")
                   if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts)
    for p in files:
        h.update(p.relative_to(ROOT).as_posix().encode() + b"\0" + _code(p) + b"\0")
    return h.hexdigest()[:16]


def run_presets(key, log=LOG.info):
    """``CACHE/key``, made by running every quick preset unless it is there already."""
    from studies import STUDIES, cli

    done = CACHE / key
    if (done / "seconds.json").exists():
        log(f"quick presets: reusing {done.relative_to(ROOT)} (the code is unchanged)")
        return done
    tmp = CACHE / f"{key}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    seconds = {}
    for name in STUDIES:
        log(f"quick presets: running {name} (studies/specs/{name}.quick.toml)")
        t0 = time.perf_counter()
        cli.run_one(name, "quick", out=tmp / name, quiet=True, index=False)
        seconds[name] = round(time.perf_counter() - t0, 1)
    (tmp / "seconds.json").write_text(json.dumps(seconds, indent=2))
    for old in CACHE.iterdir():            # another key's runs (or a stopped build's): stale now
        if not old.name.startswith(key):
            shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, done)              # atomic: a build stopped midway leaves no half cache
    except OSError:                        # a concurrent build of the same code finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return done


def md_escape(text):
    """``text`` as literal Markdown: every ASCII punctuation mark backslash-escaped (CommonMark
    allows it for each), so no ``*``, ``_``, ``$`` or ``|`` in a statement turns into markup."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", str(text))


def page(name, run, key, seconds):
    """The Markdown its theory page includes for study ``name`` from its run in ``run``."""
    from studies.report import fmt

    info = json.loads((run / "claims.json").read_text())
    preds = [c for c in info["claims"] if c["kind"] == "prediction"]
    checks = info["checks"]
    lines = [f"Made by the **quick preset** (`studies/specs/{name}.quick.toml`, what "
             f"`simstudy run {name}` runs) on this version's code when the site was built (key "
             f"`{key}`, a hash of simcore/ and studies/; {info['trainings']:,} trainings, "
             f"{seconds:.0f} s with the report): **{info['passed']} of {info['total']} predictions "
             f"hold**, {checks['passed']} of {checks['total']} engine checks ok. The whole report, "
             f"with every table and the engine checks: {{download}}`report.html "
             f"</generated/quick_presets/{name}/report.html>`.", ""]
    for fig in dict.fromkeys(c["figure"] for c in preds if c["figure"]):
        drawn = ", ".join(md_escape(c["id"]) for c in preds if c["figure"] == fig)
        lines += [f"```{{figure}} /generated/quick_presets/{name}/{fig}.png", f":alt: {fig}",
                  ":width: 100%", "", f"{md_escape(info['figures'][fig])} (Quick preset; the "
                  f"predictions it draws: {drawn}.)", "```", ""]
    lines += ["Each prediction, predicted beside measured:", ""]
    for c in preds:
        verdict = "holds" if c["passed"] else "FAILS"
        lines.append(f"- **{verdict}** ({md_escape(c['id'])}): {md_escape(c['statement'].rstrip('.'))}. Predicted "
                     f"{md_escape(fmt(c['predicted']))}, measured {md_escape(fmt(c['measured']))}; "
                     f"tolerance: {md_escape(c['tolerance'])}.")
    lines.append("")
    return "\n".join(lines)


def write_pages(app):
    key = code_key()
    runs = run_presets(key)
    seconds = json.loads((runs / "seconds.json").read_text())
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    for name, s in seconds.items():
        (OUT / name).mkdir()
        for f in ("report.html", *[f"figures/{p.name}" for p in (runs / name / "figures").glob("*.png")]):
            shutil.copy2(runs / name / f, OUT / name / Path(f).name)
        (OUT / f"{name}.md").write_text(page(name, runs / name, key, s))


def setup(app):
    app.connect("builder-inited", write_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
