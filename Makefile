# Two commands for a newcomer: `make demo` and `make test`. Both create/reuse .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-fast lint bench clean notebooks

setup: $(STAMP)

# torch/torchvision are pinned here and in pyproject.toml (this machine installs them from disk).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/blendmask-edu demo --output-dir runs/demo

test: setup
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q tests -m "not slow"

lint: setup
	$(VENV)/bin/ruff check blendmask_edu tests benchmarks notebooks/build.py
	$(VENV)/bin/ruff format --check blendmask_edu tests benchmarks notebooks/build.py

# Re-execute every tutorial notebook in place (fast mode; BLENDMASK_EDU_FULL=1 for the long
# versions). The shared model is trained once into runs/tutorial_cache and reused.
notebooks: setup
	$(PY) notebooks/build.py

bench: setup
	$(PY) benchmarks/train_speed.py
	$(PY) benchmarks/inference.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
