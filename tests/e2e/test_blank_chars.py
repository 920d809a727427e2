"""char(n) columns that are mostly blank (docs/FORMAT.md section 2): their all-blank values are
backed up as '' and padded back by char(n) input, so the backup is smaller and the restored rows
are the same bytes; columns whose values are mostly not blank are copied as COPY writes them."""
from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from tests.engine.conftest import capture_db
from tests.support.datasets import row_hashes, schema_dump

SRC = "blankchars"
ROWS = 20000


@pytest.fixture(scope="module")
def blank_db(pg18):
    pg18.psql(f'DROP DATABASE IF EXISTS "{SRC}" WITH (FORCE)')
    pg18.psql(f'CREATE DATABASE "{SRC}"')
    # t_text: integers and strings only, so COPY text; t_bin: a numeric too, so COPY binary.
    # pad is blank in 3 rows of 4; code is mostly not blank; one row of each holds a multibyte
    # value, a value with trailing tabs (not blanks) and a NULL.
    pg18.psql("""
        CREATE TABLE t_text (id int PRIMARY KEY, pad char(60), code char(4), note varchar(10));
        CREATE TABLE t_bin (id int PRIMARY KEY, pad char(60), code char(4), amount numeric(10,2));
        INSERT INTO t_text SELECT g, CASE WHEN g % 4 = 0 THEN 'x' || g ELSE '' END,
                                  CASE WHEN g % 10 = 0 THEN '' ELSE 'c' || (g % 7) END, 'n' || g
          FROM generate_series(1, 20000) g;
        INSERT INTO t_bin SELECT id, pad, code, id / 3.0 FROM t_text;
        UPDATE t_text SET pad = 'é', code = E'\\t\\t' WHERE id = 5;
        UPDATE t_text SET pad = NULL, code = NULL WHERE id = 6;
        UPDATE t_bin SET pad = 'ü  ', code = NULL WHERE id = 7;
        ANALYZE""", SRC)
    yield SRC
    for db in (SRC, f"{SRC}_r"):
        pg18.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _copy_bytes(pg18, table: str, fmt: str) -> int:
    with psycopg.connect(pg18.dsn(SRC)) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {table} TO STDOUT (FORMAT {fmt})") as copy:
            return sum(len(data) for data in copy)


def test_only_mostly_blank_char_columns_are_chosen(pg18, blank_db):
    schema = asyncio.run(capture_db(pg18, blank_db))
    chosen = {t.name: t.blank_as_empty for t in schema.tables}
    assert chosen == {"t_text": ["pad"], "t_bin": ["pad"]}


def test_round_trip_is_exact_and_the_blanks_are_not_stored(pgkeep, pg18, blank_db):
    coll = f"nodelocal://self/blankchars-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        row = conn.execute(f"BACKUP DATABASE {SRC} INTO '{coll}'").fetchone()
        conn.execute(f"RESTORE DATABASE {SRC} FROM LATEST IN '{coll}' WITH new_db_name = '{SRC}_r'")
    assert row[3] == 2 * ROWS
    # ~15,000 blank pads a table, 60 bytes each in either format: ~1.8 MB less than COPY's output
    assert row[5] < _copy_bytes(pg18, "t_text", "text") + _copy_bytes(pg18, "t_bin", "binary") - 1_700_000
    assert row_hashes(pg18, f"{SRC}_r") == row_hashes(pg18, SRC)
    assert schema_dump(pg18, f"{SRC}_r") == schema_dump(pg18, SRC)
    # the same bytes, not only equal values: char(n) pads every stored value to n
    q = "SELECT md5(string_agg(pad::bytea::text || coalesce(code::bytea::text, '-'), ',' ORDER BY id)) FROM {}"
    for table in ("t_text", "t_bin"):
        assert pg18.psql(q.format(table), f"{SRC}_r") == pg18.psql(q.format(table), SRC)
