"""Incremental layers with PostgreSQL's WAL summaries on (docs/FORMAT.md 7.6), on a cluster of its own
with `summarize_wal = on`, through pgkeep:

- every change case of test_incremental_capture that keeps no transaction open across a layer runs
  in a chain whose layers keep their unchanged chunks by the summaries (each layer's manifest says
  so: `proof`), each layer restored and compared with the source;
- a transaction that wrote before the parent's snapshot and commits after it: the parent's snapshot
  waits for it (then the summaries are used) or records no WAL position (then the next layer scans);
  a start position recorded without that wait would let the layer keep the chunk it changed;
- each fallback falls back, and says why: the summarizer off, a summary file missing, a timeline
  change, a table truncated by VACUUM (a limit block), an unlogged table, the open tail chunk."""
from __future__ import annotations

import threading
import time

import psycopg
import pytest

from engine.backup.walsum import START_WAIT
from tests.e2e.test_incremental_capture import CASES, DB, LAYERS, build_chain, check_case, check_whole_database
from tests.support.clusters import make_cluster
from tests.support.layers import collection, copied_chunks, kept_chunks, read_state, through, tip_manifest
from tests.support.pgkeep import PgkeepProcess

WAL_CASES = [c for c in CASES if not c.holds]
SRC = "walsrc"


class Summarizing:
    def __init__(self, cluster, pgkeep) -> None:
        self.cluster, self.pgkeep = cluster, pgkeep

    def sql(self, *statements: str, db: str = SRC):
        with psycopg.connect(self.cluster.dsn(db), autocommit=True) as conn:
            for s in statements:
                cur = conn.execute(s)
            return cur.fetchall() if cur.description else None

    def summarize(self, on: bool) -> None:
        self.sql(f"ALTER SYSTEM SET summarize_wal = {'on' if on else 'off'}", "SELECT pg_reload_conf()",
                 db="postgres")
        deadline = time.monotonic() + 10
        while self.sql("SHOW summarize_wal", db="postgres") != [("on" if on else "off",)]:
            assert time.monotonic() < deadline, "summarize_wal did not change"
            time.sleep(0.05)

    def fresh(self) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {SRC}", f"CREATE DATABASE {SRC}", db="postgres")

    def table(self, name: str, rows: int = 2000, unlogged: bool = False) -> None:
        self.sql(f"CREATE {'UNLOGGED ' if unlogged else ''}TABLE {name} (id int PRIMARY KEY, v int NOT NULL, "
                 f"pad text) WITH (fillfactor = 90, autovacuum_enabled = off)",
                 f"INSERT INTO {name} SELECT g, 0, repeat('p', 40) FROM generate_series(1, {rows}) g",
                 f"VACUUM {name}")      # hint bits set now, not by the full's COPY (see wal_chain)

    def backup(self, coll: str, incremental: bool = True) -> dict:
        through(self.pgkeep, f"BACKUP DATABASE {SRC} INTO {'LATEST IN ' if incremental else ''}'{coll}'")
        return tip_manifest(self.pgkeep, coll)

    def restores(self, coll: str) -> None:
        """The tip of `coll` restores the source as it is now."""
        self.sql("DROP DATABASE IF EXISTS walsrc_r", db="postgres")
        through(self.pgkeep, f"RESTORE DATABASE {SRC} FROM LATEST IN '{coll}' WITH new_db_name = 'walsrc_r'")
        got = read_state(self.cluster, "walsrc_r", schema=False)
        self.sql("DROP DATABASE walsrc_r", db="postgres")
        assert got.diff(read_state(self.cluster, SRC, schema=False)) == []


@pytest.fixture(scope="module")
def summ(workdir):
    cluster = make_cluster(workdir, "pg18-walsum")
    pgkeep = None
    try:
        pgkeep = PgkeepProcess(workdir / "pgkeep-walsum", cluster.dsn()).start()
        through(pgkeep, "SET CLUSTER SETTING pgkeep.backup.chunk_size = '64KiB'")
        s = Summarizing(cluster, pgkeep)
        s.summarize(True)
        yield s
    finally:
        if pgkeep is not None:
            pgkeep.stop()
        cluster.destroy()


