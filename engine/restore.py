"""RESTORE of databases and tables, all or nothing: a failure or cancel leaves nothing behind.

Database restore: every target is checked first (in the backup, not existing yet, its schema
planned and its statements checked), then each database is built under a temporary name
(pgkeep_restore_<job>_<n>): pre-data schema, every chunk loaded with parallel COPY, post-data
stages in parallel, and the database's own owner, settings, comment and grants, which follow its
OID through a rename. Their OIDs are checkpointed, then all are renamed to their final names: the
renames are the commit point, nothing is left to do after them, and a job adopted after a crash
there knows each database by its OID. A rename that fails renames the earlier ones back; any
failure drops every temporary database of the job.

Table restore (into existing databases): everything in one transaction per target database, all
of them committed only once every one has succeeded. PostgreSQL's DDL is transactional, so a
failure rolls back to exactly what was there.

Every statement of a plan runs through the extended protocol (one statement per Parse), after
`plan_restore` has checked that each is exactly one statement of the kind its object expects.

schema_only creates the objects without rows; with verify_backup_table_data every data file is
also read, checksummed and decoded row by row (no rows are written).

`check_restore` runs every check that needs no work (the scope, the backup and its manifest,
the targets: in the backup, final names free, into_db present, tables absent, schemas planned)
so that a statement that would be refused is refused before its job exists; the job runs the
same checks again (an adopted or resumed job must still fail cleanly). They cost a constant
number of catalog queries, whatever the number of tables.

The job's running_status names its phase: creating schema, restoring rows (bytes done of all),
building indexes n/m, validating constraints n/m, ..., renaming.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import asyncpg

from . import pausepoints
from . import schema as schema_mod
from .collection import BackupHandle, open_backup, read_file, read_schema
from .errors import (DuplicateDatabase, DuplicateTable, EngineError, InvalidTarget,
                     Unsupported, UndefinedObject)
from .format.copystream import CopyDecoder
from .format.manifest import Chunk, DatabaseEntry, TableEntry
from .jobs import JobStopped, NoJob
from .schema import RestorePlan, Schema
from .spec import Connector, EngineSettings, Progress, RestoreResult, RestoreSpec, TableRef
from .storage import ObjectStore
from .targets import table_name
from .timing import PhaseClock
from .parallel import close_quietly, run_parallel

__all__ = ["run_restore", "check_restore", "restore_target_databases"]

_log = logging.getLogger("pgkeep.restore")
_RELATION_KINDS = frozenset(("table", "foreign_table", "view", "matview", "sequence"))
# running_status of each kind of post-data stage (engine/schema/plan.py's stage_kinds)
_PHASES = {"indexes": "building indexes", "attach": "building indexes",
           "constraints": "validating constraints",
           "final": "restoring sequences, triggers, policies and owners",
           "grants": "restoring privileges", "refresh": "refreshing materialized views",
           "event": "creating event triggers"}


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _post_phases(plan: RestorePlan, stages: range) -> list[tuple[str, list[int]]]:
    """Consecutive post-data stages of one phase, grouped: [(phase, [stage numbers])]."""
    groups: list[tuple[str, list[int]]] = []
    for n in stages:
        kind = plan.stage_kinds[n] if n < len(plan.stage_kinds) else ""
        name = _PHASES.get(kind, "finishing the schema")
        if groups and groups[-1][0] == name:
            groups[-1][1].append(n)
        else:
            groups.append((name, [n]))
    return groups


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
    """COPY one chunk. A file that fails its checks (damaged, missing) ends the COPY stream
    instead of failing inside asyncpg: when PostgreSQL has already refused the damaged rows,
    asyncpg would wait forever for the answer to a cancel request it sends on a failed source.
    The partial COPY is then rolled back with the caller's transaction, and the file's own
    error, the cause, is raised."""
    t = load.table
    failure: list[Exception] = []

    async def source():
        try:
            async for data in _chunk_stream(store, load.chunk, progress, pool):
                yield data
        except Exception as e:  # noqa: BLE001 - raised below, once COPY has ended
            failure.append(e)

    try:
        await conn.copy_to_table(t.name, schema_name=t.schema, columns=t.columns, format=t.format,
                                 source=source())
    except Exception:
        if failure:
            raise failure[0] from None
        raise
    if failure:
        raise failure[0]
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


async def _drop_leftovers(connector: Connector, spec: RestoreSpec) -> None:
    """Drop every temporary database of this job, whatever step it failed at, in this process
    or in one that ran the job before (adoption)."""
    try:
        admin = await connector.connect(spec.session_database or "postgres")
    except Exception:  # noqa: BLE001 - the original failure matters more
        _log.exception("could not connect to drop the temporary databases of job %d", spec.job_id)
        return
    try:
        for row in await admin.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1",
                                     f"pgkeep\\_restore\\_{spec.job_id}\\_%"):
            await _drop_quietly(admin, row[0])
    except Exception:  # noqa: BLE001
        _log.exception("could not list the temporary databases of job %d", spec.job_id)
    finally:
        await close_quietly(admin)


async def _ddl(conn, stmt: str) -> None:
    """One statement of a restore plan, through the extended protocol: PostgreSQL refuses a
    Parse holding more than one statement, so text from a backup can never stack another."""
    await conn.fetch(stmt)


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


@dataclass
class _Target:
    """One database of a RESTORE DATABASE, checked and planned before any work."""
    entry: DatabaseEntry
    name: str               # its final name
    tmp: str                # the name it is built under
    schema: Schema
    plan: RestorePlan


def _database_entries(handle: BackupHandle, spec: RestoreSpec) -> list[DatabaseEntry]:
    if spec.new_db_name and len(spec.databases) != 1:
        raise InvalidTarget("new_db_name can only be used with one database")
    by_name = {d.name: d for d in handle.manifest.databases}
    entries = []
    for db in dict.fromkeys(spec.databases):
        entry = by_name.get(db)
        if entry is None:
            raise InvalidTarget(f'database "{db}" does not exist in the backup',
                                hint="SHOW BACKUP lists what a backup holds")
        if not entry.whole_database:
            raise InvalidTarget(f'cannot RESTORE DATABASE "{db}" from a backup of individual tables',
                                hint="restore its tables: RESTORE TABLE ... WITH into_db = '...'")
        entries.append(entry)
    return entries


async def _plan_targets(handle: BackupHandle, entries: list[DatabaseEntry], spec: RestoreSpec,
                        admin) -> list[_Target]:
    """Every target checked (none exists yet, every schema plans and passes the statement
    checks) before the first database is created."""
    names = [spec.new_db_name or entry.name for entry in entries]
    taken = {r[0] for r in await admin.fetch(
        "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", names)}
    for target in names:
        if target in taken:
            raise DuplicateDatabase(f'database "{target}" already exists',
                                    hint="restore it under another name: WITH new_db_name = '...'")
    roles = await _existing_roles(admin)
    targets = []
    for entry, name in zip(entries, names):
        schema = await read_schema(handle.store, entry.schema_file)
        tmp = f"pgkeep_restore_{spec.job_id}_{entry.ordinal}"
        plan = schema_mod.plan_restore(
            schema, target_database=tmp, existing_roles=roles, restoring_user=spec.user,
            grants=spec.grants, skip_missing_foreign_keys=spec.skip_missing_foreign_keys,
            skip_missing_sequences=spec.skip_missing_sequences,
            skip_missing_sequence_owners=spec.skip_missing_sequence_owners,
            skip_missing_views=spec.skip_missing_views, skip_missing_udfs=spec.skip_missing_udfs)
        targets.append(_Target(entry, name, tmp, schema, plan))
    return targets


async def _build_database(t: _Target, handle: BackupHandle, spec: RestoreSpec, connector: Connector,
                          settings: EngineSettings, job, admin) -> dict:
    """Build `t` completely under its temporary name: schema, rows, indexes, and the database's
    own owner, settings, comment and grants (they follow its OID through the rename). Returns
    its commit record. A pause or release keeps what was done for the next run of the job."""
    store, entry, plan, tmp = handle.store, t.entry, t.plan, t.tmp
    conns: list = []
    pool = ThreadPoolExecutor(max_workers=max(2, settings.restore_parallelism),
                              thread_name_prefix="pgkeep-open")
    clock = PhaseClock(_log, f"restore of {entry.name} as {t.name}")
    try:
        if spec.verify_backup_table_data:
            loads = _loads(entry.tables)
            job.begin("verifying backup data", steps=len(loads))

            async def verify(_c, load):
                await _verify_chunk(store, load, pool)
                job.step()
            await run_parallel([None] * max(1, settings.restore_parallelism), loads, verify, job)
            clock.lap("verify")
        job.begin("creating schema")
        done = None
        if await admin.fetchval("SELECT true FROM pg_database WHERE datname = $1", tmp):
            probe = await connector.connect(tmp)
            try:
                done = await _done_steps(probe)
            finally:
                await close_quietly(probe)
            if done is None:
                await admin.execute(f"DROP DATABASE IF EXISTS {_qi(tmp)} WITH (FORCE)")
        if done is None:
            await admin.execute(t.schema.database.create_statement(tmp))
            pausepoints.reach("restore.after_create", job, settings.pausepoints)
        for _ in range(max(1, settings.restore_parallelism)):
            c = await connector.connect(tmp)
            conns.append(c)
            await c.execute(";".join(plan.session_setup + [
                "SET synchronous_commit = off", "SET maintenance_work_mem = '256MB'",
                # Autovacuum starts on a freshly loaded table and holds a lock that CREATE
                # INDEX waits for until the deadlock check cancels autovacuum: after 1 s by
                # default, which was a third of a pgbench restore. 20 ms instead.
                "SET deadlock_timeout = '20ms'"]))
        if done is None:
            for stmt in plan.pre_data:
                await _ddl(conns[0], stmt)
            await conns[0].execute(f"CREATE SCHEMA pgkeep_restore; CREATE TABLE {_PROGRESS}"
                                   "(step text PRIMARY KEY); INSERT INTO " + _PROGRESS +
                                   " VALUES ('pre-data')")
            done = {"pre-data"}
        else:
            _log.info("restore of %s resumed: %d steps were done", entry.name, len(done))
        clock.lap("schema")
        if not spec.schema_only:
            job.phase = "restoring rows"
            loads = []
            for l in _loads(entry.tables):
                if f"data:{l.table.oid}:{l.chunk.index}" in done:   # by an earlier run
                    job.progress(sum(f.logical_bytes for f in l.chunk.files), l.chunk.rows)
                else:
                    loads.append(l)

            async def load(c, l):
                await _step(c, f"data:{l.table.oid}:{l.chunk.index}",
                            lambda: _load_chunk(c, store, l, job.progress, pool))
            await run_parallel(conns, loads, load, job)
            clock.lap("data")
            pausepoints.reach("restore.after_load", job, settings.pausepoints)
        last = len(plan.post_data) - plan.event_stages
        for phase, stages in _post_phases(plan, range(last)):
            job.begin(phase, steps=sum(len(plan.post_data[n]) for n in stages))
            worked = False
            for n in stages:
                stage = plan.post_data[n]
                todo = [(i, stmt) for i, stmt in enumerate(stage) if f"post:{n}:{i}" not in done]
                job.step(len(stage) - len(todo))
                worked = worked or bool(todo)

                async def run(c, item, n=n):
                    await _step(c, f"post:{n}:{item[0]}", lambda: _ddl(c, item[1]))
                    job.step()
                await run_parallel(conns, todo, run, job)
                clock.lap(f"post-data stage {n} ({len(stage)} statements)")
            if worked:      # a phase finished by an earlier run does not pause twice
                pausepoints.reach("restore.after_post_phase", job, settings.pausepoints)
        # The restore's last DDL of its own, before the event triggers exist (they may
        # forbid DDL). From here a pause or crash starts the restore over.
        await conns[0].execute("DROP SCHEMA pgkeep_restore CASCADE")
        for phase, stages in _post_phases(plan, range(last, len(plan.post_data))):
            job.begin(phase, steps=sum(len(plan.post_data[n]) for n in stages))
            for n in stages:
                for stmt in plan.post_data[n]:
                    await _ddl(conns[0], stmt)
                    job.step()
        clock.lap("event triggers")
        index_entries = int(await conns[0].fetchval(
            "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"))
        for c in conns:
            await close_quietly(c)
        conns.clear()
        job.begin("restoring the database's owner, settings and grants")
        for stmt in plan.database_post:
            await _ddl(admin, stmt)
        oid = await admin.fetchval("SELECT oid FROM pg_database WHERE datname = $1", tmp)
        clock.done()
        return {"tmp": tmp, "target": t.name, "oid": int(oid), "ordinal": entry.ordinal,
                "index_entries": 0 if spec.schema_only else index_entries,
                "uncaptured": [f"{entry.name}: {item}" for item in t.schema.uncaptured]}
    finally:
        for c in conns:
            c.terminate()
        pool.shutdown(wait=False)


async def _where(admin, rec: dict) -> str | None:
    """'target' when the database with the record's OID has its final name, 'tmp' when it still
    has its temporary one, None when it is gone."""
    name = await admin.fetchval("SELECT datname FROM pg_database WHERE oid = $1", rec["oid"])
    return "target" if name == rec["target"] else "tmp" if name == rec["tmp"] else None


async def _rename(admin, old: str, new: str) -> None:
    try:
        await admin.execute(f"ALTER DATABASE {_qi(old)} RENAME TO {_qi(new)}")
    except asyncpg.DuplicateDatabaseError:
        raise DuplicateDatabase(f'database "{new}" already exists',
                                hint="restore it under another name: WITH new_db_name = '...'") from None


async def _commit(admin, records: list[dict], job) -> None:
    """Rename every temporary database to its final name: all of them or, when one rename
    fails, none (the earlier ones are renamed back). The renames are the commit point: an
    adopted job whose records show some of them done finishes the others."""
    state = {r["tmp"]: await _where(admin, r) for r in records}
    if job.stop == "cancel" and "target" not in state.values():
        job.check()             # nothing committed yet: the cancel still wins
    renamed: list[dict] = []
    try:
        for r in records:
            if state[r["tmp"]] is None:
                raise EngineError(f'the temporary database "{r["tmp"]}" of this restore is gone '
                                  f'(dropped by someone else?), "{r["target"]}" was not restored')
            if state[r["tmp"]] == "tmp":
                await _rename(admin, r["tmp"], r["target"])
            renamed.append(r)
    except BaseException:
        for r in reversed(renamed):
            try:
                if await _where(admin, r) == "target":
                    await asyncio.shield(_rename(admin, r["target"], r["tmp"]))
            except Exception:  # noqa: BLE001 - the original failure matters more
                _log.exception('could not rename "%s" back to "%s": it stays restored',
                               r["target"], r["tmp"])
        raise


async def _restore_databases(handle: BackupHandle, spec: RestoreSpec, connector: Connector,
                             settings: EngineSettings, job) -> RestoreResult:
    """All the databases or none: each is built under a temporary name, then all are renamed.
    The commit records (temporary name, final name, OID) are checkpointed before the first
    rename, so a job adopted after a crash there recognises what it already renamed."""
    entries = _database_entries(handle, spec)
    checkpoint = job.checkpoint or {}
    records = checkpoint.get("commit")
    admin = await connector.connect(spec.session_database or "postgres")
    try:
        if records is None:
            targets = await _plan_targets(handle, entries, spec, admin)
            if not spec.schema_only:
                job.total_bytes += sum(t.logical_bytes for e in entries for t in e.tables)
            records = [await _build_database(t, handle, spec, connector, settings, job, admin)
                       for t in targets]
            if job.stop in ("cancel", "release"):   # last chance before the commit point; a
                job.check()                         # released job belongs to another process
            await job.save_checkpoint({**checkpoint, "commit": records})
        job.begin("renaming")
        pausepoints.reach("restore.before_rename", job, settings.pausepoints)
        await _commit(admin, records, job)
        pausepoints.reach("restore.after_rename", job, settings.pausepoints)
    finally:
        await close_quietly(admin)
    by_ordinal = {e.ordinal: e for e in entries}
    total = RestoreResult()
    for r in records:
        e = by_ordinal[r["ordinal"]]
        if not spec.schema_only:
            total.rows += sum(t.rows for t in e.tables)
            total.bytes += sum(t.logical_bytes for t in e.tables)
        total.index_entries += r["index_entries"]
        total.uncaptured += r["uncaptured"]
    return total


@dataclass
class _TableTarget:
    """One target database of a RESTORE TABLE, checked and planned before any work."""
    database: str
    plan: RestorePlan
    tables: list[TableEntry]    # the tables whose rows are loaded


async def _table_targets(handle: BackupHandle, spec: RestoreSpec, admin) -> list[_TableTarget]:
    """Every table named is in the backup, every target database exists, every plan holds."""
    selected = await _select_tables(handle, spec)
    names = [spec.into_db or entry.name for entry, _, _ in selected]
    present = {r[0] for r in await admin.fetch(
        "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", names)}
    roles = await _existing_roles(admin)
    targets = []
    for (entry, schema, oids), target in zip(selected, names):
        if target not in present:
            first = sorted(t.name for t in schema.tables if t.oid in oids) or ["?"]
            raise UndefinedObject(f'a database named "{target}" needs to exist to restore '
                                  f'table "{first[0]}"',
                                  hint="create it first, or restore into another one WITH into_db = '...'")
        plan = schema_mod.plan_restore(
            schema, target_database=target, tables=oids, existing_roles=roles,
            restoring_user=spec.user, grants=spec.grants,
            skip_missing_foreign_keys=spec.skip_missing_foreign_keys,
            skip_missing_sequences=spec.skip_missing_sequences,
            skip_missing_sequence_owners=spec.skip_missing_sequence_owners,
            skip_missing_views=spec.skip_missing_views, skip_missing_udfs=spec.skip_missing_udfs)
        loaded = {t.oid for t in plan.tables}
        targets.append(_TableTarget(target, plan, [t for t in entry.tables if t.oid in loaded]))
    return targets


async def _refuse_existing_tables(conn, target: _TableTarget) -> None:
    """DuplicateTable for the first table of `target` that its database holds already (one
    query, connected to that database)."""
    found = await conn.fetchrow(
        "SELECT u.s, u.r FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(s, r, i) "
        "JOIN pg_namespace n ON n.nspname = u.s JOIN pg_class c ON c.relnamespace = n.oid "
        "AND c.relname = u.r ORDER BY u.i LIMIT 1",
        [t.schema for t in target.tables], [t.name for t in target.tables])
    if found is not None:
        raise DuplicateTable(f'relation "{found[0]}.{found[1]}" already exists',
                             hint="drop it first, or restore into another database "
                                  "WITH into_db = '...'")


async def _restore_tables(handle: BackupHandle, spec: RestoreSpec, connector: Connector,
                          settings: EngineSettings, job) -> RestoreResult:
    """Every target database checked first (it exists, none of its tables does); then one
    transaction per database, all committed only once all have succeeded."""
    store = handle.store
    result = RestoreResult()
    admin = await connector.connect(spec.session_database or "postgres")
    try:
        work = await _table_targets(handle, spec, admin)
    finally:
        await close_quietly(admin)
    if not spec.schema_only:
        job.total_bytes += sum(t.logical_bytes for w in work for t in w.tables)
    conns, open_tx = [], []
    try:
        for w in work:
            conn = await connector.connect(w.database)
            conns.append(conn)
            await _refuse_existing_tables(conn, w)
        if spec.verify_backup_table_data:
            loads = [load for w in work for load in _loads(w.tables)]
            job.begin("verifying backup data", steps=len(loads))
            for load in loads:
                await _verify_chunk(store, load)
                job.step()
        for conn, w in zip(conns, work):
            tx = conn.transaction()
            await tx.start()
            open_tx.append(tx)
            job.begin("creating schema")
            for stmt in w.plan.pre_data:
                await _ddl(conn, stmt)
            if not spec.schema_only:
                job.phase = "restoring rows"
                for load in _loads(w.tables):
                    job.check()  # a pause rolls every transaction back
                    await _load_chunk(conn, store, load, job.progress)
            for phase, stages in _post_phases(w.plan, range(len(w.plan.post_data))):
                job.begin(phase, steps=sum(len(w.plan.post_data[n]) for n in stages))
                for n in stages:
                    for stmt in w.plan.post_data[n]:
                        await _ddl(conn, stmt)
                        job.step()
        if job.stop == "cancel":
            job.check()
        job.begin("committing")
        for tx in open_tx:   # the databases are distinct: no single commit spans them
            await tx.commit()
        open_tx.clear()
    finally:
        for tx in open_tx:
            try:
                await tx.rollback()
            except Exception:  # noqa: BLE001 - the connection is closed next anyway
                pass
        for conn in conns:
            await close_quietly(conn)
    for w in work:
        if not spec.schema_only:
            result.rows += sum(t.rows for t in w.tables)
            result.bytes += sum(t.logical_bytes for t in w.tables)
    return result


class _Relations:
    """The relations of one database of a backup, indexed by name, for resolving RESTORE TABLE
    names (a 600-name list resolves in one pass)."""

    def __init__(self, schema: Schema, entry: DatabaseEntry) -> None:
        selected = set(entry.selected) if entry.selected is not None else None
        self.database = entry.name
        self.all: set[int] = set()
        self.named: dict[tuple[str, str], int] = {}
        self.by_name: dict[str, set[int]] = {}
        self.by_schema: dict[str, set[int]] = {}
        for o in schema.objects:
            if o.kind in _RELATION_KINDS and (selected is None or o.oid in selected):
                self.all.add(o.oid)
                self.named[(o.schema, o.name)] = o.oid
                self.by_name.setdefault(o.name, set()).add(o.oid)
                self.by_schema.setdefault(o.schema, set()).add(o.oid)

    def pick(self, db: str | None, sch: str | None, name: str | None) -> set[int]:
        if db is not None and db != self.database:
            return set()
        if sch is None:
            return set(self.all if name is None else self.by_name.get(name, ()))
        if name is None:
            return set(self.by_schema.get(sch, ()))
        oid = self.named.get((sch, name))
        return set() if oid is None else {oid}

    def named_by(self, ref: TableRef, session_db: str) -> set[int]:
        """CockroachDB's name resolution, as engine.targets documents it."""
        parts, pick = ref.parts, self.pick
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


