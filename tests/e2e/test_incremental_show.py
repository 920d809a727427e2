"""SHOW BACKUP and validation over a chain of incremental layers, and what tampering with any
layer does (issue 14 point 4, docs/FORMAT.md sections 7.4 and 7.5): one block of rows per
layer; FILES, check_files, verify_backup_table_data and VALIDATE cover every layer; a layer
without its manifest does not exist; a missing or altered file of any layer a restore needs, a
deleted earlier layer and an altered earlier manifest are XX001 naming them, never a silent
wrong restore."""
from __future__ import annotations

import hashlib
import shutil
import uuid

import psycopg
import pytest

from engine.format.envelope import open_bytes, seal
from tests.support.datasets import row_hashes

from .helpers import psql

DB = "incshow"
ROWS = 4000


def run(pgkeep, sql, db="postgres"):
    with psycopg.connect(pgkeep.dsn(db), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


def fails(pgkeep, sql, error=psycopg.errors.DataCorrupted) -> psycopg.Error:
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        with pytest.raises(error) as info:
            conn.execute(sql)
        assert conn.execute("SELECT 1").fetchone() == (1,)     # the session goes on
    return info.value


@pytest.fixture(scope="module")
def source(pgkeep, pg18):
    run(pgkeep, "SET CLUSTER SETTING pgkeep.backup.chunk_size = '64KiB'")
    pg18.psql(f"DROP DATABASE IF EXISTS {DB}")
    pg18.psql(f"CREATE DATABASE {DB}")
    pg18.psql(f"CREATE TABLE a (id int PRIMARY KEY, pad text);"
              f"INSERT INTO a SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, {ROWS}) g;"
              "CREATE TABLE b (id int); INSERT INTO b SELECT generate_series(1, 100)", DB)
    yield DB
    run(pgkeep, "RESET CLUSTER SETTING pgkeep.backup.chunk_size")


class Chain:
    """A full and two layers of `source`: layer 1 rewrote the chunks of a that its updates and
    inserts touched, layer 2 changed nothing. Each layer's row hashes are kept (the source
    moves on)."""

    def __init__(self, pgkeep, pg18, name: str) -> None:
        self.pgkeep, self.pg18 = pgkeep, pg18
        self.coll = f"nodelocal://self/incshow-{name}-{uuid.uuid4().hex[:8]}"
        self.root = pgkeep.workdir / "data" / "external" / self.coll.split("/")[-1]
        self.states = []
        run(pgkeep, f"BACKUP DATABASE {DB} INTO '{self.coll}'")
        self.states.append(row_hashes(pg18, DB))
        pg18.psql("UPDATE a SET pad = 'changed' WHERE id <= 5;"
                  f"INSERT INTO a SELECT g, 'new' FROM generate_series({ROWS + 1}, {ROWS + 50}) g", DB)
        run(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{self.coll}'")
        self.states.append(row_hashes(pg18, DB))
        run(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{self.coll}'")
        self.states.append(self.states[-1])
        # the source goes back, for the next chain
        pg18.psql(f"UPDATE a SET pad = repeat(md5(id::text), 3) WHERE id <= 5; DELETE FROM a WHERE id > {ROWS}", DB)
        self.files = run(pgkeep, f"SELECT path, backup_type, start_pretty FROM "
                                 f"[SHOW BACKUP FILES FROM LATEST IN '{self.coll}']")
        self.layers = [p for (p,) in run(pgkeep, f"SELECT DISTINCT end_time FROM "
                                                 f"[SHOW BACKUP FROM LATEST IN '{self.coll}'] ORDER BY 1")]
        inc = sorted(p.parent for p in self.root.glob("incrementals/**/BACKUP_MANIFEST"))
        full = [p.parent for p in self.root.glob("*/*/*/BACKUP_MANIFEST")]
        self.dirs = full + inc          # the layers' directories, oldest first

    def file_of(self, layer: str, table: str, rewritten: bool = True) -> str:
        """A data file `layer` ('full' or 'incremental') wrote for a chunk of `table` that layer 1
        rewrote, or (rewritten=False) did not rewrite: the tip names the full's file for it."""
        spans = {span for _, kind, span in self.files if kind == "incremental"}
        return next(p for p, kind, span in self.files if kind == layer
                    and span.startswith(f"/{DB}/public.{table}/") and (span in spans) == rewritten)

    def restore(self, target: str, options: str = "", at=None) -> None:
        aost = f" AS OF SYSTEM TIME '{at.isoformat()}'" if at is not None else ""
        self.pg18.psql(f"DROP DATABASE IF EXISTS {target}")
        run(self.pgkeep, f"RESTORE DATABASE {DB} FROM LATEST IN '{self.coll}'{aost} "
                         f"WITH new_db_name = '{target}'{options}")

    def restore_sql(self, target: str = "incshow_never", options: str = "") -> str:
        return f"RESTORE DATABASE {DB} FROM LATEST IN '{self.coll}' WITH new_db_name = '{target}'{options}"


def test_show_backup_lists_one_block_per_layer(pgkeep, pg18, source):
    chain = Chain(pgkeep, pg18, "blocks")
    rows = run(pgkeep, f"SELECT object_name, object_type, backup_type, start_time, end_time, size_bytes, rows "
                       f"FROM [SHOW BACKUP FROM LATEST IN '{chain.coll}'] ORDER BY end_time, object_name")
    blocks = {}
    for name, kind, btype, start, end, size, nrows in rows:
        blocks.setdefault(end, {"type": btype, "start": start, "objects": {}})["objects"][name] = (kind, size, nrows)
    ends = sorted(blocks)
    assert [blocks[e]["type"] for e in ends] == ["full", "incremental", "incremental"]
    assert blocks[ends[0]]["start"] is None
    assert [blocks[e]["start"] for e in ends[1:]] == ends[:-1]    # start_time = the parent's end_time
    full, inc1, inc2 = (blocks[e]["objects"] for e in ends)
    assert set(full) == set(inc1) == set(inc2) == {DB, "public", "a", "b"}
    assert full["a"][2] == ROWS and full["b"][2] == 100 and full["a"][1] > 0
    assert 50 < inc1["a"][2] < ROWS / 2 and 0 < inc1["a"][1] < full["a"][1] / 2   # its rewritten chunks
    assert inc1["b"][1:] == (0, 0)                                  # a table it did not rewrite
    assert inc2["a"][1:] == inc2["b"][1:] == (0, 0)
    # psql (simple protocol) sees the same blocks
    out = psql(pgkeep.dsn(), "-A", "-t", "-F", "|", "-c",
               f"SELECT backup_type, count(*) FROM [SHOW BACKUP FROM LATEST IN '{chain.coll}'] "
               "GROUP BY backup_type ORDER BY 1").stdout.split()
    assert out == ["full|4", "incremental|8"]
    # FILES: each layer its own files; the unchanged layer none
    kinds = [k for _, k, _ in chain.files]
    assert kinds.count("incremental") >= 2 and kinds.count("full") >= 2
    for path, kind, _ in chain.files:
        assert path.startswith("incrementals/") == (kind == "incremental"), path
    # check_files: every layer's own files, all present
    checked = run(pgkeep, f"SELECT end_time, object_name, file_bytes FROM "
                          f"[SHOW BACKUP FROM LATEST IN '{chain.coll}' WITH check_files] "
                          "WHERE object_type = 'table' ORDER BY 1, 2")
    on_disk = {p: (chain.root / p).stat().st_size for p, _, _ in chain.files}
    assert sum(fb for _, _, fb in checked) == sum(on_disk.values())
    assert [fb > 0 for _, _, fb in checked] == [True, True, True, False, False, False]
    assert run(pgkeep, f"SHOW BACKUP VALIDATE FROM LATEST IN '{chain.coll}'") == [("No problems found!",)]
    # as_json: one manifest per layer, as CockroachDB's (full first)
    manifests = [m for (m,) in run(pgkeep, f"SHOW BACKUP FROM LATEST IN '{chain.coll}' WITH as_json")]
    assert [m["backup_type"] for m in manifests] == ["full", "incremental", "incremental"]
    assert [m["id"] for m in manifests[2]["chain"]] == [m["id"] for m in manifests[:2]]


def test_every_layer_restores_and_verifies(pgkeep, pg18, source):
    chain = Chain(pgkeep, pg18, "verify")
    for i, end in enumerate(chain.layers):
        chain.restore(f"incshow_l{i}", at=end)
        assert row_hashes(pg18, f"incshow_l{i}") == chain.states[i], f"layer {i}"
        pg18.psql(f"DROP DATABASE incshow_l{i}")
    chain.restore("incshow_s", ", schema_only, verify_backup_table_data")
    assert pg18.psql("SELECT count(*) FROM a", "incshow_s").strip() == "0"
    pg18.psql("DROP DATABASE incshow_s")


def test_layer_without_manifest_does_not_exist(pgkeep, pg18, source):
    chain = Chain(pgkeep, pg18, "nomanifest")
    (chain.dirs[-1] / "BACKUP_MANIFEST").unlink()
    ends = {e for (e,) in run(pgkeep, f"SELECT DISTINCT end_time FROM [SHOW BACKUP FROM LATEST IN '{chain.coll}']")}
    assert ends == set(chain.layers[:2])
    chain.restore("incshow_nm")
    assert row_hashes(pg18, "incshow_nm") == chain.states[1]
    pg18.psql("DROP DATABASE incshow_nm")
    # the next incremental extends the layer before it
    run(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{chain.coll}'")
    starts = run(pgkeep, f"SELECT DISTINCT start_time FROM [SHOW BACKUP FROM LATEST IN '{chain.coll}'] "
                         "WHERE backup_type = 'incremental' ORDER BY 1")
    assert [s for (s,) in starts] == chain.layers[:2]


def damage(f, how: str) -> bytes:
    """Remove or alter file `f`; returns its content, to put back."""
    data = f.read_bytes()
    if how == "missing":
        f.unlink()
    else:
        f.write_bytes(data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0x55]) + data[len(data) // 2 + 1:])
    return data


def test_damaged_file_of_any_needed_layer_is_xx001_naming_it(pgkeep, pg18, source):
    chain = Chain(pgkeep, pg18, "damaged")
    needed = {"full b": chain.file_of("full", "b", rewritten=False),   # kept by both layers
              "full a": chain.file_of("full", "a", rewritten=False),   # a chunk no layer rewrote
              "layer a": chain.file_of("incremental", "a")}            # written by layer 1
    for (what, path), how in [(c, h) for c in needed.items() for h in ("missing", "altered")]:
        f = chain.root / path
        data = damage(f, how)
        for options in ("", ", schema_only, verify_backup_table_data"):
            e = fails(pgkeep, chain.restore_sql(options=options))
            assert path in str(e), (what, how, options, str(e))
        problems = run(pgkeep, f"SHOW BACKUP VALIDATE FROM LATEST IN '{chain.coll}'")[0][0]
        assert path in problems, (what, how, problems)
        if how == "missing":
            e = fails(pgkeep, f"SHOW BACKUP FROM LATEST IN '{chain.coll}' WITH check_files")
            assert "missing from the backup" in str(e) and path in str(e)
        f.write_bytes(data)
    assert "incshow_never" not in pg18.psql("SELECT datname FROM pg_database")
    # a file of the full that layer 1 rewrote: the tip does not need it, the full does
    superseded = chain.root / chain.file_of("full", "a")
    damage(superseded, "altered")
    chain.restore("incshow_tip")
    assert row_hashes(pg18, "incshow_tip") == chain.states[-1]
    pg18.psql("DROP DATABASE incshow_tip")
    e = fails(pgkeep, f"RESTORE DATABASE {DB} FROM LATEST IN '{chain.coll}' AS OF SYSTEM TIME "
                      f"'{chain.layers[0].isoformat()}' WITH new_db_name = 'incshow_never'")
    assert chain.file_of("full", "a") in str(e)
    problems = run(pgkeep, f"SHOW BACKUP VALIDATE FROM LATEST IN '{chain.coll}'")[0][0]
    assert chain.file_of("full", "a") in problems


def test_deleted_earlier_layer_is_xx001_naming_it(pgkeep, pg18, source):
    chain = Chain(pgkeep, pg18, "deleted")
    middle = chain.dirs[1]
    name = str(middle.relative_to(chain.root))
    shutil.rmtree(middle)
    e = fails(pgkeep, chain.restore_sql())
    assert name in str(e)
    e = fails(pgkeep, f"SHOW BACKUP FROM LATEST IN '{chain.coll}'")
    assert name in str(e)
    r = psql(pgkeep.dsn(), "-v", "VERBOSITY=verbose", "-c", chain.restore_sql(), check=False)
    assert r.returncode != 0 and "XX001" in r.stderr and name in r.stderr
    e = fails(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{chain.coll}'")    # no layer on a broken chain
    assert name in str(e)
    # the full alone is still the full
    chain.restore("incshow_del0", at=chain.layers[0])
    assert row_hashes(pg18, "incshow_del0") == chain.states[0]
    pg18.psql("DROP DATABASE incshow_del0")


@pytest.mark.parametrize("how", ["manifest_only", "resealed"])
def test_altered_earlier_manifest_is_xx001_naming_it(pgkeep, pg18, source, how):
    chain = Chain(pgkeep, pg18, f"altered-{how}")
    middle = chain.dirs[1]
    name = str(middle.relative_to(chain.root))
    manifest = middle / "BACKUP_MANIFEST"
    stored = manifest.read_bytes()
    expected = (middle / "BACKUP_MANIFEST-CHECKSUM").read_text().strip()
    body = open_bytes("BACKUP_MANIFEST", stored, expected)
    body = body.replace(b'"rows": 5', b'"rows": 6', 1) if b'"rows": 5' in body else body + b" "
    if how == "manifest_only":
        data = bytearray(stored)
        data[-1] ^= 0x01
        manifest.write_bytes(bytes(data))
    else:      # altered and made self-consistent again: only the chain's record tells
        data, _ = seal(body, 3)
        manifest.write_bytes(data)
        (middle / "BACKUP_MANIFEST-CHECKSUM").write_text(hashlib.sha256(data).hexdigest())
    for sql in (chain.restore_sql(), f"SHOW BACKUP FROM LATEST IN '{chain.coll}'",
                f"BACKUP DATABASE {DB} INTO LATEST IN '{chain.coll}'"):
        e = fails(pgkeep, sql)
        assert name in str(e), (sql, str(e))


def test_incremental_needs_a_full(pgkeep, pg18, source):
    coll = f"nodelocal://self/incshow-nofull-{uuid.uuid4().hex[:8]}"
    e = fails(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}'", psycopg.errors.UndefinedFile)
    assert "full backup" in (e.diag.message_hint or ""), e.diag.message_hint
    chain = Chain(pgkeep, pg18, "subdir")
    layer = "/" + str(chain.dirs[1].relative_to(chain.root))
    e = fails(pgkeep, f"BACKUP DATABASE {DB} INTO '{layer}' IN '{chain.coll}'", psycopg.Error)
    assert "incremental layer" in str(e) and "full" in str(e), str(e)
    assert e.sqlstate == "22023"
    # the chain did not move
    assert len(run(pgkeep, f"SELECT DISTINCT end_time FROM [SHOW BACKUP FROM LATEST IN '{chain.coll}']")) == 3
