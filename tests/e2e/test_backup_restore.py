"""BACKUP / RESTORE / SHOW BACKUP(S) through pgkeep, the way a user runs them, against real data:
restored databases are compared with pg_dump --schema-only and per-table ordered row hashes."""
from __future__ import annotations

import re
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.support.datasets import load_chinook, load_pagila, row_hashes, schema_dump


def collection(name: str) -> str:
    return f"nodelocal://self/{name}-{uuid.uuid4().hex[:8]}"


def run(pgkeep, sql, params=None, db="postgres", user="postgres"):
    with psycopg.connect(pgkeep.dsn(db, user=user), autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else None


@pytest.fixture(scope="module")
def chinook(pg18):
    return load_chinook(pg18, "chinook")


@pytest.fixture(scope="module")
def chinook_backup(pgkeep, chinook):
    coll = collection("chinook")
    row = run(pgkeep, f"BACKUP DATABASE chinook INTO '{coll}' AS OF SYSTEM TIME '-10s'")[0]
    return coll, row


def test_backup_result_row(pg18, chinook_backup):
    coll, (job_id, status, fraction, rows, index_entries, nbytes) = chinook_backup
    expected_rows = sum(n for n, _ in row_hashes(pg18, "chinook").values())
    assert status == "succeeded" and fraction == 1.0 and job_id > 2**40
    assert rows == expected_rows and nbytes > 0


def test_database_round_trip_chinook(pgkeep, pg18, chinook_backup):
    coll, _ = chinook_backup
    row = run(pgkeep, f"RESTORE DATABASE chinook FROM LATEST IN '{coll}' WITH grants, new_db_name = 'chinook_r'")[0]
    assert row[1] == "succeeded" and row[3] == sum(n for n, _ in row_hashes(pg18, "chinook").values())
    assert row[4] > 0  # index entries rebuilt
    assert schema_dump(pg18, "chinook_r") == schema_dump(pg18, "chinook")
    assert row_hashes(pg18, "chinook_r") == row_hashes(pg18, "chinook")


def test_pagila_round_trip(pgkeep, pg18):
    load_pagila(pg18, "pagila")
    coll = collection("pagila")
    run(pgkeep, f"BACKUP DATABASE pagila INTO '{coll}'")
    run(pgkeep, f"RESTORE DATABASE pagila FROM LATEST IN '{coll}' WITH grants, new_db_name = 'pagila_r'")
    assert schema_dump(pg18, "pagila_r") == schema_dump(pg18, "pagila")
    hashes = row_hashes(pg18, "pagila")
    assert hashes["public.actor"][0] == 200
    assert row_hashes(pg18, "pagila_r") == hashes


def test_show_backups_and_show_backup(pgkeep, pg18, chinook_backup):
    coll, _ = chinook_backup
    paths = run(pgkeep, f"SHOW BACKUPS IN '{coll}'")
    assert len(paths) == 1 and re.fullmatch(r"/\d{4}/\d{2}/\d{2}-\d{6}\.\d{2}", paths[0][0])
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        cur = conn.execute(f"SHOW BACKUP FROM LATEST IN '{coll}'")
        cols = [d.name for d in cur.description]
        rows = cur.fetchall()
    assert cols == ["database_name", "parent_schema_name", "object_name", "object_type", "backup_type",
                    "start_time", "end_time", "size_bytes", "rows", "is_full_cluster", "regions"]
    by_name = {(r[1], r[2]): r for r in rows}
    assert by_name[(None, "chinook")][3] == "database"
    artist = by_name[("public", "artist")]
    assert artist[3] == "table" and artist[4] == "full" and artist[5] is None
    assert artist[8] == int(pg18.psql("SELECT count(*) FROM artist", "chinook"))
    same = run(pgkeep, f"SHOW BACKUP FROM '{paths[0][0]}' IN '{coll}'")
    assert len(same) == len(rows)
    schemas = run(pgkeep, f"SHOW BACKUP SCHEMAS FROM LATEST IN '{coll}'")
    create = {r[2]: r[-1] for r in schemas}
    assert "CREATE TABLE" in create["artist"] and "artist_id" in create["artist"]
    checked = run(pgkeep, f"SHOW BACKUP FROM LATEST IN '{coll}' WITH check_files")
    assert all(r[-1] > 0 for r in checked if r[2] == "artist")
    files = run(pgkeep, f"SHOW BACKUP FILES FROM LATEST IN '{coll}'")
    assert files and all(f[0].endswith(".pgkd") and f[9] > 0 for f in files)
    assert run(pgkeep, f"SHOW BACKUP VALIDATE FROM LATEST IN '{coll}'") == [("No problems found!",)]


def test_restore_errors(pgkeep, pg18, chinook_backup):
    coll, _ = chinook_backup
    with pytest.raises(psycopg.errors.DuplicateDatabase) as e:
        run(pgkeep, f"RESTORE DATABASE chinook FROM LATEST IN '{coll}'")
    assert "new_db_name" in (e.value.diag.message_hint or "")
    with pytest.raises(psycopg.errors.DuplicateTable) as e:
        run(pgkeep, f"RESTORE TABLE chinook.public.artist FROM LATEST IN '{coll}'")
    assert "into_db" in (e.value.diag.message_hint or "")
    with pytest.raises(psycopg.Error) as e:
        run(pgkeep, f"RESTORE TABLE chinook.public.artist FROM LATEST IN '{coll}' WITH into_db = 'nodb'")
    assert 'a database named "nodb" needs to exist' in str(e.value)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        run(pgkeep, f"RESTORE DATABASE chinook FROM LATEST IN '{coll}' WITH into_db = 'x'")
    pg18.psql("DROP DATABASE IF EXISTS empty_target")
    pg18.psql("CREATE DATABASE empty_target")
    with pytest.raises(psycopg.Error) as e:
        run(pgkeep, f"RESTORE TABLE chinook.public.album FROM LATEST IN '{coll}' WITH into_db = 'empty_target'")
    assert "skip_missing_foreign_keys" in str(e.value)
    assert pg18.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", "empty_target").strip() == "0"
    run(pgkeep, f"RESTORE TABLE chinook.public.album FROM LATEST IN '{coll}' "
                "WITH into_db = 'empty_target', skip_missing_foreign_keys")
    assert row_hashes(pg18, "empty_target")["public.album"] == row_hashes(pg18, "chinook")["public.album"]
    fks = pg18.psql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'", "empty_target").strip()
    assert fks == "0"
    with pytest.raises(psycopg.Error) as e:
        run(pgkeep, f"RESTORE DATABASE chinook FROM '/2001/01/01-000000.00' IN '{coll}'")
    assert "does not contain a backup" in str(e.value)


def test_table_backup_and_restore_into_other_db(pgkeep, pg18, chinook):
    coll = collection("tables")
    run(pgkeep, f"BACKUP chinook.public.artist, chinook.album INTO '{coll}'")
    listed = {r[2] for r in run(pgkeep, f"SHOW BACKUP FROM LATEST IN '{coll}'") if r[3] == "table"}
    assert listed == {"artist", "album"}
    pg18.psql("DROP DATABASE IF EXISTS tables_target")
    pg18.psql("CREATE DATABASE tables_target")
    run(pgkeep, f"RESTORE chinook.artist, chinook.album FROM LATEST IN '{coll}' WITH into_db = 'tables_target'")
    got = row_hashes(pg18, "tables_target")
    want = row_hashes(pg18, "chinook")
    assert got == {k: want[k] for k in ("public.album", "public.artist")}
    with pytest.raises(psycopg.Error) as e:
        run(pgkeep, f"RESTORE DATABASE chinook FROM LATEST IN '{coll}' WITH new_db_name = 'nope'")
    assert "individual tables" in str(e.value)


def test_validation_ladder_and_corruption(pgkeep, pg18, chinook, workdir):
    coll = collection("validate")
    run(pgkeep, f"BACKUP DATABASE chinook INTO '{coll}'")
    run(pgkeep, f"RESTORE DATABASE chinook FROM LATEST IN '{coll}' WITH schema_only, grants, new_db_name = 'chinook_so'")
    assert pg18.psql("SELECT count(*) FROM artist", "chinook_so").strip() == "0"
    assert schema_dump(pg18, "chinook_so") == schema_dump(pg18, "chinook")
    pg18.psql("DROP DATABASE chinook_so")
    run(pgkeep, f"RESTORE DATABASE chinook FROM LATEST IN '{coll}' "
                "WITH schema_only, verify_backup_table_data, new_db_name = 'chinook_v'")
    pg18.psql("DROP DATABASE chinook_v")
    root = pgkeep.workdir / "data" / "external" / coll.split("/")[-1]
    data_files = sorted(root.rglob("*.pgkd"), key=lambda p: p.stat().st_size)
    victim = data_files[-1]
    original = victim.read_bytes()
    try:
        victim.write_bytes(original[:100] + bytes([original[100] ^ 0xFF]) + original[101:])
        for opts in ("schema_only, verify_backup_table_data, ", ""):
            with pytest.raises(psycopg.errors.DataCorrupted) as e:
                run(pgkeep, f"RESTORE DATABASE chinook FROM LATEST IN '{coll}' "
                            f"WITH {opts}new_db_name = 'chinook_bad'")
            assert victim.name in str(e.value)
            assert pg18.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '%chinook_bad%' "
                             "OR datname LIKE 'pgkeep_restore%'").strip() == "0"
        victim.unlink()
        with pytest.raises(psycopg.errors.DataCorrupted) as e:
            run(pgkeep, f"SHOW BACKUP FROM LATEST IN '{coll}' WITH check_files")
        assert "The following files are missing from the backup" in str(e.value) and victim.name in str(e.value)
        with pytest.raises(psycopg.errors.DataCorrupted):
            run(pgkeep, f"RESTORE DATABASE chinook FROM LATEST IN '{coll}' WITH new_db_name = 'chinook_bad'")
    finally:
        victim.write_bytes(original)


