"""The installed command: `make install` puts `simstudy` beside the venv's interpreter (the
README says to call `.venv/bin/simstudy` or activate the venv), and it runs."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_simstudy_is_installed_beside_the_interpreter_and_lists_the_studies():
    script = Path(sys.executable).parent / "simstudy"
    if not script.exists():
        pytest.skip(f"simcore is not installed into {Path(sys.executable).parent} (pip install -e .)")
    out = subprocess.run([str(script), "list"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for study in ("convergence", "perceptron", "vanishing-gradients", "lr-sensitivity", "batchnorm"):
        assert study in out.stdout


def test_the_readme_says_how_to_call_it_from_the_venv():
    readme = (ROOT / "README.md").read_text()
    assert ".venv/bin/simstudy" in readme and "source .venv/bin/activate" in readme