async def _select_tables(handle: BackupHandle, spec: RestoreSpec):
    """Resolve RESTORE TABLE names against the backup's contents: (db entry, schema, OIDs)."""
    out = []
    found: set[int] = set()          # indexes into spec.tables of the names resolved
    for entry in handle.manifest.databases:
        schema = await read_schema(handle.store, entry.schema_file)
        relations = _Relations(schema, entry)
        chosen: set[int] = set()
        for i, ref in enumerate(spec.tables):
            oids = relations.named_by(ref, spec.session_database)
            if oids:
                found.add(i)
                chosen |= oids
        if chosen:
            out.append((entry, schema, chosen))
    missing = [table_name(ref) for i, ref in enumerate(spec.tables) if i not in found]
    if missing:
        raise InvalidTarget(f'table "{missing[0]}" does not exist in the backup',
                            hint="SHOW BACKUP lists what a backup holds")
    return out


def _refuse_unsupported(spec: RestoreSpec) -> None:
    if spec.scope == "cluster":
        raise Unsupported("full cluster restores are not supported by pgkeep yet",
                          hint="restore databases: RESTORE DATABASE d FROM LATEST IN ...")


async def _open(store: ObjectStore, spec: RestoreSpec) -> BackupHandle:
    """The backup. A missing, damaged or unreadable backup fails at once; an adopted job's store
    has already waited for a store that was briefly unreachable (engine/service.py)."""
    return await open_backup(store, spec.subdir, spec.latest, spec.as_of)


