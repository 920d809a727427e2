"""Reading chunks out of PostgreSQL into sealed data files: the COPY of one chunk (a range of
heap pages) and the sink that compresses it (zstd in worker threads, so compression overlaps
COPY) into parts that roll over at bulkio.backup.file_size. Memory stays bounded by a few
batches per worker, whatever the table size."""
from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from .. import schema as schema_mod
from ..format import layout
from ..format.envelope import LevelHint, Sealer
from ..format.manifest import Chunk, FileRef, TableEntry
from ..spec import EngineSettings
from ..storage import ObjectStore

__all__ = ["ChunkJob", "ChunkSink", "copy_out", "over_tcp", "qi", "range_sql", "begin_snapshot"]

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
class ChunkJob:
    """One chunk to produce: copied, or (with `base`) kept when the base is proven unchanged."""
    db_ordinal: int
    table: "schema_mod.TableInfo"
    entry: TableEntry
    chunk: Chunk
    page_range: tuple[int, int | None]          # heap pages [first, end); end None: to the end
    heap_bytes: int                             # what the chunk covers of the table's heap
    level: LevelHint                            # shared by the table's chunks
    bases: list = None                          # plan.Base candidates for keeping, tried in order


class ChunkSink:
    """Receives one chunk's COPY output and writes it as sealed parts of bounded size."""

    def __init__(self, store: ObjectStore, pool: ThreadPoolExecutor, settings: EngineSettings,
                 subdir: str, job: ChunkJob, written: list[str], coalesce: bool = False,
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


async def copy_out(conn, t: "schema_mod.TableInfo", page_range, fmt: str, sink) -> str:
    """COPY one chunk out: the whole table, or the rows of a range of heap pages (a TID range
    scan, PostgreSQL 14+). All-blank char(n) values of t.blank_as_empty go out as ''."""
    whole = page_range is None or (page_range[0] == 0 and page_range[1] is None)
    if whole and not t.blank_as_empty:
        return await conn.copy_from_table(t.name, schema_name=t.schema, columns=t.columns,
                                          format=fmt, output=sink)
    trimmed = set(t.blank_as_empty)
    cols = ", ".join(f"CASE WHEN {qi(c)} OPERATOR(pg_catalog.=) ''::pg_catalog.bpchar "
                     f"THEN ''::pg_catalog.bpchar ELSE {qi(c)} END"
                     if c in trimmed else qi(c) for c in t.columns)
    return await conn.copy_from_query(
        f"SELECT {cols} FROM ONLY {qi(t.schema)}.{qi(t.name)} WHERE {range_sql(page_range)}",
        format=fmt, output=sink)


def over_tcp(conn) -> bool:
    """Whether an asyncpg connection runs over TCP (not a Unix socket)."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6)


def qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def begin_snapshot(conn, snapshot: str | None = None) -> None:
    await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    if snapshot:
        await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")


def range_sql(page_range) -> str:
    if page_range is None:
        return "true"
    lo, hi = page_range
    cond = [f"ctid >= '({lo},0)'::tid"] if lo else []
    if hi is not None:
        cond.append(f"ctid < '({hi},0)'::tid")
    return " AND ".join(cond) or "true"
