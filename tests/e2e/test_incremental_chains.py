"""Chains through pgkeep (issue 14 point 7): chains of 1, 3 and 20 layers (the full counts as one)
of one source with a change of another kind of point 2 between every two layers, taken with
asyncpg (extended protocol); layers restored with psycopg, by AS OF SYSTEM TIME or as the newest,
with new_db_name, and compared with the source at that layer (pg_dump --schema-only, rows,
sequences, large objects); RESTORE TABLE ... into_db from a database chain; a table-scope chain;
and writers moving money while a full and three incrementals are taken, each layer's restored
total equal to the constant total."""
from __future__ import annotations

import asyncio
import random
import threading

import asyncpg
import psycopg
import pytest

from tests.support.layers import collection, layer_end_times, read_state, through

DB = "chain_src"


@pytest.fixture(scope="module", autouse=True)
def small_chunks(pgkeep):
    through(pgkeep, "SET CLUSTER SETTING pgkeep.backup.chunk_size = '64KiB'")
    yield
    through(pgkeep, "RESET CLUSTER SETTING pgkeep.backup.chunk_size")


SETUP = [
    "CREATE TYPE mood AS ENUM ('sad', 'ok')",
    "CREATE TABLE acct (id int PRIMARY KEY, k int NOT NULL, v int NOT NULL, note text) WITH (fillfactor = 70)",
    "CREATE INDEX acct_k ON acct (k)",
    "INSERT INTO acct SELECT g, g, 0, repeat('n', 30) FROM generate_series(1, 3000) g",
    "CREATE TABLE log (id bigserial PRIMARY KEY, m mood, at int)",
    "INSERT INTO log (m, at) SELECT 'ok', g FROM generate_series(1, 500) g",
    "CREATE TABLE old (id int)",
    "INSERT INTO old SELECT generate_series(1, 300)",
    "CREATE TABLE parted (k int, v text) PARTITION BY RANGE (k)",
    "CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM (0) TO (100)",
    "CREATE TABLE parted_b (k int, v text)",
    "INSERT INTO parted SELECT g % 100, 'a' FROM generate_series(1, 200) g",
    "INSERT INTO parted_b SELECT 100 + g % 100, 'b' FROM generate_series(1, 200) g",
    "CREATE SEQUENCE ticket",
    "SELECT lo_from_bytea(9001, 'first version')",
]


def _copy(conn) -> None:
    with conn.cursor().copy("COPY log (m, at) FROM STDIN") as cp:
        for i in range(200):
            cp.write_row(("sad", 10_000 + i))


# One change of each kind of issue 14 point 2 before each incremental layer (19 for 20 layers).
CHANGES = [
    ["INSERT INTO acct SELECT g, g, 1, 'inserted' FROM generate_series(3001, 3100) g"],
    ["UPDATE acct SET k = k + 100000 WHERE id BETWEEN 10 AND 20"],                  # not HOT: k is indexed
    ["UPDATE acct SET v = v + 1 WHERE id % 300 = 0"],                               # HOT
    ["DELETE FROM acct WHERE id BETWEEN 1500 AND 1520"],
    [_copy],
    ["TRUNCATE old", "INSERT INTO old SELECT generate_series(1001, 1300)"],
    ["CREATE TABLE fresh (id int PRIMARY KEY, t text)",
     "INSERT INTO fresh SELECT g, 'f' FROM generate_series(1, 50) g"],
    ["ALTER TABLE fresh RENAME TO renamed"],
    ["VACUUM FULL acct"],
    ["CLUSTER acct USING acct_k"],
    ["ALTER TABLE old ALTER COLUMN id TYPE bigint"],
    ["ALTER TABLE acct ADD COLUMN flag bool DEFAULT true"],
    ["ALTER TABLE acct DROP COLUMN note"],
    ["SELECT nextval('ticket')", "SELECT nextval('ticket')", "SELECT setval('log_id_seq', 10000)"],
    ["ALTER TABLE parted ATTACH PARTITION parted_b FOR VALUES FROM (100) TO (200)"],
    ["ALTER TABLE parted DETACH PARTITION parted_a"],
    ["SELECT lo_put(9001, 0, '\\x4649525354')", "SELECT lo_from_bytea(9002, 'second')"],
    ["DROP TABLE renamed", "SELECT lo_unlink(9002)"],
    ["CREATE VIEW busy AS SELECT id, v FROM acct WHERE v > 0", "COMMENT ON TABLE acct IS 'accounts'",
     "CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2'",
     "ALTER TYPE mood ADD VALUE 'happy'", "INSERT INTO log (m, at) VALUES ('happy', 0)",
     "GRANT SELECT ON acct TO md5user"],
]
LENGTHS = (1, 3, 20)
WANTED = {0, 1, 2, 9, 19}           # the layers whose source state the tests compare with


def apply(conn, change) -> None:
    for step in change:
        if callable(step):
            step(conn)
        else:
            conn.execute(step)


