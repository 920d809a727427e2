"""Issue 12, point 5: a pgkeep with another --nodelocal-root adopted a job whose collection lives in
the first one's root (a backup split across two disks, a restore reading nothing), and an adopted
restore that could not read its backup failed at once and leaked its pgkeep_restore_* database.
A job records where its storage lives (engine/placement.py) and only a process at the same place
adopts it; every failure of a restore drops its temporary database. Fault points:
restore.after_load, restore.after_create (kill -9).

Each test runs on its own PostgreSQL cluster, so that no other pgkeep of the session sees the
jobs of the pgkeeps started here."""
from __future__ import annotations

import shutil
import time
import uuid

import pytest

from tests.support.clusters import make_cluster
from tests.support.pgkeep import PgkeepProcess

from .jobtools import job_row, query, wait_exit, wait_job

SOURCE = "place_src"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("place")
    c = make_cluster(base, "pg")
    c.psql(f"CREATE DATABASE {SOURCE}")
    c.psql("CREATE TABLE t (id int PRIMARY KEY, v text); "
           "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g", SOURCE)
    c.base = base
    yield c
    c.destroy()


def _pgkeep(cluster, name, root, crash=None):
    return PgkeepProcess(cluster.base / name, cluster.dsn(),
                         args=["--nodelocal-root", str(root), "--job-lease", "2"],
                         env={"PGKEEP_TESTING_CRASHPOINTS": crash} if crash else None)


def _crashed_restore(cluster, root, point: str) -> tuple[int, str, str]:
    """A backup in `root`, then a RESTORE whose pgkeep dies at `point`: (job id, target, coll)."""
    name = uuid.uuid4().hex[:8]
    coll, target = f"nodelocal://self/c{name}", f"r_{name}"
    a = _pgkeep(cluster, f"a-{name}", root, crash=point).start()
    query(a, f"BACKUP DATABASE {SOURCE} INTO '{coll}'")
    job_id = query(a, f"RESTORE DATABASE {SOURCE} FROM LATEST IN '{coll}' "
                      f"WITH new_db_name = '{target}', detached")[0][0]
    assert wait_exit(a) == 137
    return job_id, target, coll


def temporary_databases(cluster) -> str:
    return cluster.psql("SELECT datname FROM pg_database WHERE datname LIKE 'pgkeep\\_restore\\_%'")


def test_process_with_other_nodelocal_root_adopts_job(cluster):
    root_a, root_b = cluster.base / "root-a", cluster.base / "root-b"
    job_id, target, _ = _crashed_restore(cluster, root_a, "restore.after_load")
    b = _pgkeep(cluster, f"b-{target}", root_b).start()
    try:
        time.sleep(8)       # four leases: B would have adopted the job by now
        row = job_row(b, job_id)
        assert row["status"] == "running", row
        assert f":{b.proc.pid}:" not in (row["coordinator_id"] or ""), row
        assert f"adopted job {job_id}" not in b.log()
    finally:
        b.stop()
    again = _pgkeep(cluster, f"a2-{target}", root_a).start()
    try:
        assert wait_job(again, job_id)["status"] == "succeeded"
        assert f"adopted job {job_id}" in again.log()
    finally:
        again.stop()
    assert cluster.psql("SELECT count(*) FROM t", target).strip() == "5000"
    assert temporary_databases(cluster) == ""


def test_adopted_restore_of_removed_backup_leaks_temporary_database(cluster):
    root = cluster.base / "root-c"
    job_id, target, coll = _crashed_restore(cluster, root, "restore.after_create")
    assert temporary_databases(cluster) != ""
    shutil.rmtree(root / coll.split("/")[-1])
    b = _pgkeep(cluster, f"b-{target}", root).start()
    try:
        row = wait_job(b, job_id)
    finally:
        b.stop()
    assert row["status"] == "failed", row
    assert "no backup found in nodelocal://self/" in row["error"], row
    assert temporary_databases(cluster) == ""
    assert cluster.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{target}'").strip() == "0"
