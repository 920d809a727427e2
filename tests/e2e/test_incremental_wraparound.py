"""Incremental layers across xid wraparound (docs/FORMAT.md 7.3, "xid wraparound"), on a cluster of
its own whose next transaction ID is moved forward with pg_resetwal between layers: stopped cleanly,
every database frozen first (VACUUM FREEZE, template0 included) so that no unfrozen tuple is ever
2^31 xids old, and the pg_xact segment of the new xid created zero-filled, as pg_resetwal's
documentation asks. Three jumps take the 32-bit xid from ~800 to 1.4e9, 2.8e9 and 2^32 - 3000, and
6000 transactions then cross into epoch 1. Checked through pgkeep, each layer restored and compared
with the source:

- a layer more than 2^30 xids after its parent copies every chunk (plan.XID_GUARD);
- a layer more than 2^31 xids after its parent, where age() of the parent's xmin has wrapped to a
  negative number, with a row deleted and one inserted in one chunk: without the guard the new
  row's small age would pass for old and the chunk would be kept (wrong rows);
- tuples frozen long ago whose raw xmin is more than 2^31 back (negative age) make their chunks
  be copied, never kept wrongly, while chunks of recent tuples are kept;
- a layer whose parent's snapshot is just below 2^32 and its own just above it (epoch 1): its rows'
  raw xmins are numerically tiny, yet the changed chunk is copied and the others are kept."""
from __future__ import annotations

import os
import subprocess

import psycopg
import pytest

from tests.support.clusters import make_cluster
from tests.support.layers import collection, copied_chunks, kept_chunks, read_state, through, tip_manifest
from tests.support.pgkeep import PgkeepProcess

DB = "wrapdb"
XACT_SEGMENT = 32 * 8192            # a pg_xact segment file: 32 pages of 8 KiB
XIDS_PER_SEGMENT = XACT_SEGMENT * 4  # two status bits per transaction


class Wrapping:
    """A cluster whose next xid the test moves forward, with a pgkeep in front of it."""

    def __init__(self, cluster, pgkeep) -> None:
        self.cluster, self.pgkeep = cluster, pgkeep

    def sql(self, *statements: str, db: str = DB):
        with psycopg.connect(self.cluster.dsn(db), autocommit=True) as conn:
            for s in statements:
                cur = conn.execute(s)
            return cur.fetchall() if cur.description else None

    def freeze(self) -> None:
        """VACUUM FREEZE every database (template0 accepts connections in this cluster)."""
        c = self.cluster
        subprocess.run([c.bin("vacuumdb"), "--all", "--freeze", "-q", "-h", "127.0.0.1", "-p", str(c.port),
                        "-U", c.superuser], check=True, capture_output=True)

    def jump(self, xid: int) -> None:
        """Make `xid` the next transaction ID (pg_resetwal -x on the stopped cluster)."""
        c = self.cluster
        (oldest,), = self.sql("SELECT min(datfrozenxid::text::bigint) FROM pg_database", db="postgres")
        assert 0 < xid - oldest < (1 << 31) - 50_000_000, "freeze first"
        c.stop()
        segment = c.datadir / "pg_xact" / f"{xid // XIDS_PER_SEGMENT:04X}"
        if not segment.exists():
            segment.write_bytes(bytes(XACT_SEGMENT))
            account = c._account
            if account is not None:
                os.chown(segment, account.pw_uid, account.pw_gid)
        c._run([c.bin("pg_resetwal"), "-x", str(xid), "-u", str(oldest), "-D", str(c.datadir)])
        c.conf["fsync"] = "off"
        c.start()
        (now,), = self.sql("SELECT pg_current_xact_id()::text::bigint % 4294967296", db="postgres")
        assert now == xid

    def backup(self, coll: str, incremental: bool = False) -> dict:
        through(self.pgkeep, f"BACKUP DATABASE {DB} INTO {'LATEST IN ' if incremental else ''}'{coll}'")
        return tip_manifest(self.pgkeep, coll)

    def restored(self, coll: str, name: str):
        """The state of the tip of `coll`'s newest chain, restored through pgkeep."""
        self.sql(f"DROP DATABASE IF EXISTS {name}", db="postgres")
        through(self.pgkeep, f"RESTORE DATABASE {DB} FROM LATEST IN '{coll}' WITH new_db_name = '{name}'")
        state = read_state(self.cluster, name)
        self.sql(f"DROP DATABASE {name}", db="postgres")
        return state


@pytest.fixture(scope="module")
def wrapping(workdir):
    cluster = make_cluster(workdir, "pg18-wrap")
    pgkeep = None
    try:
        cluster.psql("ALTER DATABASE template0 ALLOW_CONNECTIONS true")
        # no autovacuum: its anti-wraparound runs would freeze and move nothing we rely on, but cost
        cluster.psql("ALTER SYSTEM SET autovacuum = off")
        cluster.psql("ALTER SYSTEM SET autovacuum_freeze_max_age = 2000000000")
        cluster.psql(f"CREATE DATABASE {DB}")
        pgkeep = PgkeepProcess(workdir / "pgkeep-wrap", cluster.dsn()).start()
        through(pgkeep, "SET CLUSTER SETTING pgkeep.backup.chunk_size = '64KiB'")
        yield Wrapping(cluster, pgkeep)
    finally:
        if pgkeep is not None:
            pgkeep.stop()
        cluster.destroy()