@pytest.fixture(scope="module")
def chains(pgkeep, pg18):
    """{length: collection}, {layer: State}: three chains of one source, the chain of n holding
    its first n layers (a full and n - 1 incrementals)."""
    pg18.psql(f"DROP DATABASE IF EXISTS {DB}")
    pg18.psql(f"CREATE DATABASE {DB}")
    colls = {n: collection(f"chain{n}") for n in LENGTHS}
    states = {}

    async def take():
        conn = await asyncpg.connect(pgkeep.dsn())
        try:
            with psycopg.connect(pg18.dsn(DB), autocommit=True) as src:
                apply(src, SETUP)
                for k in range(max(LENGTHS)):
                    if k:
                        apply(src, CHANGES[k - 1])
                    for n, coll in colls.items():
                        if k < n:
                            rows = await conn.fetch(f"BACKUP DATABASE {DB} INTO {'LATEST IN ' if k else ''}'{coll}'")
                            assert rows[0]["status"] == "succeeded"
                    if k in WANTED:
                        states[k] = read_state(pg18, DB)
        finally:
            await conn.close()

    asyncio.run(take())
    yield colls, states
    pg18.psql(f"DROP DATABASE IF EXISTS {DB}")


def restore(pgkeep, pg18, coll: str, target: str, end=None):
    """The state of a restore of the layer ending at `end` (the newest without one), WITH grants:
    the chain's changes include GRANTs, which a restore keeps only with it."""
    pg18.psql(f"DROP DATABASE IF EXISTS {target}")
    aost = f" AS OF SYSTEM TIME '{end.isoformat()}'" if end is not None else ""
    through(pgkeep, f"RESTORE DATABASE {DB} FROM LATEST IN '{coll}'{aost} WITH grants, new_db_name = '{target}'")
    state = read_state(pg18, target)
    pg18.psql(f"DROP DATABASE {target}")
    return state


@pytest.mark.parametrize("length, layers", [(1, [0]), (3, [1, 2]), (20, [0, 9, 19])])
def test_chain_restores_its_layers(pgkeep, pg18, chains, length, layers):
    colls, states = chains
    coll = colls[length]
    rows = through(pgkeep, f"SELECT DISTINCT backup_type, start_time, end_time FROM "
                           f"[SHOW BACKUP FROM LATEST IN '{coll}'] ORDER BY end_time")
    assert [r[0] for r in rows] == ["full"] + ["incremental"] * (length - 1)
    assert all(cur[1] == prev[2] for prev, cur in zip(rows, rows[1:]))
    ends = [r[2] for r in rows]
    for k in layers:   # the newest by FROM LATEST alone, the others by their end time
        got = restore(pgkeep, pg18, coll, f"chain_r{length}_{k}", None if k == length - 1 else ends[k])
        assert got.diff(states[k]) == [], f"layer {k} of the chain of {length}"


def test_restore_table_from_a_database_chain_into_another_database(pgkeep, pg18, chains):
    colls, states = chains
    end = layer_end_times(pgkeep, colls[20])[9]
    pg18.psql("DROP DATABASE IF EXISTS chain_into")
    pg18.psql("CREATE DATABASE chain_into")
    through(pgkeep, f"RESTORE TABLE {DB}.public.acct, {DB}.public.old FROM LATEST IN '{colls[20]}' "
                    f"AS OF SYSTEM TIME '{end.isoformat()}' WITH into_db = 'chain_into'")
    got = read_state(pg18, "chain_into", schema=False)
    assert got.rows == {t: states[9].rows[t] for t in ("public.acct", "public.old")}
    pg18.psql("DROP DATABASE chain_into")


def test_table_scope_chain(pgkeep, pg18):
    db = "tchain_src"
    pg18.psql(f"DROP DATABASE IF EXISTS {db}")
    pg18.psql(f"CREATE DATABASE {db}")
    changes = [
        ["CREATE TABLE a (id int PRIMARY KEY, v text)", "CREATE TABLE b (id int, v int)", "CREATE TABLE c (id int)",
         "INSERT INTO a SELECT g, md5(g::text) FROM generate_series(1, 3000) g",
         "INSERT INTO b SELECT g, g FROM generate_series(1, 3000) g", "INSERT INTO c VALUES (1)"],
        ["INSERT INTO a VALUES (5000, 'new')", "UPDATE c SET id = 2", "UPDATE b SET v = 0 WHERE id = 7"],
        ["DELETE FROM b WHERE id > 2900", "VACUUM FULL a", "DELETE FROM c"],
    ]
    coll = collection("tchain")
    expected = []
    with psycopg.connect(pg18.dsn(db), autocommit=True) as src:
        for k, change in enumerate(changes):
            apply(src, change)
            through(pgkeep, f"BACKUP TABLE {db}.public.a, {db}.public.b INTO {'LATEST IN ' if k else ''}'{coll}'")
            expected.append({t: v for t, v in read_state(pg18, db, schema=False).rows.items() if t != "public.c"})
    ends = layer_end_times(pgkeep, coll)
    assert len(ends) == len(changes)
    for k, end in enumerate(ends):
        target = f"tchain_into_{k}"
        pg18.psql(f"DROP DATABASE IF EXISTS {target}")
        pg18.psql(f"CREATE DATABASE {target}")
        through(pgkeep, f"RESTORE TABLE {db}.public.a, {db}.public.b FROM LATEST IN '{coll}' "
                        f"AS OF SYSTEM TIME '{end.isoformat()}' WITH into_db = '{target}'")
        assert read_state(pg18, target, schema=False).rows == expected[k], f"layer {k}"
        pg18.psql(f"DROP DATABASE {target}")
    pg18.psql(f"DROP DATABASE {db}")


