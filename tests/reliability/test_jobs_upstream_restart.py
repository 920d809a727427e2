"""Issue 12, point 15: an upstream restart in the middle of an attached BACKUP told the client
08006 while the job went on and later succeeded: the client had no job id and the wrong answer.
Now a NOTICE names the job before anything can go wrong, and the attached statement waits through
the outage (its catalog reads retried) and answers the job's real outcome.

Runs on its own PostgreSQL cluster, restarted by the test."""
from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.support.clusters import make_cluster
from tests.support.pgkeep import PgkeepProcess


def query(proc, sql):
    with psycopg.connect(proc.dsn(), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


@pytest.fixture
def setup(tmp_path):
    c = make_cluster(tmp_path, "pg")
    c.psql("CREATE DATABASE restart_src")
    c.psql("".join(f"CREATE TABLE t{i} (id int PRIMARY KEY, v text); INSERT INTO t{i} SELECT g, "
                   f"md5(g::text) FROM generate_series(1, 300000) g;" for i in range(3)), "restart_src")
    proc = PgkeepProcess(tmp_path / "k", c.dsn(), args=["--job-lease", "2"]).start()
    for k, v in (("pgkeep.backup.chunk_size", "'1 MiB'"), ("pgkeep.backup.parallelism", "1")):
        query(proc, f"SET CLUSTER SETTING {k} = {v}")
    yield c, proc
    proc.stop()
    c.destroy()


def _running_backup(proc, timeout=60) -> int:
    """The id of the BACKUP once it has copied a chunk or two."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = query(proc, "SELECT job_id, fraction_completed FROM [SHOW JOBS] "
                           "WHERE job_type = 'BACKUP' AND status = 'running'")
        if rows and rows[0][1] > 0.05:
            return rows[0][0]
        time.sleep(0.05)
    raise AssertionError("the BACKUP never ran")


def test_upstream_restart_mid_backup_tells_client_08006_while_job_succeeds(setup):
    cluster, proc = setup
    notices: list[str] = []
    outcome: dict = {}

    def client():
        try:
            with psycopg.connect(proc.dsn(), autocommit=True) as conn:
                conn.add_notice_handler(lambda d: notices.append(d.message_primary))
                outcome["row"] = conn.execute(
                    "BACKUP DATABASE restart_src INTO 'nodelocal://self/restart'").fetchone()
        except psycopg.Error as e:
            outcome.setdefault("error", e)

    th = threading.Thread(target=client)
    th.start()
    job_id = _running_backup(proc)
    cluster.stop("fast")                # mid-COPY
    time.sleep(1)
    cluster.start()
    th.join(180)
    assert not th.is_alive(), "the attached BACKUP never answered"
    with psycopg.connect(proc.dsn(), autocommit=True) as conn:
        cur = conn.execute(f"SHOW JOB {job_id}")
        job = dict(zip([c.name for c in cur.description], cur.fetchone()))
    assert job["status"] in ("succeeded", "failed"), job
    if job["status"] == "succeeded":
        assert "error" not in outcome, (outcome, job)
        assert outcome["row"][0] == job_id and outcome["row"][1] == "succeeded"
    else:
        assert outcome["error"].sqlstate != "08006" and job["error"] in str(outcome["error"]), (outcome, job)
    assert notices and f"BACKUP job {job_id} started" in notices[0], notices
