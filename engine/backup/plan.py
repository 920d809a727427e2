"""The planner: per table, its chunks (page ranges) and, per chunk, what may stand in for copying
it: the files of the parent layer (an incremental, docs/FORMAT.md section 7.3) or of an earlier
run of this job (a resume, section 4.2), each kept only when `unchanged` proves, under the new
snapshot, that the chunk's rows are exactly the ones those files hold."""
from __future__ import annotations

from dataclasses import dataclass

from ..format.envelope import LevelHint
from ..format.manifest import Chunk, DatabaseEntry, FileRef, TableEntry
from .checkpoint import DatabaseMark, TableMark, norm_range
from .sink import ChunkJob, qi, range_sql
from .snapshot import Snapshot
from .walsum import Quiet

__all__ = ["Base", "plan_database", "unchanged", "XID_GUARD"]

# Layers and runs more than this many xids apart keep nothing (FORMAT.md 7.3: the window in
# which age() of a tuple's 32-bit xmin is unambiguous, with room to spare).
XID_GUARD = 1 << 30


@dataclass(frozen=True)
class Base:
    """Files that hold a chunk's rows as an earlier snapshot saw them."""
    rows: int
    files: tuple[FileRef, ...]
    snapshot: str                 # that snapshot's pg_current_snapshot()
    scan: tuple[int, int | None]  # the pages to test: the chunk as the earlier snapshot bounded it
    own: bool                     # written by this job (an earlier run): kept in its checkpoint
    quiet: bool = False           # no WAL record touched its pages since that snapshot (FORMAT.md 7.6)


def _xmin(snapshot: str) -> int:
    return int(snapshot.split(":", 1)[0])


def _xmax(snapshot: str) -> int:
    return int(snapshot.split(":", 2)[1])


def comparable(old_snapshot: str, new_snapshot: str) -> bool:
    """Chunks read under `old_snapshot` may be kept under `new_snapshot`."""
    return bool(old_snapshot) and _xmax(new_snapshot) - _xmin(old_snapshot) < XID_GUARD


# Visible tuples of a page range whose xmin is not older than the earlier snapshot's xmin ($1, as
# a 32-bit xid), and all visible tuples there. age() is relative to this transaction's xid horizon
# and wraps as a signed 32-bit number: a tuple frozen more than 2^31 xids ago counts as new, which
# only makes its chunk be copied (FORMAT.md 7.3). Reads tuple headers; sends no row.
_UNCHANGED_SQL = ("SELECT count(*) FILTER (WHERE pg_catalog.age(xmin) OPERATOR(pg_catalog.<=) "
                  "pg_catalog.age($1::text::pg_catalog.xid)), count(*) FROM ONLY {table} WHERE {where}")


async def unchanged(conn, t, base: Base) -> bool:
    new, seen = await conn.fetchrow(
        _UNCHANGED_SQL.format(table=f"{qi(t.schema)}.{qi(t.name)}", where=range_sql(base.scan)),
        str(_xmin(base.snapshot) % (1 << 32)))
    return new == 0 and seen == base.rows


# A table larger than one chunk ends in an open-ended chunk of 1/TAIL_FRACTION of a chunk: the
# pages where PostgreSQL puts the next rows (the free space of its last pages, then new pages), so
# a later layer that finds rows inserted or moved there copies that tail, not the whole last chunk.
TAIL_FRACTION = 16


