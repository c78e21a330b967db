"""Sphinx configuration of simcore's documentation (``make docs``; warnings are errors in ``make test``)."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))          # the working tree's simcore and studies, not an installed copy
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
os.environ.setdefault("MPLBACKEND", "agg")

import simcore  # noqa: E402

project = "simcore"
author = "the simcore authors"
copyright = "2026, the simcore authors"
version = release = simcore.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "sphinx-mathjax-offline",          # MathJax copied into the site: the math renders offline too
    "quick_presets",                   # the theory pages' figures: each study's quick preset (docs/_ext)
    "api_names",                       # `.. public-names:: MODULE`: API tables from the code (docs/_ext)
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "generated/quick_presets",   # included by the theory pages, not pages
                    "generated/api_names.rst",              # autosummary's input, not a page
                    "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.md5", "auto_examples/*.json"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3               # `[text](page.md#a-heading)` links resolve

# every cross-reference must resolve (a renamed function fails the build), except these, which
# sit in files being rewritten in this session (the lead fixes them after merging, then drops
# the entry): each names its file and what the reference should become
nitpicky = True
nitpick_ignore = []  # every reference resolves; an entry here would hide a broken one

# API reference: one page per object from its numpydoc docstring. The modules whose public
# functions and classes (``__all__``, else those without a leading underscore) the API pages
# list by themselves, each with `.. public-names:: MODULE`; a name exported by several is
# documented under the first here that exports it (simcore.MLP, not simcore.mlp.MLP)
api_modules = ["simcore", "simcore.scalar", "simcore.fastmath", "simcore.activations", "simcore.losses",
               "simcore.layers", "simcore.optim", "simcore.init", "simcore.gemm", "simcore.perceptron",
               "simcore.hessian", "simcore.io", "simcore.interop", "simcore.mlp", "simcore.config",
               "simcore.grid.core", "simcore.grid", "simcore.interrupt", "simcore.datasets",
               "studies", "studies.theory", "studies.spec", "studies.runner", "studies.store", "studies.rows",
               "studies.report", "studies.cli", "studies.errors"]
# names a module's __all__ leaves out that the reference documents all the same (the lead adds
# check_state to simcore.io's __all__ after merging: simcore/io.py is being rewritten now)
api_also = {"simcore.io": ["check_state"]}
# the pages autosummary makes stubs for: the API pages' own tables and api_names' list
autosummary_generate = ["generated/api_names.rst", *sorted(f"api/{p.name}" for p in (ROOT / "docs" / "api").glob("*.rst"))]
templates_path = ["_templates"]        # a class page documents its methods and properties
autodoc_typehints = "none"
numpydoc_show_class_members = False    # members are listed explicitly, no stub pages per attribute
numpydoc_validation_checks = set()     # Sphinx's own warnings are the errors; style checks are not
numpydoc_xref_param_type = False

# the gallery: examples/plot_*.py run at every build (run_stale_examples: a library change
# reruns them even when the example's own text did not change), a failing example fails it
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "only_warn_on_example_error": False,
    "run_stale_examples": True,
    "remove_config_comments": True,
    "download_all_examples": False,
    "doc_module": ("simcore", "studies"),
    "backreferences_dir": "generated/backreferences",
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
}

# textmacros: \text{fan\_in} in the docstrings' formulas renders as fan_in
mathjax3_config = {"loader": {"load": ["[tex]/textmacros"]},
                   "tex": {"packages": {"[+]": ["textmacros"]}}}

toc_object_entries = False             # a page's contents list its sections, not every constant

html_theme = "pydata_sphinx_theme"
html_title = "simcore"
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars = {"index": [], "getting_started": [], "benchmarks": [], "architecture": []}
html_show_sourcelink = False
html_static_path = ["_static"]
html_css_files = ["simcore.css"]
