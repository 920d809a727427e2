"""Issue 12 point 2: a resumed backup equals the snapshot it resumed under.

A job pauses at the pausepoint `backup.after_chunk` (or its process dies there, as by kill -9),
the database changes the way rows move or vanish without new xmins (VACUUM FULL, CLUSTER), or
with a new relation identity (TRUNCATE, a rewriting ALTER, DETACH, DROP and CREATE), then the
job resumes; the restore must hold exactly the source's rows at that moment. Also: a TRUNCATE
committed after a run's snapshot must not make that run read an empty table.
"""
from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

from tests.support.datasets import row_hashes
from tests.support.pgkeep import PgkeepProcess

from .jobtools import cluster_settings, crashing_pgkeep

ROWS = 3000


def run(proc, sql, params=None):
    with psycopg.connect(proc.dsn(), autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else None


def job_status(proc, job_id) -> tuple[str, str]:
    row = run(proc, f"SHOW JOB {job_id}")[0]
    return row[5], row[12]


def wait_status(proc, job_id, statuses, timeout=120) -> str:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status, error = job_status(proc, job_id)
        if status in statuses:
            return status
        if status in ("failed", "canceled", "succeeded", "paused"):
            raise AssertionError(f"job {job_id} {status}: {error}\n{proc.log()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} stayed {status}")


def on_source(pg18, db: str, sql: str) -> None:
    """Each ';'-separated statement in its own transaction (VACUUM FULL refuses a block)."""
    with psycopg.connect(pg18.dsn(db), autocommit=True) as conn:
        for stmt in filter(str.strip, sql.split(";")):
            conn.execute(stmt)


def collection(name: str) -> str:
    return f"nodelocal://self/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def small_chunks(pgkeep):
    """8-page chunks, one reader: a table has several chunks, taken in a known order."""
    with cluster_settings(pgkeep, {"pgkeep.backup.chunk_size": "'64 KiB'", "pgkeep.backup.parallelism": "1"}):
        yield


def make_db(pg18, name: str, extra: str = "", t_rows: int = ROWS) -> str:
    """`t`: the largest table (its chunk 0 is the first one finished), ids 1..t_rows in order;
    `small`: one page."""
    pg18.psql(f"DROP DATABASE IF EXISTS {name}")
    pg18.psql(f"CREATE DATABASE {name}")
    pg18.psql(f"CREATE TABLE t(id int PRIMARY KEY, n bigint NOT NULL, pad text) WITH (fillfactor = 90);"
              f"INSERT INTO t SELECT g, g, repeat(md5(g::text), 3) FROM generate_series(1, {t_rows}) g;"
              f"CREATE TABLE small(k int); INSERT INTO small VALUES (1), (2), (3);" + extra, name)
    return name


def paused_backup(pgkeep, db: str, coll: str) -> int:
    """A backup of `db` paused right after its first chunk was written and checkpointed."""
    run(pgkeep, "SET CLUSTER SETTING jobs.debug.pausepoints = 'backup.after_chunk'")
    job_id = run(pgkeep, f"BACKUP DATABASE {db} INTO '{coll}' WITH DETACHED")[0][0]
    wait_status(pgkeep, job_id, ("paused",))
    run(pgkeep, "RESET CLUSTER SETTING jobs.debug.pausepoints")
    return job_id


def resume_and_compare(pgkeep, pg18, db: str, coll: str, job_id: int) -> None:
    expected = row_hashes(pg18, db)       # nothing writes after this: the resumed snapshot's rows
    run(pgkeep, f"RESUME JOB {job_id}")
    wait_status(pgkeep, job_id, ("succeeded",))
    restored = f"{db}_r"
    pg18.psql(f"DROP DATABASE IF EXISTS {restored}")
    run(pgkeep, f"RESTORE DATABASE {db} FROM LATEST IN '{coll}' WITH new_db_name = '{restored}'")
    assert row_hashes(pg18, restored) == expected


# Each: SQL run while the job is paused. Rows move (VACUUM FULL, CLUSTER keep their xmin) or the
# relation is replaced (TRUNCATE, a rewrite, DETACH, DROP + CREATE) with the same row count.
CHANGES = {
    "vacuum_full": "DELETE FROM t WHERE id <= 100; VACUUM FULL t",
    "cluster": "DELETE FROM t WHERE id <= 100; CLUSTER t USING t_pkey",
    "truncate_reinsert": f"TRUNCATE t; INSERT INTO t SELECT g, -g, repeat(md5(g::text), 3) "
                         f"FROM generate_series(1, {ROWS}) g",
    "alter_type_rewrite": "ALTER TABLE t ALTER COLUMN n TYPE numeric USING n * 2",
    "drop_create_same_name": f"DROP TABLE t; CREATE TABLE t(id int PRIMARY KEY, n bigint NOT NULL, pad text); "
                             f"INSERT INTO t SELECT g, g + 7, repeat(md5(g::text), 3) FROM generate_series(1, {ROWS}) g",
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_resumed_backup_restores_rows_moved_or_replaced_during_pause(pgkeep, pg18, small_chunks, change):
    db = make_db(pg18, f"rs_{change}")
    coll = collection(f"resume-{change}")
    job_id = paused_backup(pgkeep, db, coll)
    on_source(pg18, db, CHANGES[change])
    resume_and_compare(pgkeep, pg18, db, coll, job_id)


def test_resumed_backup_restores_partition_detached_during_pause(pgkeep, pg18, small_chunks):
    db = make_db(pg18, "rs_detach", extra=(
        "CREATE TABLE p(id int, v text) PARTITION BY RANGE (id);"
        "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100000);"
        "CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100000) TO (200000);"
        f"INSERT INTO p1 SELECT g, repeat('x', 400) FROM generate_series(1, {ROWS}) g;"
        "INSERT INTO p2 VALUES (100001, 'y');"), t_rows=10)   # p1's chunk 0 is read first
    coll = collection("resume-detach")
    job_id = paused_backup(pgkeep, db, coll)
    on_source(pg18, db, "ALTER TABLE p DETACH PARTITION p1; DELETE FROM p1 WHERE id <= 100; VACUUM FULL p1")
    resume_and_compare(pgkeep, pg18, db, coll, job_id)


def test_resumed_backup_keeps_row_of_subtransaction_open_at_first_snapshot(pgkeep, pg18, small_chunks):
    """A row version written by a subtransaction of a transaction still open when the first run
    took its snapshot, committed during the pause: its xmin (a subxid) is not in the snapshot's
    xip list, so 'xmin visible in the old snapshot' wrongly said the row was seen then."""
    db = make_db(pg18, "rs_subxact")
    coll = collection("resume-subxact")
    with psycopg.connect(pg18.dsn(db)) as open_tx:
        open_tx.execute("SAVEPOINT s")
        open_tx.execute("UPDATE t SET n = -5 WHERE id = 5")    # HOT: stays on page 0 (fillfactor)
        job_id = paused_backup(pgkeep, db, coll)
        open_tx.commit()
    resume_and_compare(pgkeep, pg18, db, coll, job_id)


def test_adopted_backup_after_kill9_restores_rows_moved_by_vacuum_full(pgkeep, pg18, workdir, small_chunks):
    db = make_db(pg18, "rs_kill9")
    coll = collection("resume-kill9")
    a = crashing_pgkeep(pgkeep, workdir, "resume-kill-a", "backup.after_chunk")
    b = None
    try:
        job_id = run(a, f"BACKUP DATABASE {db} INTO '{coll}' WITH DETACHED")[0][0]
        assert a.proc.wait(60) == 137, a.log()[-2000:]
        on_source(pg18, db, "DELETE FROM t WHERE id <= 100; VACUUM FULL t")
        expected = row_hashes(pg18, db)
        b = PgkeepProcess(workdir / "resume-kill-b", pg18.dsn(), args=a.args).start()   # adopts
        wait_status(b, job_id, ("succeeded",))
        pg18.psql(f"DROP DATABASE IF EXISTS {db}_r")
        run(b, f"RESTORE DATABASE {db} FROM LATEST IN '{coll}' WITH new_db_name = '{db}_r'")
        assert row_hashes(pg18, f"{db}_r") == expected
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_truncate_committed_after_snapshot_is_not_backed_up_as_empty_table(pgkeep, pg18, small_chunks):
    """TRUNCATE is not MVCC-safe: committed after the backup's snapshot, it made a later COPY
    under that snapshot read an empty table. The backup's ACCESS SHARE locks make it wait."""
    db = make_db(pg18, "rs_trunc_live", extra=(
        "CREATE TABLE late(id int); INSERT INTO late SELECT generate_series(1, 50);"))
    coll = collection("resume-trunc-live")
    expected = row_hashes(pg18, db)
    run(pgkeep, "SET CLUSTER SETTING pgkeep.backup.chunk_size = '8 KiB'")   # one page a chunk
    job_id = run(pgkeep, f"BACKUP DATABASE {db} INTO '{coll}' WITH DETACHED")[0][0]
    deadline = time.monotonic() + 60
    while run(pgkeep, f"SHOW JOB {job_id}")[0][11] <= 0 and time.monotonic() < deadline:
        time.sleep(0.02)   # the first chunks are read: the snapshot exists, `late` is not read yet
    done = threading.Event()

    def truncate():
        with psycopg.connect(pg18.dsn(db), autocommit=True) as conn:
            conn.execute("TRUNCATE late")
        done.set()

    th = threading.Thread(target=truncate, daemon=True)
    th.start()
    assert wait_status(pgkeep, job_id, ("succeeded",)) == "succeeded"
    th.join(60)
    assert done.is_set()
    pg18.psql(f"DROP DATABASE IF EXISTS {db}_r")
    run(pgkeep, f"RESTORE DATABASE {db} FROM LATEST IN '{coll}' WITH new_db_name = '{db}_r'")
    assert row_hashes(pg18, f"{db}_r") == expected
