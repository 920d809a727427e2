"""Issue 12 points 3 and 15 (backup side): the commit of a backup and how a collection is read.

A pgkeep dies (as by kill -9, env PGKEEP_TESTING_CRASHPOINTS) between the manifest and the
job's end; another pgkeep adopts the job, which must finish its own commit. SHOW BACKUPS lists
only backups whose manifest and checksum agree, ordered by their recorded end times; a damaged
LATEST marker falls back to the next valid one, or fails with XX001 naming it.
"""
from __future__ import annotations

import shutil
import uuid

import psycopg
import pytest

from tests.support.datasets import row_hashes
from tests.support.pgkeep import PgkeepProcess

from .jobtools import query, wait_done

DB = "commitdb"


@pytest.fixture(scope="module")
def source(pg18):
    pg18.psql(f"DROP DATABASE IF EXISTS {DB}")
    pg18.psql(f"CREATE DATABASE {DB}")
    pg18.psql("CREATE TABLE t(id int PRIMARY KEY, v text); "
              "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g", DB)
    return DB


def root_of(pgkeep, coll: str):
    return pgkeep.workdir / "data" / "external" / coll.split("/")[-1]


def restore_latest_matches(proc, pg18, coll: str, target: str) -> None:
    pg18.psql(f"DROP DATABASE IF EXISTS {target}")
    query(proc, f"RESTORE DATABASE {DB} FROM LATEST IN '{coll}' WITH new_db_name = '{target}'")
    assert row_hashes(pg18, target) == row_hashes(pg18, DB)
    pg18.psql(f"DROP DATABASE {target}")


@pytest.mark.parametrize("point", ["backup.after_manifest", "backup.after_checksum",
                                   "backup.after_latest"])
def test_adopted_job_finishes_its_own_commit_after_crash(pgkeep, pg18, workdir, source, point):
    coll = f"nodelocal://self/commit-{uuid.uuid4().hex[:8]}"
    args = ["--nodelocal-root", str(pgkeep.workdir / "data" / "external")]
    a = PgkeepProcess(workdir / f"commit-a-{point}", pg18.dsn(), args=args + ["--job-lease", "5"],
                      env={"PGKEEP_TESTING_CRASHPOINTS": point}).start()
    b = None
    try:
        job_id = query(a, f"BACKUP DATABASE {DB} INTO '{coll}' WITH DETACHED")[0][0]
        assert a.proc.wait(60) == 137, a.log()[-2000:]
        listed = query(pgkeep, f"SHOW BACKUPS IN '{coll}'")     # within a's lease: not adopted yet
        assert len(listed) == (0 if point == "backup.after_manifest" else 1), listed
        b = PgkeepProcess(workdir / f"commit-b-{point}", pg18.dsn(),
                          args=args + ["--job-lease", "2"]).start()
        assert wait_done(b, job_id) == ("succeeded", None)
        (sub,), = query(b, f"SHOW BACKUPS IN '{coll}'")
        assert query(b, f"SELECT result->>'subdir' FROM pgkeep.jobs WHERE job_id = {job_id}") == [(sub,)]
        restore_latest_matches(b, pg18, coll, f"commit_r_{point.split('_')[-1]}")
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_show_backups_hides_a_subdir_whose_checksum_is_missing(pgkeep, pg18, source):
    coll = f"nodelocal://self/nochecksum-{uuid.uuid4().hex[:8]}"
    query(pgkeep, f"BACKUP DATABASE {DB} INTO '{coll}'")
    query(pgkeep, f"BACKUP DATABASE {DB} INTO '{coll}'")
    first, second = [p for (p,) in query(pgkeep, f"SHOW BACKUPS IN '{coll}'")]
    (root_of(pgkeep, coll) / second.strip("/") / "BACKUP_MANIFEST-CHECKSUM").unlink()
    assert query(pgkeep, f"SHOW BACKUPS IN '{coll}'") == [(first,)]
    restore_latest_matches(pgkeep, pg18, coll, "commit_r_nochecksum")   # falls back to `first`


def test_show_backups_orders_by_recorded_end_time_not_subdir_name(pgkeep, source):
    coll = f"nodelocal://self/order-{uuid.uuid4().hex[:8]}"
    query(pgkeep, f"BACKUP DATABASE {DB} INTO '{coll}'")
    query(pgkeep, f"BACKUP DATABASE {DB} INTO '{coll}'")
    older, newer = [p for (p,) in query(pgkeep, f"SHOW BACKUPS IN '{coll}'")]
    root = root_of(pgkeep, coll)
    # the newer backup, as a pgkeep with a clock years behind would have named it
    renamed = "/2001/01/01-000000.00"
    shutil.copytree(root / newer.strip("/"), root / renamed.strip("/"))
    shutil.rmtree(root / newer.strip("/"))
    assert query(pgkeep, f"SHOW BACKUPS IN '{coll}'") == [(older,), (renamed,)]


@pytest.mark.parametrize("damage", ["garbage", "missing_subdir"])
def test_damaged_latest_marker_falls_back_or_fails_naming_it(pgkeep, pg18, source, damage):
    coll = f"nodelocal://self/latest-{uuid.uuid4().hex[:8]}"
    query(pgkeep, f"BACKUP DATABASE {DB} INTO '{coll}'")
    markers = root_of(pgkeep, coll) / "metadata" / "latest"
    (good,) = list(markers.iterdir())
    newest = markers / "LATEST-0000000000000000001"       # sorts first: the newest marker
    newest.write_bytes(b"\xff\xfe\x00garbage" if damage == "garbage" else b"/2001/02/03-040506.00")
    restore_latest_matches(pgkeep, pg18, coll, f"latest_r_{damage}")   # the next valid marker
    good.unlink()
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DataCorrupted) as err:
            conn.execute(f"RESTORE DATABASE {DB} FROM LATEST IN '{coll}' WITH new_db_name = 'latest_never'")
        assert newest.name in str(err.value)
        with pytest.raises(psycopg.errors.DataCorrupted):
            conn.execute(f"SHOW BACKUP FROM LATEST IN '{coll}'")
        assert conn.execute("SELECT 1").fetchone() == (1,)
