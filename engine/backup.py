"""BACKUP: a transactionally consistent full backup of databases or tables into a collection.

Per database, one coordinator transaction (REPEATABLE READ READ ONLY) exports its snapshot, locks
the tables it reads (ACCESS SHARE) and captures the schema; worker connections import that snapshot and COPY chunks of tables (ranges
of heap pages) in parallel, largest first. Each chunk's binary COPY stream is sealed (zstd in
worker threads, so compression overlaps COPY) into data files that roll over at
bulkio.backup.file_size. Memory is bounded by a few batches per worker, whatever the table size.

A run is three units: claim (the subdir, by creating its lock: docs/FORMAT.md section 1.1), copy
(each database under one snapshot, keeping chunks of an earlier run only when section 4.2 proves
them equal) and commit (manifest, checksum, LATEST: each created, never overwritten; nothing
deleted: section 4.1). `Checkpoint` is what a run leaves for the next. A backup that fails or is
cancelled before its commit point deletes its own subdir's objects, best effort (section 4.3).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable

from . import pausepoints
from . import schema as schema_mod
from .errors import AlreadyExists, BackupExists, DataCorrupted, EngineError, NotFound, Unsupported
from .format import layout
from .format.envelope import LevelHint, Sealer, open_bytes, seal
from .format.manifest import Chunk, DatabaseEntry, FileRef, Manifest, TableEntry
from .jobs import JobStopped
from .spec import BackupResult, BackupSpec, Connector, EngineSettings
from .storage import ObjectStore, join_uri, put, read_all
from .targets import resolve_backup_tables
from .timing import PhaseClock
from .parallel import close_quietly, run_parallel

__all__ = ["run_backup", "PGKEEP_VERSION"]

_log = logging.getLogger("pgkeep.backup")
PGKEEP_VERSION = "0.1.0"
_BATCH = 4 << 20             # bytes of COPY output handed to a compression thread at once
# A COPY stream read as fast as the server writes it arrives a few KB at a time, and every piece
# costs asyncpg and the event loop the same ~25 us whatever its size: on pgbench's accounts table
# that was a third of pgkeep's CPU, on a machine where PostgreSQL needs the rest. After a small
# piece the sink waits a millisecond, and the kernel's socket buffer collects the next few
# hundred KB (measured: 55,000 reads of 9 KB became 2,600 of 185 KB; pgkeep's CPU for that
# backup 1.3 s -> 0.94 s). Only over TCP, whose buffer grows to megabytes: a Unix socket's
# ~200 KB buffer fills within the wait and the server would stall.
_SMALL_READ = 64 << 10
_COALESCE_WAIT = 0.001


class LockNotAvailable(EngineError):
    sqlstate = "55P03"


@dataclass
class _Job:
    db_ordinal: int
    table: "schema_mod.TableInfo"
    entry: TableEntry
    chunk: Chunk
    page_range: tuple[int, int | None] | None   # None: the whole table
    heap_bytes: int                             # what the chunk covers of the table's heap
    level: LevelHint                            # shared by the table's chunks


class _ChunkSink:
    """Receives one chunk's COPY output and writes it as sealed parts of bounded size."""

    def __init__(self, store: ObjectStore, pool: ThreadPoolExecutor, settings: EngineSettings,
                 subdir: str, job: _Job, written: list[str], coalesce: bool = False,
                 reach: Callable[[str], None] | None = None, attempt: str = "") -> None:
        self.store, self.pool, self.settings = store, pool, settings
        self.coalesce = coalesce
        self.reach = reach          # pausepoints: backup.mid_file
        self.halfway = False
        self.subdir, self.job, self.written = subdir, job, written
        self.attempt = attempt      # this run's token in every file name it writes
        self.loop = asyncio.get_running_loop()
        self.buf: list[bytes] = []
        self.size = 0
        self.part = 0
        self.sealer: Sealer | None = None
        self.writer = None
        self.pending: asyncio.Future | None = None

    async def __call__(self, data: bytes) -> None:
        self.buf.append(data)
        self.size += len(data)
        if self.size >= _BATCH:
            await self._flush()
        elif self.coalesce and len(data) < _SMALL_READ:
            await asyncio.sleep(_COALESCE_WAIT)

    async def _flush(self) -> None:
        batch, self.buf = self.buf, []   # joined by the sealer, in its thread
        self.size = 0
        if self.pending is not None:
            await self.pending
        self.pending = asyncio.ensure_future(self._process(batch))

    async def _open_part(self) -> None:
        path = layout.data_path(self.subdir, self.job.db_ordinal, self.job.table.oid,
                                self.job.chunk.index, self.part, self.attempt)
        self.sealer = Sealer(self.settings.compression_level, self.job.level)
        self.writer = await self.store.writer(path)
        self.written.append(path)
        self.path = path
        self.halfway = False

    async def _close_part(self) -> None:
        tail = await self.loop.run_in_executor(self.pool, self.sealer.finish)  # seals the last frame
        await self.writer.write(tail)
        await self.writer.commit()
        self.job.chunk.files.append(FileRef(self.path, self.sealer.stored_size, self.sealer.sha256,
                                            self.sealer.logical_size))
        self.writer = None
        self.part += 1

    async def _process(self, batch: list[bytes]) -> None:
        if self.writer is None:
            await self._open_part()
        out = await self.loop.run_in_executor(self.pool, self.sealer.feed, batch)
        if out:   # nothing until a frame is whole
            await self.writer.write(out)
        if self.reach and not self.halfway and 2 * self.sealer.stored_size >= self.settings.file_size:
            self.halfway = True
            self.reach("backup.mid_file")
        if self.sealer.stored_size >= self.settings.file_size:
            await self._close_part()

    async def finish(self) -> None:
        if self.buf or self.writer is None and self.part == 0:
            await self._flush()
        if self.pending is not None:
            await self.pending
            self.pending = None
        if self.writer is not None:
            await self._close_part()

    async def abort(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
        if self.writer is not None:
            await self.writer.abort()


async def _copy_out(conn, t: "schema_mod.TableInfo", page_range, fmt: str, sink) -> str:
    """COPY one chunk out: the whole table, or the rows of a range of heap pages (a TID range
    scan, PostgreSQL 14+). All-blank char(n) values of t.blank_as_empty go out as ''."""
    if page_range is None and not t.blank_as_empty:
        return await conn.copy_from_table(t.name, schema_name=t.schema, columns=t.columns,
                                          format=fmt, output=sink)
    trimmed = set(t.blank_as_empty)
    cols = ", ".join(f"CASE WHEN {_qi(c)} OPERATOR(pg_catalog.=) ''::pg_catalog.bpchar "
                     f"THEN ''::pg_catalog.bpchar ELSE {_qi(c)} END"
                     if c in trimmed else _qi(c) for c in t.columns)
    return await conn.copy_from_query(
        f"SELECT {cols} FROM ONLY {_qi(t.schema)}.{_qi(t.name)} WHERE {_range_sql(page_range)}",
        format=fmt, output=sink)


def _over_tcp(conn) -> bool:
    """Whether an asyncpg connection runs over TCP (not a Unix socket)."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6)


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _begin_snapshot(conn, snapshot: str | None = None) -> None:
    await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    if snapshot:
        await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")


def _chunk_ranges(pages: int, chunk_pages: int) -> list:
    if pages <= chunk_pages:
        return [None]
    starts = list(range(0, pages, chunk_pages))
    return [[s, starts[i + 1] if i + 1 < len(starts) else None] for i, s in enumerate(starts)]


def _range_sql(page_range) -> str:
    if page_range is None:
        return "true"
    lo, hi = page_range
    return f"ctid >= '({lo},0)'::tid" + (f" AND ctid < '({hi},0)'::tid" if hi is not None else "")


# ---------------------------------------------------------------------------------------------
# The checkpoint: what a paused or killed run leaves for the next run of the same job.

@dataclass
class DoneChunk:
    rows: int
    files: list[FileRef]


@dataclass
class TableMark:
    identity: str        # _IDENTITY_SQL's text for the table, read under the run's table lock
    columns: list[str]
    format: str
    ranges: list         # the chunks' page ranges (see _chunk_ranges)
    chunks: dict[int, DoneChunk] = field(default_factory=dict)


@dataclass
class DatabaseMark:
    name: str
    snapshot: str        # pg_current_snapshot() of the run's snapshot, 'xmin:xmax:xip,...'
    tables: dict[int, TableMark] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """The job's subdir claim and the chunks finished so far (docs/FORMAT.md section 4)."""
    subdir: str
    start: str
    token: str = ""      # the unique token this job writes into its subdir's lock object
    databases: dict[int, DatabaseMark] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"subdir": self.subdir, "start": self.start, "token": self.token,
                "databases": {str(o): {"name": d.name, "snapshot": d.snapshot, "tables": {
                    str(oid): {"identity": t.identity, "columns": t.columns, "format": t.format,
                               "ranges": t.ranges, "chunks": {
                                   str(i): {"rows": c.rows, "files": [asdict(f) for f in c.files]}
                                   for i, c in t.chunks.items()}}
                    for oid, t in d.tables.items()}} for o, d in self.databases.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "Checkpoint":
        """Tolerates checkpoints of older pgkeeps: a table without an identity keeps no chunk."""
        return cls(d["subdir"], d["start"], d.get("token", ""), {
            int(o): DatabaseMark(db["name"], db.get("snapshot", ""), {
                int(oid): TableMark(t.get("identity", ""), t["columns"], t["format"], t["ranges"], {
                    int(i): DoneChunk(c["rows"], [FileRef(**f) for f in c["files"]])
                    for i, c in t["chunks"].items()})
                for oid, t in db.get("tables", {}).items()})
            for o, db in d.get("databases", {}).items()})

    def files(self) -> list[str]:
        return [f.path for d in self.databases.values() for t in d.tables.values()
                for c in t.chunks.values() for f in c.files]


# ---------------------------------------------------------------------------------------------
# One database's snapshot, with its tables locked (docs/FORMAT.md section 4.2).

# Every relation a whole-database backup reads: locked right after the snapshot is taken.
_LOCKABLE_SQL = """
SELECT c.oid, pg_catalog.format('%I.%I', n.nspname, c.relname)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema'
  AND n.nspname NOT LIKE 'pg\\_%'"""

# What must not change for a chunk read under one snapshot to be kept under another: the
# relation's name, its relfilenode (its pages), its pg_class row version (xmin: a drop and
# re-create, an ATTACH/DETACH or any ALTER gives a new one), access method and columns.
_IDENTITY_SQL = """
SELECT c.oid, pg_catalog.concat_ws('|', n.nspname, c.relname, c.relkind, c.relfilenode, c.xmin,
         a.amname, (SELECT pg_catalog.string_agg(pg_catalog.concat_ws(':', x.attnum, x.attname,
                        x.atttypid, x.atttypmod, x.attcollation, x.attisdropped), ',' ORDER BY x.attnum)
                    FROM pg_catalog.pg_attribute x WHERE x.attrelid = c.oid AND x.attnum > 0)),
       a.amname = 'heap'
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am a ON a.oid = c.relam
WHERE c.oid = ANY($1::pg_catalog.oid[])"""

_SNAPSHOT_TRIES = 5


@dataclass
class _Snapshot:
    coord: object                      # asyncpg connection inside the snapshot's transaction
    exported: str                      # pg_export_snapshot(), for the workers
    text: str                          # pg_current_snapshot()
    time: dt.datetime
    schema: "schema_mod.Schema"
    tables: list["schema_mod.TableInfo"]
    identities: dict[int, tuple[str, bool]]   # oid -> (identity, heap access method)


async def _identities(conn, oids: list[int]) -> dict[int, tuple[str, bool]]:
    return {r[0]: (r[1], bool(r[2])) for r in await conn.fetch(_IDENTITY_SQL, oids)}


async def _lock_tables(coord, table_filter, large_objects: bool) -> None:
    """ACCESS SHARE on every relation read (as pg_dump): no TRUNCATE or rewrite until COMMIT."""
    names = [q for oid, q in await coord.fetch(_LOCKABLE_SQL)
             if table_filter is None or oid in table_filter]
    if large_objects and table_filter is None:
        names.append("pg_catalog.pg_largeobject")
    for i in range(0, len(names), 1000):
        await coord.execute(f"LOCK TABLE {', '.join(names[i:i + 1000])} IN ACCESS SHARE MODE")


async def _take_snapshot(connector: Connector, dbname: str, table_filter) -> _Snapshot:
    """A snapshot whose tables are locked and unchanged since it was taken: the identities
    read under the snapshot equal those a fresh transaction reads after the locks are granted
    (so nothing was truncated, rewritten, renamed or re-created in between). Retried when a
    table changed in that moment."""
    for attempt in range(_SNAPSHOT_TRIES):
        coord = await connector.connect(dbname)
        try:
            snap = await _snapshot_once(coord, connector, dbname, table_filter)
        except BaseException:
            await close_quietly(coord)
            raise
        if snap is not None:
            return snap
        await close_quietly(coord)
        _log.info("backup of %s: a table changed while its lock was taken; new snapshot", dbname)
    raise LockNotAvailable(f"the tables of database {dbname} kept changing while the backup "
                           f"took its snapshot ({_SNAPSHOT_TRIES} tries)",
                           hint="run the backup again when no DDL is running on them")


async def _snapshot_once(coord, connector: Connector, dbname: str, table_filter) -> _Snapshot | None:
    await _begin_snapshot(coord)
    exported, text, when = await coord.fetchrow(
        "SELECT pg_export_snapshot(), pg_current_snapshot()::text, clock_timestamp()")
    has_lo = bool(await coord.fetchval("SELECT EXISTS (SELECT FROM pg_catalog.pg_largeobject_metadata)"))
    try:
        await _lock_tables(coord, table_filter, has_lo)
    except Exception as e:  # noqa: BLE001 - a table dropped or renamed since the snapshot
        if getattr(e, "sqlstate", None) in ("42P01", "3F000"):
            return None
        raise
    schema = await schema_mod.capture(coord)
    tables = [t for t in schema.tables if table_filter is None or t.oid in table_filter]
    if table_filter is None and schema.large_objects:   # their pages, as rows of the catalog
        tables.append(schema_mod.TableInfo(
            schema_mod.LARGEOBJECT_OID, "pg_catalog", "pg_largeobject", "L",
            ["loid", "pageno", "data"], binary_ok=True))
    oids = [t.oid for t in tables]
    seen = await _identities(coord, oids)
    check = await connector.connect(dbname)
    try:
        now = await _identities(check, oids)
    finally:
        await close_quietly(check)
    if seen != now:
        return None
    return _Snapshot(coord, exported, text, when, schema, tables, seen)


# ---------------------------------------------------------------------------------------------
# Keeping chunks of an earlier run (docs/FORMAT.md section 4.2: the proof).

# Rows the new snapshot ($2) sees in a page range whose inserting transaction may not have
# ended before the old snapshot ($1) was taken (xmin >= the old snapshot's xmin), and all rows
# it sees there. xmin is 32 bits: it is widened to 64 in the window below the new snapshot's
# xmax, exact for every xid not older than 2^32 (run_backup re-reads all past 2^31).
_UNCHANGED_SQL = """
SELECT count(*) FILTER (WHERE (CASE WHEN (v.b | s.x) >= v.xmax THEN (v.b | s.x) - 4294967296
                                    ELSE v.b | s.x END) >= v.old_xmin), count(*)
FROM (SELECT xmin::text::bigint AS x FROM ONLY {table} WHERE {where}) s,
     (SELECT pg_catalog.pg_snapshot_xmax($2::text::pg_catalog.pg_snapshot)::text::bigint AS xmax,
             (pg_catalog.pg_snapshot_xmax($2::text::pg_catalog.pg_snapshot)::text::bigint >> 32) << 32 AS b,
             pg_catalog.pg_snapshot_xmin($1::text::pg_catalog.pg_snapshot)::text::bigint AS old_xmin) v"""

_XID_GUARD = 1 << 31


def _snapshot_bounds(text: str) -> tuple[int, int]:
    xmin, xmax, _ = text.split(":", 2)
    return int(xmin), int(xmax)


def _reusable(old: DatabaseMark | None, dbname: str, new_snapshot: str) -> bool:
    """An earlier run's chunks may be kept: same database name, and fewer than 2^31 xids
    between the old snapshot's xmin and the new one's xmax (32-bit xmin stays unambiguous)."""
    if old is None or old.name != dbname or not old.snapshot:
        return False
    return _snapshot_bounds(new_snapshot)[1] - _snapshot_bounds(old.snapshot)[0] < _XID_GUARD


async def _still_exact(conn, t, page_range, rows: int, old_snapshot: str, new_snapshot: str) -> bool:
    new, seen = await conn.fetchrow(_UNCHANGED_SQL.format(
        table=f"{_qi(t.schema)}.{_qi(t.name)}", where=_range_sql(page_range)),
        old_snapshot, new_snapshot)
    return new == 0 and seen == rows


# ---------------------------------------------------------------------------------------------
# copy: one database under one snapshot

@dataclass
class _Run:
    """What every unit of one run of a backup job shares."""
    spec: BackupSpec
    connector: Connector
    store: ObjectStore
    settings: EngineSettings
    job: object                        # engine.jobs.JobContext or None
    pool: ThreadPoolExecutor
    clock: PhaseClock
    mark: Checkpoint
    saved: Checkpoint | None           # the checkpoint of the run before this one
    written: list[str] = field(default_factory=list)   # paths this run wrote (or began to)
    committed: bool = False                            # the checksum is written: never clean up
    refused: list[str] = field(default_factory=list)   # deletes the store refused
    # A token of this run alone, in the name of every data and schema file it writes: a process
    # that lost its lease and wakes up later (a zombie) writes names its adopter never uses, so it
    # can never replace a file of the backup the adopter commits (docs/FORMAT.md section 4.4).
    attempt: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    async def save(self) -> None:
        if self.job is not None:
            await self.job.save_checkpoint(self.mark.to_json())

    def reach(self, point: str) -> None:
        pausepoints.reach(point, self.job, self.settings.pausepoints)


def _plan_table(t, old: TableMark | None, heap: bool, identity: str, pages: int,
                chunk_pages: int) -> TableMark:
    """The table's chunking: the earlier run's, when its identity, columns and format are
    unchanged (so its chunks are candidates for keeping), else a new one with no chunk done."""
    fmt = "binary" if t.binary_ok and not t.text_compact else "text"
    if old is not None and heap and (old.identity, old.columns, old.format) == (identity, list(t.columns), fmt):
        return TableMark(identity, list(t.columns), fmt, old.ranges, dict(old.chunks))
    return TableMark(identity, list(t.columns), fmt, _chunk_ranges(pages, chunk_pages))


async def _plan(run: _Run, snap: _Snapshot, ordinal: int, old: DatabaseMark | None,
                mark: DatabaseMark) -> tuple[list[TableEntry], list[tuple[int, _Job]], int]:
    """Table entries and the chunks to copy; finished chunks of `old` that `_still_exact`
    proves equal under this snapshot are kept (in `mark` and the entries), not copied."""
    sizes = dict(await snap.coord.fetch(
        "SELECT c.oid, pg_relation_size(c.oid) / current_setting('block_size')::int "
        "FROM pg_class c WHERE c.oid = ANY($1::oid[])", [t.oid for t in snap.tables]))
    block = int(await snap.coord.fetchval("SELECT current_setting('block_size')::int"))
    chunk_pages = max(1, run.settings.chunk_size // block)
    entries, todo, kept = [], [], 0
    for t in snap.tables:
        pages = int(sizes.get(t.oid, 0))
        identity, heap = snap.identities[t.oid]
        tm = mark.tables[t.oid] = _plan_table(t, old.tables.get(t.oid) if old else None, heap,
                                              identity, pages, chunk_pages)
        earlier, tm.chunks = tm.chunks, {}
        e = TableEntry(t.oid, t.schema, t.name, t.kind, tm.format, list(tm.columns))
        entries.append(e)
        level = LevelHint()
        for i, r in enumerate(tm.ranges):
            c = Chunk(i)
            e.chunks.append(c)
            span = pages if r is None else max(0, min(r[1] or pages, pages) - r[0])
            done = earlier.get(i)
            if done and await _still_exact(snap.coord, t, r, done.rows, old.snapshot, snap.text):
                c.rows, c.files = done.rows, list(done.files)
                tm.chunks[i] = done
                kept += 1
                if run.job is not None:
                    run.job.progress(block * span, c.rows)
                continue
            todo.append((span, _Job(ordinal, t, e, c, tuple(r) if r else None, block * span, level)))
        if run.job is not None:
            run.job.total_bytes += pages * block
    return entries, todo, kept


async def _lock_nowait(conn, t) -> bool:
    """ACCESS SHARE on `t` for a worker, unless that would wait: a worker queued behind an
    ACCESS EXCLUSIVE request (itself waiting for the coordinator's lock) would wait forever."""
    try:
        await conn.execute(f"SAVEPOINT pgkeep_lock; LOCK TABLE {_qi(t.schema)}.{_qi(t.name)} "
                           "IN ACCESS SHARE MODE NOWAIT; RELEASE SAVEPOINT pgkeep_lock")
        return True
    except Exception as e:  # noqa: BLE001 - only "would wait" is expected
        if getattr(e, "sqlstate", None) != "55P03":
            raise
        await conn.execute("ROLLBACK TO SAVEPOINT pgkeep_lock")
        return False


async def _copy_chunks(run: _Run, snap: _Snapshot, dbname: str, mark: DatabaseMark,
                       todo: list[tuple[int, _Job]]) -> None:
    """COPY the chunks over workers sharing the snapshot, largest first; each finished chunk
    is checkpointed before the next is taken. A chunk whose table a worker cannot lock without
    waiting is left to the coordinator, which holds every lock already."""
    todo.sort(key=lambda j: -j[0])
    workers: list = []
    locked: set[tuple[int, int]] = set()      # (id(worker), table oid)
    deferred: list[_Job] = []
    try:
        for _ in range(max(1, min(run.settings.backup_parallelism, len(todo))) if todo else 0):
            w = await run.connector.connect(dbname)
            workers.append(w)
            await _begin_snapshot(w, snap.exported)
        progress = run.job.progress if run.job is not None else None

        async def copy_chunk(conn, item: _Job) -> None:
            if conn is not snap.coord and (id(conn), item.table.oid) not in locked:
                if not await _lock_nowait(conn, item.table):
                    deferred.append(item)
                    return
                locked.add((id(conn), item.table.oid))
            sink = _ChunkSink(run.store, run.pool, run.settings, run.mark.subdir, item, run.written,
                              _over_tcp(conn), run.reach, run.attempt)
            try:
                status = await _copy_out(conn, item.table, item.page_range, item.entry.format, sink)
                await sink.finish()
            except BaseException:
                await sink.abort()
                raise
            item.chunk.rows = int(status.split()[-1])
            if progress:  # in heap bytes, the unit of total_bytes, whatever the COPY format
                progress(item.heap_bytes, item.chunk.rows)
            mark.tables[item.table.oid].chunks[item.chunk.index] = DoneChunk(
                item.chunk.rows, list(item.chunk.files))
            await run.save()
            run.reach("backup.after_chunk")

        run.clock.lap(f"{dbname}: {len(workers)} connections")
        await run_parallel(workers, [j for _, j in todo], copy_chunk, run.job)
        if deferred:
            _log.info("backup of %s: %d chunks read by the coordinator (a lock request was "
                      "queued on their tables)", dbname, len(deferred))
            await run_parallel([snap.coord], deferred, copy_chunk, run.job)
    finally:
        for w in workers:
            await close_quietly(w)


async def _backup_database(run: _Run, ordinal: int, dbname: str, table_filter
                           ) -> tuple[DatabaseEntry, dt.datetime, list[str]]:
    """Back up one database under one snapshot. Chunks finished by an earlier run (before a
    pause or a crash) are kept only when proven equal under this snapshot, so the whole backup
    is this snapshot's (docs/FORMAT.md section 4.2)."""
    snap = await _take_snapshot(run.connector, dbname, table_filter)
    try:
        old = run.saved.databases.get(ordinal) if run.saved else None
        if not _reusable(old, dbname, snap.text):
            old = None
        mark = run.mark.databases[ordinal] = DatabaseMark(dbname, snap.text)
        entries, todo, kept = await _plan(run, snap, ordinal, old, mark)
        run.clock.lap(f"{dbname}: snapshot and schema")
        if run.saved:
            _log.info("backup of %s resumed: %d finished chunks still exact, %d to (re)do",
                      dbname, kept, len(todo))
        if run.job is not None:
            run.job.phase = f"backing up {dbname}"
        await run.save()
        await _copy_chunks(run, snap, dbname, mark, todo)
        run.clock.lap(f"{dbname}: data ({len(todo)} chunks)")
        for e in entries:
            e.rows = sum(c.rows for c in e.chunks)
            e.logical_bytes = sum(f.logical_bytes for f in e.files)
        schema_file = await _write_schema(run, ordinal, snap.schema)
        await snap.coord.execute("COMMIT")
    finally:
        await close_quietly(snap.coord)
    entry = DatabaseEntry(ordinal, dbname, snap.time.isoformat(), schema_file, table_filter is None,
                          entries, selected=None if table_filter is None else sorted(table_filter))
    # A table backup holds only its tables: the database's other objects are not its business.
    return entry, snap.time, snap.schema.uncaptured if table_filter is None else []


async def _write_schema(run: _Run, ordinal: int, schema) -> FileRef:
    """The schema file: JSON of the captured schema, sealed like every other file."""
    data, sha = await asyncio.get_running_loop().run_in_executor(
        run.pool, seal, json.dumps(schema.to_json(), separators=(",", ":")).encode(),
        run.settings.compression_level)
    path = layout.schema_path(run.mark.subdir, ordinal, run.attempt)
    run.written.append(path)
    await put(run.store, path, data)
    return FileRef(path, len(data), sha)


# ---------------------------------------------------------------------------------------------
# claim: one subdir per backup, taken by an atomic create-if-absent of its lock object

_CLAIM_TRIES = 1000          # subdir names tried, 10 ms apart (docs/FORMAT.md section 1)


def _lock_body(job_id: int, token: str) -> bytes:
    return json.dumps({"job_id": job_id, "token": token}, sort_keys=True).encode()


async def _holds_lock(store: ObjectStore, subdir: str, body: bytes) -> bool | None:
    """True: the subdir's lock is ours; None: there is no lock; False: someone else's."""
    try:
        return await read_all(store, layout.lock_path(subdir)) == body
    except NotFound:
        return None


async def claim_subdir(store: ObjectStore, subdir: str, job_id: int, token: str) -> bool:
    """Create `subdir`'s lock naming the job and its token, never overwriting one (False: taken).
    A subdir that already holds a backup, or an older pgkeep's BACKUP-LOCK-<job_id>, is not
    used either (False; the lock just created is removed again, best effort)."""
    lock = layout.lock_path(subdir)
    try:
        await store.create(lock, _lock_body(job_id, token))
    except AlreadyExists:
        return False
    async for info in store.list(subdir.strip("/") + "/"):
        name = info.path.rsplit("/", 1)[-1]
        if name == "BACKUP_MANIFEST" or name.startswith(layout.LEGACY_LOCK_PREFIX):
            try:
                await store.delete(lock)    # ours: created just now
            except (EngineError, OSError) as e:
                _log.warning("could not delete %s: %s", join_uri(store.uri, lock), e)
            return False
    return True


async def _take_lock(run: _Run) -> bool:
    return await claim_subdir(run.store, run.mark.subdir, run.spec.job_id, run.mark.token)


async def _claim(run: _Run) -> Manifest | None:
    """Make `run.mark.subdir` this job's: keep the subdir an earlier run claimed (returning its
    manifest when that run got as far as writing it), else take the first free name from the
    start time on, 10 ms apart. Each name is checkpointed before its lock is created, so a
    crash never leaves a lock the job does not know about."""
    m = run.mark
    if m.subdir and m.token:
        held = await _holds_lock(run.store, m.subdir, _lock_body(run.spec.job_id, m.token))
        if held:
            return await _own_manifest(run)
        if held is None and await _take_lock(run):
            return None
    start = dt.datetime.fromisoformat(m.start)
    run.saved = None       # chunks written into another subdir are not this subdir's
    for i in range(_CLAIM_TRIES):
        m.subdir = layout.full_subdir(start + dt.timedelta(milliseconds=10 * i))
        m.token = uuid.uuid4().hex
        m.databases = {}
        await run.save()
        if await _take_lock(run):
            return None
    raise BackupExists(f"no free subdir in {run.store.uri} after {_CLAIM_TRIES} names",
                       hint="too many backups start at once into this collection")


async def _own_manifest(run: _Run) -> Manifest | None:
    """The manifest an earlier run of this job wrote into its subdir, if any."""
    try:
        stored = await read_all(run.store, layout.manifest_path(run.mark.subdir))
    except NotFound:
        return None
    manifest = Manifest.from_bytes(open_bytes("BACKUP_MANIFEST", stored))
    if manifest.job_id != run.spec.job_id:
        raise BackupExists(f"{join_uri(run.store.uri, run.mark.subdir)} holds the backup of job "
                           f"{manifest.job_id}, not of job {run.spec.job_id}")
    return manifest


# ---------------------------------------------------------------------------------------------
# commit: manifest, checksum (the commit point), LATEST; each created, never overwritten

async def _create_once(store: ObjectStore, path: str, data: bytes) -> None:
    """Create `path`; an object already there is fine only if it holds exactly `data` (an
    earlier run of this job wrote it before a crash)."""
    try:
        await store.create(path, data)
    except AlreadyExists:
        if await read_all(store, path) != data:
            raise DataCorrupted(f"{join_uri(store.uri, path)} exists with other content",
                                hint="another writer changed this backup's subdir") from None


async def _write_latest(store: ObjectStore, end_time: dt.datetime, subdir: str) -> None:
    """A LATEST marker naming `subdir`; when another backup's marker has the same name (same
    end time to the microsecond) the next nanosecond's name is taken."""
    body = subdir.encode()
    for ns in range(1000):
        path = layout.latest_marker(end_time, ns)
        try:
            await store.create(path, body)
            return
        except AlreadyExists:
            if await read_all(store, path) == body:
                return
    raise BackupExists(f"no free LATEST marker name in {store.uri} for {end_time.isoformat()}")


async def _commit(run: _Run, manifest: Manifest, stored: bytes) -> None:
    store, subdir = run.store, run.mark.subdir
    await _create_once(store, layout.manifest_path(subdir), stored)
    run.written.append(layout.manifest_path(subdir))
    run.reach("backup.after_manifest")
    await _create_once(store, layout.checksum_path(subdir), hashlib.sha256(stored).hexdigest().encode())
    run.committed = True
    run.reach("backup.after_checksum")
    await _write_latest(store, manifest.end_datetime, subdir)
    run.reach("backup.after_latest")


# ---------------------------------------------------------------------------------------------
# cleanup: only objects of this job's own subdir (the lock makes them this job's)

async def _delete_paths(run: _Run, paths: list[str]) -> None:
    """Best effort; a delete the store refuses is logged and reported in the job's status,
    never fatal."""
    for p in dict.fromkeys(paths):
        try:
            await asyncio.shield(run.store.delete(p))
        except asyncio.CancelledError:
            pass
        except (EngineError, OSError) as e:
            msg = f"could not delete {join_uri(run.store.uri, p)}: {getattr(e, 'message', e)}"
            _log.warning("backup job %d: %s", run.spec.job_id, msg)
            run.refused.append(msg)
            if run.job is not None:
                run.job.phase = f"leftovers not deleted ({len(run.refused)}): {run.refused[0]}"


async def _discard_debris(run: _Run) -> None:
    """Remove the store's debris of writes that never finished in this job's subdir (temporary
    files, unfinished multipart uploads of a run killed mid-file; docs/FORMAT.md section 4.3).
    Best effort as _delete_paths: a refusal is logged and reported, never fatal."""
    try:
        n = await asyncio.shield(run.store.discard_incomplete(run.mark.subdir.strip("/") + "/"))
    except asyncio.CancelledError:
        return
    except (EngineError, OSError) as e:
        msg = (f"could not discard unfinished writes in {join_uri(run.store.uri, run.mark.subdir)}: "
               f"{getattr(e, 'message', e)}")
        _log.warning("backup job %d: %s", run.spec.job_id, msg)
        run.refused.append(msg)
        if run.job is not None:
            run.job.phase = f"leftovers not deleted ({len(run.refused)}): {run.refused[0]}"
        return
    if n:
        _log.info("backup job %d: discarded %d unfinished writes in %s", run.spec.job_id, n,
                  run.mark.subdir)


async def _still_ours(run: _Run) -> bool | None:
    """Does this process still hold the job's lease (None: the catalog cannot say)? A process
    that lost it (its heartbeats stalled past the lease) must neither commit nor clean up:
    another process runs the job in the same subdir now. Asking renews the lease."""
    if run.job is None:
        return True
    if run.job.stop == "release":
        return False
    reg = getattr(run.job, "registry", None)
    if reg is None:
        return True
    try:
        held = await reg.store.heartbeat(reg.coordinator, [run.job.job_id], reg.lease)
    except Exception:  # noqa: BLE001 - the catalog unreachable (an upstream restart)
        return None
    return run.job.job_id in held


async def _subdir_objects(run: _Run) -> dict[str, int]:
    """path -> size of every object in this job's subdir."""
    return {info.path: info.size async for info in run.store.list(run.mark.subdir.strip("/") + "/")}


async def _drop_leftovers(run: _Run, manifest: Manifest) -> None:
    """Before the commit: every file the manifest names must be there with its size (a chunk
    kept from an earlier run included), else no commit; then delete what earlier runs of this
    job left in its subdir that the manifest does not name (chunks redone with fewer parts,
    files of a run killed mid-chunk)."""
    found = await _subdir_objects(run)
    wrong = [f.path for f in manifest.all_files() if found.get(f.path) != f.size]
    if wrong:
        raise DataCorrupted(f"backup files vanished or changed before the commit: {', '.join(wrong[:5])}",
                            hint="run the backup again")
    keep = {f.path for f in manifest.all_files()} | {layout.lock_path(run.mark.subdir)}
    await _delete_paths(run, [p for p in found if p not in keep])


async def _abandon(run: _Run) -> None:
    """After a failure or cancel before the commit point: delete everything in this job's
    subdir, the lock last (nothing else ever writes there while it exists). When the store
    refused a delete the lock stays, so no other job ever claims a subdir holding our files."""
    lock = layout.lock_path(run.mark.subdir)
    try:
        found = list(await _subdir_objects(run))
    except (EngineError, OSError):
        found = []
    paths = [p for p in found + run.written + (run.saved.files() if run.saved else [])
             + run.mark.files() if p != lock]
    await _delete_paths(run, paths)
    await _discard_debris(run)
    if not run.refused:
        await _delete_paths(run, [lock])


# ---------------------------------------------------------------------------------------------

async def run_backup(spec: BackupSpec, connector: Connector, store: ObjectStore,
                     settings: EngineSettings, job=None) -> BackupResult:
    """`job` (engine.jobs.JobContext, optional) gets progress and checkpoints, and may stop the
    backup at a chunk boundary; a checkpoint from an earlier run of the same job is resumed."""
    _refuse_unsupported(spec)
    saved = Checkpoint.from_json(job.checkpoint) if job is not None and job.checkpoint else None
    mark = Checkpoint(saved.subdir, saved.start, saved.token) if saved else \
        Checkpoint("", dt.datetime.now(dt.timezone.utc).isoformat())
    pool = ThreadPoolExecutor(max_workers=max(2, settings.backup_parallelism),
                              thread_name_prefix="pgkeep-seal")
    run = _Run(spec, connector, store, settings, job, pool,
               PhaseClock(_log, f"backup job {spec.job_id}"), mark, saved)
    try:
        manifest, uncaptured = await _claim_copy_commit(run)
    finally:
        pool.shutdown(wait=False)
    tables = [t for d in manifest.databases for t in d.tables]
    return BackupResult(rows=sum(t.rows for t in tables), bytes=sum(t.logical_bytes for t in tables),
                        end_time=manifest.end_datetime, subdir=mark.subdir, uncaptured=uncaptured)


async def _claim_copy_commit(run: _Run) -> tuple[Manifest, list[str]]:
    """The three units; on a failure or cancel before the commit point, the cleanup."""
    claimed = False
    try:
        # a new job with a bad target claims nothing; a resumed one cleans up even then
        plan = None if run.saved else await resolve_backup_tables(run.spec, run.connector)
        resumed = bool(run.mark.subdir)
        own = await _claim(run)
        claimed = True
        if resumed:     # a run killed mid-file may have left debris in the subdir kept
            await _discard_debris(run)
        run.clock.lap("resolve and claim")
        run.reach("backup.after_claim")
        if own is not None:      # an earlier run wrote the manifest: finish its commit
            _log.info("backup job %d: finishing the commit of its manifest in %s",
                      run.spec.job_id, run.mark.subdir)
            manifest, uncaptured = own, []
            stored = await read_all(run.store, layout.manifest_path(run.mark.subdir))
        else:
            manifest, uncaptured = await _copy(run, plan or await resolve_backup_tables(run.spec, run.connector))
            stored, _ = seal(manifest.to_bytes(), run.settings.compression_level)
            if await _still_ours(run) is False:
                raise JobStopped("release")
            await _drop_leftovers(run, manifest)
            if run.job is not None and run.job.stop == "cancel":  # last chance before the commit point
                run.job.check()
            run.reach("backup.before_manifest")
        await _commit(run, manifest, stored)
        await _discard_debris(run)      # e.g. of an earlier run killed mid-file after its claim
        run.clock.lap("commit")
        run.clock.done()
        return manifest, uncaptured
    except (JobStopped, asyncio.CancelledError):
        raise  # paused, released or shut down: the checkpoint references what was written
    except BaseException as e:
        if claimed and not run.committed:
            ours = await _still_ours(run)
            if ours is False:     # the job runs elsewhere now, in this subdir: hands off
                raise JobStopped("release") from e
            if ours is None:      # not proven ours: the job's next run cleans up
                raise
            await _abandon(run)
            _report_refused(run, e)
        elif not claimed:
            await _drop_unfinished_claim(run)
        raise


async def _drop_unfinished_claim(run: _Run) -> None:
    """A claim that failed midway (a store error after the lock's create was sent) may still
    have left our lock: delete it if it is ours, best effort."""
    if not run.mark.token:
        return
    try:
        if await _holds_lock(run.store, run.mark.subdir, _lock_body(run.spec.job_id, run.mark.token)) \
                and not await _subdir_objects_except_lock(run):
            await _delete_paths(run, [layout.lock_path(run.mark.subdir)])
    except (EngineError, OSError):
        pass


async def _subdir_objects_except_lock(run: _Run) -> list[str]:
    return [p for p in await _subdir_objects(run) if p != layout.lock_path(run.mark.subdir)]


def _report_refused(run: _Run, e: BaseException) -> None:
    """Refused deletes go into the detail of the job's error."""
    if run.refused:
        try:
            e.detail = "\n".join(filter(None, [getattr(e, "detail", None), *run.refused]))
        except AttributeError:
            pass


def _refuse_unsupported(spec: BackupSpec) -> None:
    if spec.latest or spec.subdir is not None:
        raise Unsupported("incremental backups (BACKUP ... INTO LATEST IN / INTO 'subdir' IN) "
                          "are not supported by pgkeep yet", hint="take a full backup: BACKUP ... INTO 'collection'")
    if spec.scope == "cluster":
        raise Unsupported("full cluster backups are not supported by pgkeep yet",
                          hint="back up databases: BACKUP DATABASE d1, d2 INTO ...")


async def _copy(run: _Run, plan) -> tuple[Manifest, list[str]]:
    """Every database of the plan, each under its own snapshot; the manifest naming them."""
    databases: list[DatabaseEntry] = []
    uncaptured: list[str] = []
    end_time = None
    for ordinal, (dbname, table_filter) in enumerate(plan):
        entry, snap_time, left_out = await _backup_database(run, ordinal, dbname, table_filter)
        databases.append(entry)
        uncaptured += [f"{dbname}: {item}" for item in left_out]
        if left_out:
            _log.warning("backup of %s leaves out what pgkeep cannot back up yet: %s",
                         dbname, ", ".join(left_out))
        end_time = snap_time if end_time is None else max(end_time, snap_time)
    conn = await run.connector.connect(plan[0][0])
    try:
        server_version = int(await conn.fetchval("SHOW server_version_num"))
    finally:
        await close_quietly(conn)
    manifest = Manifest(id=str(uuid.uuid4()), job_id=run.spec.job_id, backup_type="full",
                        scope=run.spec.scope, end_time=end_time.isoformat(),
                        server_version=server_version, pgkeep_version=PGKEEP_VERSION,
                        file_size_target=run.settings.file_size, databases=databases,
                        requested_as_of=run.spec.requested_as_of)
    return manifest, uncaptured
