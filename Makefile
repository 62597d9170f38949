# Two commands set up everything on a fresh machine:
#   make demo   run a real multi-device job end to end on emulated devices
#   make test   run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# Every Python dependency, pinned: installs use it as constraints (`make lock` refreshes it)
LOCK := requirements/lock.txt
TOOLS := .venv-tools
LATEST := .venv-latest
DEMO_JOB ?= examples/demo-coordinated-testing.yaml

.PHONY: demo test lint test-latest lock install install-test system-packages bench clean

system-packages:
	@scripts/ensure-system-packages.sh

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "convoy needs Python 3.11 or newer")'
	@$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml $(LOCK)
	@echo "convoy: installing into $(VENV) (versions from $(LOCK))"
	@$(PIP) install -c $(LOCK) -e . > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; echo "convoy: pip install failed"; exit 1; }
	@$(BIN)/convoy --version >/dev/null
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	@$(PIP) install -c $(LOCK) -e '.[test]' > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; echo "convoy: pip install failed"; exit 1; }
	@touch $@

install: system-packages $(VENV)/.installed

install-test: system-packages $(VENV)/.installed-test

demo: install
	$(BIN)/convoy run $(DEMO_JOB) --artifacts artifacts

test: install-test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# import-linter contracts, ruff and mypy (rules and baseline: docs/architecture.md)
lint: install-test
	BIN=$(BIN) scripts/lint.sh

# Refresh the lock from setup.cfg's ranges (names and versions only: no index URLs or paths)
lock:
	@test -x $(TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/python -m pip -q install pip-tools; }
	$(TOOLS)/bin/pip-compile --quiet --upgrade --extra test --strip-extras --no-emit-index-url \
	    --no-emit-find-links --no-emit-trusted-host --output-file $(LOCK) setup.cfg

# The suite on the newest releases setup.cfg allows (not in CI): a breaking release shows here first
test-latest: system-packages
	@rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	@$(LATEST)/bin/python -m pip --disable-pip-version-check -q install --upgrade -e '.[test]'
	@$(LATEST)/bin/python -m pip --disable-pip-version-check list --format=freeze | grep -iE '^(celery|kombu|redis|pyyaml|cerberus|fabric|flower|asyncssh|click)=='
	$(LATEST)/bin/python -m pytest -q $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/task_overhead.py

clean:
	rm -rf $(VENV) $(TOOLS) $(LATEST) artifacts *.egg-info
