"""PostgreSQL 17+ WAL summaries: a proof that a chunk is unchanged without scanning it (docs/FORMAT.md 7.6).

A layer records where its snapshot's WAL starts (`WalStart`, in its manifest's database entry) when
the server summarizes WAL. The next layer, when summaries cover the WAL from there to a position
read after its own snapshot, keeps a parent chunk whose pages no WAL record in between touched,
without scanning it. Anything uncertain leaves the chunk to the scan proof (plan.unchanged).
"""
from __future__ import annotations

import asyncio
import bisect
import logging
import time
from dataclasses import dataclass, field

__all__ = ["wal_start", "confirm_start", "Quiet", "quiet_pages", "START_WAIT", "SUMMARY_WAIT"]

_log = logging.getLogger("pgkeep.backup")

START_WAIT = 3.0     # seconds a snapshot waits for the transactions running at its start LSN
SUMMARY_WAIT = 5.0   # seconds a layer waits for the summarizer to reach its end LSN

# The server can summarize: 17+, summarize_wal on, a primary (a standby has no insert position).
_USABLE_SQL = """
SELECT pg_catalog.current_setting('server_version_num')::int >= 170000
   AND pg_catalog.current_setting('summarize_wal', true) = 'on'
   AND pg_catalog.current_setting('wal_level') <> 'minimal'
   AND NOT pg_catalog.pg_is_in_recovery()"""

# The insert position, its timeline (pg_walfile_name's first 8 hex digits), the cluster and database.
_POSITION_SQL = """
SELECT l::text, ('x' || pg_catalog.substr(pg_catalog.pg_walfile_name(l), 1, 8))::bit(32)::int,
       (SELECT system_identifier::text FROM pg_catalog.pg_control_system()),
       (SELECT oid::bigint FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
FROM pg_catalog.pg_current_wal_insert_lsn() l"""

_OLDEST_RUNNING_SQL = "SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::bigint"


@dataclass
class WalStart:
    """Where a layer's snapshot's WAL starts: every transaction that wrote WAL before `lsn` had
    ended when the snapshot was taken (`xid` is a transaction ID taken after `lsn` was read)."""
    system: str
    database: int
    timeline: int
    lsn: str
    xid: int = 0

    def to_json(self) -> dict:
        return {"system": self.system, "database": self.database, "timeline": self.timeline,
                "lsn": self.lsn}


async def _usable(conn) -> bool:
    return bool(await conn.fetchval(_USABLE_SQL))


async def wal_start(conn) -> WalStart | None:
    """Before a snapshot is taken, on its coordinator connection (not in a transaction): a
    CHECKPOINT (so the summaries the next layer reads start right below L, not at the checkpoint
    before, whose WAL since holds the changes that preceded this layer), the insert position L, then a new transaction ID N (so every transaction that wrote WAL before L
    has an ID below N), then a wait, bounded by START_WAIT, until no transaction below N runs.
    None when the server does not summarize WAL or the wait timed out."""
    if not await _usable(conn):
        return None
    try:        # a summary ends at a checkpoint's redo point: make one start right below L
        await conn.execute("CHECKPOINT")
    except Exception as e:  # noqa: BLE001 - no pg_checkpoint: sound, only coarser
        _log.info("CHECKPOINT before the snapshot failed (%s): the next layer's WAL summaries "
                  "start at the checkpoint before", getattr(e, "sqlstate", None) or e)
    lsn, tli, system, dboid = await conn.fetchrow(_POSITION_SQL)
    xid = int(await conn.fetchval("SELECT pg_catalog.pg_current_xact_id()::text::bigint"))
    deadline, pause = time.monotonic() + START_WAIT, 0.005
    while int(await conn.fetchval(_OLDEST_RUNNING_SQL)) < xid:
        if time.monotonic() >= deadline:
            _log.info("a transaction running at WAL position %s outlived %.0f s: the next layer "
                      "scans for changes", lsn, START_WAIT)
            return None
        await asyncio.sleep(pause)
        pause = min(0.2, pause * 2)
    return WalStart(system, int(dboid), int(tli), lsn, xid)


def confirm_start(start: WalStart | None, snapshot: str) -> WalStart | None:
    """`start` holds for the snapshot `snapshot` (pg_current_snapshot() text) only when no
    transaction below N was running in it (a prepared transaction, one that began meanwhile)."""
    if start is None or int(snapshot.split(":", 1)[0]) < start.xid:
        return None
    return start


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def _text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass
class Quiet:
    """Which pages of which tables no WAL record touched between the parent's snapshot and this
    layer's: `why` says why none are known (empty when the summaries were used)."""
    why: str = ""
    blocks: dict[int, list[int]] = field(default_factory=dict)   # table oid -> sorted changed blocks
    logged: set[int] = field(default_factory=set)                # oids whose every change is in the WAL

    def quiet(self, oid: int, page_range) -> bool:
        lo, hi = page_range
        if self.why or hi is None or oid not in self.logged:
            return False            # the open tail, an unlogged table: the scan decides
        changed = self.blocks.get(oid, [])
        i = bisect.bisect_left(changed, lo)
        return i == len(changed) or changed[i] >= hi


