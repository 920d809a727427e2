"""Issue 12 point 7 (backup side): what a killed backup left behind is cleaned up by the job
itself when it is adopted, fails or is cancelled, and nothing else is touched."""
from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from tests.support.pgkeep import PgkeepProcess

from .jobtools import query, wait_done

DB = "leftoverdb"


@pytest.fixture(scope="module")
def source(pg18):
    pg18.psql(f"DROP DATABASE IF EXISTS {DB}")
    pg18.psql(f"CREATE DATABASE {DB}")
    pg18.psql("CREATE TABLE t(id int PRIMARY KEY, v text); "
              "INSERT INTO t SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 3000) g", DB)
    return DB


@pytest.fixture
def killed(pgkeep, pg18, workdir, source):
    """kill(point) -> (job_id, collection, its directory, adopter): a BACKUP whose pgkeep died
    at `point`, and a second pgkeep (short lease) that adopts it."""
    procs = []
    args = ["--nodelocal-root", str(pgkeep.workdir / "data" / "external"), "--job-lease", "2"]
    query(pgkeep, "SET CLUSTER SETTING pgkeep.backup.chunk_size = '64 KiB'")
    query(pgkeep, "SET CLUSTER SETTING pgkeep.backup.parallelism = 1")

    def kill(point: str):
        coll = f"nodelocal://self/leftover-{uuid.uuid4().hex[:8]}"
        a = PgkeepProcess(workdir / f"leftover-a-{uuid.uuid4().hex[:6]}", pg18.dsn(), args=args,
                          env={"PGKEEP_TESTING_CRASHPOINTS": point}).start()
        procs.append(a)
        job_id = query(a, f"BACKUP DATABASE {DB} INTO '{coll}' WITH DETACHED")[0][0]
        assert a.proc.wait(60) == 137, a.log()[-2000:]
        b = PgkeepProcess(workdir / f"leftover-b-{uuid.uuid4().hex[:6]}", pg18.dsn(), args=args)
        procs.append(b)
        return job_id, coll, pgkeep.workdir / "data" / "external" / coll.split("/")[-1], b

    yield kill
    query(pgkeep, "RESET CLUSTER SETTING pgkeep.backup.chunk_size")
    query(pgkeep, "RESET CLUSTER SETTING pgkeep.backup.parallelism")
    for p in procs:
        p.stop()


def files_under(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_subdir_holding_only_a_lock_is_removed_when_killed_job_is_cancelled(pgkeep, killed):
    job_id, coll, root, adopter = killed("backup.after_claim")
    (lock,) = files_under(root)
    assert lock.rsplit("/", 1)[-1].startswith("BACKUP-LOCK")
    query(pgkeep, f"CANCEL JOB {job_id}")
    adopter.start()
    assert wait_done(adopter, job_id)[0] == "canceled"
    assert files_under(root) == []


def test_data_file_no_manifest_names_is_removed_when_killed_job_is_adopted(pgkeep, killed):
    job_id, coll, root, adopter = killed("backup.after_chunk")
    (lock,) = [f for f in files_under(root) if "/BACKUP-LOCK" in f]
    rel = lock.rsplit("/", 1)[0]
    subdir = root / rel
    orphan = subdir / "data" / "0" / "999999-0-0.pgkd"    # a part of a chunk never checkpointed
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"PGKF partial")
    adopter.start()
    assert wait_done(adopter, job_id) == ("succeeded", None)
    named = {r[0].removeprefix(rel + "/") for r in query(adopter, f"SHOW BACKUP FILES FROM LATEST IN '{coll}'")}
    (schema,) = [f for f in files_under(subdir) if f.startswith("schema/")]
    assert set(files_under(subdir)) == named | {schema, "BACKUP-LOCK", "BACKUP_MANIFEST",
                                                "BACKUP_MANIFEST-CHECKSUM"}


def test_delete_refused_by_store_is_reported_not_fatal(pgkeep, pg18, killed):
    """The job fails for its own reason (its database is gone when it resumes); the store
    refuses to delete its data files (an immutable directory): the job still ends, its error
    detail and pgkeep's log name what was left, and everything deletable is deleted."""
    db = "leftover_gone"
    pg18.psql(f"DROP DATABASE IF EXISTS {db}")
    pg18.psql(f"CREATE DATABASE {db}")
    pg18.psql("CREATE TABLE t(v text); INSERT INTO t SELECT repeat('x', 500) FROM generate_series(1, 400)", db)
    coll = f"nodelocal://self/leftover-refused-{uuid.uuid4().hex[:8]}"
    root = pgkeep.workdir / "data" / "external" / coll.split("/")[-1]
    query(pgkeep, "SET CLUSTER SETTING jobs.debug.pausepoints = 'backup.after_chunk'")
    try:
        job_id = query(pgkeep, f"BACKUP DATABASE {db} INTO '{coll}' WITH DETACHED")[0][0]
        deadline = time.monotonic() + 60
        while query(pgkeep, f"SHOW JOB {job_id}")[0][5] != "paused" and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        query(pgkeep, "RESET CLUSTER SETTING jobs.debug.pausepoints")
    (data_dir,) = [p for p in root.rglob("data/0") if p.is_dir()]
    pg18.psql(f"DROP DATABASE {db}")
    subprocess.run(["chattr", "+i", str(data_dir)], check=True)
    try:
        query(pgkeep, f"RESUME JOB {job_id}")
        status, error = wait_done(pgkeep, job_id)
        detail = query(pgkeep, f"SELECT result->>'detail' FROM pgkeep.jobs WHERE job_id = {job_id}")[0][0]
    finally:
        subprocess.run(["chattr", "-i", str(data_dir)], check=True)
    assert status == "failed" and db in error
    assert detail and "could not delete" in detail and ".pgkd" in detail
    assert "could not delete" in pgkeep.log()
    left = {p.relative_to(data_dir.parent.parent).as_posix() for p in root.rglob("*") if p.is_file()}
    assert {x for x in left if not x.startswith("data/")} == {"BACKUP-LOCK"}   # kept: never reused
