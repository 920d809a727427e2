"""SELECT ... FROM [SHOW ...]: rewritten into a query the upstream runs for the client."""
from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from tests.e2e.test_passthrough import psql


def test_psql_where_order_join(pgkeep):
    out = psql(pgkeep.dsn(), "-qAt", "-c",
               "SELECT variable, value FROM [SHOW CLUSTER SETTINGS] WHERE setting_type = 'z' ORDER BY 1",
               "-c", "SELECT count(*) FROM [SHOW CLUSTER SETTINGS] AS s JOIN pg_class c "
                     "ON c.relname = 'pg_class' WHERE s.origin IN ('default', 'override')").stdout
    from catalog import SETTINGS
    byte_sizes = sorted(name for name, s in SETTINGS.items() if s.type_code == "z")
    lines = out.split("\n")
    assert [line.split("|")[0] for line in lines[:len(byte_sizes)]] == byte_sizes
    assert lines[len(byte_sizes)] == str(len(SETTINGS))


def test_extended_protocol_with_parameters(pgkeep):
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        rows = conn.execute("SELECT value FROM [SHOW CLUSTER SETTINGS] WHERE variable = %s",
                            ("bulkio.backup.file_size",)).fetchall()
        assert rows == [("128 MiB",)]
        assert conn.execute("SELECT count(*) FROM [SHOW CLUSTER SETTINGS] WHERE false").fetchone() == (0,)

    async def main():
        conn = await asyncpg.connect(pgkeep.dsn())
        try:
            rows = await conn.fetch("SELECT variable FROM [SHOW CLUSTER SETTINGS] WHERE variable LIKE $1",
                                    "bulkio%")
            assert [r[0] for r in rows] == ["bulkio.backup.file_size"]
        finally:
            await conn.close()
    asyncio.run(main())


def test_errors_in_the_outer_query_come_from_upstream(pgkeep):
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute("SELECT no_such_column FROM [SHOW CLUSTER SETTINGS]")
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute("SELECT no_such_column FROM [SHOW SCHEDULES]")
        assert conn.execute("SELECT 1").fetchone() == (1,)
