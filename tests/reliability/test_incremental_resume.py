"""An incremental layer stopped half-way (docs/FORMAT.md 7.3, last paragraph; issue 14 points 5 and
7): paused at `backup.after_chunk`, or its pgkeep killed there (as by kill -9), while the source
changes in a chunk the stopped run copied and in one it had found unchanged in the parent. Until it
ends, the layer does not exist (SHOW BACKUP and RESTORE FROM LATEST see the parent); resumed or
adopted, it is the new snapshot's: its restore equals the source then; and the next incremental
extends it.

Chunks are 8 pages and read by one connection, largest first, so `t`'s chunk 0 (kept from the
parent) is tested before chunk 1 (changed: copied, checkpointed, then the job stops)."""
from __future__ import annotations

import uuid

import pytest

from tests.support.layers import copied_chunks, read_state, tip_manifest
from tests.support.pgkeep import PgkeepProcess

from .jobtools import cluster_settings, crashing_pgkeep, query, wait_done, wait_job

ROWS = 3000


@pytest.fixture
def one_reader(pgkeep):
    with cluster_settings(pgkeep, {"pgkeep.backup.chunk_size": "'64 KiB'", "pgkeep.backup.parallelism": "1"}):
        yield


def chain_with_a_change(pgkeep, pg18, db: str) -> tuple[str, dict]:
    """A full of `db`, then one row of `t`'s chunk 1 updated: the collection, the full's manifest."""
    pg18.psql(f"DROP DATABASE IF EXISTS {db}")
    pg18.psql(f"CREATE DATABASE {db}")
    pg18.psql(f"CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL, pad text) WITH (fillfactor = 90);"
              f"INSERT INTO t SELECT g, 0, repeat(md5(g::text), 2) FROM generate_series(1, {ROWS}) g;"
              f"CREATE TABLE small (k int); INSERT INTO small VALUES (1), (2)", db)
    coll = f"nodelocal://self/inc-stop-{uuid.uuid4().hex[:8]}"
    query(pgkeep, f"BACKUP DATABASE {db} INTO '{coll}'")
    pg18.psql("UPDATE t SET n = 1 WHERE id = 700", db)       # page 8 or so: chunk 1
    return coll, tip_manifest(pgkeep, coll)


def change_while_stopped(pg18, db: str) -> None:
    """A HOT update in chunk 0 (the parent's files stood for it) and in chunk 1 (copied already)."""
    pg18.psql("UPDATE t SET n = 2 WHERE id = 5; UPDATE t SET n = 2 WHERE id = 701", db)


def restored(pgkeep, pg18, db: str, coll: str, target: str):
    pg18.psql(f"DROP DATABASE IF EXISTS {target}")
    query(pgkeep, f"RESTORE DATABASE {db} FROM LATEST IN '{coll}' WITH new_db_name = '{target}'")
    state = read_state(pg18, target, schema=False)
    pg18.psql(f"DROP DATABASE {target}")
    return state


def layers(pgkeep, coll: str) -> list[str]:
    return [r[0] for r in query(pgkeep, f"SELECT DISTINCT backup_type, end_time FROM "
                                        f"[SHOW BACKUP FROM LATEST IN '{coll}'] ORDER BY end_time")]


def assert_chain_goes_on(pgkeep, pg18, db: str, coll: str) -> None:
    """The stopped layer is the tip now, and the next incremental extends it."""
    assert layers(pgkeep, coll) == ["full", "incremental"]
    pg18.psql("DELETE FROM t WHERE id = 2000", db)
    query(pgkeep, f"BACKUP DATABASE {db} INTO LATEST IN '{coll}'")
    assert layers(pgkeep, coll) == ["full", "incremental", "incremental"]
    assert restored(pgkeep, pg18, db, coll, f"{db}_next").diff(read_state(pg18, db, schema=False)) == []


def test_paused_incremental_resumes_under_a_new_snapshot(pgkeep, pg18, one_reader):
    db = "inc_pause"
    coll, full = chain_with_a_change(pgkeep, pg18, db)
    query(pgkeep, "SET CLUSTER SETTING jobs.debug.pausepoints = 'backup.after_chunk'")
    job_id = query(pgkeep, f"BACKUP DATABASE {db} INTO LATEST IN '{coll}' WITH DETACHED")[0][0]
    assert wait_job(pgkeep, job_id)["status"] == "paused"
    query(pgkeep, "RESET CLUSTER SETTING jobs.debug.pausepoints")
    assert layers(pgkeep, coll) == ["full"], "a paused layer does not exist"
    change_while_stopped(pg18, db)
    expected = read_state(pg18, db, schema=False)
    query(pgkeep, f"RESUME JOB {job_id}")
    assert wait_done(pgkeep, job_id) == ("succeeded", None)
    assert copied_chunks(full, tip_manifest(pgkeep, coll), db, "public.t") == [(0, 8), (8, 16)]
    assert restored(pgkeep, pg18, db, coll, f"{db}_resumed").diff(expected) == []
    assert layers(pgkeep, coll) == ["full", "incremental"]


def test_killed_incremental_is_invisible_then_adopted(pgkeep, pg18, workdir, one_reader):
    db = "inc_kill"
    coll, full = chain_with_a_change(pgkeep, pg18, db)
    at_full = restored(pgkeep, pg18, db, coll, f"{db}_full")
    # A long lease: no pgkeep (the session's included) may adopt the job before the checks and
    # the change below are done; with 2 s, the session's pgkeep adopted it first on a loaded machine.
    a = crashing_pgkeep(pgkeep, workdir, "inc-kill-a", "backup.after_chunk", lease="30")
    b = None
    try:
        job_id = query(a, f"BACKUP DATABASE {db} INTO LATEST IN '{coll}' WITH DETACHED")[0][0]
        assert a.proc.wait(60) == 137, a.log()[-2000:]
        assert layers(pgkeep, coll) == ["full"], "a killed layer does not exist"
        assert restored(pgkeep, pg18, db, coll, f"{db}_dead") == at_full
        change_while_stopped(pg18, db)
        expected = read_state(pg18, db, schema=False)
        b = PgkeepProcess(workdir / "inc-kill-b", pg18.dsn(), args=a.args).start()   # adopts
        assert wait_done(b, job_id) == ("succeeded", None)
        assert copied_chunks(full, tip_manifest(pgkeep, coll), db, "public.t") == [(0, 8), (8, 16)]
        assert restored(pgkeep, pg18, db, coll, f"{db}_adopted").diff(expected) == []
        assert_chain_goes_on(pgkeep, pg18, db, coll)
    finally:
        a.stop()
        if b is not None:
            b.stop()
