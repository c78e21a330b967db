# Two commands on a fresh machine with only python3:  make demo   and   make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test install dev clean docs docs-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# stamps: reinstall only when pyproject.toml changes
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.dev

# every study's quick preset (reports/<study>-quick/report.html); ends with reports/index.html
demo: $(VENV)/.installed
	$(BIN)/python -m studies run all --preset quick

# the CUDA backend's extra (numba-cuda): its tests run under numba's CUDA simulator, no GPU needed
$(VENV)/.cuda: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev,cuda]"
	touch $@ $(VENV)/.dev $(VENV)/.installed

# the suite, then the CUDA backend against the CPU one under the simulator (a GPU is not needed;
# on a machine with one, `$(BIN)/python -m pytest tests/test_cuda_sim.py` runs the same tests on it),
# then the documentation with warnings as errors (after pytest, so numba's cache is warm for the gallery);
# the suite runs on every core (pytest-xdist): most of its time is numba compiling, one process per core
test: $(VENV)/.dev $(VENV)/.cuda $(VENV)/.docs
	$(BIN)/python -m pytest -q -n auto
	NUMBA_ENABLE_CUDASIM=1 $(BIN)/python -m pytest -q -n auto tests/test_cuda_sim.py tests/test_cuda_sim_validation.py tests/test_cuda_sim_training.py
	$(MAKE) --no-print-directory docs

# the examples in simcore's docstrings (not part of make test: about 15 s; the gallery runs in make test)
.PHONY: doctest
doctest: $(VENV)/.dev
	$(BIN)/python -m pytest -q --doctest-modules simcore

# the documentation's extra (Sphinx, pydata-sphinx-theme, numpydoc, sphinx-gallery, myst-parser)
$(VENV)/.docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $@ $(VENV)/.installed

# docs/_build/html, offline; every gallery example runs; a warning or a failing example fails it.
# The theory pages show each study's quick preset, run by the build (3-5 min on 2 busy cores) and
# cached in docs/_build/quick_presets under a hash of simcore/ and studies/ (docs/_ext/quick_presets.py):
# a rebuild of unchanged code reuses it. The generated API stubs and gallery pages are made
# afresh (a stale one, of a function since removed, would fail the build), and -E rereads every
# page so none lags a docstring edit.
SPHINXOPTS ?=
docs: $(VENV)/.docs
	rm -rf docs/generated docs/auto_examples
	$(BIN)/python -m sphinx -E -W --keep-going -q -b html $(SPHINXOPTS) docs docs/_build/html
	@echo "docs/_build/html/index.html"

# the built site as a browser renders it: the index, an API page, a theory page and a gallery page to PNG under
# docs/_build/screenshots (Debian's chromium; this target installs nothing); the virtual time lets
# MathJax typeset before the shot
CHROMIUM ?= chromium
SHOTS := docs/_build/screenshots
.PHONY: chromium-present
chromium-present:
	@command -v $(CHROMIUM) >/dev/null || { echo "docs-check needs headless Chromium: apt-get install chromium (or CHROMIUM=/path/to/it)" >&2; exit 2; }
docs-check: chromium-present docs
	mkdir -p $(SHOTS)
	for page in index api/simcore theory/convergence auto_examples/plot_04_vanishing_gradients; do \
	    $(CHROMIUM) --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2000 --virtual-time-budget=10000 \
	        --screenshot=$(SHOTS)/$$(echo $$page | tr / _).png file://$(CURDIR)/docs/_build/html/$$page.html \
	        2>/dev/null || exit 1; \
	    test -s $(SHOTS)/$$(echo $$page | tr / _).png || { echo "no screenshot of $$page" >&2; exit 1; }; \
	done
	@ls -l $(SHOTS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info docs/_build docs/auto_examples docs/generated
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: bench-peers bench-mlp
$(VENV)/.peers: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[peers]"
	touch $@

# the peers suite (benchmarks/workloads.py: W1, W1 with batch norm, widths 16-256, digits) against
# JAX jit(vmap) in the same run, both dtypes, plus PyTorch on W1; the README's speed table
bench-peers: $(VENV)/.peers
	$(BIN)/python benchmarks/peers.py --dtype both --torch

# MLP.loss_and_grad per call vs NumPy+BLAS and PyTorch, and compile time cold/cached
bench-mlp: $(VENV)/.dev
	$(BIN)/python benchmarks/mlp_speed.py --threads 1 --blas-threads 1
	$(BIN)/python benchmarks/compile_time.py

# asv suite (benchmarks/benchmarks, asv.conf.json); results and dashboard under .asv/
.PHONY: bench bench-history bench-view
N ?= 5
ASV := $(BIN)/python -m asv

# the working tree, each benchmark once, in this environment; recorded under HEAD's hash
bench: $(VENV)/.dev
	$(ASV) machine --yes
	$(ASV) run --python=same --quick --show-stderr --launch-method=forkserver --set-commit-hash $$(git rev-parse HEAD)

# the last N commits, each built and installed in asv's own virtualenv (.asv/env), then the
# dashboard (.asv/html); results this machine already has for an environment are skipped
# (--skip-existing: per environment, so `make bench` on HEAD does not hide HEAD here). HISTORY_ATTRS
# trades samples for time (3 samples of one round instead of asv's default 2 rounds of up to 10);
# make bench-history HISTORY_ATTRS= takes asv's defaults.
HISTORY_ATTRS ?= -a rounds=1 -a repeat=3 -a warmup_time=0.05
bench-history: $(VENV)/.dev
	$(ASV) machine --yes
	$(ASV) run --show-stderr --skip-existing $(HISTORY_ATTRS) HEAD~$(N)..HEAD
	$(ASV) publish

# before merging kernel work: the peers suite's workloads (bench_suite) at BASE and at HEAD, side by
# side in asv's own virtualenvs; exits non-zero when a benchmark is more than 10% slower at HEAD
BASE ?= HEAD~1
.PHONY: bench-compare
bench-compare: $(VENV)/.dev
	$(ASV) machine --yes
	$(ASV) continuous --show-stderr --factor 1.1 --bench bench_suite $(HISTORY_ATTRS) $(BASE) HEAD

# serve the dashboard of .asv/html (make bench-history first)
bench-view: $(VENV)/.dev
	$(ASV) preview
