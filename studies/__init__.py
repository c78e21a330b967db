"""simcore's study suite: grids of trainings as TOML, a resumable Parquet store, reports.

Each study is a module here with ``NAME``, ``TITLE``, ``SUMMARY`` and
``analyse(data, spec, report)``; its presets are ``specs/<name>.<preset>.toml``. The runner
(:mod:`studies.runner`) trains the grid, the study turns the stored rows into claims, figures
and tables (:mod:`studies.report`). Run them with the ``simstudy`` command.
"""
import importlib
from pathlib import Path

SPECS = Path(__file__).parent / "specs"

# study name -> module (imported on demand: listing studies compiles nothing)
STUDIES = {
    "convergence": "studies.convergence",
    "perceptron": "studies.perceptron",
    "vanishing-gradients": "studies.vanishing_gradients",
    "lr-sensitivity": "studies.lr_sensitivity",
    "batchnorm": "studies.batchnorm",
}
PRESETS = ("quick", "full")


def study_module(name):
    """The module of study ``name`` (``None`` for a plain grid without a study)."""
    if name is None:
        return importlib.import_module("studies.generic")
    return importlib.import_module(STUDIES[name])


def preset_path(name, preset):
    return SPECS / f"{name}.{preset}.toml"
