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
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import schema as schema_mod
from .errors import BackupExists, EngineError, Unsupported
from .format import layout
from .format.envelope import Sealer, seal
from .format.manifest import Chunk, DatabaseEntry, FileRef, Manifest, TableEntry
from .spec import BackupResult, BackupSpec, Connector, EngineSettings, Progress
from .storage import ObjectStore, put
from .targets import resolve_backup_tables

__all__ = ["run_backup", "PGKEEP_VERSION"]

_log = logging.getLogger("pgkeep.backup")
PGKEEP_VERSION = "0.1.0"
_BATCH = 4 << 20             # bytes of COPY output handed to a compression thread at once


@dataclass
class _Job:
    db_ordinal: int
    table: "schema_mod.TableInfo"
    entry: TableEntry
    chunk: Chunk
    page_range: tuple[int, int | None] | None   # None: the whole table


class _ChunkSink:
    """Receives one chunk's COPY output and writes it as sealed parts of bounded size."""

    def __init__(self, store: ObjectStore, pool: ThreadPoolExecutor, settings: EngineSettings,
                 subdir: str, job: _Job, written: list[str], progress: Progress | None) -> None:
        self.store, self.pool, self.settings = store, pool, settings
        self.subdir, self.job, self.written, self.progress = subdir, job, written, progress
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

    async def _flush(self) -> None:
        batch = b"".join(self.buf)
        self.buf.clear()
        self.size = 0
        if self.pending is not None:
            await self.pending
        self.pending = asyncio.ensure_future(self._process(batch))

    async def _open_part(self) -> None:
        path = layout.data_path(self.subdir, self.job.db_ordinal, self.job.table.oid,
                                self.job.chunk.index, self.part)
        self.sealer = Sealer(self.settings.compression_level)
        self.writer = await self.store.writer(path)
        self.written.append(path)
        self.path = path

    async def _close_part(self) -> None:
        tail = self.sealer.finish()
        await self.writer.write(tail)
        await self.writer.commit()
        self.job.chunk.files.append(FileRef(self.path, self.sealer.stored_size, self.sealer.sha256,
                                            self.sealer.logical_size))
        self.writer = None
        self.part += 1

    async def _process(self, batch: bytes) -> None:
        if self.writer is None:
            await self._open_part()
        out = await self.loop.run_in_executor(self.pool, self.sealer.feed, batch)
        await self.writer.write(out)
        if self.progress:
            self.progress(len(batch), 0)
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
    scan, PostgreSQL 14+)."""
    if page_range is None:
        return await conn.copy_from_table(t.name, schema_name=t.schema, columns=t.columns,
                                          format=fmt, output=sink)
    lo, hi = page_range
    cond = f"ctid >= '({lo},0)'::tid" + (f" AND ctid < '({hi},0)'::tid" if hi is not None else "")
    cols = ", ".join(_qi(c) for c in t.columns)
    return await conn.copy_from_query(
        f"SELECT {cols} FROM ONLY {_qi(t.schema)}.{_qi(t.name)} WHERE {cond}", format=fmt, output=sink)


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _begin_snapshot(conn, snapshot: str | None = None) -> None:
    await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    if snapshot:
        await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")


async def _backup_database(spec: BackupSpec, connector: Connector, store: ObjectStore,
                           settings: EngineSettings, subdir: str, ordinal: int, dbname: str,
                           table_filter, written: list[str], progress: Progress | None,
                           pool: ThreadPoolExecutor) -> tuple[DatabaseEntry, dt.datetime]:
    coord = await connector.connect(dbname)
    workers: list = []
    try:
        await _begin_snapshot(coord)
        snapshot, snap_time = await coord.fetchrow("SELECT pg_export_snapshot(), clock_timestamp()")
        schema = await schema_mod.capture(coord)
        tables = [t for t in schema.tables if table_filter is None or t.oid in table_filter]
        sizes = dict(await coord.fetch(
            "SELECT c.oid, pg_relation_size(c.oid) / current_setting('block_size')::int "
            "FROM pg_class c WHERE c.oid = ANY($1::oid[])", [t.oid for t in tables]))
        block = int(await coord.fetchval("SELECT current_setting('block_size')::int"))
        chunk_pages = max(1, settings.chunk_size // block)
        entries: list[TableEntry] = []
        jobs: list[tuple[int, _Job]] = []
        for t in tables:
            fmt = "binary" if t.binary_ok else "text"
            e = TableEntry(t.oid, t.schema, t.name, t.kind, fmt, list(t.columns))
            entries.append(e)
            pages = int(sizes.get(t.oid, 0))
            if pages <= chunk_pages:
                ranges = [None]
            else:
                starts = list(range(0, pages, chunk_pages))
                ranges = [(s, starts[i + 1] if i + 1 < len(starts) else None)
                          for i, s in enumerate(starts)]
            for i, r in enumerate(ranges):
                c = Chunk(i)
                e.chunks.append(c)
                weight = chunk_pages if r is not None else pages
                jobs.append((weight, _Job(ordinal, t, e, c, r)))
        jobs.sort(key=lambda j: -j[0])
        queue: asyncio.Queue[_Job] = asyncio.Queue()
        for _, j in jobs:
            queue.put_nowait(j)
        n = max(1, min(settings.backup_parallelism, len(jobs)))
        for _ in range(n):
            w = await connector.connect(dbname)
            workers.append(w)
            await _begin_snapshot(w, snapshot)

        async def work(conn) -> None:
            while not queue.empty():
                job = queue.get_nowait()
                sink = _ChunkSink(store, pool, settings, subdir, job, written, progress)
                try:
                    status = await _copy_out(conn, job.table, job.page_range, job.entry.format, sink)
                    await sink.finish()
                except BaseException:
                    await sink.abort()
                    raise
                job.chunk.rows = int(status.split()[-1])
                if progress:
                    progress(0, job.chunk.rows)

        if jobs:
            await _gather_or_cancel([work(w) for w in workers])
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
        return entry, snap_time
    finally:
        for c in [coord, *workers]:
            await _close_quietly(c)


async def _gather_or_cancel(coros) -> None:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _close_quietly(conn) -> None:
    try:
        await asyncio.wait_for(conn.close(), 5)
    except Exception:  # noqa: BLE001 - closing after a failure must not mask it
        conn.terminate()


async def run_backup(spec: BackupSpec, connector: Connector, store: ObjectStore,
                     settings: EngineSettings, progress: Progress | None = None) -> BackupResult:
    if spec.latest or spec.subdir is not None:
        raise Unsupported("incremental backups (BACKUP ... INTO LATEST IN / INTO 'subdir' IN) "
                          "are not supported by pgkeep yet", hint="take a full backup: BACKUP ... INTO 'collection'")
    if spec.scope == "cluster":
        raise Unsupported("full cluster backups are not supported by pgkeep yet",
                          hint="back up databases: BACKUP DATABASE d1, d2 INTO ...")
    plan = await resolve_backup_tables(spec, connector)
    start = dt.datetime.now(dt.timezone.utc)
    subdir = layout.full_subdir(start)
    lock = layout.lock_path(subdir, spec.job_id)
    await _claim_subdir(store, subdir, lock)
    written: list[str] = []
    pool = ThreadPoolExecutor(max_workers=max(2, settings.backup_parallelism),
                              thread_name_prefix="pgkeep-seal")
    try:
        databases: list[DatabaseEntry] = []
        end_time = start
        server_version = 0
        for ordinal, (dbname, table_filter) in enumerate(plan):
            entry, snap_time = await _backup_database(spec, connector, store, settings, subdir,
                                                      ordinal, dbname, table_filter, written,
                                                      progress, pool)
            databases.append(entry)
            end_time = max(end_time, snap_time) if ordinal else snap_time
        conn = await connector.connect(plan[0][0])
        try:
            server_version = int(await conn.fetchval("SHOW server_version_num"))
        finally:
            await _close_quietly(conn)
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
    except BaseException:
        await _cleanup(store, written + [layout.manifest_path(subdir), layout.checksum_path(subdir), lock])
        raise
    finally:
        pool.shutdown(wait=False)
    tables = [t for d in databases for t in d.tables]
    return BackupResult(rows=sum(t.rows for t in tables), bytes=sum(t.logical_bytes for t in tables),
                        end_time=end_time, subdir=subdir)


async def _claim_subdir(store: ObjectStore, subdir: str, lock: str) -> None:
    async for info in store.list(subdir.strip("/") + "/"):
        name = info.path.rsplit("/", 1)[-1]
        if name == "BACKUP_MANIFEST":
            raise BackupExists(f"{store.uri}{subdir} already contains a BACKUP_MANIFEST file")
        if name.startswith("BACKUP-LOCK-"):
            raise BackupExists(f"{store.uri}{subdir} is being written by job {name[12:]}",
                               hint="wait for that backup to finish, or back up again in a moment")
    await put(store, lock, b"")


async def _cleanup(store: ObjectStore, paths: list[str]) -> None:
    """Best effort: a failed backup has no manifest, so leftovers are unreferenced anyway."""
    for p in paths:
        try:
            await asyncio.shield(store.delete(p))
        except (EngineError, OSError, asyncio.CancelledError):
            pass