def table(w: Wrapping, name: str) -> None:
    w.sql(f"CREATE TABLE {name} (id int PRIMARY KEY, v int NOT NULL, pad text) WITH (autovacuum_enabled = off)",
          f"INSERT INTO {name} SELECT g, 0, repeat('p', 40) FROM generate_series(1, 2000) g")


def swap_one_row(w: Wrapping, name: str, old_id: int, new_id: int) -> None:
    """Delete a row of the table's last page and insert one there: the chunk keeps its row count."""
    (page,), = w.sql(f"SELECT (ctid::text::point)[0]::int FROM {name} WHERE id = {old_id}")
    w.sql(f"DELETE FROM {name} WHERE id = {old_id}", f"INSERT INTO {name} VALUES ({new_id}, 1, 'new')")
    assert w.sql(f"SELECT (ctid::text::point)[0]::int FROM {name} WHERE id = {new_id}") == [(page,)]


def assert_restores(w: Wrapping, coll: str, name: str) -> None:
    assert w.restored(coll, name).diff(read_state(w.cluster, DB)) == []


def snapshot_xmin(manifest: dict) -> int:
    return int(manifest["databases"][0]["snapshot"].split(":")[0])


def chunks_with_rows(manifest: dict, name: str) -> int:
    """How many chunks of table `name` hold rows in a layer (every one but the changed one is kept)."""
    (t,) = [t for t in manifest["databases"][0]["tables"] if t["name"] == name]
    return sum(1 for c in t["chunks"] if c["rows"])


def test_layers_across_xid_wraparound(wrapping):
    w = wrapping
    table(w, "ancient")
    table(w, "t")
    w.freeze()
    guard, wrapped = collection("wrap-guard"), collection("wrap-sign")
    full_g, full_w = w.backup(guard), w.backup(wrapped)

    # 1. 1.4e9 xids later (> 2^30): every chunk copied, changed or not
    w.jump(1_400_000_000)
    swap_one_row(w, "t", 1990, 5001)
    layer = w.backup(guard, incremental=True)
    assert_restores(w, guard, "wrap_r1")
    for t in ("public.ancient", "public.t"):
        assert kept_chunks(full_g, layer, DB, t, rows=True) == [], f"{t}: a chunk kept across 2^30 xids"

    # 2. 2.8e9 xids after the other full (> 2^31): age() of its xmin is negative now
    w.freeze()
    w.jump(2_800_000_000)
    (parent_age,), = w.sql(f"SELECT age('{snapshot_xmin(full_w) % (1 << 32)}'::xid)")
    assert parent_age < 0
    swap_one_row(w, "t", 1991, 5002)
    layer = w.backup(wrapped, incremental=True)
    assert_restores(w, wrapped, "wrap_r2")
    assert kept_chunks(full_w, layer, DB, "public.t", rows=True) == []

    # 3. a new full: tuples frozen ~2.8e9 xids ago (negative age) count as new, recent ones do not
    table(w, "fresh")
    recent = collection("wrap-frozen")
    full = w.backup(recent)
    w.sql("DELETE FROM fresh WHERE id = 5")
    layer = w.backup(recent, incremental=True)
    assert_restores(w, recent, "wrap_r3")
    assert kept_chunks(full, layer, DB, "public.ancient", rows=True) == [], "negative age: copied"
    assert copied_chunks(full, layer, DB, "public.fresh") == [(0, 8)]
    assert len(kept_chunks(full, layer, DB, "public.fresh", rows=True)) == chunks_with_rows(layer, "fresh") - 1

    # 4. across the 32-bit boundary: parent below 2^32, layer in epoch 1
    w.freeze()
    w.jump((1 << 32) - 3000)
    table(w, "edge")
    epoch = collection("wrap-epoch")
    full = w.backup(epoch)
    w.sql("DO $$BEGIN FOR i IN 1..6000 LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END$$")
    swap_one_row(w, "edge", 1990, 5003)
    (raw,), = w.sql("SELECT xmin::text::bigint FROM edge WHERE id = 5003")
    assert raw < 10_000, "the new row's raw xmin is past the 32-bit wrap"
    layer = w.backup(epoch, incremental=True)
    assert snapshot_xmin(full) < (1 << 32) <= snapshot_xmin(layer)
    assert_restores(w, epoch, "wrap_r4")
    last = [c for c in layer["databases"][0]["tables"] if c["name"] == "edge"][0]["chunks"][-1]["range"]
    assert copied_chunks(full, layer, DB, "public.edge") == [tuple(last)]
    assert len(kept_chunks(full, layer, DB, "public.edge", rows=True)) == chunks_with_rows(layer, "edge") - 1