async def _summarized_to(conn, tli: int, end: int) -> str:
    """Wait (SUMMARY_WAIT at most) for the summarizer to reach `end` on `tli`: a summary ends at
    a checkpoint's redo point, so ask for a checkpoint when it has not. '' when reached."""
    asked, pause = False, 0.005
    deadline = time.monotonic() + SUMMARY_WAIT
    while True:
        row = await conn.fetchrow("SELECT summarized_tli, summarized_lsn::text "
                                  "FROM pg_catalog.pg_get_wal_summarizer_state()")
        if row is not None and row[0] == tli and _lsn(row[1]) >= end:
            return ""
        if row is not None and row[0] is not None and row[0] > tli:
            return "the timeline changed"
        if not asked:
            asked = True
            await conn.execute("CHECKPOINT")    # refused without pg_checkpoint: the caller falls back
            continue
        if time.monotonic() >= deadline:
            return f"the WAL summarizer did not reach {_text(end)} within {SUMMARY_WAIT:.0f} s"
        await asyncio.sleep(pause)        # it usually has a moment after the CHECKPOINT
        pause = min(0.1, pause * 2)


_SUMMARIES_SQL = """
SELECT start_lsn::text, end_lsn::text FROM pg_catalog.pg_available_wal_summaries()
WHERE tli = $1 AND end_lsn > $2::text::pg_catalog.pg_lsn AND start_lsn < $3::text::pg_catalog.pg_lsn ORDER BY start_lsn"""

# Main-fork blocks of this database's relations in the summaries listed ($2, $3: their start and
# end LSNs, so a file removed since the listing is an error, never a silent gap), per relfilenode
# (the tablespace ignored: a same-numbered file elsewhere only adds blocks), and whether any was
# truncated or created anew (a limit block).
_CONTENTS_SQL = """
SELECT s.relfilenode::bigint, pg_catalog.bool_or(s.is_limit_block),
       pg_catalog.array_agg(DISTINCT s.relblocknumber::bigint ORDER BY s.relblocknumber::bigint)
FROM ROWS FROM (pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::text[])) w(s, e)
     CROSS JOIN LATERAL pg_catalog.pg_wal_summary_contents($1, w.s::pg_catalog.pg_lsn, w.e::pg_catalog.pg_lsn) s
WHERE s.reldatabase = $4 AND s.relforknumber = 0
GROUP BY s.relfilenode"""


async def quiet_pages(conn, parent: dict | None, oids: list[int]) -> Quiet:
    """On the snapshot's coordinator, right after the snapshot: which pages of `oids` the WAL
    between `parent` (the parent layer's recorded WalStart JSON) and now left untouched. Any
    error (a summary file removed meanwhile, CHECKPOINT refused) is a fallback, not a failure."""
    if not parent:
        return Quiet("the parent layer recorded no WAL position")
    await conn.execute("SAVEPOINT pgkeep_wal")
    try:
        q = await _quiet_pages(conn, parent, oids)
    except Exception as e:  # noqa: BLE001 - uncertain: the scan proves
        await conn.execute("ROLLBACK TO SAVEPOINT pgkeep_wal")
        return Quiet(f"reading the WAL summaries failed: {getattr(e, 'sqlstate', None) or ''} {e}".strip())
    await conn.execute("RELEASE SAVEPOINT pgkeep_wal")
    return q


async def _quiet_pages(conn, parent: dict, oids: list[int]) -> Quiet:
    if not await _usable(conn):
        return Quiet("the server does not summarize WAL (summarize_wal)")
    end, tli, system, dboid = await conn.fetchrow(_POSITION_SQL)
    if (system, int(dboid)) != (parent["system"], parent["database"]):
        return Quiet("another cluster or database than the parent layer's")
    if tli != parent["timeline"]:
        return Quiet(f"the timeline changed ({parent['timeline']} to {tli})")
    start, end_at = _lsn(parent["lsn"]), _lsn(end)
    why = await _summarized_to(conn, tli, end_at)
    if why:
        return Quiet(why)
    reach = None
    summaries = await conn.fetch(_SUMMARIES_SQL, tli, parent["lsn"], end)
    for s, e in summaries:
        if (start if reach is None else reach) < _lsn(s):
            return Quiet(f"no WAL summary covers {parent['lsn']} to {end} (a gap at "
                         f"{parent['lsn'] if reach is None else _text(reach)})")
        reach = max(reach or 0, _lsn(e))
    if reach is None or reach < end_at:
        return Quiet(f"no WAL summary covers {parent['lsn']} to {end}")
    rels = {int(r[0]): (int(r[1]), r[2]) for r in await conn.fetch(
        "SELECT c.oid::bigint, pg_catalog.pg_relation_filenode(c.oid)::bigint, c.relpersistence::text "
        "FROM pg_catalog.pg_class c WHERE c.oid = ANY($1::pg_catalog.oid[]) "
        "AND pg_catalog.pg_relation_filenode(c.oid) IS NOT NULL", oids)}      # no storage: no chunk
    changed = {int(r[0]): (r[1], r[2]) for r in await conn.fetch(
        _CONTENTS_SQL, tli, [r[0] for r in summaries], [r[1] for r in summaries], int(dboid))}
    q = Quiet()
    for oid, (node, persistence) in rels.items():
        limit, blocks = changed.get(node, (False, []))
        if persistence == "p" and not limit:     # unlogged: no WAL; truncated: the scan decides
            q.logged.add(oid)
            q.blocks[oid] = [int(b) for b in blocks]
    return q
