"""RESTORE of databases and tables, atomic: a failure or cancel leaves nothing behind.

Database restore: create a temporary database, replay the pre-data schema, load every chunk with
parallel COPY (data before indexes and constraints), run the post-data stages in parallel, then
rename the database to its final name in one statement. Any failure drops the temporary database.

Table restore (into an existing database): everything in one transaction on one connection —
PostgreSQL's DDL is transactional, so a failure rolls back to exactly what was there.

schema_only creates the objects without rows; with verify_backup_table_data every data file is
also read, checksummed and decoded row by row (no rows are written).
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import schema as schema_mod
from .collection import BackupHandle, open_backup, read_file, read_schema
from .errors import DuplicateDatabase, DuplicateTable, InvalidTarget, Unsupported, UndefinedObject
from .format.copystream import CopyDecoder
from .format.manifest import Chunk, DatabaseEntry, TableEntry
from .jobs import JobStopped
from .spec import Connector, EngineSettings, Progress, RestoreResult, RestoreSpec, TableRef
from .storage import ObjectStore
from .targets import table_name
from .timing import PhaseClock
from .parallel import run_parallel

__all__ = ["run_restore"]

_log = logging.getLogger("pgkeep.restore")
_RELATION_KINDS = frozenset(("table", "foreign_table", "view", "matview", "sequence"))


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'



@dataclass
class _Load:
    table: TableEntry
    chunk: Chunk


async def _chunk_stream(store: ObjectStore, chunk: Chunk, progress: Progress | None, pool=None):
    for f in chunk.files:
        async for data in read_file(store, f, pool):
            if progress:
                progress(len(data), 0)
            yield data


async def _load_chunk(conn, store: ObjectStore, load: _Load, progress: Progress | None,
                      pool=None) -> None:
    t = load.table
    await conn.copy_to_table(t.name, schema_name=t.schema, columns=t.columns, format=t.format,
                             source=_chunk_stream(store, load.chunk, progress, pool))
    if progress:
        progress(0, load.chunk.rows)


async def _verify_chunk(store: ObjectStore, load: _Load, pool=None) -> None:
    t = load.table
    dec = CopyDecoder(f"{t.schema}.{t.name} chunk {load.chunk.index}", t.format, len(t.columns))
    async for data in _chunk_stream(store, load.chunk, None, pool):
        dec.feed(data)
    rows = dec.finish()
    if rows != load.chunk.rows:
        from .errors import DataCorrupted
        raise DataCorrupted(f"{t.schema}.{t.name} chunk {load.chunk.index} holds {rows} rows, "
                            f"the manifest says {load.chunk.rows}")


def _loads(tables: list[TableEntry]) -> list[_Load]:
    loads = [_Load(t, c) for t in tables for c in t.chunks]
    loads.sort(key=lambda l: -sum(f.size for f in l.chunk.files))
    return loads


async def _existing_roles(conn) -> set[str]:
    return {r[0] for r in await conn.fetch("SELECT rolname FROM pg_roles")}


async def _drop_quietly(admin, name: str) -> None:
    try:
        await asyncio.shield(admin.execute(f"DROP DATABASE IF EXISTS {_qi(name)} WITH (FORCE)"))
    except Exception:  # noqa: BLE001 - the original failure matters more
        _log.exception("could not drop the temporary database %s", name)


_PROGRESS = "pgkeep_restore.progress"


async def _done_steps(conn) -> set[str] | None:
    """Steps of an earlier run of this job committed in the temporary database, or None when
    its schema was not completely created (then it starts over)."""
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", _PROGRESS):
        return None
    done = {r[0] for r in await conn.fetch(f"SELECT step FROM {_PROGRESS}")}
    return done if "pre-data" in done else None


async def _step(conn, key: str, work) -> None:
    """Run one step and record it in the same transaction: done exactly once, even across a
    pause, a crash and an adoption by another process."""
    async with conn.transaction():
        await work()
        await conn.execute(f"INSERT INTO {_PROGRESS} VALUES ($1)", key)


async def _restore_database(handle: BackupHandle, entry: DatabaseEntry, target: str,
                            spec: RestoreSpec, connector: Connector, settings: EngineSettings,
                            job) -> RestoreResult:
    store = handle.store
    schema = await read_schema(store, entry.schema_file)
    admin = await connector.connect(spec.session_database or "postgres")
    tmp = f"pgkeep_restore_{spec.job_id}_{entry.ordinal}"
    conns: list = []
    pool = ThreadPoolExecutor(max_workers=max(2, settings.restore_parallelism),
                              thread_name_prefix="pgkeep-open")
    clock = PhaseClock(_log, f"restore of {entry.name} as {target}")
    progress = job.progress if job is not None else None
    try:
        if await admin.fetchval("SELECT true FROM pg_database WHERE datname = $1", target):
            raise DuplicateDatabase(f'database "{target}" already exists',
                                    hint="restore it under another name: WITH new_db_name = '...'")
        roles = await _existing_roles(admin)
        plan = schema_mod.plan_restore(
            schema, target_database=target, existing_roles=roles, restoring_user=spec.user,
            skip_missing_foreign_keys=spec.skip_missing_foreign_keys,
            skip_missing_sequences=spec.skip_missing_sequences,
            skip_missing_sequence_owners=spec.skip_missing_sequence_owners,
            skip_missing_views=spec.skip_missing_views, skip_missing_udfs=spec.skip_missing_udfs)
        if job is not None:
            job.total_bytes += sum(t.logical_bytes for t in entry.tables)
            job.phase = f"restoring {entry.name}"
        if spec.verify_backup_table_data:
            await run_parallel([None] * max(1, settings.restore_parallelism), _loads(entry.tables),
                                lambda _c, load: _verify_chunk(store, load, pool), job)
            clock.lap("verify")
        done = None
        if await admin.fetchval("SELECT true FROM pg_database WHERE datname = $1", tmp):
            probe = await connector.connect(tmp)
            try:
                done = await _done_steps(probe)
            finally:
                await probe.close()
            if done is None:
                await _drop_quietly(admin, tmp)
        try:
            if done is None:
                await admin.execute(schema.database.create_statement(tmp))
            n = max(1, settings.restore_parallelism)
            for _ in range(n):
                c = await connector.connect(tmp)
                await c.execute(";".join(plan.session_setup + [
                    "SET synchronous_commit = off", "SET maintenance_work_mem = '256MB'",
                    # Autovacuum starts on a freshly loaded table and holds a lock that CREATE
                    # INDEX waits for until the deadlock check cancels autovacuum: after 1 s by
                    # default, which was a third of a pgbench restore. 20 ms instead.
                    "SET deadlock_timeout = '20ms'"]))
                conns.append(c)
            if done is None:
                for stmt in plan.pre_data:
                    await conns[0].execute(stmt)
                await conns[0].execute(f"CREATE SCHEMA pgkeep_restore; CREATE TABLE {_PROGRESS}"
                                       "(step text PRIMARY KEY); INSERT INTO " + _PROGRESS +
                                       " VALUES ('pre-data')")
                done = {"pre-data"}
            else:
                _log.info("restore of %s resumed: %d steps were done", entry.name, len(done))
            clock.lap("schema")
            if not spec.schema_only:
                loads = [l for l in _loads(entry.tables) if f"data:{l.table.oid}:{l.chunk.index}" not in done]

                async def load(c, l):
                    await _step(c, f"data:{l.table.oid}:{l.chunk.index}",
                                lambda: _load_chunk(c, store, l, progress, pool))
                await run_parallel(conns, loads, load, job)
                clock.lap("data")
            last = len(plan.post_data) - plan.event_stages
            for n, stage in enumerate(plan.post_data[:last]):
                todo = [(i, stmt) for i, stmt in enumerate(stage) if f"post:{n}:{i}" not in done]

                async def run(c, item, n=n):
                    await _step(c, f"post:{n}:{item[0]}", lambda: c.execute(item[1]))
                await run_parallel(conns, todo, run, job)
                clock.lap(f"post-data stage {n} ({len(stage)} statements)")
            # The restore's last DDL of its own, before the event triggers exist (they may
            # forbid DDL). From here a pause or crash starts the restore over.
            await conns[0].execute("DROP SCHEMA pgkeep_restore CASCADE")
            for stage in plan.post_data[last:]:
                for stmt in stage:
                    await conns[0].execute(stmt)
            clock.lap("event triggers")
            index_entries = int(await conns[0].fetchval(
                "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0) FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"))
            for c in conns:
                await c.close()
            conns.clear()
            if job is not None and job.stop == "cancel":  # last chance before the commit point
                job.check()
            await admin.execute(f"ALTER DATABASE {_qi(tmp)} RENAME TO {_qi(target)}")
            clock.lap("rename")
        except JobStopped:
            for c in conns:
                c.terminate()
            raise  # paused or released: the temporary database keeps what was done
        except BaseException:
            for c in conns:
                c.terminate()
            conns.clear()
            await _drop_quietly(admin, tmp)
            raise
        if plan.database_post:
            final = await connector.connect(target)
            try:
                for stmt in plan.database_post:
                    await final.execute(stmt)
            finally:
                await final.close()
        rows = 0 if spec.schema_only else sum(t.rows for t in entry.tables)
        size = 0 if spec.schema_only else sum(t.logical_bytes for t in entry.tables)
        clock.done()
        return RestoreResult(rows=rows, index_entries=0 if spec.schema_only else index_entries,
                             bytes=size, uncaptured=[f"{entry.name}: {item}" for item in schema.uncaptured])
    finally:
        pool.shutdown(wait=False)
        await admin.close()


async def _restore_tables(handle: BackupHandle, spec: RestoreSpec, connector: Connector,
                          settings: EngineSettings, job) -> RestoreResult:
    store = handle.store
    progress = job.progress if job is not None else None
    result = RestoreResult()
    selections = await _select_tables(handle, spec)
    for entry, schema, oids in selections:
        target = spec.into_db or entry.name
        admin = await connector.connect(spec.session_database or "postgres")
        try:
            if not await admin.fetchval("SELECT true FROM pg_database WHERE datname = $1", target):
                names = sorted(t.name for t in schema.tables if t.oid in oids) or ["?"]
                raise UndefinedObject(f'a database named "{target}" needs to exist to restore '
                                      f'table "{names[0]}"',
                                      hint="create it first, or restore into another one WITH into_db = '...'")
            roles = await _existing_roles(admin)
        finally:
            await admin.close()
        plan = schema_mod.plan_restore(
            schema, target_database=target, tables=oids, existing_roles=roles, restoring_user=spec.user,
            skip_missing_foreign_keys=spec.skip_missing_foreign_keys,
            skip_missing_sequences=spec.skip_missing_sequences,
            skip_missing_sequence_owners=spec.skip_missing_sequence_owners,
            skip_missing_views=spec.skip_missing_views, skip_missing_udfs=spec.skip_missing_udfs)
        loaded = {t.oid for t in plan.tables}
        tables = [t for t in entry.tables if t.oid in loaded]
        if spec.verify_backup_table_data:
            for load in _loads(tables):
                await _verify_chunk(store, load)
        conn = await connector.connect(target)
        try:
            for t in tables:
                if await conn.fetchval("SELECT to_regclass(quote_ident($1) || '.' || quote_ident($2))",
                                       t.schema, t.name):
                    raise DuplicateTable(f'relation "{t.schema}.{t.name}" already exists',
                                         hint="drop it first, or restore into another database "
                                              "WITH into_db = '...'")
            async with conn.transaction():
                for stmt in plan.pre_data:
                    await conn.execute(stmt)
                if not spec.schema_only:
                    for load in _loads(tables):
                        if job is not None:
                            job.check()  # a pause rolls the whole transaction back
                        await _load_chunk(conn, store, load, progress)
                for stage in plan.post_data:
                    for stmt in stage:
                        await conn.execute(stmt)
        finally:
            await conn.close()
        if not spec.schema_only:
            result.rows += sum(t.rows for t in tables)
            result.bytes += sum(t.logical_bytes for t in tables)
    return result


async def _select_tables(handle: BackupHandle, spec: RestoreSpec):
    """Resolve RESTORE TABLE names against the backup's contents: (db entry, schema, OIDs)."""
    out = []
    for entry in handle.manifest.databases:
        schema = None
        chosen: set[int] = set()
        for ref in spec.tables:
            if schema is None:
                schema = await read_schema(handle.store, entry.schema_file)
            chosen.update(_relations_named(schema, entry, ref, spec.session_database))
        if chosen:
            out.append((entry, schema, chosen))
    missing = [table_name(ref) for ref in spec.tables
               if not any(_relations_named(s, e, ref, spec.session_database) for e, s, _ in out)]
    if missing:
        raise InvalidTarget(f'table "{missing[0]}" does not exist in the backup',
                            hint="SHOW BACKUP lists what a backup holds")
    return out


