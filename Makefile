# `make demo` and `make test` each work on a fresh machine: they create .venv and install what they need.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test regress baseline bench bench-tv gpu-check clean

install: $(STAMP)

# torch and torchvision are pinned first so the project install can never pull a different torch.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test,ray,hf]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tomebench sweep

test: $(STAMP)
	$(PY) -m pytest -q

# The regression gate on the committed baseline: every reducer over the demo's full r range, checked. One re-timing
# at most: the speed check is loose (below) and a noisy CI runner should not triple the gate's time.
REGRESS_ARGS := compare --batch-size 128 --device cpu --dtype fp32 --repeats 15 --group-size 0 --max-retime 1
SPEEDUP_TOL ?= 0.5

regress: $(STAMP)
	$(VENV)/bin/tomebench $(REGRESS_ARGS) --out results/regress-demo.csv \
		--baseline results/baselines/demo-cpu.csv --acc-tol 0 --speedup-tol $(SPEEDUP_TOL)

# Re-make the baseline (commit the result with a note on why it changed).
baseline: $(STAMP)
	$(VENV)/bin/tomebench $(REGRESS_ARGS) --out results/baselines/demo-cpu.csv

bench: $(STAMP)
	$(PY) benchmarks/speedup.py

# The same on torchvision's ViT-B/16 (random init), through the torchvision adapter.
bench-tv: $(STAMP)
	$(PY) benchmarks/speedup.py --model tv:vit_b_16 --r 0,8,16 --out results/bench-speedup-tv.csv

# On a machine with a CUDA GPU (under 10 minutes, no downloads): timing sanity and fp16/bf16 speedups.
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) build *.egg-info