def test_consistent_under_concurrent_transfers(pgkeep, pg18):
    pg18.psql("DROP DATABASE IF EXISTS bank")
    pg18.psql("CREATE DATABASE bank")
    pg18.psql("".join(f"CREATE TABLE accounts_{i}(id int PRIMARY KEY, balance bigint NOT NULL); "
                      f"INSERT INTO accounts_{i} SELECT g, 1000 FROM generate_series(1, 20000) g;"
                      for i in range(4)), "bank")
    total = 4 * 20000 * 1000
    stop = threading.Event()
    transfers = [0]

    def writer():
        with psycopg.connect(pg18.dsn("bank"), autocommit=False) as conn:
            i = 0
            while not stop.is_set():
                a, b = i % 4, (i + 1) % 4
                conn.execute(f"UPDATE accounts_{a} SET balance = balance - 7 WHERE id = %s", (1 + i % 20000,))
                conn.execute(f"UPDATE accounts_{b} SET balance = balance + 7 WHERE id = %s", (1 + (i * 7) % 20000,))
                conn.commit()
                i += 1
                transfers[0] = i

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.3)
        coll = collection("bank")
        run(pgkeep, "SET CLUSTER SETTING pgkeep.backup.parallelism = 4")
        run(pgkeep, f"BACKUP DATABASE bank INTO '{coll}'")
    finally:
        run(pgkeep, "RESET CLUSTER SETTING pgkeep.backup.parallelism")
        stop.set()
        t.join()
    assert transfers[0] > 10
    run(pgkeep, f"RESTORE DATABASE bank FROM LATEST IN '{coll}' WITH new_db_name = 'bank_r'")
    restored = sum(int(pg18.psql(f"SELECT sum(balance) FROM accounts_{i}", "bank_r")) for i in range(4))
    assert restored == total


