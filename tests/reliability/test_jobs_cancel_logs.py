"""Issue 12, point 15 (last sentence): a job cancelled mid-COPY logged asyncpg transport errors
("Task exception was never retrieved", tracebacks) from the COPY connections it abandoned. A
cancelled BACKUP or RESTORE ends canceled, cleanly, and pgkeep's log says only that.

Runs on its own PostgreSQL cluster and pgkeep: the settings that make the jobs slow enough to be
caught mid-COPY are cluster settings, and the log must hold only these jobs."""
from __future__ import annotations

import re
import time

import pytest

from tests.support.clusters import make_cluster
from tests.support.pgkeep import PgkeepProcess

from .jobtools import query, wait_until

ROWS = 600_000
_NOISE = re.compile(r"Traceback|Task exception was never retrieved|Future exception was never "
                    r"retrieved|InterfaceError|ConnectionDoesNotExistError|connection was closed|"
                    r"transport|socket.send\(\) raised exception|Exception in callback|unhandled exception",
                    re.IGNORECASE)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("cancel")
    c = make_cluster(base, "pg")
    c.psql("CREATE DATABASE cancel_src")
    c.psql("".join(f"CREATE TABLE t{i} (id int PRIMARY KEY, v text); INSERT INTO t{i} SELECT g, "
                   f"md5(g::text) || md5((g + 1)::text) FROM generate_series(1, {ROWS}) g;"
                   for i in range(3)), "cancel_src")
    proc = PgkeepProcess(base / "k", c.dsn()).start()
    for k, v in (("pgkeep.backup.chunk_size", "'1 MiB'"), ("pgkeep.backup.parallelism", "3"),
                 ("pgkeep.restore.parallelism", "3")):
        query(proc, f"SET CLUSTER SETTING {k} = {v}")
    query(proc, "BACKUP DATABASE cancel_src INTO 'nodelocal://self/full'")
    yield c, proc
    proc.stop()
    c.destroy()


def _cancel_mid_copy(proc, statement: str, at: float) -> str:
    offset = len(proc.log())
    job_id = query(proc, statement)[0][0]
    wait_until(proc, job_id, lambda r: r["fraction_completed"] > at or r["status"] != "running")
    query(proc, f"CANCEL JOB {job_id}")
    row = wait_until(proc, job_id, lambda r: r["status"] in ("canceled", "failed", "succeeded"))
    assert row["status"] == "canceled", row
    time.sleep(0.5)    # asyncpg's leftovers are logged when their tasks are collected
    return proc.log()[offset:]


@pytest.mark.parametrize("at", [0.05, 0.2, 0.4])
def test_cancelled_backup_logs_asyncpg_transport_errors(setup, at):
    _, proc = setup
    log = _cancel_mid_copy(proc, f"BACKUP DATABASE cancel_src INTO 'nodelocal://self/c{int(at * 100)}' "
                                 "WITH detached", at)
    assert not _NOISE.search(log), log[-4000:]


@pytest.mark.parametrize("at", [0.05, 0.3])
def test_cancelled_restore_logs_asyncpg_transport_errors(setup, at):
    cluster, proc = setup
    log = _cancel_mid_copy(proc, "RESTORE DATABASE cancel_src FROM LATEST IN 'nodelocal://self/full' "
                                 "WITH new_db_name = 'cancel_dst', detached", at)
    assert not _NOISE.search(log), log[-4000:]
    assert cluster.psql("SELECT datname FROM pg_database WHERE datname LIKE 'pgkeep\\_restore\\_%' "
                        "OR datname = 'cancel_dst'") == ""
