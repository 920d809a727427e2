"""Issue 12 point 7 (store debris): a backup killed while a data file was half written leaves the
store's own temporary object behind, which no listing shows: nodelocal's `.<name>.<uuid>.tmp`
file, an S3 multipart upload never completed (billed until aborted). The job removes it itself
when it is adopted, and when it is cancelled (docs/FORMAT.md section 4.3).

Fault point: `backup.mid_file` (engine/pausepoints.py), reached with a data file half written
and not committed; the first pgkeep dies there (PGKEEP_TESTING_CRASHPOINTS), a second one with a
short lease adopts the job."""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.objstores import seaweedfs
from tests.support.pgkeep import PgkeepProcess

from .jobtools import query, wait_done

DB = "sweepdb"
MIB = 1 << 20


@pytest.fixture(scope="module")
def source(pg18):
    """About 20 MiB of incompressible bytes in one table (random UUIDs' bytes)."""
    pg18.psql(f"DROP DATABASE IF EXISTS {DB}")
    pg18.psql(f"CREATE DATABASE {DB}")
    pg18.psql("CREATE TABLE t(id int PRIMARY KEY, b bytea); ALTER TABLE t ALTER b SET STORAGE EXTERNAL; "
              "INSERT INTO t SELECT g, (SELECT decode(string_agg(replace(gen_random_uuid()::text, '-', ''), ''), "
              "'hex') FROM generate_series(1, 64) WHERE g > 0) FROM generate_series(1, 20000) g", DB)
    return DB


@pytest.fixture
def killed(pgkeep, pg18, workdir, source):
    """kill(coll, file_size) -> (job_id, adopter): a BACKUP into `coll` whose pgkeep died with a
    data file half written, and a second pgkeep (short lease, not started) to adopt it (the
    shared pgkeep, at the same place, may adopt it first: either ends the job)."""
    procs: list[PgkeepProcess] = []
    args = ["--nodelocal-root", str(pgkeep.workdir / "data" / "external"), "--job-lease", "2"]
    query(pgkeep, "SET CLUSTER SETTING pgkeep.backup.chunk_size = '256 MiB'")   # one chunk
    query(pgkeep, "SET CLUSTER SETTING pgkeep.backup.parallelism = 1")

    def kill(coll: str, file_size: str):
        query(pgkeep, f"SET CLUSTER SETTING bulkio.backup.file_size = '{file_size}'")
        a = PgkeepProcess(workdir / f"sweep-a-{uuid.uuid4().hex[:6]}", pg18.dsn(), args=args,
                          env={"PGKEEP_TESTING_CRASHPOINTS": "backup.mid_file"}).start()
        procs.append(a)
        job_id = query(a, f"BACKUP DATABASE {DB} INTO '{coll}' WITH DETACHED")[0][0]
        assert a.proc.wait(90) == 137, a.log()[-2000:]
        b = PgkeepProcess(workdir / f"sweep-b-{uuid.uuid4().hex[:6]}", pg18.dsn(), args=args)
        procs.append(b)
        return job_id, b

    yield kill
    for setting in ("pgkeep.backup.chunk_size", "pgkeep.backup.parallelism", "bulkio.backup.file_size"):
        query(pgkeep, f"RESET CLUSTER SETTING {setting}")
    for p in procs:
        p.stop()


def temporaries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp"))


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_temporary_file_of_killed_writer_is_removed_when_job_is_adopted(pgkeep, killed):
    coll = f"nodelocal://self/sweep-{uuid.uuid4().hex[:8]}"
    root = pgkeep.workdir / "data" / "external" / coll.split("/")[-1]
    job_id, adopter = killed(coll, "2 MiB")
    (tmp,) = temporaries(root)                         # the half-written data file
    assert "/data/0/" in tmp
    adopter.start()
    assert wait_done(adopter, job_id) == ("succeeded", None)
    assert temporaries(root) == []
    assert len(query(adopter, f"SHOW BACKUPS IN '{coll}'")) == 1
    assert not any(f.endswith(".tmp") for f in files_under(root))


def test_temporary_file_of_killed_writer_is_removed_when_job_is_cancelled(pgkeep, killed):
    coll = f"nodelocal://self/sweep-{uuid.uuid4().hex[:8]}"
    root = pgkeep.workdir / "data" / "external" / coll.split("/")[-1]
    job_id, adopter = killed(coll, "2 MiB")
    assert len(temporaries(root)) == 1
    query(pgkeep, f"CANCEL JOB {job_id}")
    adopter.start()
    assert wait_done(adopter, job_id)[0] == "canceled"
    assert files_under(root) == []                     # lock, data files and the temporary one


def test_removal_the_store_refuses_is_reported_not_fatal(pgkeep, killed):
    """The temporary file's directory is immutable (as an object-locked bucket refuses deletes):
    the cancelled job still ends, pgkeep's log names what it could not discard, and the lock
    stays so that no other job ever claims the subdir."""
    coll = f"nodelocal://self/sweep-{uuid.uuid4().hex[:8]}"
    root = pgkeep.workdir / "data" / "external" / coll.split("/")[-1]
    job_id, adopter = killed(coll, "2 MiB")
    (tmp,) = temporaries(root)
    data_dir = (root / tmp).parent
    query(pgkeep, f"CANCEL JOB {job_id}")
    subprocess.run(["chattr", "+i", str(data_dir)], check=True)
    try:
        adopter.start()
        status, _ = wait_done(adopter, job_id)
        left = temporaries(root)
        files = files_under(root)
    finally:
        subprocess.run(["chattr", "-i", str(data_dir)], check=True)
    assert status == "canceled"
    assert left == [tmp]
    # whichever pgkeep adopted the job (the shared one sees the same --nodelocal-root)
    assert "could not discard unfinished writes" in adopter.log() + pgkeep.log()
    assert any(f.endswith("/BACKUP-LOCK") for f in files)


def test_unfinished_multipart_upload_of_killed_writer_is_aborted_when_job_is_adopted(killed):
    """A data file of 24 MiB target: at half of it the S3 writer has started its multipart
    upload (parts of 8 MiB, engine/storage/s3.py); the process dies there."""
    server = seaweedfs()
    coll = server.collection_uri("sweep/coll")
    bucket = coll.split("/")[2]
    job_id, adopter = killed(coll, "24 MiB")
    assert [k for k in server.uploads(bucket) if k.startswith("sweep/coll/")], \
        "the killed writer should have left its multipart upload open"
    adopter.start()
    assert wait_done(adopter, job_id) == ("succeeded", None)
    assert len(query(adopter, f"SHOW BACKUPS IN '{coll}'")) == 1
    assert server.uploads(bucket) == []
