"""Issue 12, point 6: `RESTORE DATABASE a, b` with `b` existing left `a` restored; a failure while
restoring `b` left `a` behind too. Every target is checked before any work, and the restore is all
or nothing: both databases are built under temporary names and renamed at the end, a failed rename
renames the earlier ones back. Fault point: restore.before_rename (as a pause)."""
from __future__ import annotations

import uuid

import psycopg
import pytest

from engine.format.envelope import open_bytes
from engine.format.layout import checksum_path, manifest_path
from engine.format.manifest import Manifest

from .jobtools import job_row, query, wait_job

A, B = "aon_a", "aon_b"


def databases(pg18) -> set[str]:
    return set(pg18.psql("SELECT datname FROM pg_database").split())


def restored_or_temporary(pg18) -> set[str]:
    return {d for d in databases(pg18) if d in (A, B) or d.startswith("pgkeep_restore_")}


@pytest.fixture(scope="module")
def backup(pgkeep, pg18):
    for db in (A, B):
        pg18.psql(f"DROP DATABASE IF EXISTS {db}")
        pg18.psql(f"CREATE DATABASE {db}")
        pg18.psql("CREATE TABLE t (id int PRIMARY KEY, v text); "
                  "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 3000) g", db)
    name = f"aon{uuid.uuid4().hex[:8]}"
    query(pgkeep, f"BACKUP DATABASE {A}, {B} INTO 'nodelocal://self/{name}'")
    for db in (A, B):
        pg18.psql(f"DROP DATABASE {db}")
    return f"nodelocal://self/{name}", pgkeep.workdir / "data" / "external" / name


@pytest.fixture(autouse=True)
def clean(pg18):
    yield
    for db in restored_or_temporary(pg18):
        pg18.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_second_database_existing_leaves_first_restored(pgkeep, pg18, backup):
    coll, _ = backup
    pg18.psql(f"CREATE DATABASE {B}")
    with pytest.raises(psycopg.Error) as e:
        query(pgkeep, f"RESTORE DATABASE {A}, {B} FROM LATEST IN '{coll}'")
    assert e.value.sqlstate == "42P04" and B in str(e.value)
    assert restored_or_temporary(pg18) == {B}
    assert pg18.psql("SELECT count(*) FROM pg_class WHERE relname = 't'", B).strip() == "0"


def test_second_database_missing_from_backup_leaves_first_restored(pgkeep, pg18, backup):
    coll, _ = backup
    with pytest.raises(psycopg.Error) as e:
        query(pgkeep, f"RESTORE DATABASE {A}, nosuchdb FROM LATEST IN '{coll}'")
    assert e.value.sqlstate == "42P01" and "nosuchdb" in str(e.value)
    assert restored_or_temporary(pg18) == set()


def test_table_restore_second_target_existing_leaves_first_restored(pgkeep, pg18, backup):
    coll, _ = backup
    for db in (A, B):
        pg18.psql(f"CREATE DATABASE {db}")
    pg18.psql("CREATE TABLE t (x int)", B)
    with pytest.raises(psycopg.Error) as e:
        query(pgkeep, f"RESTORE TABLE {A}.public.t, {B}.public.t FROM LATEST IN '{coll}'")
    assert e.value.sqlstate == "42P07", e.value
    assert pg18.psql("SELECT count(*) FROM pg_class WHERE relname = 't'", A).strip() == "0"


def test_corrupt_data_of_second_database_leaves_first_restored(pgkeep, pg18, backup, tmp_path):
    coll, root = backup
    subdir = query(pgkeep, f"SHOW BACKUPS IN '{coll}'")[0][0]
    manifest = Manifest.from_bytes(open_bytes(
        "m", (root / manifest_path(subdir)).read_bytes(),
        (root / checksum_path(subdir)).read_text().strip()))
    entry = next(d for d in manifest.databases if d.name == B)
    victim = root / entry.tables[0].chunks[0].files[0].path
    original = victim.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    victim.write_bytes(bytes(damaged))
    try:
        with pytest.raises(psycopg.Error) as e:
            query(pgkeep, f"RESTORE DATABASE {A}, {B} FROM LATEST IN '{coll}'")
        assert e.value.sqlstate == "XX001", e.value
        assert restored_or_temporary(pg18) == set()
    finally:
        victim.write_bytes(original)


def test_failed_rename_of_second_database_leaves_first_renamed(pgkeep, pg18, backup):
    """Paused with both databases complete under their temporary names; `b` appears meanwhile;
    on RESUME the rename of `b` fails, and `a`, renamed just before, is renamed back and dropped."""
    coll, _ = backup
    query(pgkeep, "SET CLUSTER SETTING jobs.debug.pausepoints = 'restore.before_rename'")
    try:
        job_id = query(pgkeep, f"RESTORE DATABASE {A}, {B} FROM LATEST IN '{coll}' WITH detached")[0][0]
        wait_job(pgkeep, job_id, ("paused", "failed", "succeeded"))
    finally:
        query(pgkeep, "RESET CLUSTER SETTING jobs.debug.pausepoints")
    assert job_row(pgkeep, job_id)["status"] == "paused"
    temporary = {d for d in restored_or_temporary(pg18) if d.startswith("pgkeep_restore_")}
    assert len(temporary) == 2
    pg18.psql(f"CREATE DATABASE {B}")
    query(pgkeep, f"RESUME JOB {job_id}")
    row = wait_job(pgkeep, job_id, ("failed", "succeeded"))
    assert row["status"] == "failed" and B in row["error"], row
    assert restored_or_temporary(pg18) == {B}
    assert pg18.psql("SELECT count(*) FROM pg_class WHERE relname = 't'", B).strip() == "0"
