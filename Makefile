# The two commands of the README: `make run` and `make test`. Both work in the project's own
# virtual environment (.venv, created on first use), never in the system Python; pgkeep is
# installed into it again only when pyproject.toml changes (the stamp files).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The test servers' binaries (weed, ...) are installed into the venv's bin.
export PATH := $(abspath $(VENV))/bin:$(PATH)

# A venv whose interpreter no longer runs (the system Python it points at was upgraded or
# removed) is installed again, stamps or not.
VENV_BROKEN := $(if $(shell $(PY) -c '' 2>/dev/null && echo ok),,venv-broken)

.PHONY: run test deps install bench-proxy bench-backup bench-storage venv-broken

$(VENV)/.installed: pyproject.toml scripts/venv.sh $(VENV_BROKEN)
	PYTHON=$(PYTHON) ./scripts/venv.sh $(VENV)
	touch $@

$(VENV)/.installed-test: pyproject.toml scripts/venv.sh $(VENV_BROKEN)
	PYTHON=$(PYTHON) ./scripts/venv.sh $(VENV) test
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

# pgkeep on its own embedded PostgreSQL 18 (kept in .pgkeep/ across runs), on port 26257.
run: $(VENV)/.installed
	$(PY) -m proxy serve

deps: $(VENV)/.installed-test
	PY=$(PY) ./scripts/install-test-deps.sh

# Installs everything the tests need, then runs the whole suite on one pytest-xdist worker per
# core (each with its own PostgreSQL clusters, pgkeep and object stores; a test file runs whole
# on one worker). TEST_WORKERS=0 runs it serially in one process.
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
test: deps
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

bench-proxy: deps
	$(PY) bench/proxy_overhead.py

bench-backup: deps
	$(PY) bench/backup_restore.py

bench-storage: deps
	$(PY) bench/storage.py
