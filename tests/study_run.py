"""The setup every study test shares: write a tiny TOML grid, run it through the CLI as a user
would (``simstudy run GRID.toml --out DIR --quiet``), and read the claims it wrote."""
import json

from studies import cli
from studies.report import Report


def run_tiny(tmp_path_factory, name, toml_text):
    """Run ``toml_text`` in a fresh directory; return (the TOML's path, the output directory,
    claims.json as read, its claims by id)."""
    root = tmp_path_factory.mktemp(name)
    toml = root / "tiny.toml"
    toml.write_text(toml_text)
    out = root / "run"
    assert cli.main(["run", str(toml), "--out", str(out), "--quiet"]) == 0
    claims = json.loads((out / "claims.json").read_text())
    return toml, out, claims, {c["id"]: c for c in claims["claims"]}


def analyse(study, data, spec, path, write=True):
    """Run ``study.analyse`` on (possibly manipulated) rows into a fresh report at ``path``
    (written to disk when ``write``); its claims by id."""
    rep = Report(path, title="t")
    study.analyse(data, spec, rep)
    if write:
        rep.write()
    return {c.id: c for c in rep.claims}
