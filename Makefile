# Two commands set up everything on a fresh machine:
#   make demo   run a real multi-device job end to end on emulated devices
#   make test   run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
DEMO_JOB ?= examples/coordinated-testing.yaml

.PHONY: demo test install install-test system-packages bench clean

system-packages:
	@scripts/ensure-system-packages.sh

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "convoy needs Python 3.11 or newer")'
	@$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	@echo "convoy: installing into $(VENV)"
	@$(PIP) install -e . > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; echo "convoy: pip install failed"; exit 1; }
	@$(BIN)/convoy --version >/dev/null
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	@$(PIP) install -e '.[test]' > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; echo "convoy: pip install failed"; exit 1; }
	@touch $@

install: system-packages $(VENV)/.installed

install-test: system-packages $(VENV)/.installed-test

demo: install
	$(BIN)/convoy run $(DEMO_JOB) --artifacts artifacts

test: install-test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/task_overhead.py

clean:
	rm -rf $(VENV) artifacts *.egg-info