async def restore_target_databases(spec: RestoreSpec, store: ObjectStore) -> list[str]:
    """The existing databases a RESTORE TABLE of `spec` writes into (the privilege check needs
    them before the restore is checked): `into_db`, or each named table's database in the
    backup. Reads the manifest and the schema files of the backup's databases; writes nothing."""
    if spec.into_db is not None:
        return [spec.into_db]
    handle = await _open(store, spec)
    return list(dict.fromkeys(entry.name for entry, _, _ in await _select_tables(handle, spec)))


async def check_restore(spec: RestoreSpec, connector: Connector, store: ObjectStore) -> None:
    """Raise the error the restore of `spec` would raise before doing any work; write nothing.
    Reads the backup's manifest once, and each target database's schema file."""
    _refuse_unsupported(spec)
    handle = await _open(store, spec)
    admin = await connector.connect(spec.session_database or "postgres")
    try:
        if spec.scope == "database":
            await _plan_targets(handle, _database_entries(handle, spec), spec, admin)
            return
        targets = await _table_targets(handle, spec, admin)
    finally:
        await close_quietly(admin)
    for target in targets:
        conn = await connector.connect(target.database)
        try:
            await _refuse_existing_tables(conn, target)
        finally:
            await close_quietly(conn)


async def run_restore(spec: RestoreSpec, connector: Connector, store: ObjectStore,
                      settings: EngineSettings, job=None) -> RestoreResult:
    """`job` (engine.jobs.JobContext; NoJob when None) gets progress and may pause (a database
    restore keeps its temporary databases and resumes from what it committed; a table restore,
    one transaction per database, starts over) or cancel. All or nothing: any failure or cancel,
    in this process or after an adoption, leaves neither a restored object nor a temporary
    database behind."""
    job = NoJob() if job is None else job
    _refuse_unsupported(spec)
    try:
        handle = await _open(store, spec)
        if spec.scope == "table":
            return await _restore_tables(handle, spec, connector, settings, job)
        return await _restore_databases(handle, spec, connector, settings, job)
    except (JobStopped, asyncio.CancelledError):
        raise       # paused, released or shut down: the next run continues from what was done
    except BaseException:
        if spec.scope == "database":
            await asyncio.shield(_drop_leftovers(connector, spec))
        raise
