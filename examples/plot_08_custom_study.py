r"""
A study of your own: a TOML grid from the command line to its report
====================================================================

A study is a grid of trainings written as TOML: each ``[grids.NAME]`` table is the Cartesian
product of its axes (a list, or a range such as ``{geomspace = [a, b, n]}``), and ``simstudy
run`` (``python -m studies run``) checks it, trains it in chunks stored as Parquet parts,
and writes a report: ``report.html``, ``report.md``, ``claims.json`` and ``figures/``. Every key
is listed in :doc:`/user_guide/studies`.

This grid compares tanh and relu 2-8-1 networks on two moons over eight learning rates and
two seeds: 32 trainings, a few seconds. It runs in a temporary directory and the report's
Markdown and first figure are shown below.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

import studies

GRID = """
title = "tanh against relu on two moons"

[grids.moons]
kind = "mlp"
data = {name = "moons", n = 128, noise = 0.2}
widths = [8]
activation = ["tanh", "relu"]
loss = "bce"
lr = {geomspace = [0.05, 5.0, 8]}
seed = {range = 2}
steps = 100
"""

workdir = tempfile.TemporaryDirectory()
tmp = Path(workdir.name)
(tmp / "moons.toml").write_text(GRID)
# the subprocess imports this checkout's simcore and studies, as the parent does
env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(studies.__file__).parents[1]),
                                                     os.environ.get("PYTHONPATH", "")])}
cmd = [sys.executable, "-m", "studies", "run", str(tmp / "moons.toml"), "--out", str(tmp / "run"), "--quiet"]
done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
print("$ python -m studies run moons.toml --out run --quiet")
print(done.stdout + done.stderr)
done.check_returncode()

# %%
# What the run wrote
run = tmp / "run"
print(sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file() and "parts" not in p.parts)[:12])
print(len(list((run / "parts").glob("*.parquet"))), "Parquet part(s) of long-form rows")
rows = pd.concat(pd.read_parquet(p) for p in (run / "parts").glob("*.parquet"))
print(rows.columns.tolist()[:20])

# %%
# The report's Markdown (the first lines), and its first figure
print("\n".join((run / "report.md").read_text().splitlines()[:30]))
claims = json.loads((run / "claims.json").read_text())
print(f"claims.json: {claims['passed']} of {claims['total']} predictions hold (a plain grid states none; "
      f'study = "NAME" in the TOML applies that study\'s analysis and its predictions)')
figure = sorted((run / "figures").glob("*.png"))[0]
fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
ax.imshow(plt.imread(figure))
ax.set_axis_off()
ax.set_title(f"figures/{figure.name}")
plt.show()
workdir.cleanup()