def _relations_named(schema, entry: DatabaseEntry, ref: TableRef, session_db: str) -> set[int]:
    selected = set(entry.selected) if entry.selected is not None else None
    rels = [o for o in schema.objects if o.kind in _RELATION_KINDS
            and (selected is None or o.oid in selected)]
    parts = ref.parts
    def pick(db, sch, name):
        if db is not None and db != entry.name:
            return set()
        return {r.oid for r in rels if (sch is None or r.schema == sch) and (name is None or r.name == name)}
    if ref.star:
        if not parts:
            return pick(session_db, None, None)
        if len(parts) == 1:
            return pick(session_db, parts[0], None) or pick(parts[0], None, None)
        return pick(parts[0], parts[1], None)
    if len(parts) == 1:
        return pick(session_db, "public", parts[0]) or pick(session_db, None, parts[0])
    if len(parts) == 2:
        return pick(session_db, parts[0], parts[1]) or pick(parts[0], "public", parts[1])
    return pick(parts[0], parts[1], parts[2])


async def run_restore(spec: RestoreSpec, connector: Connector, store: ObjectStore,
                      settings: EngineSettings, job=None) -> RestoreResult:
    """`job` (engine.jobs.JobContext, optional) gets progress and may pause (a database restore
    keeps its temporary database and resumes from what it committed; a table restore, one
    transaction, starts over) or cancel (nothing restored remains)."""
    if spec.scope == "cluster":
        raise Unsupported("full cluster restores are not supported by pgkeep yet",
                          hint="restore databases: RESTORE DATABASE d FROM LATEST IN ...")
    handle = await open_backup(store, spec.subdir, spec.latest)
    if spec.scope == "table":
        return await _restore_tables(handle, spec, connector, settings, job)
    if spec.new_db_name and len(spec.databases) != 1:
        raise InvalidTarget("new_db_name can only be used with one database")
    total = RestoreResult()
    for db in spec.databases:
        entry = next((d for d in handle.manifest.databases if d.name == db), None)
        if entry is None:
            raise InvalidTarget(f'database "{db}" does not exist in the backup',
                                hint="SHOW BACKUP lists what a backup holds")
        if not entry.whole_database:
            raise InvalidTarget(f'cannot RESTORE DATABASE "{db}" from a backup of individual tables',
                                hint="restore its tables: RESTORE TABLE ... WITH into_db = '...'")
        r = await _restore_database(handle, entry, spec.new_db_name or db, spec, connector,
                                    settings, job)
        total.rows += r.rows
        total.bytes += r.bytes
        total.index_entries += r.index_entries
        total.uncaptured += r.uncaptured
    return total
