# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3

.PHONY: run test deps install bench-proxy bench-backup bench-storage

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e .

# pgkeep on its own embedded PostgreSQL 18 (kept in .pgkeep/ across runs), on port 26257.
run: install
	$(PYTHON) -m proxy serve

deps:
	./scripts/install-test-deps.sh

# Installs everything the tests need, then runs the whole suite.
test: deps
	$(PYTHON) -m pytest -q -p no:cacheprovider

bench-proxy: deps
	$(PYTHON) bench/proxy_overhead.py

bench-backup: deps
	$(PYTHON) bench/backup_restore.py

bench-storage: deps
	$(PYTHON) bench/storage.py
