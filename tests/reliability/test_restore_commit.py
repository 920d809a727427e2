"""Issue 12, point 4: a crash right after a restore's final rename left a job that, adopted by
another pgkeep, failed with 42P04 (it did not recognise its own renamed database), and the
database lacked its database-level settings and comment (they were applied after the rename).
Fault points: restore.before_rename, restore.after_rename (engine/pausepoints.py), hit as kill -9.

Each test runs on its own PostgreSQL cluster, so that no other pgkeep of the session sees (and
adopts) the jobs of the pgkeeps started here."""
from __future__ import annotations

import uuid

import pytest

from tests.support.clusters import make_cluster
from tests.support.pgkeep import PgkeepProcess

from .jobtools import query, wait_exit, wait_job

SOURCE = "commit_src"
ROWS = 5000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("commit")
    c = make_cluster(base, "pg")
    c.psql(f"CREATE DATABASE {SOURCE}")
    c.psql(f"ALTER DATABASE {SOURCE} SET work_mem = '7MB'")
    c.psql(f"COMMENT ON DATABASE {SOURCE} IS 'the source of the commit tests'")
    c.psql(f"CREATE TABLE t (id int PRIMARY KEY, v text); "
           f"INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g", SOURCE)
    c.base = base
    yield c
    c.destroy()


@pytest.fixture(scope="module")
def backup(cluster):
    """A backup of SOURCE in a nodelocal root every pgkeep of this module shares."""
    root = cluster.base / "external"
    proc = PgkeepProcess(cluster.base / "backup", cluster.dsn(), args=["--nodelocal-root", str(root)])
    proc.start()
    try:
        coll = "nodelocal://self/commit"
        query(proc, f"BACKUP DATABASE {SOURCE} INTO '{coll}'")
    finally:
        proc.stop()
    return root, coll


def _crash_then_adopt(cluster, backup, point: str):
    root, coll = backup
    target = f"r_{uuid.uuid4().hex[:8]}"
    args = ["--nodelocal-root", str(root), "--job-lease", "2"]
    a = PgkeepProcess(cluster.base / f"a-{target}", cluster.dsn(), args=args,
                      env={"PGKEEP_TESTING_CRASHPOINTS": point}).start()
    job_id = query(a, f"RESTORE DATABASE {SOURCE} FROM LATEST IN '{coll}' "
                      f"WITH new_db_name = '{target}', detached")[0][0]
    assert wait_exit(a) == 137
    assert f"crashpoint {point} reached" in a.log()
    b = PgkeepProcess(cluster.base / f"b-{target}", cluster.dsn(), args=args).start()
    try:
        row = wait_job(b, job_id)
        assert row["status"] == "succeeded", row
        assert f"adopted job {job_id}" in b.log()
    finally:
        b.stop()
    assert cluster.psql("SELECT count(*) FROM t", target).strip() == str(ROWS)
    assert cluster.psql(f"SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                        f"WHERE datname = '{target}'").strip() == "the source of the commit tests"
    assert cluster.psql("SELECT array_to_string(s.setconfig, ',') FROM pg_db_role_setting s "
                        f"JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = '{target}' "
                        "AND s.setrole = 0").strip() == "work_mem=7MB"
    assert cluster.psql("SELECT datname FROM pg_database WHERE datname LIKE 'pgkeep\\_restore\\_%'") == ""


def test_crash_after_rename_adopted_job_fails_with_42P04_and_loses_settings(cluster, backup):
    _crash_then_adopt(cluster, backup, "restore.after_rename")


def test_crash_before_rename_adopted_job_restores_everything(cluster, backup):
    _crash_then_adopt(cluster, backup, "restore.before_rename")
