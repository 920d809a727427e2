"""The backup's COPY readers wait for the socket buffer to fill before waking again only over
TCP (engine.backup._over_tcp); over a Unix socket, whose buffer is small, they read at once.
Both paths must produce the same, complete backup."""
from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from engine.backup import _over_tcp
from tests.support.datasets import row_hashes
from tests.support.pgkeep import PgkeepProcess


def test_over_tcp_tells_tcp_from_unix_sockets(pg18):
    async def check(dsn: str) -> bool:
        conn = await asyncpg.connect(dsn)
        try:
            return _over_tcp(conn)
        finally:
            await conn.close()
    assert asyncio.run(check(pg18.dsn())) is True
    assert asyncio.run(check(pg18.socket_dsn())) is False


@pytest.fixture(scope="module")
def transport_db(pg18):
    # ~35 MB of heap: three 16 MiB chunks, thousands of socket reads each
    pg18.psql('DROP DATABASE IF EXISTS "xport" WITH (FORCE)')
    pg18.psql('CREATE DATABASE "xport"')
    pg18.psql("CREATE TABLE t (id int PRIMARY KEY, pad text); INSERT INTO t "
              "SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 120000) g", "xport")
    return "xport"


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_backup_and_restore_over_each_transport(workdir, pg18, transport_db, transport):
    upstream = pg18.dsn() if transport == "tcp" else pg18.socket_dsn()
    proc = PgkeepProcess(workdir / f"pgkeep-{transport}", upstream).start()
    try:
        with psycopg.connect(proc.dsn(), autocommit=True) as conn:
            coll = f"nodelocal://self/xport-{transport}"
            row = conn.execute(f"BACKUP DATABASE xport INTO '{coll}'").fetchone()
            assert row[1] == "succeeded" and row[3] == 120000
            conn.execute(f"RESTORE DATABASE xport FROM LATEST IN '{coll}' "
                         f"WITH new_db_name = 'xport_{transport}'")
        assert row_hashes(pg18, f"xport_{transport}") == row_hashes(pg18, transport_db)
    finally:
        proc.stop()
        pg18.psql(f'DROP DATABASE IF EXISTS "xport_{transport}" WITH (FORCE)')