def _fresh_ranges(pages: int, chunk_pages: int, start: int = 0) -> list[list]:
    """[start, start+n), [start+n, start+2n), ..., the last open-ended; in a table of more than
    n pages, a last range longer than two tails is cut so that the open-ended one is a tail."""
    if pages - start <= chunk_pages:
        ranges = [[start, None]]
    else:
        starts = list(range(start, pages, chunk_pages))
        ranges = [[s, starts[i + 1] if i + 1 < len(starts) else None] for i, s in enumerate(starts)]
    tail = max(1, chunk_pages // TAIL_FRACTION)
    last = ranges[-1][0]
    if pages > chunk_pages and pages - last > 2 * tail:
        ranges[-1:] = [[last, pages - tail], [pages - tail, None]]
    return ranges


def _parent_base(t, identity: str, heap: bool, fmt: str, parent: TableEntry | None) -> bool:
    return (parent is not None and heap and parent.heap and parent.pages is not None
            and (parent.identity, list(parent.columns), parent.format) == (identity, list(t.columns), fmt)
            and all(c.range is not None for c in parent.chunks))


def _ranges_after(parent: TableEntry, pages: int, chunk_pages: int) -> tuple[list[list], dict]:
    """The parent's ranges, grown by the pages added since (FORMAT.md 7.3), and for each the
    parent's chunk with the pages to test it on: {first page: (chunk, scan range)}.

    The parent's ranges end at its page count, or beyond it when the table shrank (a VACUUM
    truncated empty trailing pages) after an earlier layer drew them: new ranges start where
    the parent's end, never inside one of them."""
    ranges, bases = [], {}
    edge = max([parent.pages] + [hi if hi is not None else lo for lo, hi in (c.range for c in parent.chunks)])
    grew = pages > edge
    for c in parent.chunks:
        lo, hi = c.range
        if hi is None and grew:
            hi = edge
        if hi is not None and hi <= lo:
            continue              # empty: no row can be there
        ranges.append([lo, hi])
        bases[lo] = (c, (lo, hi))
    if grew:
        ranges += _fresh_ranges(pages, chunk_pages, edge)
    return ranges, bases


def plan_table(ordinal: int, t, snap: Snapshot, chunk_pages: int, parent: TableEntry | None,
               parent_snapshot: str, saved: TableMark | None, saved_snapshot: str,
               quiet: Quiet | None = None) -> tuple[TableEntry, TableMark, list[ChunkJob]]:
    """The table's manifest entry (chunks not filled yet), its checkpoint mark, and one ChunkJob
    per chunk, with the bases that may stand in for copying it."""
    fmt = "binary" if t.binary_ok and not t.text_compact else "text"
    identity, heap = snap.identities[t.oid]
    pages = snap.pages.get(t.oid, 0)
    key = (identity, list(t.columns), fmt)
    from_parent = _parent_base(t, identity, heap, fmt, parent) and comparable(parent_snapshot, snap.text)
    own = (saved if saved is not None and heap and comparable(saved_snapshot, snap.text)
           and (saved.identity, saved.columns, saved.format) == key else None)
    parent_bases: dict = {}
    if from_parent:
        ranges, parent_bases = _ranges_after(parent, pages, chunk_pages)
    elif own is not None:
        ranges = [norm_range(r) for r in own.ranges]
    else:
        ranges = _fresh_ranges(pages, chunk_pages)
    mark = TableMark(identity, list(t.columns), fmt, ranges)
    entry = TableEntry(t.oid, t.schema, t.name, t.kind, fmt, list(t.columns),
                       identity=identity, heap=heap, pages=pages)
    level = LevelHint()
    jobs = []
    for i, r in enumerate(ranges):
        chunk = Chunk(i, range=list(r))
        entry.chunks.append(chunk)
        bases = []
        if own is not None and i < len(own.ranges) and norm_range(own.ranges[i]) == r and i in own.chunks:
            done = own.chunks[i]
            bases.append(Base(done.rows, tuple(done.files), saved_snapshot, tuple(r), True))
        if r[0] in parent_bases:
            c, scan = parent_bases[r[0]]
            if scan == tuple(r):
                bases.append(Base(c.rows, tuple(c.files), parent_snapshot, tuple(r), False,
                                  quiet is not None and quiet.quiet(t.oid, scan)))
        span = max(0, (pages if r[1] is None else min(r[1], pages)) - r[0])
        jobs.append(ChunkJob(ordinal, t, entry, chunk, (r[0], r[1]), snap.block * span, level, bases))
    return entry, mark, jobs


def plan_database(ordinal: int, dbname: str, snap: Snapshot, chunk_size: int,
                  parent: DatabaseEntry | None, saved: DatabaseMark | None, quiet: Quiet | None = None
                  ) -> tuple[list[TableEntry], DatabaseMark, list[ChunkJob]]:
    """Every table of the snapshot planned; the database's checkpoint mark. `parent` is the
    parent layer's entry of this database, `saved` an earlier run's mark (same name), `quiet`
    what the WAL summaries say of the pages since the parent's snapshot."""
    chunk_pages = max(1, chunk_size // snap.block)
    mark = DatabaseMark(dbname, snap.text, oid=snap.database_oid)
    parent_tables = {t.oid: t for t in parent.tables} if parent is not None else {}
    entries, jobs = [], []
    for t in snap.tables:
        entry, tm, tj = plan_table(
            ordinal, t, snap, chunk_pages, parent_tables.get(t.oid),
            parent.snapshot if parent is not None else "",
            saved.tables.get(t.oid) if saved is not None else None,
            saved.snapshot if saved is not None else "", quiet)
        mark.tables[t.oid] = tm
        entries.append(entry)
        jobs += tj
    return entries, mark, jobs
