# didlab — the two commands a fresh machine needs (Python 3.11+ only):
#   make run   create .venv if needed, install, run the main experiment
#   make test  create .venv if needed, install with test extras, run the tests
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
ARGS   ?=

.PHONY: run test test-slow bench venv clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Stamp files record what has been installed; they are rebuilt when pyproject changes.
$(VENV)/.installed-run: $(VENV)/bin/python pyproject.toml
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/bin/python pyproject.toml
	$(PIP) install --quiet -e ".[test]"
	touch $@

$(VENV)/.installed-bench: $(VENV)/bin/python pyproject.toml
	$(PIP) install --quiet -e ".[test,bench]"
	touch $@

venv: $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(VENV)/bin/didlab experiment=robustness $(ARGS)

test: $(VENV)/.installed-test
	$(PY) -m pytest -q $(ARGS)

test-slow: $(VENV)/.installed-test
	$(PY) -m pytest -q -m slow $(ARGS)

bench: $(VENV)/.installed-bench
	$(PY) -m experiments.bench $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
