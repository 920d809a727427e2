"""BACKUP: a transactionally consistent full backup of databases or tables into a collection.

Per database, one coordinator transaction (REPEATABLE READ READ ONLY) exports its snapshot and
captures the schema; worker connections import that snapshot and COPY chunks of tables (ranges
of heap pages) in parallel, largest first. Each chunk's binary COPY stream is sealed (zstd in
worker threads, so compression overlaps COPY) into data files that roll over at
bulkio.backup.file_size. Memory is bounded by a few batches per worker, whatever the table size.

Commit protocol (docs/FORMAT.md section 4): lock file first, manifest last, then LATEST. A backup
that fails or is cancelled never gets a manifest, and its files are deleted best effort.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from . import schema as schema_mod
from .errors import BackupExists, EngineError, Unsupported
from .format import layout
from .format.envelope import LevelHint, Sealer, seal
from .format.manifest import Chunk, DatabaseEntry, FileRef, Manifest, TableEntry
from .jobs import JobStopped
from .spec import BackupResult, BackupSpec, Connector, EngineSettings
from .storage import ObjectStore, join_uri, put
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
                 subdir: str, job: _Job, written: list[str], coalesce: bool = False) -> None:
        self.store, self.pool, self.settings = store, pool, settings
        self.coalesce = coalesce
        self.subdir, self.job, self.written = subdir, job, written
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
                                self.job.chunk.index, self.part)
        self.sealer = Sealer(self.settings.compression_level, self.job.level)
        self.writer = await self.store.writer(path)
        self.written.append(path)
        self.path = path

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


# Rows of a page range that the new snapshot sees and the old snapshot `$1` did not (their
# inserting transaction is not visible in it), and all rows the new snapshot sees there. A chunk
# read under the old snapshot is still exact under the new one iff that is (0, rows read).
# xmin is 32 bits: it is widened to a full xid8 in the epoch of the old snapshot's xmax.
_UNCHANGED_SQL = """
SELECT count(*) FILTER (WHERE NOT pg_visible_in_snapshot(
           (CASE WHEN (v.b | s.x) > v.xmax THEN (v.b | s.x) - 4294967296 ELSE v.b | s.x END)::text::xid8,
           $1::text::pg_snapshot)), count(*)
