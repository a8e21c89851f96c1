# `make demo` and `make test` each work on a fresh machine: they create .venv and install what they need.
# Any python3 >= 3.10 will do; PYTHON=python3.12 make test picks another.
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11 python3.10; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 10))' && echo $$p && break; done)
VENV ?= .venv
PY := $(VENV)/bin/python
BASE := $(VENV)/.installed-base
FULL := $(VENV)/.installed-test

.PHONY: install demo test lint regress baseline bench bench-tv gpu-check clean

install: $(FULL)

# torch and torchvision are pinned first so the project install can never pull a different torch.
$(BASE): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no python3 >= 3.10 found; install one or pass PYTHON=..."; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e .
	touch $(BASE)

# The suite also runs Ray (the cluster executor), transformers (the hf: family) and the linters.
$(FULL): $(BASE)
	$(PY) -m pip install -q -e '.[test,ray,hf]'
	touch $(FULL)

demo: $(BASE)
	$(VENV)/bin/tomebench sweep

# One worker per core, each test file on one worker (a file's module fixtures, a local Ray cluster, are built once).
# PYTEST_ARGS= runs it in one process; PYTEST_ARGS="-n 4" picks the workers.
PYTEST_ARGS ?= -n auto --dist loadfile
test: $(FULL)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# ruff (lint and format) and the import-linter contracts of the layers (pyproject.toml).
lint: $(FULL)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# The regression gate on the committed baseline: every reducer over the demo's full r range, checked. One re-timing
# at most: the speed check is loose (below) and a noisy CI runner should not triple the gate's time.
REGRESS_ARGS := compare --batch-size 128 --device cpu --dtype fp32 --repeats 15 --group-size 0 --max-retime 1
SPEEDUP_TOL ?= 0.5

regress: $(BASE)
	$(VENV)/bin/tomebench $(REGRESS_ARGS) --out results/regress-demo.csv \
		--baseline results/baselines/demo-cpu.csv --acc-tol 0 --speedup-tol $(SPEEDUP_TOL)

# Re-make the baseline (commit the result with a note on why it changed).
baseline: $(BASE)
	$(VENV)/bin/tomebench $(REGRESS_ARGS) --time-budget 300 --overwrite --out results/baselines/demo-cpu.csv

bench: $(BASE)
	$(PY) benchmarks/speedup.py

# The same on torchvision's ViT-B/16 (random init), through the torchvision adapter.
bench-tv: $(BASE)
	$(PY) benchmarks/speedup.py --model tv:vit_b_16 --r 0,8,16 --out results/bench-speedup-tv.csv

# On a machine with a CUDA GPU (under 10 minutes, no downloads): timing sanity and fp16/bf16 speedups.
gpu-check: $(BASE)
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) build *.egg-info
