"""Ordinary SQL through pgkeep behaves exactly as against PostgreSQL, with every client."""
from __future__ import annotations

import asyncio
import subprocess
import threading

import asyncpg
import pg8000.dbapi
import psycopg
import pytest

from proxy.pgcluster import embedded_bin_dir

PSQL = str(embedded_bin_dir() / "psql")


def psql(dsn: str, *args: str, input: str | None = None, check: bool = True):
    return subprocess.run([PSQL, "-X", "-v", "ON_ERROR_STOP=1", dsn, *args], input=input,
                          capture_output=True, text=True, timeout=60, check=check)


def test_psql_simple_and_multi_statement(pgkeep):
    out = psql(pgkeep.dsn(), "-qAt", "-c", "SELECT 1; SELECT 'two', 2+1").stdout
    assert out.split() == ["1", "two|3"]


def test_psql_meta_commands(pgkeep, tmp_path):
    dsn = pgkeep.dsn()
    psql(dsn, "-c", "DROP TABLE IF EXISTS metat; CREATE TABLE metat(id int primary key, v text)")
    described = psql(dsn, "-c", r"\d metat").stdout
    assert "metat" in described and "integer" in described and "metat_pkey" in described
    src = tmp_path / "in.csv"
    src.write_text("".join(f"{i},v{i}\n" for i in range(1000)))
    out = psql(dsn, "-c", rf"\copy metat from '{src}' csv").stdout
    assert "COPY 1000" in out
    dst = tmp_path / "out.csv"
    psql(dsn, "-c", rf"\copy (select * from metat order by id) to '{dst}' csv")
    assert dst.read_text() == src.read_text()
    watched = psql(dsn, "-qAt", input="SELECT count(*) FROM metat \\watch i=0.1 c=3\n").stdout
    assert watched.split().count("1000") == 3


def test_psycopg_extended_protocol_and_types(pgkeep):
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT %s::int + %s::int", (2, 3)).fetchone() == (5,)
        for i in range(8):  # prepared after prepare_threshold executions: named statements
            assert conn.execute("SELECT %s::text || 'x'", (str(i),), prepare=True).fetchone() == (f"{i}x",)
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        assert conn.execute("SELECT 'still usable'").fetchone() == ("still usable",)
        conn.execute("DROP TABLE IF EXISTS ext_t; CREATE TABLE ext_t(id int, b bytea, j jsonb)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO ext_t VALUES (%s, %s, %s)",
                            [(i, bytes([i]), psycopg.types.json.Jsonb({"i": i})) for i in range(50)])
        assert conn.execute("SELECT count(*), sum(id) FROM ext_t").fetchone() == (50, 1225)


def test_psycopg_pipeline_with_error_in_the_middle(pgkeep):
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        with conn.pipeline() as p:
            c1 = conn.execute("SELECT 1")
            c2 = conn.execute("SELECT 2")
            p.sync()
            with pytest.raises(psycopg.errors.UndefinedTable):
                conn.execute("SELECT * FROM no_such_table_x")
                p.sync()
            c3 = conn.execute("SELECT 3")
        assert (c1.fetchone(), c2.fetchone(), c3.fetchone()) == ((1,), (2,), (3,))


def test_psycopg_copy_both_ways_large(pgkeep):
    rows = 200_000
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS copy_t; CREATE TABLE copy_t(id int, pad text)")
        with conn.cursor().copy("COPY copy_t FROM STDIN") as copy:
            for i in range(rows):
                copy.write_row((i, "p" * 100))
        assert conn.execute("SELECT count(*) FROM copy_t").fetchone() == (rows,)
        total = 0
        with conn.cursor().copy("COPY copy_t TO STDOUT") as copy:
            for data in copy:
                total += len(data)
        assert total > rows * 100


def test_asyncpg_prepared_cursor_copy_listen(pgkeep):
    async def main():
        conn = await asyncpg.connect(pgkeep.dsn())
        try:
            stmt = await conn.prepare("SELECT $1::int * 2 AS x")
            assert [await stmt.fetchval(i) for i in range(3)] == [0, 2, 4]
            async with conn.transaction():
                got = [r[0] async for r in conn.cursor("SELECT generate_series(1, 1000)", prefetch=64)]
            assert got == list(range(1, 1001))
            await conn.execute("DROP TABLE IF EXISTS ap_t; CREATE TABLE ap_t(a int, b text)")
            await conn.copy_records_to_table("ap_t", records=[(i, str(i)) for i in range(5000)])
            assert await conn.fetchval("SELECT count(*) FROM ap_t") == 5000
            received = asyncio.get_running_loop().create_future()
            await conn.add_listener("chan", lambda *a: received.set_result(a[3]))
            other = await asyncpg.connect(pgkeep.dsn())
            await other.execute("NOTIFY chan, 'hello'")
            await other.close()
            assert await asyncio.wait_for(received, 10) == "hello"
        finally:
            await conn.close()
    asyncio.run(main())


def test_notices_are_relayed(pgkeep):
    notices = []
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("DO $$BEGIN RAISE NOTICE 'hello from upstream'; END$$")
    assert notices == ["hello from upstream"]


def test_pg8000(pgkeep):
    conn = pg8000.dbapi.connect(user="postgres", host="127.0.0.1", port=pgkeep.port, database="postgres")
    cur = conn.cursor()
    cur.execute("SELECT %s::int + 1, %s", (41, "x"))
    assert cur.fetchone() == [42, "x"]
    conn.close()


def test_many_concurrent_clients(pgkeep):
    errors = []

    def worker(n):
        try:
            with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
                for i in range(50):
                    assert conn.execute("SELECT %s::int", (n * 1000 + i,)).fetchone() == (n * 1000 + i,)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