def proof(manifest: dict) -> dict:
    return manifest["databases"][0]["proof"]


def wal_start(manifest: dict):
    return manifest["databases"][0].get("wal_start")


@pytest.fixture(scope="module")
def wal_chain(summ):
    summ.summarize(True)
    # VACUUM sets the tuples' hint bits: with data checksums on, the full's COPY setting them
    # would write full-page images after its WAL position and the first layer would scan
    chain = build_chain(summ.pgkeep, summ.cluster, WAL_CASES, "walsum-capture", lambda src: src("VACUUM"))
    yield chain
    summ.cluster.psql(f"DROP DATABASE IF EXISTS {DB}")


def test_the_chain_used_the_summaries(wal_chain):
    for k in range(LAYERS):
        assert wal_start(wal_chain.manifests[k]) is not None, f"layer {k} recorded no WAL position"
    for k in range(1, LAYERS):
        p = proof(wal_chain.manifests[k])
        assert p["why"] == "" and p["wal"] > 0, f"layer {k}: {p}"


@pytest.mark.parametrize("case", WAL_CASES, ids=lambda c: c.name)
def test_every_layer_restores_the_source_with_summaries(wal_chain, case):
    check_case(wal_chain, case)


def test_every_layer_restores_the_whole_database_with_summaries(wal_chain):
    check_whole_database(wal_chain)


# -- a transaction open across the parent's snapshot ---------------------------------------------

def _open_writer(summ: Summarizing) -> psycopg.Connection:
    """A transaction that changed page 0 of `held` (two updates into its free space, one in a
    subtransaction) and has not committed: its WAL lies before whatever LSN is read now."""
    t = psycopg.connect(summ.cluster.dsn(SRC))
    t.execute("UPDATE held SET v = 9 WHERE id = 10")
    t.execute("SAVEPOINT s")
    t.execute("UPDATE held SET v = 8 WHERE id = 20")
    t.execute("RELEASE SAVEPOINT s")
    pages = t.execute("SELECT (ctid::text::point)[0]::int FROM held WHERE id IN (10, 20)").fetchall()
    assert pages == [(0,), (0,)]
    return t


def _full_in_background(summ: Summarizing, coll: str) -> threading.Thread:
    th = threading.Thread(target=summ.backup, args=(coll, False))
    th.start()
    return th


def test_a_writer_open_past_the_wait_leaves_no_start_position(summ):
    """Held open across the whole full: the full records no WAL position, so the layer after
    the commit scans (a position recorded anyway would let it keep page 0's chunk, whose
    blocks no WAL after that position touched, and restore the old rows)."""
    summ.fresh()
    summ.table("held")
    coll = collection("walsum-held")
    t = _open_writer(summ)
    try:
        started = time.monotonic()
        full = summ.backup(coll, incremental=False)
        took = time.monotonic() - started
    finally:
        t.commit()
        t.close()
    layer = summ.backup(coll)
    summ.restores(coll)
    assert took >= START_WAIT, "the full did not wait for the writer"
    assert wal_start(full) is None
    assert proof(layer)["why"] == "the parent layer recorded no WAL position"
    assert copied_chunks(full, layer, SRC, "held")[0][0] == 0


def test_a_writer_that_ends_during_the_wait_is_in_the_parent(summ):
    """The writer commits while the full waits: the full's snapshot sees its rows, records a WAL
    position, and the next layer keeps every chunk by the summaries."""
    summ.fresh()
    summ.table("held")
    coll = collection("walsum-wait")
    t = _open_writer(summ)
    th = _full_in_background(summ, coll)
    time.sleep(START_WAIT / 3)
    t.commit()
    t.close()
    th.join(60)
    full = tip_manifest(summ.pgkeep, coll)
    assert wal_start(full) is not None
    layer = summ.backup(coll)
    p = proof(layer)
    assert p["why"] == "" and p["wal"] > 0, p
    summ.restores(coll)


# -- fallbacks --------------------------------------------------------------------------------------

