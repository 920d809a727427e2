"""BACKUP: a transactionally consistent full or incremental backup of databases or tables.

A run is four units (docs/FORMAT.md): resolve the destination and claim it (dest.py: a full's
subdir, or an incremental's chain position and layer directory), plan each database under one
snapshot (plan.py: per chunk, copy it or keep files proven equal), copy (here: worker
connections import the snapshot and test or COPY chunks in parallel, largest first), and commit
(commit.py: manifest, checksum, a full's LATEST; each created, never overwritten). `BackupRun`
is what the units share; `Checkpoint` (checkpoint.py) what a run leaves for the next. A backup
that fails or is cancelled before its commit point deletes its own directory's objects, best
effort (section 4.3).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import pausepoints
from ..format import layout
from ..format.envelope import seal
from ..format.manifest import DatabaseEntry, FileRef, Manifest
from ..jobs import JobStopped, NoJob
from ..parallel import close_quietly, run_parallel
from ..spec import BackupResult, BackupSpec, Connector, EngineSettings
from ..storage import ObjectStore, put, read_all
from ..targets import resolve_backup_tables
from ..timing import PhaseClock
from . import commit as commit_mod
from .checkpoint import Checkpoint, DatabaseMark, DoneChunk
from .dest import Destination, claim, refuse_unsupported, resolve_destination
from .plan import plan_database, unchanged
from .sink import ChunkJob, ChunkSink, begin_snapshot, copy_out, over_tcp, qi
from .snapshot import Snapshot, take_snapshot
from .walsum import Quiet, quiet_pages

__all__ = ["run_backup", "PGKEEP_VERSION", "BackupRun"]

_log = logging.getLogger("pgkeep.backup")
PGKEEP_VERSION = "0.1.0"
SAVE_INTERVAL = 1.0     # seconds: at most one checkpoint save per interval while chunks are copied


@dataclass
class BackupRun:
    """What every unit of one run of a backup job shares."""
    spec: BackupSpec
    connector: Connector
    store: ObjectStore
    settings: EngineSettings
    job: object                        # engine.jobs.JobContext or NoJob
    pool: ThreadPoolExecutor
    clock: PhaseClock
    mark: Checkpoint
    saved: Checkpoint | None           # the checkpoint of the run before this one
    dest: Destination = field(default_factory=Destination)
    written: list[str] = field(default_factory=list)   # paths this run wrote (or began to)
    committed: bool = False                            # the checksum is written: never clean up
    refused: list[str] = field(default_factory=list)   # deletes the store refused
    # A token of this run alone, in the name of every data and schema file it writes: a process
    # that lost its lease and wakes up later (a zombie) writes names its adopter never uses, so it
    # can never replace a file of the backup the adopter commits (docs/FORMAT.md section 4.4).
    attempt: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    kept: int = 0                                      # chunks kept (not copied) by this run
    kept_quiet: int = 0                                # of those, kept by the WAL summaries
    saved_at: float = 0.0                              # time.monotonic() of the last save
    unsaved: bool = False                              # chunks done since the last save
    saving: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def save(self) -> None:
        """The whole checkpoint, now (docs/FORMAT.md 4.2). `unsaved` is cleared and the JSON
        built with no await in between: a chunk recorded before a save began is in it."""
        self.unsaved = False
        self.saved_at = time.monotonic()
        await self.job.save_checkpoint(self.mark.to_json())

    async def chunk_done(self, now: bool = False) -> None:
        """A chunk's files are recorded in the mark: saved with the next save, at most one per
        SAVE_INTERVAL (a save writes the whole checkpoint, so one per chunk costs O(chunks^2));
        `now` waits for a save that includes it. A process killed in between leaves those
        files unnamed: debris the next run deletes, their chunks copied again (FORMAT.md 4.2)."""
        self.unsaved = True
        if not now and (self.saving.locked() or time.monotonic() - self.saved_at < SAVE_INTERVAL):
            return
        await self.flush()

    async def flush(self) -> None:
        """Save when a chunk was recorded since the last save began."""
        async with self.saving:
            if self.unsaved:
                await self.save()

    def reach(self, point: str) -> None:
        pausepoints.reach(point, self.job, self.settings.pausepoints)


# ---------------------------------------------------------------------------------------------
# copy: one database under one snapshot

async def _lock_nowait(conn, t) -> bool:
    """ACCESS SHARE on `t` for a worker, unless that would wait: a worker queued behind an
    ACCESS EXCLUSIVE request (itself waiting for the coordinator's lock) would wait forever."""
    try:
        await conn.execute(f"SAVEPOINT pgkeep_lock; LOCK TABLE {qi(t.schema)}.{qi(t.name)} "
                           "IN ACCESS SHARE MODE NOWAIT; RELEASE SAVEPOINT pgkeep_lock")
        return True
    except Exception as e:  # noqa: BLE001 - only "would wait" is expected
        if getattr(e, "sqlstate", None) != "55P03":
            raise
        await conn.execute("ROLLBACK TO SAVEPOINT pgkeep_lock")
        return False


def _keep(run: BackupRun, mark: DatabaseMark, item: ChunkJob, base) -> None:
    """The chunk is `base`'s files: done, its rows not moved (unless this job copied them before)."""
    item.chunk.rows, item.chunk.files = base.rows, list(base.files)
    if base.own:
        mark.tables[item.table.oid].chunks[item.chunk.index] = DoneChunk(base.rows, list(base.files))
    run.kept += 1
    run.kept_quiet += base.quiet
    run.job.progress(item.heap_bytes, base.rows if base.own else 0)


async def _copy_chunks(run: BackupRun, snap: Snapshot, dbname: str, mark: DatabaseMark,
                       todo: list[ChunkJob]) -> None:
    """Each chunk, on workers sharing the snapshot, largest first: kept when one of its bases
    is proven unchanged (by the WAL summaries at once, without reading it; else by
    plan.unchanged), else COPYed; each chunk copied is checkpointed before the next is taken. A
    chunk whose table a worker cannot lock without waiting is left to the coordinator, which
    holds every lock already."""
    rest = []
    for item in todo:
        base = next((b for b in item.bases or () if b.quiet), None)
        if base is not None:
            _keep(run, mark, item, base)
        else:
            rest.append(item)
    todo = sorted(rest, key=lambda j: -j.heap_bytes)
    workers: list = []
    locked: set[tuple[int, int]] = set()      # (id(worker), table oid)
    deferred: list[ChunkJob] = []
    try:
        for _ in range(max(1, min(run.settings.backup_parallelism, len(todo))) if todo else 0):
            w = await run.connector.connect(dbname)
            workers.append(w)
            await begin_snapshot(w, snap.exported)

        async def do_chunk(conn, item: ChunkJob) -> None:
            if conn is not snap.coord and (id(conn), item.table.oid) not in locked:
                if not await _lock_nowait(conn, item.table):
                    deferred.append(item)
                    return
                locked.add((id(conn), item.table.oid))
            tm = mark.tables[item.table.oid]
            for base in item.bases or ():
                if await unchanged(conn, item.table, base):
                    _keep(run, mark, item, base)
                    return
            sink = ChunkSink(run.store, run.pool, run.settings, run.mark.subdir, item, run.written,
                             over_tcp(conn), run.reach, run.attempt)
            try:
                status = await copy_out(conn, item.table, item.page_range, item.entry.format, sink)
                await sink.finish()
            except BaseException:
                await sink.abort()
                raise
            item.chunk.rows = int(status.split()[-1])
            # in heap bytes, the unit of total_bytes, whatever the COPY format
            run.job.progress(item.heap_bytes, item.chunk.rows)
            tm.chunks[item.chunk.index] = DoneChunk(item.chunk.rows, list(item.chunk.files))
            # the fault point's contract: this chunk is in the checkpoint when it fires
            await run.chunk_done(now=pausepoints.armed("backup.after_chunk", run.job,
                                                       run.settings.pausepoints))
            run.reach("backup.after_chunk")

        run.clock.lap(f"{dbname}: {len(workers)} connections")
        try:
            await run_parallel(workers, todo, do_chunk, run.job)
            if deferred:
                _log.info("backup of %s: %d chunks read by the coordinator (a lock request was "
                          "queued on their tables)", dbname, len(deferred))
                await run_parallel([snap.coord], deferred, do_chunk, run.job)
        except JobStopped as stop:
            # paused, or released at a shutdown: what was copied is kept for the next run;
            # a run that lost its lease saves nothing (the job runs elsewhere now)
            if stop.reason == "pause" or await commit_mod.holds_lease(run):
                await run.flush()
            raise
        await run.flush()
    finally:
        for w in workers:
            await close_quietly(w)


async def _backup_database(run: BackupRun, ordinal: int, dbname: str, table_filter
                           ) -> tuple[DatabaseEntry, dt.datetime, list[str]]:
    """Back up one database under one snapshot. Chunks of the parent layer or of an earlier run
    of this job (before a pause or a crash) are kept only when proven equal under this
    snapshot, so the whole backup is this snapshot's (docs/FORMAT.md sections 4.2, 7.3)."""
    snap = await take_snapshot(run.connector, dbname, table_filter)
    run.clock.lap(f"{dbname}: snapshot and schema")
    try:
        saved = run.saved.databases.get(ordinal) if run.saved else None
        if saved is not None and (saved.name != dbname or saved.oid not in (None, snap.database_oid)):
            saved = None
        # matched by name; by OID too where the parent recorded it: one dropped and re-created
        # from a template has a new OID and tables whose identities may be the old ones'
        parent = next((d for d in run.dest.parent.databases if d.name == dbname
                       and d.oid in (None, snap.database_oid)), None) if run.dest.incremental else None
        if parent is not None:
            quiet = await quiet_pages(snap.coord, parent.wal_start, [t.oid for t in snap.tables])
            run.clock.lap(f"{dbname}: WAL summaries")
        else:
            quiet = Quiet("a full")
        entries, mark, todo = plan_database(ordinal, dbname, snap, run.settings.chunk_size, parent,
                                            saved, quiet)
        run.mark.databases[ordinal] = mark
        run.job.total_bytes += sum(j.heap_bytes for j in todo)
        candidates = sum(1 for j in todo if j.bases)
        run.job.phase = f"backing up {dbname}"
        await run.save()
        kept_before, quiet_before = run.kept, run.kept_quiet
        await _copy_chunks(run, snap, dbname, mark, todo)
        kept, by_wal = run.kept - kept_before, run.kept_quiet - quiet_before
        if candidates:
            _log.info("backup of %s: %d of %d chunks unchanged since %s (%d by WAL summaries, %d "
                      "by a scan%s), %d copied", dbname, kept, len(todo),
                      "the parent layer" if run.dest.incremental else "the run before", by_wal,
                      kept - by_wal, f"; WAL summaries not used: {quiet.why}" if quiet.why else "",
                      len(todo) - kept)
        run.clock.lap(f"{dbname}: data ({len(todo) - kept} chunks copied, {kept} kept)")
        for e in entries:
            e.rows = sum(c.rows for c in e.chunks)
            e.logical_bytes = sum(f.logical_bytes for f in e.files)
        schema_file = await _write_schema(run, ordinal, snap.schema)
        await snap.coord.execute("COMMIT")
    finally:
        await close_quietly(snap.coord)
    entry = DatabaseEntry(ordinal, dbname, snap.time.isoformat(), schema_file, table_filter is None,
                          entries, selected=None if table_filter is None else sorted(table_filter),
                          snapshot=snap.text, oid=snap.database_oid,
                          wal_start=snap.wal_start.to_json() if snap.wal_start else None,
                          proof={"wal": by_wal, "scan": kept - by_wal, "why": quiet.why}
                          if parent is not None else None)
    # A table backup holds only its tables: the database's other objects are not its business.
    return entry, snap.time, snap.schema.uncaptured if table_filter is None else []


async def _write_schema(run: BackupRun, ordinal: int, schema) -> FileRef:
    """The schema file: JSON of the captured schema, sealed like every other file."""
    data, sha = await asyncio.get_running_loop().run_in_executor(
        run.pool, seal, json.dumps(schema.to_json(), separators=(",", ":")).encode(),
        run.settings.compression_level)
    path = layout.schema_path(run.mark.subdir, ordinal, run.attempt)
    run.written.append(path)
    await put(run.store, path, data)
    return FileRef(path, len(data), sha)


async def _copy(run: BackupRun, plan) -> tuple[Manifest, list[str]]:
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
    d = run.dest
    manifest = Manifest(id=str(uuid.uuid4()), job_id=run.spec.job_id,
                        backup_type="incremental" if d.incremental else "full",
                        scope=run.spec.scope, end_time=end_time.isoformat(),
                        start_time=d.parent.end_time if d.incremental else None,
                        server_version=server_version, pgkeep_version=PGKEEP_VERSION,
                        file_size_target=run.settings.file_size, databases=databases,
                        requested_as_of=run.spec.requested_as_of, chain=list(d.chain))
    return manifest, uncaptured


# ---------------------------------------------------------------------------------------------

async def run_backup(spec: BackupSpec, connector: Connector, store: ObjectStore,
                     settings: EngineSettings, job=None) -> BackupResult:
    """`job` (engine.jobs.JobContext; NoJob when None) gets progress and checkpoints, and may
    stop the backup at a chunk boundary; a checkpoint from an earlier run of the same job is
    resumed."""
    refuse_unsupported(spec)
    job = job if job is not None else NoJob()
    saved = Checkpoint.from_json(job.checkpoint) if job.checkpoint else None
    mark = Checkpoint(saved.subdir, saved.start, saved.token, parent=saved.parent) if saved else \
        Checkpoint("", dt.datetime.now(dt.timezone.utc).isoformat())
    pool = ThreadPoolExecutor(max_workers=max(2, settings.backup_parallelism),
                              thread_name_prefix="pgkeep-seal")
    run = BackupRun(spec, connector, store, settings, job, pool,
                    PhaseClock(_log, f"backup job {spec.job_id}"), mark, saved)
    try:
        manifest, uncaptured = await _claim_copy_commit(run)
    finally:
        pool.shutdown(wait=False)
    rows, nbytes = _moved(manifest, mark.subdir)
    return BackupResult(rows=rows, bytes=nbytes, end_time=manifest.end_datetime, subdir=mark.subdir,
                        uncaptured=uncaptured)


def _moved(manifest: Manifest, subdir: str) -> tuple[int, int]:
    """(rows, logical bytes) of the chunks whose files this backup wrote: all of a full's, and
    of an incremental only what its layer copied, not the earlier layers' files it names
    (CockroachDB's result row counts what that backup wrote)."""
    own = subdir.strip("/") + "/"
    chunks = [c for d in manifest.databases for t in d.tables for c in t.chunks
              if c.files and c.files[0].path.startswith(own)]
    return sum(c.rows for c in chunks), sum(f.logical_bytes for c in chunks for f in c.files)


async def _claim_copy_commit(run: BackupRun) -> tuple[Manifest, list[str]]:
    """The units; on a failure or cancel before the commit point, the cleanup."""
    claimed = False
    try:
        # a new job with a bad target claims nothing; a resumed one cleans up even then
        plan = None if run.saved else await resolve_backup_tables(run.spec, run.connector)
        run.dest = await resolve_destination(run, plan)
        resumed = bool(run.mark.subdir)
        own = await claim(run)
        claimed = True
        if resumed:     # a run killed mid-file may have left debris in the directory kept
            await commit_mod.discard_debris(run)
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
            if await commit_mod.still_ours(run) is False:
                raise JobStopped("release")
            await commit_mod.drop_leftovers(run, manifest)
            if run.job.stop == "cancel":  # last chance before the commit point
                run.job.check()
            run.reach("backup.before_manifest")
        await commit_mod.commit(run, manifest, stored)
        await commit_mod.discard_debris(run)      # e.g. of an earlier run killed mid-file after its claim
        run.clock.lap("commit")
        run.clock.done()
        return manifest, uncaptured
    except (JobStopped, asyncio.CancelledError):
        raise  # paused, released or shut down: the checkpoint references what was written
    except BaseException as e:
        if claimed and not run.committed:
            ours = await commit_mod.still_ours(run)
            if ours is False:     # the job runs elsewhere now, in this directory: hands off
                raise JobStopped("release") from e
            if ours is None:      # not proven ours: the job's next run cleans up
                raise
            await commit_mod.abandon(run)
            commit_mod.report_refused(run, e)
        elif not claimed:
            await commit_mod.drop_unfinished_claim(run)
        raise
