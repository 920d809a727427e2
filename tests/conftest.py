"""Session fixtures: one PostgreSQL 18 cluster (and 15 where installed) and one pgkeep process in
front of it, all real processes on free ports under a temporary directory.

Under pytest-xdist (`make test` runs `-n <cores> --dist loadfile`) each worker is its own session with
its own clusters, pgkeep and object-store servers, on ports that tests/support/ports.py keeps
from clashing, under its own basetemp subdirectory (popen-gwN); a test file runs whole on one
worker, so its module fixtures are built once and its tests keep their order."""
from __future__ import annotations

import os

import pytest

from proxy.pgcluster import ensure_system_user
from tests.support.clusters import debian_bin_dir, make_cluster
from tests.support.pgkeep import PgkeepProcess


def pytest_configure(config):
    # Under root the clusters run as a system user, created on first use: create it once here,
    # before xdist starts its workers, so that two workers never race to `useradd` it.
    if os.geteuid() == 0 and not hasattr(config, "workerinput"):
        ensure_system_user()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("pgkeep")
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="session")
def pg18(workdir):
    cluster = make_cluster(workdir, "pg18")
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def pg15(workdir):
    bin_dir = debian_bin_dir(15)
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL 15 binaries are missing; .ci/run must install postgresql-15")
        pytest.skip("PostgreSQL 15 is not installed here (apt-get install postgresql-15)")
    cluster = make_cluster(workdir, "pg15", bin_dir=bin_dir)
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def pgkeep(workdir, pg18):
    proc = PgkeepProcess(workdir / "pgkeep", pg18.dsn()).start()
    yield proc
    proc.stop()
