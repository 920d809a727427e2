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

# setup.py and the .pyx: the compiled relay is built by the install (in place, for -e).
$(VENV)/.installed: pyproject.toml setup.py proxy/wire/_relay.pyx scripts/venv.sh $(VENV_BROKEN)
	PYTHON=$(PYTHON) ./scripts/venv.sh $(VENV)
	touch $@

$(VENV)/.installed-test: pyproject.toml setup.py proxy/wire/_relay.pyx scripts/venv.sh $(VENV_BROKEN)
	PYTHON=$(PYTHON) ./scripts/venv.sh $(VENV) test
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

# pgkeep on its own embedded PostgreSQL 18 (kept in .pgkeep/ across runs), on port 26257.
run: $(VENV)/.installed
	$(PY) -m proxy serve

deps: $(VENV)/.installed-test
	PY=$(PY) ./scripts/install-test-deps.sh

# The proxy's tests that go through the session relay, run a second time on the pure-Python
# relay (PGKEEP_PURE_PYTHON=1), the fallback where the compiled one is not built.
PURE_PYTHON_TESTS := tests/wire tests/e2e/test_passthrough.py tests/e2e/test_intercept.py \
	tests/e2e/test_cancel.py tests/e2e/test_failures.py tests/e2e/test_workers.py \
	tests/e2e/test_tls.py tests/e2e/test_jdbc.py tests/e2e/test_fidelity.py \
	tests/e2e/test_early_frames.py tests/e2e/test_startup_packets.py tests/e2e/test_auth.py \
	tests/e2e/test_lifecycle.py tests/e2e/test_privileges.py

# Installs everything the tests need, then runs the whole suite (the compiled relay) on one
# pytest-xdist worker per core (each with its own PostgreSQL clusters, pgkeep and object stores;
# a test file runs whole on one worker), then the relay's tests on the pure-Python path.
# TEST_WORKERS=0 runs them serially in one process.
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
test: deps
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile
	PGKEEP_PURE_PYTHON=1 $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile \
		$(PURE_PYTHON_TESTS)

bench-proxy: deps
	$(PY) bench/proxy_overhead.py

bench-backup: deps
	$(PY) bench/backup_restore.py

bench-storage: deps
	$(PY) bench/storage.py
