"""The documentation's sources against the code they describe (the build itself, with warnings as
errors and every gallery example run, is `make docs`, the last step of `make test`): every public
name of a documented module is on an API page, every key of the TOML grids is in the reference
with its default, every gallery example has a title, and the README (the front page) links every
page and nothing missing."""
import ast
import importlib
import re
import runpy
import sys
from pathlib import Path

import pytest

from studies import STUDIES, spec
from studies.report import Report

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.rst"))

# modules whose every public function and class the API reference lists (docs/conf.py's
# api_modules must hold them all)
DOCUMENTED = ["simcore", "simcore.scalar", "simcore.activations", "simcore.losses", "simcore.layers",
              "simcore.optim", "simcore.init", "simcore.datasets", "simcore.perceptron", "simcore.hessian",
              "simcore.grid", "simcore.grid.core", "simcore.interrupt", "simcore.fastmath", "simcore.gemm",
              "simcore.io", "simcore.interop", "simcore.mlp", "simcore.config", "studies", "studies.theory",
              "studies.spec", "studies.runner", "studies.store", "studies.report", "studies.rows",
              "studies.cli", "studies.errors"]


# public functions of modules with an __all__ that leaves them out, in files being rewritten in
# this session: the lead adds each to its module's __all__ (or a leading underscore) after merging
NOT_IN_ALL = {"simcore.grid": {"run_blocks", "record_bytes", "n_records", "check_size"},
              "simcore.io": {"net_spec", "net_from_spec", "encode_tree", "decode_tree", "check_path",
                             "write", "read"}}


def _defined(modname):
    """{name: object} of the functions and classes defined in the module without a leading
    underscore, whatever its ``__all__`` says (numba's dispatchers included)."""
    mod = importlib.import_module(modname)
    return {n: o for n, o in vars(mod).items() if not n.startswith("_") and callable(o)
            and getattr(o, "__module__", None) == modname}


@pytest.fixture(scope="module")
def api():
    """(api_modules, {module: names documented under it}) as the build computes them."""
    pytest.importorskip("sphinx")
    conf = runpy.run_path(str(DOCS / "conf.py"))
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import api_names
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return conf["api_modules"], api_names.documented_names(conf["api_modules"], conf["api_also"])


def test_every_documented_module_has_one_table_on_an_api_page(api):
    modules, _ = api
    tables = re.findall(r"^\.\. public-names:: (\S+)$", API, re.M)
    assert sorted(tables) == sorted(set(tables)) == sorted(modules)
    assert set(DOCUMENTED) <= set(modules)


@pytest.mark.parametrize("modname", DOCUMENTED)
def test_every_public_name_of_a_documented_module_is_in_the_reference(api, modname):
    """A function defined in a module is documented (under it or a module re-exporting it) unless
    the module's __all__ leaves it out, which only NOT_IN_ALL may; so a function added without
    its __all__ entry fails here."""
    modules, names = api
    documented = {id(getattr(importlib.import_module(m), n)) for m, ns in names.items() for n in ns}
    missing = {n for n, o in _defined(modname).items() if id(o) not in documented}
    assert missing == NOT_IN_ALL.get(modname, set()), f"{modname}: not in the API reference: {missing}"


def test_a_name_exported_twice_is_documented_once_where_users_import_it(api):
    _, names = api
    assert "MLP" in names["simcore"] and "MLP" not in names["simcore.mlp"]
    assert "Forward" in names["simcore.mlp"] and "check_state" in names["simcore.io"]
    assert sum("GridResult" in ns for ns in names.values()) == 1


def _reference_rows():
    """{key: default cell} of the TOML reference's key tables (docs/user_guide/studies.md)."""
    rows = {}
    for line in (DOCS / "user_guide" / "studies.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            for key in re.findall(r"`\[?([\w.]+)\]?`", cells[0]):
                rows.setdefault(key, []).append(cells[2])
    return rows


def _as_toml(v):
    return ("true" if v else "false") if isinstance(v, bool) else (f"`{v}`" if isinstance(v, str) else str(v))


def test_every_toml_key_is_in_the_reference_with_its_default():
    rows = _reference_rows()
    keys = set(spec.MLP_KEYS) | set(spec.PERCEPTRON_KEYS) | (spec.TOP_KEYS - {"defaults", "grids"})
    missing = sorted(k for k in keys | {"kind"} if k not in rows)
    assert not missing, f"keys missing from docs/user_guide/studies.md: {missing}"
    for defaults in (spec.MLP_DEFAULTS, spec.PERCEPTRON_DEFAULTS):
        for key, value in defaults.items():
            if key == "momentum":       # recorded 0.0 where unused; the reference gives the 0.9 that applies
                assert any(str(spec.DEFAULT_MOMENTUM) in cell for cell in rows[key])
                continue
            want = '`"full"`' if value == "full" else _as_toml(value)
            assert any(want in cell for cell in rows[key]), f"{key}: default {want} not in {rows[key]}"
    assert any(str(spec.DEFAULT_CHUNK) in cell for cell in rows["chunk_size"])


def test_every_data_set_is_in_the_reference():
    text = (DOCS / "user_guide" / "studies.md").read_text()
    missing = [n for n in spec.DATA_NAMES if f"`{n}`" not in text]
    assert not missing, missing


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("plot_*.py")), ids=lambda p: p.name)
def test_every_gallery_example_has_a_title_and_draws(path):
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc, f"{path.name}: sphinx-gallery needs a docstring with a title"
    title, underline = doc.strip().splitlines()[:2]
    assert title and set(underline) == {"="} and len(underline) >= len(title), path.name
    assert "plt.show()" in path.read_text(), f"{path.name} draws no figure"