def test_as_of_system_time_and_refusals(pgkeep, chinook):
    notices = []
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute(f"BACKUP DATABASE chinook INTO '{collection('aost')}' AS OF SYSTEM TIME '-10s'")
        assert any("PostgreSQL cannot read the past" in n for n in notices)
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute(f"BACKUP DATABASE chinook INTO '{collection('x')}' AS OF SYSTEM TIME '10s'")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute(f"BACKUP INTO '{collection('cluster')}'")
        with pytest.raises(psycopg.errors.UndefinedFile, match="no full backup"):
            conn.execute(f"BACKUP DATABASE chinook INTO LATEST IN '{collection('inc')}'")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute(f"BACKUP DATABASE chinook INTO '{collection('x')}' WITH revision_history")
        conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.ActiveSqlTransaction):
            conn.execute(f"BACKUP DATABASE chinook INTO '{collection('x')}'")
        conn.execute("ROLLBACK")
        # placeholders bind the URI in the extended protocol
        uri = collection("bound")
        row = conn.execute("BACKUP DATABASE chinook INTO %s", (uri,)).fetchone()
        assert row[1] == "succeeded"
        assert len(conn.execute("SHOW BACKUPS IN %s", (uri,)).fetchall()) == 1
    with psycopg.connect(pgkeep.dsn(user="md5user", password="md5 secret"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"BACKUP DATABASE chinook INTO '{collection('x')}'")


@pytest.fixture(scope="module")
def big(pg18):
    """A database whose backup takes long enough to be cut off half-way."""
    pg18.psql("DROP DATABASE IF EXISTS big")
    pg18.psql("CREATE DATABASE big")
    pg18.psql("CREATE TABLE t AS SELECT g, md5(g::text) AS a, md5((g * 7)::text) AS b "
              "FROM generate_series(1, 1500000) g", "big")
    return "big"


def test_cancelled_backup_leaves_no_visible_backup(pgkeep, pg18, big):
    coll = collection("cancel")
    root = Path(_nodelocal_root(pgkeep)) / coll.split("nodelocal://self/")[1]
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        def cancel_soon():  # once data is flowing
            deadline = time.monotonic() + 30
            while not any("pgkd" in p.name for p in root.rglob("*")) and time.monotonic() < deadline:
                time.sleep(0.01)
            conn.cancel_safe()
        threading.Thread(target=cancel_soon).start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(f"BACKUP DATABASE big INTO '{coll}'")
        assert conn.execute(f"SHOW BACKUPS IN '{coll}'").fetchall() == []
        with pytest.raises(psycopg.Error):
            conn.execute(f"RESTORE DATABASE big FROM LATEST IN '{coll}' WITH new_db_name = 'big_r'")


def _nodelocal_root(pgkeep):
    return str(pgkeep.workdir / "data" / "external")


def test_killed_pgkeep_leaves_no_visible_backup(pgkeep, pg18, workdir, big):
    from tests.support.pgkeep import PgkeepProcess
    import signal
    victim = PgkeepProcess(workdir / "victim", pg18.dsn(),
                           args=["--nodelocal-root", _nodelocal_root(pgkeep)]).start()
    coll = collection("killed")
    errors = []

    def backup():
        try:
            run(victim, f"BACKUP DATABASE big INTO '{coll}'")
        except psycopg.Error as e:
            errors.append(e)

    t = threading.Thread(target=backup)
    t.start()
    root = Path(_nodelocal_root(pgkeep)) / coll.split("nodelocal://self/")[1]
    deadline = time.monotonic() + 30
    while not any("pgkd" in p.name for p in root.rglob("*")):  # killed once data is flowing
        assert time.monotonic() < deadline, "the backup never started writing data"
        time.sleep(0.01)
    victim.signal(signal.SIGKILL)
    t.join(30)
    victim.stop()
    assert errors, "the backup should have been cut off"
    assert run(pgkeep, f"SHOW BACKUPS IN '{coll}'") == []
    with pytest.raises(psycopg.Error):
        run(pgkeep, f"SHOW BACKUP FROM LATEST IN '{coll}'")


def test_backup_on_postgresql_15_restores_on_18(pgkeep, pg15, pg18, workdir):
    from tests.support.pgkeep import PgkeepProcess
    load_chinook(pg15, "chinook15")
    old = PgkeepProcess(workdir / "pgkeep15", pg15.dsn(),
                        args=["--nodelocal-root", _nodelocal_root(pgkeep)]).start()
    try:
        coll = collection("v15")
        run(old, f"BACKUP DATABASE chinook15 INTO '{coll}'")
    finally:
        old.stop()
    run(pgkeep, f"RESTORE DATABASE chinook15 FROM LATEST IN '{coll}' WITH grants")
    assert row_hashes(pg18, "chinook15") == row_hashes(pg15, "chinook15")
    pg_dump18 = pg18.bin("pg_dump")
    assert schema_dump(pg18, "chinook15", pg_dump18) == schema_dump(pg15, "chinook15", pg_dump18)


def test_chunks_and_file_size_rollover(pgkeep, pg18):
    """A table larger than pgkeep.backup.chunk_size is read as several TID-range chunks by
    several connections, and each chunk's output rolls over at bulkio.backup.file_size."""
    pg18.psql("DROP DATABASE IF EXISTS chunky")
    pg18.psql("CREATE DATABASE chunky")
    pg18.psql("CREATE TABLE t(id int PRIMARY KEY, a text, b text); "
              "INSERT INTO t SELECT g, md5(g::text) || md5((-g)::text), md5(random()::text) "
              "FROM generate_series(1, 200000) g; "
              "DELETE FROM t WHERE id % 7 = 0", "chunky")  # holes in the heap too
    coll = collection("chunky")
    try:
        run(pgkeep, "SET CLUSTER SETTING pgkeep.backup.chunk_size = '6 MiB'")
        run(pgkeep, "SET CLUSTER SETTING bulkio.backup.file_size = '1 MiB'")
        run(pgkeep, "SET CLUSTER SETTING pgkeep.backup.parallelism = 4")
        run(pgkeep, f"BACKUP DATABASE chunky INTO '{coll}'")
    finally:
        for name in ("pgkeep.backup.chunk_size", "bulkio.backup.file_size", "pgkeep.backup.parallelism"):
            run(pgkeep, f"RESET CLUSTER SETTING {name}")
    files = run(pgkeep, f"SHOW BACKUP FILES FROM LATEST IN '{coll}'")
    chunks = {f[2] for f in files}
    assert len(chunks) >= 3, chunks          # ~20 MiB of heap in 6 MiB chunks
    assert len(files) > len(chunks)          # some chunk rolled over into a second part
    assert all(f[9] <= (1 << 20) + (4 << 20) for f in files)  # a part ends after the batch that crossed 1 MiB
    run(pgkeep, f"RESTORE DATABASE chunky FROM LATEST IN '{coll}' WITH new_db_name = 'chunky_r'")
    assert row_hashes(pg18, "chunky_r") == row_hashes(pg18, "chunky")


def test_show_backup_with_privileges(pgkeep, pg18, chinook_backup):
    coll, _ = chinook_backup
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        cur = conn.execute(f"SHOW BACKUP FROM LATEST IN '{coll}' WITH privileges")
        cols = [d.name for d in cur.description]
        rows = cur.fetchall()
    assert cols[-2:] == ["privileges", "owner"]
    artist = next(r for r in rows if r[2] == "artist")
    assert artist[-1] == "postgres"


def test_truncated_file_is_detected(pgkeep, pg18, chinook):
    coll = collection("trunc")
    run(pgkeep, f"BACKUP DATABASE chinook INTO '{coll}'")
    root = pgkeep.workdir / "data" / "external" / coll.split("/")[-1]
    victim = max(root.rglob("*.pgkd"), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(psycopg.errors.DataCorrupted) as e:
        run(pgkeep, f"RESTORE DATABASE chinook FROM LATEST IN '{coll}' "
                    "WITH schema_only, verify_backup_table_data, new_db_name = 'chinook_t'")
    assert victim.name in str(e.value)
    assert "chinook_t" not in pg18.psql("SELECT datname FROM pg_database").split()


def test_show_backup_of_pgkeep_disk_needs_admin(pgkeep, chinook_backup):
    coll, _ = chinook_backup
    with psycopg.connect(pgkeep.dsn(user="md5user", password="md5 secret"), autocommit=True) as conn:
        for sql in (f"SHOW BACKUPS IN '{coll}'", f"SHOW BACKUP SCHEMAS FROM LATEST IN '{coll}'"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)


def test_copy_format_per_table_and_text_escapes_round_trip(pgkeep, pg18):
    """Tables of only integers, bool and strings are copied as text (smaller once compressed),
    the others as binary; both kinds come back byte for byte, awkward strings included."""
    from engine.format.envelope import open_bytes
    from engine.format.manifest import Manifest
    pg18.psql("DROP DATABASE IF EXISTS formats")
    pg18.psql("CREATE DATABASE formats")
    pg18.psql(r"""
        CREATE TABLE plain(id int PRIMARY KEY, big bigint, ok bool, c char(12), v varchar(20), t text, n name);
        INSERT INTO plain VALUES
          (1, 9223372036854775807, true, 'pad', 'tab	in', E'line\nbreak\\back\\slash\r', 'nm'),
          (2, -1, false, '', '', '\N', ''),
          (3, NULL, NULL, NULL, NULL, NULL, NULL),
          (4, 0, true, 'ünï', 'çødé', E'\u2603 snow \t\t end', 'x');
        INSERT INTO plain SELECT g, g * 3, g % 2 = 0, 'p' || g, 'v' || g, repeat('x', g % 50), 'n'
          FROM generate_series(5, 20000) g;
        CREATE TABLE typed(id int PRIMARY KEY, at timestamptz, price numeric(10,2));
        INSERT INTO typed SELECT g, '2026-01-01'::timestamptz + g * interval '1 minute', g / 7.0
          FROM generate_series(1, 2000) g;""", "formats")
    coll = collection("formats")
    run(pgkeep, f"BACKUP DATABASE formats INTO '{coll}'")
    root = Path(_nodelocal_root(pgkeep)) / coll.split("nodelocal://self/")[1]
    [mpath] = root.glob("*/*/*/BACKUP_MANIFEST")
    manifest = Manifest.from_bytes(open_bytes("BACKUP_MANIFEST", mpath.read_bytes()))
    formats = {t.name: t.format for d in manifest.databases for t in d.tables}
    assert formats == {"plain": "text", "typed": "binary"}
    run(pgkeep, f"RESTORE DATABASE formats FROM LATEST IN '{coll}' WITH new_db_name = 'formats_r'")
    assert row_hashes(pg18, "formats_r") == row_hashes(pg18, "formats")
    assert pg18.psql("SELECT t FROM plain WHERE id = 2", "formats_r").strip() == r"\N"


def test_objects_pgkeep_cannot_back_up_are_named_in_notices(pgkeep, pg18):
    """No silent loss: what the capture leaves out (a conversion; a user mapping's password,
    which no backup file ever holds) is named in a NOTICE by BACKUP and again by RESTORE;
    extension members (citext's) are not; the rest of the database round-trips: foreign-data
    objects, text search configurations and operators included."""
    pg18.psql("DROP DATABASE IF EXISTS leftout")
    pg18.psql("CREATE DATABASE leftout")
    pg18.psql("""
        CREATE EXTENSION citext;
        CREATE TABLE t(id int PRIMARY KEY, body citext);
        INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g;
        CREATE FOREIGN DATA WRAPPER dummy_fdw;
        CREATE SERVER remote FOREIGN DATA WRAPPER dummy_fdw OPTIONS (host 'db.example');
        CREATE USER MAPPING FOR postgres SERVER remote OPTIONS (user 'bob', password 'hunter2-s3cret');
        CREATE FOREIGN TABLE ft(a int) SERVER remote OPTIONS (table_name 'far');
        CREATE CONVERSION myconv FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8;
        CREATE TEXT SEARCH CONFIGURATION public.my_english (COPY = pg_catalog.english);
        CREATE FUNCTION int_eq_text(int, text) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT $1::text = $2';
        CREATE OPERATOR === (LEFTARG = int, RIGHTARG = text, FUNCTION = int_eq_text);""", "leftout")
    coll = collection("leftout")
    expected = ["leftout: conversion public.myconv",
                "leftout: user mapping option password for postgres on server remote"]
    notices: list[str] = []
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute(f"BACKUP DATABASE leftout INTO '{coll}'")
        [backup_notice] = [n for n in notices if "leaves out" in n]
        assert f"leaves out {len(expected)} objects ({', '.join(expected)})" in backup_notice
        assert "citext" not in backup_notice
        notices.clear()
        conn.execute(f"BACKUP TABLE leftout.public.t INTO '{collection('leftout-t')}'")
        assert not [n for n in notices if "leaves out" in n]     # not a table backup's business
        conn.execute(f"RESTORE DATABASE leftout FROM LATEST IN '{coll}' WITH new_db_name = 'leftout_r'")
        [restore_notice] = [n for n in notices if "does not hold" in n]
        assert ", ".join(expected) in restore_notice
    assert row_hashes(pg18, "leftout_r") == row_hashes(pg18, "leftout")
    assert pg18.psql("SELECT count(*) FROM pg_ts_config WHERE cfgname = 'my_english'", "leftout_r").strip() == "1"
    assert pg18.psql("SELECT 1 === '1'", "leftout_r").strip() == "t"
    assert pg18.psql("SELECT srvoptions FROM pg_foreign_server", "leftout_r").strip() == "{host=db.example}"
    assert pg18.psql("SELECT ftoptions FROM pg_foreign_table", "leftout_r").strip() == "{table_name=far}"
    assert pg18.psql("SELECT umoptions FROM pg_user_mappings", "leftout_r").strip() == "{user=bob}"
    assert pg18.psql("SELECT count(*) FROM pg_conversion WHERE conname = 'myconv'", "leftout_r").strip() == "0"
    # the password is in no file of the backup, compressed or not
    from engine.format.envelope import open_bytes
    root = Path(_nodelocal_root(pgkeep)) / coll.split("nodelocal://self/")[1]
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    for f in files:
        raw = f.read_bytes()
        plain = open_bytes(f.name, raw) if raw[:4] == b"PGKF" else raw
        assert b"s3cret" not in raw and b"s3cret" not in plain, f


def test_large_objects_round_trip(pgkeep, pg18):
    """Large objects come back with their OIDs, bytes (many pages, empty, sparse), owners,
    privileges and comments; their pages travel as the rows of pg_largeobject."""
    pg18.psql("DROP DATABASE IF EXISTS lobs")
    pg18.psql("CREATE DATABASE lobs")
    pg18.psql("""
        CREATE TABLE docs(id int PRIMARY KEY, blob oid);
        SELECT lo_from_bytea(50001, decode(repeat(md5('x'), 4000), 'hex'));   -- 64 KB: 32 pages
        SELECT lo_create(50002);                                                -- empty
        SELECT lo_put(lo_create(50003), 100000, '\\x0102'::bytea);            -- sparse
        INSERT INTO docs SELECT g, lo_from_bytea(0, convert_to('doc ' || g, 'UTF8'))
          FROM generate_series(1, 50) g;
        ALTER LARGE OBJECT 50001 OWNER TO md5user;
        GRANT SELECT ON LARGE OBJECT 50001 TO scramuser;
        GRANT SELECT, UPDATE ON LARGE OBJECT 50002 TO PUBLIC;
        COMMENT ON LARGE OBJECT 50003 IS 'sparse one';
        CREATE FUNCTION no_ddl() RETURNS event_trigger LANGUAGE plpgsql
          AS $$ BEGIN RAISE EXCEPTION 'no DDL here'; END $$;
        CREATE EVENT TRIGGER no_ddl ON ddl_command_start EXECUTE FUNCTION no_ddl();""", "lobs")
    facts = """SELECT m.oid, pg_get_userbyid(m.lomowner), m.lomacl::text, obj_description(m.oid, 'pg_largeobject'),
                      md5(lo_get(m.oid)), length(lo_get(m.oid))
                 FROM pg_largeobject_metadata m ORDER BY m.oid"""
    coll = collection("lobs")
    notices: list[str] = []
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute(f"BACKUP DATABASE lobs INTO '{coll}'")
        conn.execute(f"RESTORE DATABASE lobs FROM LATEST IN '{coll}' WITH grants, new_db_name = 'lobs_r'")
        files = conn.execute(f"SHOW BACKUP FILES FROM LATEST IN '{coll}'").fetchall()
        [lo_row] = [r for r in conn.execute(f"SHOW BACKUP FROM LATEST IN '{coll}'").fetchall()
                    if r[3] == "large objects"]
        assert lo_row[1:3] == ("pg_catalog", "pg_largeobject") and lo_row[8] == 50 + 32 + 1   # pages
        conn.execute(f"RESTORE DATABASE lobs FROM LATEST IN '{coll}' WITH schema_only, "
                     "verify_backup_table_data, new_db_name = 'lobs_v'")   # decodes the pages too
    assert not [n for n in notices if "leaves out" in n or "does not hold" in n]
    assert pg18.psql("SELECT count(*), sum(length(lo_get(oid))) FROM pg_largeobject_metadata", "lobs_v").strip() == "53|0"
    assert any("pg_catalog.pg_largeobject" in str(f) for f in files)
    original = pg18.psql(facts, "lobs")
    assert len(original.splitlines()) == 53 and "md5user" in original and "sparse one" in original
    assert pg18.psql(facts, "lobs_r") == original
    assert pg18.psql("SELECT length(lo_get(50003)), lo_get(50003, 100000, 2)", "lobs_r").strip() == "100002|\\x0102"
    assert row_hashes(pg18, "lobs_r") == row_hashes(pg18, "lobs")
    # a table backup does not take the database's large objects
    coll_t = collection("lobs-t")
    run(pgkeep, f"BACKUP TABLE lobs.public.docs INTO '{coll_t}'")
    files = run(pgkeep, f"SHOW BACKUP FILES FROM LATEST IN '{coll_t}'")
    assert files and not any("pg_largeobject" in str(f) for f in files)
