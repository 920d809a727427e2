"""Issue 12, point 12: RESTORE ran DDL text from the backup as the upstream superuser through the
simple query protocol, so anyone who can write the collection (and recompute its checksums, which
authenticate nothing) could stack `; COPY ... TO PROGRAM ...` onto an index definition and run a
shell command on the database host. RESTORE and SHOW BACKUP ... VALIDATE must refuse any item that
is not exactly one statement of its object's kind (XX001, naming the object), and never run it."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest

from engine.format.envelope import open_bytes, seal
from engine.format.layout import checksum_path, manifest_path
from engine.format.manifest import Manifest

SOURCE = "inj_src"


def _run(pgkeep, sql):
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


def _tamper(root: Path, subdir: str, change) -> None:
    """Rewrite the backup's schema document with `change(schema_json)`, then re-seal it and
    recompute every checksum with pgkeep's own format code, as an attacker with write access to
    the collection would: the result passes every integrity check."""
    mpath, cpath = root / manifest_path(subdir), root / checksum_path(subdir)
    manifest = Manifest.from_bytes(open_bytes("m", mpath.read_bytes(), cpath.read_text().strip()))
    db = manifest.databases[0]
    spath = root / db.schema_file.path
    doc = json.loads(open_bytes("schema", spath.read_bytes(), db.schema_file.sha256))
    change(doc)
    stored, sha = seal(json.dumps(doc).encode())
    spath.write_bytes(stored)
    db.schema_file = type(db.schema_file)(db.schema_file.path, len(stored), sha,
                                          db.schema_file.logical_bytes)
    stored, sha = seal(manifest.to_bytes())
    mpath.write_bytes(stored)
    cpath.write_text(sha)


def _index(doc) -> dict:
    return next(o for o in doc["objects"] if o["kind"] == "index" and o["name"] == "t_v_idx")


def _stack(marker: Path):
    def change(doc):
        _index(doc)["ddl"][0] += f"; COPY (SELECT 1) TO PROGRAM 'touch {marker}'"
    return change


def _swap(marker: Path):
    def change(doc):
        _index(doc)["ddl"][0] = f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'"
    return change


def _stack_in_column_type(marker: Path):
    def change(doc):
        table = next(o for o in doc["objects"] if o["kind"] == "table" and o["name"] == "t")
        col = next(c for c in table["details"]["columns"] if c["name"] == "v")
        col["type"] += f"); COPY (SELECT 1) TO PROGRAM 'touch {marker}'; CREATE TABLE x (y int"
    return change


@pytest.fixture(scope="module")
def source(pg18):
    pg18.psql(f"DROP DATABASE IF EXISTS {SOURCE}")
    pg18.psql(f"CREATE DATABASE {SOURCE}")
    pg18.psql("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE INDEX t_v_idx ON t (v); "
              "INSERT INTO t SELECT g, g::text FROM generate_series(1, 100) g", database=SOURCE)
    return SOURCE


@pytest.mark.parametrize("attack", [_stack, _swap, _stack_in_column_type],
                         ids=["stacked_copy", "index_replaced_by_copy", "stacked_in_column_type"])
def test_tampered_ddl_runs_copy_to_program_on_restore(pgkeep, pg18, source, tmp_path, attack):
    name = f"inj{uuid.uuid4().hex[:8]}"
    coll = f"nodelocal://self/{name}"
    _run(pgkeep, f"BACKUP DATABASE {source} INTO '{coll}'")
    subdir = _run(pgkeep, f"SHOW BACKUPS IN '{coll}'")[0][0]
    marker = tmp_path / "owned"
    _tamper(pgkeep.workdir / "data" / "external" / name, subdir, attack(marker))

    with pytest.raises(psycopg.Error) as validate:
        _run(pgkeep, f"SHOW BACKUP VALIDATE FROM LATEST IN '{coll}'")
    assert validate.value.sqlstate == "XX001", validate.value
    assert "t_v_idx" in str(validate.value) or "table public.t" in str(validate.value)

    with pytest.raises(psycopg.Error) as restore:
        _run(pgkeep, f"RESTORE DATABASE {source} FROM LATEST IN '{coll}' WITH new_db_name = '{name}'")
    assert restore.value.sqlstate == "XX001", restore.value
    assert "t_v_idx" in str(restore.value) or "table public.t" in str(restore.value)
    assert not marker.exists(), "the stacked COPY ... TO PROGRAM ran on the database host"
    leftovers = pg18.psql("SELECT datname FROM pg_database WHERE datname LIKE 'pgkeep\\_restore\\_%' "
                          f"OR datname = '{name}'")
    assert leftovers.strip() == ""
    # the connection stays usable, and an untouched backup still restores
    assert _run(pgkeep, "SELECT 1") == [(1,)]