def test_the_gallery_has_at_least_eight_examples():
    assert len(list((ROOT / "examples").glob("plot_*.py"))) >= 8


def test_the_readme_links_every_page_and_every_link_resolves():
    readme = (ROOT / "README.md").read_text()
    links = set(re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme))
    local = {l for l in links if not re.match(r"https?://", l)}
    broken = sorted(l for l in local if not (ROOT / l).exists())
    assert not broken, f"README links to missing files: {broken}"
    pages = {p.relative_to(ROOT).as_posix() for p in DOCS.rglob("*") if p.suffix in (".md", ".rst")
             and p.relative_to(DOCS).parts[0] not in ("_build", "_templates", "auto_examples", "generated")
             and p.name != "sg_execution_times.rst"}
    unlinked = sorted(pages - local)
    assert not unlinked, f"docs pages the README does not link: {unlinked}"
    assert "examples/" in local, "the README links the gallery's sources"


def test_every_theory_page_shows_its_study_s_quick_preset():
    included = {m for p in (DOCS / "theory").glob("*.md")
                for m in re.findall(r"^```\{include\} \.\./generated/quick_presets/([\w-]+)\.md$",
                                    p.read_text(), re.M)}
    assert included == set(STUDIES)


@pytest.fixture
def quick_presets():
    pytest.importorskip("sphinx")
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import quick_presets
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return quick_presets


def test_a_statement_stays_literal_text_on_the_page(quick_presets):
    from markdown_it import MarkdownIt
    text = "eta* = 2/(lambda_min + lambda_max) | $x$ [a](b) `c` <d> 1. \\ *e*"
    html = MarkdownIt("commonmark").render(quick_presets.md_escape(text))
    assert html == MarkdownIt("commonmark").render("x").replace("x", text.replace("<", "&lt;")
                                                                 .replace(">", "&gt;"))


def test_the_quick_preset_page_lists_each_prediction_and_its_figure(quick_presets, tmp_path):
    import matplotlib.pyplot as plt
    rep = Report(tmp_path / "run", "t", meta={"trainings": 3})
    rep.prediction("rate", "The rate is 1/2 ln lambda_BN", 0.19, 0.2, "2 SE", True, assumes="a", figure="f1")
    rep.prediction("edge", "The edge is 2/eta", 1.0, 0.9, "1 SE", False, assumes="b", figure="f1")
    rep.figure("f1", plt.figure(), "Rate against depth")
    rep.figure("f2", plt.figure(), "Not a headline figure")
    rep.write()
    md = quick_presets.page("demo", tmp_path / "run", "abc", 1.5)
    assert "**1 of 2 predictions hold**" in md and "`studies/specs/demo.quick.toml`" in md
    assert "- **holds** (rate)" in md and "- **FAILS** (edge)" in md and r"Predicted 0\.19, measured 0\.2;" in md
    assert md.count("```{figure}") == 1 and "/generated/quick_presets/demo/f1.png" in md
    assert "the predictions it draws: rate, edge" in md and "Rate against depth" in md


def test_the_quick_preset_cache_key_follows_the_code_not_its_docstrings(quick_presets, tmp_path, monkeypatch):
    for rel in ("simcore/a.py", "studies/specs/b.toml", "simcore/__pycache__/a.nbi", "docs/c.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("1")
    monkeypatch.setattr(quick_presets, "ROOT", tmp_path)
    key = quick_presets.code_key()
    for rel in ("simcore/__pycache__/a.nbi", "docs/c.md"):
        (tmp_path / rel).write_text("2")
    assert quick_presets.code_key() == key
    (tmp_path / "simcore/a.py").write_text('"""A docstring."""\n1  # a comment\n')
    assert quick_presets.code_key() == key
    (tmp_path / "simcore/a.py").write_text("2")
    assert quick_presets.code_key() != key
    key = quick_presets.code_key()
    (tmp_path / "studies/specs/b.toml").write_text("2")
    assert quick_presets.code_key() != key