# -- writers during every layer ------------------------------------------------------------------

ACCOUNTS, ROWS, BALANCE = 4, 10000, 1000


def _transfers(dsn: str, stop: threading.Event, done: list, seed: int) -> None:
    """Move money between random accounts, a few hundred times a second; one transfer in ten deletes
    the paying account's row and inserts it again (so it moves to another page and chunk), the
    others update in place (HOT), leaving the chunk's row count as it was."""
    rnd = random.Random(seed)
    with psycopg.connect(dsn) as conn:
        while not stop.is_set():
            a, b = rnd.randrange(ACCOUNTS), rnd.randrange(ACCOUNTS)
            x, y = 1 + rnd.randrange(ROWS), 1 + rnd.randrange(ROWS)
            if (a, x) == (b, y):
                continue
            try:
                if done[0] % 10 == 9:
                    row = conn.execute(f"DELETE FROM accounts_{a} WHERE id = %s RETURNING balance", (x,)).fetchone()
                    ok = row is not None
                    if ok:
                        conn.execute(f"INSERT INTO accounts_{a} VALUES (%s, %s)", (x, row[0] - 7))
                else:
                    ok = conn.execute(f"UPDATE accounts_{a} SET balance = balance - 7 WHERE id = %s",
                                      (x,)).rowcount == 1
                stop.wait(0.002)    # half a transfer: likely in progress at a layer's snapshot
                # a row deleted and inserted again by the other writer meanwhile is not updated
                ok = ok and conn.execute(f"UPDATE accounts_{b} SET balance = balance + 7 WHERE id = %s",
                                         (y,)).rowcount == 1
            except psycopg.errors.DeadlockDetected:
                ok = False
            if ok:
                conn.commit()
                done[0] += 1
            else:
                conn.rollback()


def test_writers_during_every_layer(pgkeep, pg18):
    db = "xfer"
    pg18.psql(f"DROP DATABASE IF EXISTS {db}")
    pg18.psql(f"CREATE DATABASE {db}")
    # fillfactor 50: updates stay on their page (HOT), so a chunk's row count says nothing
    pg18.psql("".join(f"CREATE TABLE accounts_{i} (id int PRIMARY KEY, balance bigint NOT NULL) "
                      f"WITH (fillfactor = 50); "
                      f"INSERT INTO accounts_{i} SELECT g, {BALANCE} FROM generate_series(1, {ROWS}) g;"
                      for i in range(ACCOUNTS)), db)
    total = ACCOUNTS * ROWS * BALANCE
    coll = collection("xfer")
    stop = threading.Event()
    counters = [[0], [0]]
    writers = [threading.Thread(target=_transfers, args=(pg18.dsn(db), stop, c, i)) for i, c in enumerate(counters)]
    moved = []
    through(pgkeep, "SET CLUSTER SETTING pgkeep.backup.parallelism = 4")
    try:
        for w in writers:
            w.start()
        for k in range(4):
            before = sum(c[0] for c in counters)
            while sum(c[0] for c in counters) < before + 20:       # some transfers before each layer
                stop.wait(0.01)
            through(pgkeep, f"BACKUP DATABASE {db} INTO {'LATEST IN ' if k else ''}'{coll}'")
            moved.append(sum(c[0] for c in counters) - before)
    finally:
        stop.set()
        for w in writers:
            w.join()
        through(pgkeep, "RESET CLUSTER SETTING pgkeep.backup.parallelism")
    assert all(n >= 20 for n in moved), moved
    ends = layer_end_times(pgkeep, coll)
    assert len(ends) == 4
    for k, end in enumerate(ends):
        target = f"xfer_r{k}"
        pg18.psql(f"DROP DATABASE IF EXISTS {target}")
        through(pgkeep, f"RESTORE DATABASE {db} FROM LATEST IN '{coll}' AS OF SYSTEM TIME '{end.isoformat()}' "
                        f"WITH new_db_name = '{target}'")
        got = [tuple(map(int, pg18.psql(f"SELECT count(*), sum(balance) FROM accounts_{i}", target).strip().split("|")))
               for i in range(ACCOUNTS)]
        assert [n for n, _ in got] == [ROWS] * ACCOUNTS, f"layer {k}: row counts {got}"
        assert sum(s for _, s in got) == total, f"layer {k}: total {sum(s for _, s in got)} != {total}"
        pg18.psql(f"DROP DATABASE {target}")
    pg18.psql(f"DROP DATABASE {db}")
