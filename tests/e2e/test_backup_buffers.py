"""What a backup does to shared_buffers (docs/SQL.md, pgkeep.backup.chunk_size): chunked TID range
scans read a large table through shared buffers; with chunk_size above the table's size the table
is one COPY table TO, whose sequential scan PostgreSQL confines to a small ring buffer."""
from __future__ import annotations

import uuid

import psycopg
import pytest

DB = "bufring"


@pytest.fixture(scope="module")
def big_table(pg18):
    # shared_buffers is 128 MB in the test cluster: a ~58 MB table is over the quarter of it
    # beyond which a sequential scan gets a ring buffer.
    assert pg18.psql("SHOW shared_buffers").strip() == "128MB"
    pg18.psql(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    pg18.psql(f'CREATE DATABASE "{DB}"')
    pg18.psql("CREATE EXTENSION pg_buffercache; CREATE TABLE t (id int, pad text); INSERT INTO t "
              "SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 200000) g", DB)
    pg18.psql("VACUUM t", DB)
    yield int(pg18.psql("SELECT pg_relation_size('t') / 8192", DB))
    pg18.psql(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


def _cached_pages(pg18) -> int:
    """Pages of t (all forks) in shared buffers."""
    return int(pg18.psql("SELECT count(*) FROM pg_buffercache WHERE relfilenode = pg_relation_filenode('t') "
                         "AND reldatabase = (SELECT oid FROM pg_database WHERE datname = current_database())",
                         DB))


def _cached_pages_after_backup(pgkeep, pg18, chunk_size: str | None) -> int:
    pg18.psql("SELECT pg_buffercache_evict_relation('t')", DB)
    assert _cached_pages(pg18) == 0
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        if chunk_size:
            conn.execute(f"SET CLUSTER SETTING pgkeep.backup.chunk_size = '{chunk_size}'")
        try:
            row = conn.execute(f"BACKUP DATABASE {DB} INTO 'nodelocal://self/bufring-{uuid.uuid4().hex[:8]}'"
                               ).fetchone()
        finally:
            conn.execute("RESET CLUSTER SETTING pgkeep.backup.chunk_size")
    assert row[1] == "succeeded" and row[3] == 200000
    return _cached_pages(pg18)


def test_chunked_backup_reads_through_shared_buffers(pgkeep, pg18, big_table):
    assert _cached_pages_after_backup(pgkeep, pg18, None) > big_table // 2   # measured: all of them


def test_one_chunk_per_table_keeps_to_the_ring_buffer(pgkeep, pg18, big_table):
    # measured: 59 of 7,408 pages (the 256 kB ring, and the visibility map and free space map)
    assert _cached_pages_after_backup(pgkeep, pg18, "1TiB") < big_table // 20