FROM (SELECT xmin::text::bigint AS x FROM ONLY {table} WHERE {where}) s,
     (SELECT pg_snapshot_xmax($1::text::pg_snapshot)::text::bigint AS xmax,
             (pg_snapshot_xmax($1::text::pg_snapshot)::text::bigint >> 32) << 32 AS b) v"""


async def _still_exact(conn, t, page_range, rows: int, old_snapshot: str) -> bool:
    new, seen = await conn.fetchrow(_UNCHANGED_SQL.format(
        table=f"{_qi(t.schema)}.{_qi(t.name)}", where=_range_sql(page_range)), old_snapshot)
    return new == 0 and seen == rows


async def _backup_database(spec: BackupSpec, connector: Connector, store: ObjectStore,
                           settings: EngineSettings, subdir: str, ordinal: int, dbname: str,
                           table_filter, written: list[str], job, pool: ThreadPoolExecutor,
                           saved: dict | None, save, clock: PhaseClock
                           ) -> tuple[DatabaseEntry, dt.datetime, list[str]]:
    """Back up one database under one snapshot. `saved` is this database's part of a checkpoint
    (chunks finished under an earlier snapshot, before a pause or a crash): a finished chunk is
    kept only if `_still_exact` proves the new snapshot sees exactly the same rows in its pages,
    so the whole backup is consistent at the new snapshot. `save(part)` records progress."""
    coord = await connector.connect(dbname)
    workers: list = []
    try:
        await _begin_snapshot(coord)
        snapshot, snap_text, snap_time = await coord.fetchrow(
            "SELECT pg_export_snapshot(), pg_current_snapshot()::text, clock_timestamp()")
        schema = await schema_mod.capture(coord)
        tables = [t for t in schema.tables if table_filter is None or t.oid in table_filter]
        if table_filter is None and schema.large_objects:   # their pages, as rows of the catalog
            tables.append(schema_mod.TableInfo(
                schema_mod.LARGEOBJECT_OID, "pg_catalog", "pg_largeobject", "L",
                ["loid", "pageno", "data"], binary_ok=True))
        sizes = dict(await coord.fetch(
            "SELECT c.oid, pg_relation_size(c.oid) / current_setting('block_size')::int "
            "FROM pg_class c WHERE c.oid = ANY($1::oid[])", [t.oid for t in tables]))
        block = int(await coord.fetchval("SELECT current_setting('block_size')::int"))
        chunk_pages = max(1, settings.chunk_size // block)
        part = {"name": dbname, "snapshot": snap_text, "tables": {}}
        old_tables = (saved or {}).get("tables", {})
        entries: list[TableEntry] = []
        todo: list[tuple[int, _Job]] = []
        kept = 0
        for t in tables:
            fmt = "binary" if t.binary_ok and not t.text_compact else "text"
            e = TableEntry(t.oid, t.schema, t.name, t.kind, fmt, list(t.columns))
            entries.append(e)
            old = old_tables.get(str(t.oid))
            if old and old["columns"] == e.columns and old["format"] == fmt:
                ranges = old["ranges"]
            else:
                old, ranges = None, _chunk_ranges(int(sizes.get(t.oid, 0)), chunk_pages)
            tpart = part["tables"][str(t.oid)] = {"columns": e.columns, "format": fmt,
                                                   "ranges": ranges, "chunks": {}}
            pages = int(sizes.get(t.oid, 0))
            level = LevelHint()
            for i, r in enumerate(ranges):
                c = Chunk(i)
                e.chunks.append(c)
                heap = block * (pages if r is None else max(0, min(r[1] or pages, pages) - r[0]))
                done = old["chunks"].get(str(i)) if old else None
                if done and await _still_exact(coord, t, r, done["rows"], saved["snapshot"]):
                    c.rows = done["rows"]
                    c.files = [FileRef(**f) for f in done["files"]]
                    tpart["chunks"][str(i)] = done
                    kept += 1
                    if job is not None:
                        job.progress(heap, c.rows)
                    continue
                weight = pages if r is None else min(r[1] or pages, pages) - r[0]
                todo.append((weight, _Job(ordinal, t, e, c, tuple(r) if r else None, heap, level)))
        clock.lap(f"{dbname}: snapshot and schema")
        if saved:
            _log.info("backup of %s resumed: %d finished chunks still exact, %d to (re)do",
                      dbname, kept, len(todo))
        if job is not None:
            job.total_bytes += sum(int(sizes.get(t.oid, 0)) * block for t in tables)
            job.phase = f"backing up {dbname}"
        await save(ordinal, part)
        todo.sort(key=lambda j: -j[0])
        n = max(1, min(settings.backup_parallelism, len(todo)))
        if todo:
            for _ in range(n):
                w = await connector.connect(dbname)
                workers.append(w)
                await _begin_snapshot(w, snapshot)
        progress = job.progress if job is not None else None

        async def copy_chunk(conn, item: _Job) -> None:
            sink = _ChunkSink(store, pool, settings, subdir, item, written, _over_tcp(conn))
            try:
                status = await _copy_out(conn, item.table, item.page_range, item.entry.format, sink)
                await sink.finish()
            except BaseException:
                await sink.abort()
                raise
            item.chunk.rows = int(status.split()[-1])
            if progress:  # in heap bytes, the unit of total_bytes, whatever the COPY format
                progress(item.heap_bytes, item.chunk.rows)
            part["tables"][str(item.table.oid)]["chunks"][str(item.chunk.index)] = {
                "rows": item.chunk.rows, "files": [asdict(f) for f in item.chunk.files]}
            await save(ordinal, part)

        clock.lap(f"{dbname}: {len(workers)} connections")
        await run_parallel(workers, [j for _, j in todo], copy_chunk, job)
        clock.lap(f"{dbname}: data ({len(todo)} chunks)")
        for e in entries:
            e.rows = sum(c.rows for c in e.chunks)
            e.logical_bytes = sum(f.logical_bytes for f in e.files)
        # The schema file: JSON of the captured schema, sealed like every other file.
        schema_bytes, sha = await asyncio.get_running_loop().run_in_executor(
            pool, seal, json.dumps(schema.to_json(), separators=(",", ":")).encode(),
            settings.compression_level)
        spath = layout.schema_path(subdir, ordinal)
        written.append(spath)
        await put(store, spath, schema_bytes)
        await coord.execute("COMMIT")
        entry = DatabaseEntry(ordinal, dbname, snap_time.isoformat(),
                              FileRef(spath, len(schema_bytes), sha), table_filter is None, entries,
                              selected=None if table_filter is None else sorted(table_filter))
        # A table backup holds only its tables: the database's other objects are not its business.
        return entry, snap_time, schema.uncaptured if table_filter is None else []
    finally:
        for c in [coord, *workers]:
            await close_quietly(c)


async def run_backup(spec: BackupSpec, connector: Connector, store: ObjectStore,
                     settings: EngineSettings, job=None) -> BackupResult:
    """`job` (engine.jobs.JobContext, optional) gets progress and checkpoints, and may stop the
    backup at a chunk boundary; a checkpoint from an earlier run of the same job is resumed."""
    if spec.latest or spec.subdir is not None:
        raise Unsupported("incremental backups (BACKUP ... INTO LATEST IN / INTO 'subdir' IN) "
                          "are not supported by pgkeep yet", hint="take a full backup: BACKUP ... INTO 'collection'")
    if spec.scope == "cluster":
        raise Unsupported("full cluster backups are not supported by pgkeep yet",
                          hint="back up databases: BACKUP DATABASE d1, d2 INTO ...")
    clock = PhaseClock(_log, f"backup job {spec.job_id}")
    plan = await resolve_backup_tables(spec, connector)
    saved = (job.checkpoint or {}) if job is not None else {}
    start = dt.datetime.fromisoformat(saved["start"]) if saved.get("start") else dt.datetime.now(dt.timezone.utc)
    subdir = saved.get("subdir") or layout.full_subdir(start)
    lock = layout.lock_path(subdir, spec.job_id)
    await _claim_subdir(store, subdir, lock)
    checkpoint = {"subdir": subdir, "start": start.isoformat(), "databases": dict(saved.get("databases", {}))}

    async def save(ordinal: int, part: dict) -> None:
        checkpoint["databases"][str(ordinal)] = part
        if job is not None:
            await job.save_checkpoint(checkpoint)

    written: list[str] = []
    clock.lap("resolve and claim")
    pool = ThreadPoolExecutor(max_workers=max(2, settings.backup_parallelism),
                              thread_name_prefix="pgkeep-seal")
    try:
        databases: list[DatabaseEntry] = []
        uncaptured: list[str] = []
        end_time = start
        for ordinal, (dbname, table_filter) in enumerate(plan):
            old = saved.get("databases", {}).get(str(ordinal))
            entry, snap_time, left_out = await _backup_database(
                spec, connector, store, settings, subdir, ordinal, dbname, table_filter, written,
                job, pool, old if old and old.get("name") == dbname else None, save, clock)
            databases.append(entry)
            uncaptured += [f"{dbname}: {item}" for item in left_out]
            if left_out:
                _log.warning("backup of %s leaves out what pgkeep cannot back up yet: %s",
                             dbname, ", ".join(left_out))
            end_time = max(end_time, snap_time) if ordinal else snap_time
        conn = await connector.connect(plan[0][0])
        try:
            server_version = int(await conn.fetchval("SHOW server_version_num"))
        finally:
            await close_quietly(conn)
        if job is not None and job.stop == "cancel":  # last chance before the commit point
            job.check()
        manifest = Manifest(id=str(uuid.uuid4()), job_id=spec.job_id, backup_type="full",
                            scope=spec.scope, end_time=end_time.isoformat(),
                            server_version=server_version, pgkeep_version=PGKEEP_VERSION,
                            file_size_target=settings.file_size, databases=databases,
                            requested_as_of=spec.requested_as_of)
        body, sha = seal(manifest.to_bytes(), settings.compression_level)
        await put(store, layout.manifest_path(subdir), body)
        await put(store, layout.checksum_path(subdir), sha.encode())
        await put(store, layout.latest_marker(end_time), subdir.encode())
        await store.delete(lock)
        clock.lap("commit")
        clock.done()
    except JobStopped:
        raise  # paused or released: the checkpoint references what was written
    except BaseException:
        earlier = [f["path"] for part in checkpoint["databases"].values()
                   for t in part.get("tables", {}).values()
                   for c in t["chunks"].values() for f in c["files"]]
        await _cleanup(store, written + earlier + [layout.manifest_path(subdir),
                                                   layout.checksum_path(subdir), lock])
        raise
    finally:
        pool.shutdown(wait=False)
    tables = [t for d in databases for t in d.tables]
    return BackupResult(rows=sum(t.rows for t in tables), bytes=sum(t.logical_bytes for t in tables),
                        end_time=end_time, subdir=subdir, uncaptured=uncaptured)


async def _claim_subdir(store: ObjectStore, subdir: str, lock: str) -> None:
    """Refuse a subdir that holds a backup or another job's lock; take (or keep) ours."""
    async for info in store.list(subdir.strip("/") + "/"):
        name = info.path.rsplit("/", 1)[-1]
        if name == "BACKUP_MANIFEST":
            raise BackupExists(f"{join_uri(store.uri, subdir)} already contains a BACKUP_MANIFEST file")
        if name.startswith("BACKUP-LOCK-") and info.path != lock:
            raise BackupExists(f"{join_uri(store.uri, subdir)} is being written by job {name[12:]}",
                               hint="wait for that backup to finish, or back up again in a moment")
    await put(store, lock, b"")


async def _cleanup(store: ObjectStore, paths: list[str]) -> None:
    """Best effort: a failed backup has no manifest, so leftovers are unreferenced anyway."""
    for p in paths:
        try:
            await asyncio.shield(store.delete(p))
        except (EngineError, OSError, asyncio.CancelledError):
            pass

