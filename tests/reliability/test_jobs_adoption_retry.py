"""Issue 12, point 5: transient storage errors on adoption are retried, permanent ones are not.

A BACKUP and a RESTORE whose collection is on S3 (SeaweedFS) lose their pgkeep (kill -9 at the
fault points backup.after_chunk and restore.after_create); another pgkeep adopts them. The job
moved because its process died, often with the network in trouble: an adopted job waits for its
store to answer (engine/service.py, up to ADOPTION_WAIT seconds in all) before its first access,
so a store down for a while does not fail it, while a store that answers "no such bucket" fails
it at once, leaving no pgkeep_restore_* database behind.

The store is reached through a TCP relay that refuses connections (its port closed) for longer
than one storage request's own retries last (wrappers.RetryPolicy: 8 attempts, at most ~21 s of
backoff when each attempt is refused at once): without the adoption wait, the adopted backup
fails on the closed port.

Each test runs on its own PostgreSQL cluster, so that no other pgkeep of the session adopts the
jobs of the pgkeeps started here."""
from __future__ import annotations

import re
import socket
import threading
import time
import uuid

import pytest

from tests.support.clusters import make_cluster
from tests.support.datasets import row_hashes
from tests.support.faultproxy import FaultProxy
from tests.support.objstores import seaweedfs
from tests.support.pgkeep import PgkeepProcess

from .jobtools import job_row, query, wait_exit, wait_job

SOURCE = "adopt_src"
# Seconds the relay keeps refusing once both jobs are adopted: longer than one request's own
# retries last (at most ~21 s of backoff), shorter than an adopted job's wait (60 s).
OUTAGE = 24.0
# The job lease of the pgkeep that dies in the RESTORE: the second crashing pgkeep (started right
# after, lease 2 s) must die in its BACKUP before that lease runs out, or it adopts the RESTORE
# and may finish it, temporary database and all, before its own crash (seen on a loaded machine).
RESTORE_CRASH_LEASE = "15"


class OutageRelay(FaultProxy):
    """FaultProxy whose port can be closed (connections refused) and opened again."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.url = f"http://127.0.0.1:{self.port}"

    def down(self) -> None:
        listener = self._listener
        try:
            listener.shutdown(socket.SHUT_RDWR)     # wakes the accepting thread
        except OSError:
            pass
        listener.close()
        self.cut()

    def up(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def temporary_databases(cluster) -> str:
    return cluster.psql("SELECT datname FROM pg_database WHERE datname LIKE 'pgkeep\\_restore\\_%'")


@pytest.fixture(scope="module")
def s3():
    return seaweedfs()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("adopt")
    c = make_cluster(base, "pg")
    c.psql(f"CREATE DATABASE {SOURCE}")
    c.psql("CREATE TABLE t (id int PRIMARY KEY, v text); "
           "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 4000) g; "
           "CREATE TABLE u (id int, w numeric); "
           "INSERT INTO u SELECT g, g / 7.0 FROM generate_series(1, 3000) g", SOURCE)
    c.base = base
    yield c
    c.destroy()


def _pgkeep(cluster, name: str, crash: str | None = None, lease: str = "2") -> PgkeepProcess:
    return PgkeepProcess(cluster.base / name, cluster.dsn(),
                         args=["--nodelocal-root", str(cluster.base / "root"), "--job-lease", lease],
                         env={"PGKEEP_TESTING_CRASHPOINTS": crash} if crash else None)


def _crashed_jobs(cluster, coll: str) -> tuple[int, int, str]:
    """A backup in `coll`, then a RESTORE of it whose pgkeep dies at restore.after_create and a
    BACKUP whose pgkeep dies at backup.after_chunk: (restore job, backup job, restore target)."""
    name = uuid.uuid4().hex[:8]
    target = f"r_{name}"
    a = _pgkeep(cluster, f"ar-{name}", "restore.after_create", lease=RESTORE_CRASH_LEASE).start()
    query(a, f"BACKUP DATABASE {SOURCE} INTO '{coll}'")
    restore_job = query(a, f"RESTORE DATABASE {SOURCE} FROM LATEST IN '{coll}' "
                           f"WITH new_db_name = '{target}', detached")[0][0]
    assert wait_exit(a) == 137
    a = _pgkeep(cluster, f"ab-{name}", "backup.after_chunk").start()
    backup_job = query(a, f"BACKUP DATABASE {SOURCE} INTO '{coll}' WITH detached")[0][0]
    assert wait_exit(a) == 137
    assert temporary_databases(cluster) != ""
    return restore_job, backup_job, target


def test_adopted_jobs_wait_for_a_store_that_refuses_connections(cluster, s3):
    relay = OutageRelay(s3.port)
    coll = s3.collection_uri("coll", endpoint=relay.url)
    restore_job, backup_job, target = _crashed_jobs(cluster, coll)
    relay.down()
    b = _pgkeep(cluster, f"b-{target}").start()
    try:
        wait_for(lambda: all(f"adopted job {j}" in b.log() for j in (restore_job, backup_job)),
                 60, "B to adopt both jobs")
        time.sleep(OUTAGE)
        for job in (restore_job, backup_job):   # still waiting for the store, not failed
            assert job_row(b, job)["status"] == "running", (job_row(b, job), b.log()[-3000:])
        relay.up()
        for job in (restore_job, backup_job):
            row = wait_job(b, job, timeout=120)
            assert row["status"] == "succeeded", (row["job_type"], row["error"], b.log()[-3000:])
        assert "its store is unreachable, waiting for it" in b.log()
        expected = row_hashes(cluster, SOURCE)
        assert row_hashes(cluster, target) == expected
        (subdir,), = query(b, f"SELECT result->>'subdir' FROM pgkeep.jobs WHERE job_id = {backup_job}")
        check = f"chk_{target}"
        query(b, f"RESTORE DATABASE {SOURCE} FROM '{subdir}' IN '{coll}' WITH new_db_name = '{check}'")
        assert row_hashes(cluster, check) == expected
        assert temporary_databases(cluster) == ""
    finally:
        b.stop()
        relay.close()


def test_adopted_jobs_fail_at_once_when_the_bucket_is_gone(cluster, s3):
    bucket = s3.new_bucket()
    coll = s3.collection_uri("coll", bucket=bucket)
    restore_job, backup_job, target = _crashed_jobs(cluster, coll)
    client = s3.client()
    for key in s3.keys(bucket):
        client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)
    b = _pgkeep(cluster, f"b-{target}").start()
    try:
        wait_for(lambda: all(f"adopted job {j}" in b.log() for j in (restore_job, backup_job)),
                 60, "B to adopt both jobs")
        started = time.monotonic()
        rows = {job: wait_job(b, job, timeout=120) for job in (restore_job, backup_job)}
        took = time.monotonic() - started
    finally:
        b.stop()
    for job, row in rows.items():
        assert row["status"] == "failed", row
        assert f"the bucket '{bucket}' does not exist" in row["error"], row
    log = b.log()
    # a permanent failure is not retried: no wait, no retry, no backoff
    assert not re.search(r"unreachable|retrying|waiting for it", log), log[-3000:]
    assert took < 30, took
    assert temporary_databases(cluster) == ""
    assert cluster.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{target}'").strip() == "0"
