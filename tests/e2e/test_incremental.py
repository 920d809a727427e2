"""Incremental backups through pgkeep (issue 14, docs/FORMAT.md section 7): chains of layers with
every kind of change between them, each layer restored (AS OF SYSTEM TIME its end time) and
compared with the source as it was when the layer was taken: pg_dump --schema-only, per-table
ordered row hashes, sequences and large objects."""
from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.support.datasets import row_hashes, schema_dump

SMALL_CHUNKS = "64KiB"      # so a few thousand rows make several chunks


def collection(name: str) -> str:
    return f"nodelocal://self/{name}-{uuid.uuid4().hex[:8]}"


def run(pgkeep, sql, db="postgres"):
    with psycopg.connect(pgkeep.dsn(db), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


@pytest.fixture(scope="module", autouse=True)
def small_chunks(pgkeep):
    run(pgkeep, f"SET CLUSTER SETTING pgkeep.backup.chunk_size = '{SMALL_CHUNKS}'")
    yield
    run(pgkeep, "RESET CLUSTER SETTING pgkeep.backup.chunk_size")


def state(pg, db) -> tuple:
    """What a restore of `db` must reproduce."""
    seqs = pg.psql("SELECT string_agg(format('%s=%s/%s', c.relname, s.last_value, s.is_called), ',' "
                   "ORDER BY c.relname) FROM pg_class c, LATERAL (SELECT * FROM pg_sequences q "
                   "WHERE q.schemaname = 'public' AND q.sequencename = c.relname) x, "
                   "LATERAL (SELECT last_value, is_called FROM pg_sequence_last_value(c.oid) "
                   "AS last_value, (SELECT true) AS is_called) s WHERE c.relkind = 'S'", db)
    los = pg.psql("SELECT coalesce(md5(string_agg(format('%s:%s:%s', loid, pageno, md5(data)), ',' "
                  "ORDER BY loid, pageno)), '') FROM pg_largeobject", db)
    return schema_dump(pg, db), row_hashes(pg, db), seqs, los


def fresh_db(pg18, db: str, sql: str) -> str:
    pg18.psql(f"DROP DATABASE IF EXISTS {db}")
    pg18.psql(f"CREATE DATABASE {db}")
    pg18.psql(sql, db)
    return db


def layers(pgkeep, coll, db="postgres"):
    """[(backup_type, start_time, end_time)] of the chain, one per layer."""
    rows = run(pgkeep, f"SELECT DISTINCT backup_type, start_time, end_time FROM "
                       f"[SHOW BACKUP FROM LATEST IN '{coll}'] ORDER BY end_time", db)
    return rows


def restore_layer(pgkeep, coll, source, target, end_time):
    run(pgkeep, f"RESTORE DATABASE {source} FROM LATEST IN '{coll}' "
                f"AS OF SYSTEM TIME '{end_time.isoformat()}' WITH new_db_name = '{target}'")


SETUP = """
CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL, note text);
INSERT INTO accounts SELECT g, 100, repeat('x', 50) FROM generate_series(1, 6000) g;
CREATE TABLE hot (id int PRIMARY KEY, v int) WITH (fillfactor = 50);
INSERT INTO hot SELECT g, 0 FROM generate_series(1, 3000) g;
CREATE TABLE doomed (id int);
INSERT INTO doomed SELECT generate_series(1, 100);
CREATE TABLE to_rename (id int);
INSERT INTO to_rename VALUES (1), (2);
CREATE TABLE rewritten (id int, v int);
INSERT INTO rewritten SELECT g, g FROM generate_series(1, 4000) g;
CREATE TABLE truncated (id int);
INSERT INTO truncated SELECT generate_series(1, 500);
CREATE SEQUENCE counter;
SELECT nextval('counter');
CREATE TABLE parted (k int, v text) PARTITION BY RANGE (k);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
CREATE TABLE parted_2 (k int, v text);
INSERT INTO parted VALUES (1, 'a'), (50, 'b');
INSERT INTO parted_2 VALUES (150, 'c');
SELECT lo_from_bytea(424242, 'large object, first version');
CREATE VIEW rich AS SELECT id FROM accounts WHERE balance > 100;
"""

# Every kind of change of issue 14 point 2, one batch per layer.
CHANGES = [
    """UPDATE accounts SET balance = balance + 1 WHERE id BETWEEN 100 AND 160;   -- a range
       UPDATE hot SET v = v + 1 WHERE id % 500 = 0;                              -- HOT updates
       DELETE FROM accounts WHERE id = 3000;
       INSERT INTO accounts VALUES (7001, 1, 'new');
       COPY accounts FROM PROGRAM 'seq 7002 7010 | sed "s/$/\\t5\\tcopied/"';
       SELECT nextval('counter'), nextval('counter');
       TRUNCATE truncated;
       DROP TABLE doomed;
       ALTER TABLE to_rename RENAME TO renamed;
       CREATE TABLE created (id int PRIMARY KEY, t text);
       INSERT INTO created VALUES (1, 'one');""",
    """VACUUM FULL rewritten;
       ALTER TABLE rewritten ALTER COLUMN v TYPE bigint;
       ALTER TABLE accounts ADD COLUMN flag bool DEFAULT true;
       ALTER TABLE hot DROP COLUMN v;
       ALTER TABLE parted ATTACH PARTITION parted_2 FOR VALUES FROM (100) TO (200);
       CREATE OR REPLACE VIEW rich AS SELECT id, balance FROM accounts WHERE balance > 100;
       SELECT lo_put(424242, 0, '\\x4c4152474520');
       SELECT lo_from_bytea(424243, 'a second large object');
       DELETE FROM accounts WHERE id BETWEEN 10 AND 12;
       INSERT INTO accounts (id, balance) VALUES (3000, 30);   -- same row count as before""",
    """ALTER TABLE parted DETACH PARTITION parted_1;
       UPDATE accounts SET note = 'changed' WHERE id = 6000;
       SELECT lo_unlink(424243);
       CLUSTER hot USING hot_pkey;""",
]


def test_chain_of_layers_restores_every_layer(pgkeep, pg18):
    db = fresh_db(pg18, "inc_src", SETUP)
    coll = collection("chain")
    expected = []
    run(pgkeep, f"BACKUP DATABASE {db} INTO '{coll}'")
    expected.append(state(pg18, db))
    for change in CHANGES:
        for statement in change.split(";\n"):     # VACUUM FULL and CLUSTER outside a transaction
            pg18.psql(statement, db)
        run(pgkeep, f"BACKUP DATABASE {db} INTO LATEST IN '{coll}'")
        expected.append(state(pg18, db))
    chain = layers(pgkeep, coll)
    assert [c[0] for c in chain] == ["full"] + ["incremental"] * len(CHANGES)
    assert chain[0][1] is None
    for prev, cur in zip(chain, chain[1:]):
        assert cur[1] == prev[2]                    # each layer starts where its parent ended
    assert len(run(pgkeep, f"SHOW BACKUPS IN '{coll}'")) == 1   # only fulls are listed
    for i, (_, _, end) in enumerate(chain):
        target = f"inc_r{i}"
        pg18.psql(f"DROP DATABASE IF EXISTS {target}")
        restore_layer(pgkeep, coll, db, target, end)
        got = state(pg18, target)
        assert got[0] == expected[i][0], f"layer {i}: schema differs"
        assert got[1] == expected[i][1], f"layer {i}: rows differ"
        assert got[2:] == expected[i][2:], f"layer {i}: sequences or large objects differ"
        pg18.psql(f"DROP DATABASE {target}")
    # FROM LATEST without a time is the newest layer
    pg18.psql("DROP DATABASE IF EXISTS inc_latest")
    run(pgkeep, f"RESTORE DATABASE {db} FROM LATEST IN '{coll}' WITH new_db_name = 'inc_latest'")
    assert state(pg18, "inc_latest")[1] == expected[-1][1]
    pg18.psql("DROP DATABASE inc_latest")


def test_unchanged_layer_copies_no_rows_and_a_change_copies_its_chunk(pgkeep, pg18):
    db = fresh_db(pg18, "inc_bytes", "CREATE TABLE t (id int PRIMARY KEY, pad text);"
              "INSERT INTO t SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 20000) g")
    coll = collection("bytes")
    full = run(pgkeep, f"BACKUP DATABASE {db} INTO '{coll}'")[0]
    none = run(pgkeep, f"BACKUP DATABASE {db} INTO LATEST IN '{coll}'")[0]
    assert none[1] == "succeeded"
    files = run(pgkeep, f"SELECT backup_type, path, rows FROM [SHOW BACKUP FILES FROM LATEST IN '{coll}']")
    assert not [f for f in files if f[0] == "incremental"], "an unchanged layer wrote data files"
    pg18.psql("UPDATE t SET pad = 'changed' WHERE id = 5", db)
    run(pgkeep, f"BACKUP DATABASE {db} INTO LATEST IN '{coll}'")
    sizes = run(pgkeep, f"SELECT backup_type, end_time, size_bytes, rows FROM [SHOW BACKUP FROM LATEST IN '{coll}'] "
                        f"WHERE object_name = 't' ORDER BY end_time")
    full_size, full_rows = sizes[0][2], sizes[0][3]
    assert full_rows == 20000
    assert sizes[1][2:] == (0, 0)                    # nothing written by the unchanged layer
    assert 0 < sizes[2][3] < full_rows / 5           # one small chunk, not the table
    assert sizes[2][2] < full_size / 5
    assert full[3] == 20000


def test_table_chain_and_target_mismatch(pgkeep, pg18):
    db = fresh_db(pg18, "inc_tables", "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int);"
              "INSERT INTO a SELECT generate_series(1, 100); INSERT INTO b VALUES (1)")
    coll = collection("tables")
    run(pgkeep, f"BACKUP TABLE {db}.public.a INTO '{coll}'")
    pg18.psql("INSERT INTO a VALUES (101)", db)
    run(pgkeep, f"BACKUP TABLE {db}.public.a INTO LATEST IN '{coll}'")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="do not match"):
        run(pgkeep, f"BACKUP TABLE {db}.public.b INTO LATEST IN '{coll}'")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="do not match"):
        run(pgkeep, f"BACKUP DATABASE {db} INTO LATEST IN '{coll}'")
    pg18.psql("DROP DATABASE IF EXISTS inc_tables_r")
    pg18.psql("CREATE DATABASE inc_tables_r")
    run(pgkeep, f"RESTORE TABLE {db}.public.a FROM LATEST IN '{coll}' WITH into_db = 'inc_tables_r'")
    assert pg18.psql("SELECT count(*), max(id) FROM a", "inc_tables_r").strip() == "101|101"
    # into an unknown subdir
    with pytest.raises(psycopg.errors.UndefinedFile):
        run(pgkeep, f"BACKUP TABLE {db}.public.a INTO '2001/01/01-000000.00' IN '{coll}'")


def test_time_between_layers_is_crdbs_error(pgkeep, pg18):
    db = fresh_db(pg18, "inc_aost", "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    coll = collection("aost")
    run(pgkeep, f"BACKUP DATABASE {db} INTO '{coll}'")
    pg18.psql("INSERT INTO t VALUES (2)", db)
    run(pgkeep, f"BACKUP DATABASE {db} INTO LATEST IN '{coll}'")
    (_, _, e0), (_, _, e1) = layers(pgkeep, coll)
    between = e0 + (e1 - e0) / 2
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="revision_history") as info:
        restore_layer(pgkeep, coll, db, "inc_aost_r", between)
    assert "nearest BACKUP times are" in str(info.value)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="do not cover"):
        restore_layer(pgkeep, coll, db, "inc_aost_r", e0.replace(year=2001))