def test_summaries_used_then_each_fallback(summ):
    """One chain: summaries used; a truncated table and an unlogged one fall back to the scan
    per table; summarize_wal off, a summary file missing and a new timeline make a whole layer
    fall back. Every layer restores the source."""
    summ.fresh()
    summ.table("a")
    summ.table("shrinks")
    summ.table("nolog", unlogged=True)
    coll = collection("walsum-fallback")
    full = summ.backup(coll, incremental=False)

    # a change in one chunk of `a`; `shrinks` loses its last pages to VACUUM (a limit block)
    summ.sql("UPDATE a SET v = 1 WHERE id = 1000", "DELETE FROM shrinks WHERE id > 1500", "VACUUM shrinks")
    layer = summ.backup(coll)
    p = proof(layer)
    assert p["why"] == "", p
    assert len(copied_chunks(full, layer, SRC, "a")) == 1
    # only closed chunks of `a` are kept by the summaries: the open tail, `shrinks` (truncated)
    # and `nolog` (no WAL) by the scan
    closed = [r for r in kept_chunks(full, layer, SRC, "a") if r[1] is not None]
    assert p["wal"] == len(closed) > 0, p
    assert p["scan"] >= len(kept_chunks(full, layer, SRC, "nolog")) + len(kept_chunks(full, layer, SRC, "shrinks")) > 0, p
    summ.restores(coll)

    # the summarizer off at the layer
    summ.summarize(False)
    try:
        summ.sql("UPDATE a SET v = 2 WHERE id = 1")
        off = summ.backup(coll)
    finally:
        summ.summarize(True)
    assert proof(off)["why"] == "the server does not summarize WAL (summarize_wal)"
    assert proof(off)["wal"] == 0
    assert wal_start(off) is None, "recorded while the server did not summarize"
    summ.restores(coll)

    # ... so the layer after it has no position to start from
    after_off = summ.backup(coll)
    assert proof(after_off)["why"] == "the parent layer recorded no WAL position"
    summ.restores(coll)

    # a summary file missing
    summ.sql("UPDATE a SET v = 3 WHERE id = 2")
    summ.sql("CHECKPOINT")
    summaries = summ.cluster.datadir / "pg_wal" / "summaries"
    _wait_for_summary(summ)
    start = wal_start(after_off)["lsn"]
    removed = [f for f in summaries.iterdir() if _covers(f.name, start)]
    assert removed, "no summary file covers the parent's position"
    for f in removed:
        f.unlink()
    gap = summ.backup(coll)
    assert proof(gap)["why"].startswith("no WAL summary covers"), proof(gap)
    summ.restores(coll)

    # a new timeline: archive recovery to the end of the WAL, then promotion
    summ.sql("UPDATE a SET v = 4 WHERE id = 3")
    c = summ.cluster
    c.stop()
    (c.datadir / "recovery.signal").write_text("")
    c.conf["restore_command"] = "false"
    c.start()
    deadline = time.monotonic() + 60
    while summ.sql("SELECT pg_is_in_recovery()", db="postgres") != [(False,)]:
        assert time.monotonic() < deadline, "no promotion"
        time.sleep(0.2)
    (tli,), = summ.sql("SELECT timeline_id FROM pg_control_checkpoint()", db="postgres")
    assert tli > wal_start(gap)["timeline"]
    moved = summ.backup(coll)
    assert proof(moved)["why"].startswith("the timeline changed"), proof(moved)
    summ.restores(coll)


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def _covers(name: str, lsn: str) -> bool:
    """A summary file `<tli 8><start 16><end 16>.summary` covering `lsn`."""
    start, end = int(name[8:24], 16), int(name[24:40], 16)
    return start <= _lsn(lsn) < end


def _wait_for_summary(summ: Summarizing) -> None:
    (lsn,), = summ.sql("SELECT pg_current_wal_insert_lsn()::text", db="postgres")
    deadline = time.monotonic() + 10
    while True:
        (done,), = summ.sql("SELECT summarized_lsn::text FROM pg_get_wal_summarizer_state()", db="postgres")
        if _lsn(done) >= _lsn(lsn):
            return
        assert time.monotonic() < deadline, "the summarizer lags"
        summ.sql("CHECKPOINT", db="postgres")
        time.sleep(0.2)
