# Two commands for a newcomer: `make demo` and `make test`. Both create/reuse .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-fast lint bench clean notebooks docs docs-serve docs-setup

setup: $(STAMP)

# pyproject.toml declares compatible ranges; constraints.txt holds the exact, tested versions.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/blendmask-edu demo --output-dir runs/demo

test: setup docs-setup
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q tests -m "not slow"

lint: setup
	$(VENV)/bin/ruff check blendmask_edu tests benchmarks notebooks/build.py docs/hooks.py
	$(VENV)/bin/ruff format --check blendmask_edu tests benchmarks notebooks/build.py docs/hooks.py

# Re-execute every tutorial notebook in place (fast mode; BLENDMASK_EDU_FULL=1 for the long
# versions). The shared model is trained once into runs/tutorial_cache and reused.
notebooks: setup
	$(PY) notebooks/build.py

# The documentation site (mkdocs.yml, docs/) into site/; --strict: any warning fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

# The browser tests (tests/test_docs_*.py) drive Debian's Chromium (Playwright cannot download
# its own browser here) and serve MathJax from Debian's libjs-mathjax: installed when missing,
# as root (CI); otherwise the tests fail and say how to install them.
DEBIAN_DOCS_PACKAGES := chromium libjs-mathjax
docs-setup:
	@if [ -x /usr/bin/chromium ] && [ -f /usr/share/javascript/mathjax/MathJax.js ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEBIAN_DOCS_PACKAGES); \
	else echo "browser tests: run 'sudo apt-get install -y $(DEBIAN_DOCS_PACKAGES)'"; fi

bench: setup
	$(PY) benchmarks/train_speed.py
	$(PY) benchmarks/inference.py

clean:
	rm -rf runs .pytest_cache .ruff_cache site .cache
