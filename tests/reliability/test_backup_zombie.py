"""A zombie: a pgkeep that froze while writing a backup (a SIGSTOP, a long pause), lost its lease,
and woke up after another pgkeep had adopted the job and committed the backup. It went on
writing the chunk it held, under the same file names the adopter had committed, and replaced
them with bytes of its older snapshot: the committed backup no longer matched its checksums.
Every run of a job now writes names with a token of its own (docs/FORMAT.md section 4.4).

Fault point: `backup.after_chunk`, where the first pgkeep freezes (PGKEEP_TESTING_STALLPOINTS)
between two chunks: when it wakes it copies the next chunk before its heartbeat tells it the job
is no longer its own (a job stops at chunk boundaries)."""
from __future__ import annotations

import time
import uuid

import pytest

from tests.support.datasets import row_hashes
from tests.support.pgkeep import PgkeepProcess

from .jobtools import query, wait_done

DB = "zombiedb"
STALL = 15   # seconds the first pgkeep is frozen: its 2 s lease expires long before


@pytest.fixture
def source(pg18):
    """About 20 MiB of incompressible bytes in one table."""
    pg18.psql(f"DROP DATABASE IF EXISTS {DB}")
    pg18.psql(f"CREATE DATABASE {DB}")
    pg18.psql("CREATE TABLE t(id int PRIMARY KEY, b bytea); ALTER TABLE t ALTER b SET STORAGE EXTERNAL; "
              "INSERT INTO t SELECT g, (SELECT decode(string_agg(replace(gen_random_uuid()::text, '-', ''), ''), "
              "'hex') FROM generate_series(1, 64) WHERE g > 0) FROM generate_series(1, 20000) g", DB)
    yield DB
    pg18.psql(f"DROP DATABASE IF EXISTS {DB}")


def test_zombie_replaces_files_of_the_backup_its_adopter_committed(pgkeep, pg18, workdir, source):
    coll = f"nodelocal://self/zombie-{uuid.uuid4().hex[:8]}"
    root = pgkeep.workdir / "data" / "external" / coll.rsplit("/", 1)[1]
    args = ["--nodelocal-root", str(pgkeep.workdir / "data" / "external"), "--job-lease", "2"]
    for setting, value in (("pgkeep.backup.chunk_size", "'2 MiB'"),       # about ten chunks
                           ("pgkeep.backup.parallelism", "1"), ("bulkio.backup.file_size", "'4 MiB'")):
        query(pgkeep, f"SET CLUSTER SETTING {setting} = {value}")
    zombie = PgkeepProcess(workdir / f"zombie-a-{uuid.uuid4().hex[:6]}", pg18.dsn(), args=args,
                           env={"PGKEEP_TESTING_STALLPOINTS": f"backup.after_chunk={STALL}"}).start()
    adopter = PgkeepProcess(workdir / f"zombie-b-{uuid.uuid4().hex[:6]}", pg18.dsn(), args=args).start()
    try:
        job_id = query(zombie, f"BACKUP DATABASE {DB} INTO '{coll}' WITH DETACHED")[0][0]
        deadline = time.monotonic() + 60
        while "stallpoint backup.after_chunk reached" not in zombie.log():
            assert time.monotonic() < deadline, zombie.log()[-2000:]
            time.sleep(0.1)
        frozen_at = time.monotonic()
        # every row changes, so the adopter's bytes differ from the zombie's older snapshot
        pg18.psql("UPDATE t SET b = b || '\\x00'::bytea", DB)
        assert wait_done(adopter, job_id, timeout=STALL + 60) == ("succeeded", None)
        assert time.monotonic() - frozen_at < STALL, "the adopter committed while the zombie slept"
        # the zombie wakes up, finds its lease gone at its next heartbeat, and stops
        deadline = time.monotonic() + STALL + 60
        while "lost the lease of job" not in zombie.log():
            assert time.monotonic() < deadline, zombie.log()[-3000:]
            time.sleep(0.2)
        _wait_quiet(root)
    finally:
        for setting in ("pgkeep.backup.chunk_size", "pgkeep.backup.parallelism", "bulkio.backup.file_size"):
            query(pgkeep, f"RESET CLUSTER SETTING {setting}")
        zombie.stop()
        adopter.stop()
    # the committed backup is whole and is the adopter's snapshot
    checked = query(pgkeep, f"SHOW BACKUP FROM LATEST IN '{coll}' WITH check_files")
    assert checked
    target = f"zombie_r_{uuid.uuid4().hex[:6]}"
    query(pgkeep, f"RESTORE DATABASE {DB} FROM LATEST IN '{coll}' WITH new_db_name = '{target}'")
    try:
        assert row_hashes(pg18, target) == row_hashes(pg18, DB)
    finally:
        pg18.psql(f"DROP DATABASE IF EXISTS {target}")


def _wait_quiet(root, quiet: float = 2.0, timeout: float = 60) -> None:
    """Until no file under root changed for `quiet` seconds (the zombie stopped writing)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        state = sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns)
                       for p in root.rglob("*") if p.is_file())
        if state == last:
            return
        last = state
        time.sleep(quiet)
    raise AssertionError("the zombie kept writing")
