"""BACKUP and RESTORE: statement -> spec -> engine -> CockroachDB's result row.

Options PostgreSQL cannot honour are refused (0A000) or accepted with a NOTICE saying what pgkeep
does instead; nothing is silently faked. Only the redacted statement may reach a log.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import ClassVar

from engine.asof import resolve_as_of
from engine.backup import check_backup
from engine.jobs import JobStatus, new_job_id
from engine.restore import check_restore
from engine.spec import BackupSpec, RestoreSpec, TableRef, spec_to_dict

from .. import errors, sql
from ..wire.messages import Column
from ..wire.values import OID
from . import authz
from .base import CommandContext, Result, literal_text

__all__ = ["COMMANDS", "collection_uri", "JOB_COLUMNS", "backup_spec", "check_spec"]

_log = logging.getLogger("pgkeep.commands.backup")

JOB_COLUMNS = [Column("job_id", OID.INT8, 8), Column("status"),
               Column("fraction_completed", OID.FLOAT8, 8), Column("rows", OID.INT8, 8),
               Column("index_entries", OID.INT8, 8), Column("bytes", OID.INT8, 8)]
_DETACHED_COLUMNS = [Column("job_id", OID.INT8, 8)]


def collection_uri(collection: tuple) -> str:
    if len(collection) != 1:
        raise errors.FeatureNotSupported(
            "locality-aware backups (a list of URIs with COCKROACH_LOCALITY) are not supported: "
            "PostgreSQL has no localities", hint="give one collection URI")
    return literal_text(collection[0], "the collection URI")


def _flag(expr) -> bool:
    if expr is None:
        return False
    if isinstance(expr, sql.BoolLit):
        return expr.value
    return literal_text(expr, "the option").lower() in ("true", "on", "1", "yes")


def _targets(targets) -> tuple[str, tuple[str, ...], tuple[TableRef, ...]]:
    if targets is None:
        return "cluster", (), ()
    if targets.kind == "DATABASE":
        return "database", tuple(targets.names), ()
    return "table", (), tuple(TableRef(tuple(p.parts), p.star) for p in targets.names)


def _as_of(expr, now: dt.datetime) -> tuple[dt.datetime | None, str | None]:
    if expr is None:
        return None, None
    if isinstance(expr, sql.FuncCall):
        return resolve_as_of(expr.name, now, is_function=True), f"{expr.name}()"
    text = literal_text(expr, "AS OF SYSTEM TIME")
    return resolve_as_of(text, now), text


def _in_transaction(ctx: CommandContext, what: str) -> None:
    if ctx.txn_status != b"I":
        raise errors.ActiveSqlTransaction(
            f"{what} cannot be used inside a multi-statement transaction without DETACHED option",
            hint="run it outside BEGIN ... COMMIT")


async def check_spec(ctx: CommandContext, spec: BackupSpec | RestoreSpec) -> None:
    """Jobs are made only for work that starts and that the user may do: the privilege checks
    (authz.py) come first, on the URI's text and the catalogs, so a refused user causes no
    storage I/O; then everything that can refuse the statement without doing any work (a bad
    URI, an unknown external connection, a missing backup, an unknown target, a restore target
    that exists or is missing) refuses it here, before the job exists. The job checks again when
    it runs (an adopted job must still fail cleanly)."""
    engine = ctx.app.engine
    restore = isinstance(spec, RestoreSpec)
    if restore:
        await authz.authorize_storage(ctx, spec.collection, "RESTORE from")
    else:
        await authz.authorize_backup(ctx, spec)
    store = await engine.store(spec.collection)   # parses the URI (an external:// name too)
    try:
        if restore:
            await authz.authorize_restore(ctx, spec, store)
            await check_restore(spec, engine.connector, store)
        else:
            await check_backup(spec, engine.connector, store)
    finally:
        await store.close()


async def _run_job(ctx: CommandContext, job_type: str, stmt, spec, detached: bool) -> dict | None:
    """Check, then submit the job; detached: None at once. Attached: wait, and return its
    result or raise its error. A client's cancel cancels the job; a client that goes away
    leaves it running."""
    await check_spec(ctx, spec)
    description = sql.format_statement(stmt, redact=True)
    _log.info("%s job %d: %s", job_type, spec.job_id, description)
    jobs = ctx.app.jobs
    await jobs.submit(job_type, description, ctx.user, spec_to_dict(spec), job_id=spec.job_id)
    if detached:
        return None
    # Said before anything can go wrong: a client whose connection breaks knows which job to follow.
    ctx.notify(f"{job_type} job {spec.job_id} started: SHOW JOB {spec.job_id} follows it "
               "if this connection is lost")
    try:
        job = await jobs.wait(spec.job_id)
    except asyncio.CancelledError:
        if ctx.connected():
            await asyncio.shield(_cancel_and_wait(ctx, spec.job_id))
        raise
    if job.status == JobStatus.SUCCEEDED:
        return job.result
    if job.status == JobStatus.PAUSED:
        raise errors.PgError(f"job {job.job_id} was paused", sqlstate="55000",
                             hint=f"RESUME JOB {job.job_id} continues it; SHOW JOB {job.job_id} follows it")
    if job.status == JobStatus.CANCELED:
        raise errors.QueryCanceled(f"job {job.job_id} was canceled")
    result = job.result or {}
    raise errors.PgError(job.error or "job failed", sqlstate=result.get("sqlstate") or "XX000",
                         hint=result.get("hint"), detail=result.get("detail"))


async def _cancel_and_wait(ctx: CommandContext, job_id: int) -> None:
    try:
        await ctx.app.jobs.control(job_id, "cancel")
    except Exception:  # noqa: BLE001 - it may have finished meanwhile
        return
    await ctx.app.jobs.wait(job_id)


def backup_spec(stmt: sql.Backup, user: str, database: str, now: dt.datetime,
                job_id: int | None = None) -> tuple[BackupSpec, list[str]]:
    """The BACKUP statement as the engine's spec, and the NOTICEs it deserves: a pure function
    of its arguments (no session, no I/O), so a client's BACKUP and a schedule's run build the
    same spec. Options pgkeep cannot honour raise 0A000."""
    o = stmt.options
    if _flag(o.revision_history):
        raise errors.FeatureNotSupported(
            "revision_history is not supported: PostgreSQL keeps no MVCC history to back up",
            hint="take backups more often, or archive WAL for point-in-time recovery")
    if o.encryption_passphrase is not None or o.kms is not None:
        raise errors.FeatureNotSupported("encrypted backups are not supported by pgkeep yet")
    if o.incremental_location is not None:
        raise errors.FeatureNotSupported("incremental_location was removed in CockroachDB v26.2",
                                         hint="incrementals live in the collection's incrementals/ directory")
    notices = [f"{name} has no effect in pgkeep: PostgreSQL has no localities, virtual clusters or "
               "cluster monitoring metrics"
               for name, value in (("execution locality", o.execution_locality),
                                   ("include_all_virtual_clusters", o.include_all_virtual_clusters),
                                   ("updates_cluster_monitoring_metrics", o.updates_cluster_monitoring_metrics),
                                   ("strict", o.strict)) if value is not None]
    scope, dbs, tables = _targets(stmt.targets)
    as_of, as_written = _as_of(stmt.as_of, now)
    spec = BackupSpec(job_id=job_id or new_job_id(), user=user, session_database=database,
                      scope=scope, collection=collection_uri(stmt.collection), databases=dbs,
                      tables=tables, latest=stmt.latest,
                      subdir=None if stmt.subdir is None else literal_text(stmt.subdir, "the subdir"),
                      as_of=as_of, requested_as_of=as_written)
    return spec, notices


class _Backup:
    statement_types: ClassVar = (sql.Backup,)

    def describe(self, stmt):
        return _DETACHED_COLUMNS if stmt.options.detached else JOB_COLUMNS

    async def execute(self, ctx: CommandContext, stmt: sql.Backup) -> Result:
        spec, notices = backup_spec(stmt, ctx.user, ctx.database, dt.datetime.now(dt.timezone.utc))
        for notice in notices:
            ctx.notify(notice)
        if not stmt.options.detached:
            _in_transaction(ctx, "BACKUP")
        as_of, as_written = spec.as_of, spec.requested_as_of
        result = await _run_job(ctx, "BACKUP", stmt, spec, stmt.options.detached)
        if result is None:
            return Result(_DETACHED_COLUMNS, [(spec.job_id,)])
        if as_of is not None:
            ctx.notify(f"AS OF SYSTEM TIME {as_written}: PostgreSQL cannot read the past, so this backup "
                       f"is of a snapshot taken at {result['end_time']}, recorded as its end time")
        if result.get("uncaptured"):
            ctx.notify(f"this backup leaves out {_objects(result['uncaptured'])}, which pgkeep cannot "
                       "back up yet: recreate them by hand after a restore (a restore fails where "
                       "other objects of the backup need them)")
        return Result(JOB_COLUMNS, [(spec.job_id, "succeeded", 1.0, result["rows"],
                                     result["index_entries"], result["bytes"])])


class _Restore:
    statement_types: ClassVar = (sql.Restore,)

    def describe(self, stmt):
        return _DETACHED_COLUMNS if stmt.options.detached else JOB_COLUMNS

    async def execute(self, ctx: CommandContext, stmt: sql.Restore) -> Result:
        o = stmt.options
        if stmt.system_users:
            raise errors.FeatureNotSupported("RESTORE SYSTEM USERS is not supported by pgkeep yet")
        if o.encryption_passphrase is not None or o.kms is not None:
            raise errors.FeatureNotSupported("encrypted backups are not supported by pgkeep yet")
        for name, on in (("experimental deferred copy" if o.experimental_deferred_copy else "experimental copy",
                          o.experimental_copy or o.experimental_deferred_copy),
                         ("incremental_location", o.incremental_location is not None),
                         ("virtual_cluster_name" if o.virtual_cluster_name is not None else "virtual_cluster",
                          o.virtual_cluster is not None or o.virtual_cluster_name is not None)):
            if on:
                raise errors.FeatureNotSupported(f"RESTORE option {name} is not supported by pgkeep")
        for name, on in (("skip_localities_check", o.skip_localities_check),
                         ("remove_regions", o.remove_regions),
                         ("unsafe_restore_incompatible_version", o.unsafe_restore_incompatible_version),
                         ("execution locality", o.execution_locality is not None)):
            if on:
                ctx.notify(f"{name} has no effect in pgkeep: PostgreSQL has no regions or localities")
        if not o.detached:
            _in_transaction(ctx, "RESTORE")
        scope, dbs, tables = _targets(stmt.targets)
        as_of, _ = _as_of(stmt.as_of, dt.datetime.now(dt.timezone.utc))   # a layer's end time (docs/FORMAT.md 7.4)
        spec = RestoreSpec(
            job_id=new_job_id(), user=ctx.user, session_database=ctx.database, scope=scope,
            collection=collection_uri(stmt.collection), latest=stmt.latest,
            subdir=None if stmt.subdir is None else literal_text(stmt.subdir, "the subdir"),
            databases=dbs, tables=tables,
            new_db_name=None if o.new_db_name is None else literal_text(o.new_db_name, "new_db_name"),
            into_db=None if o.into_db is None else literal_text(o.into_db, "into_db"),
            skip_missing_foreign_keys=o.skip_missing_foreign_keys,
            skip_missing_sequences=o.skip_missing_sequences,
            skip_missing_sequence_owners=o.skip_missing_sequence_owners,
            skip_missing_views=o.skip_missing_views, skip_missing_udfs=o.skip_missing_udfs,
            schema_only=o.schema_only, verify_backup_table_data=o.verify_backup_table_data,
            as_of=as_of, grants=o.grants)
        result = await _run_job(ctx, "RESTORE", stmt, spec, o.detached)
        if result is None:
            return Result(_DETACHED_COLUMNS, [(spec.job_id,)])
        if result.get("uncaptured"):
            ctx.notify(f"the backup does not hold {_objects(result['uncaptured'])} of the original "
                       "database, which pgkeep cannot back up yet: create them by hand if needed")
        return Result(JOB_COLUMNS, [(spec.job_id, "succeeded", 1.0, result["rows"],
                                     result["index_entries"], result["bytes"])])


def _objects(items: list[str], shown: int = 20) -> str:
    """"3 objects (db: kind name, ...)", at most `shown` of them named."""
    names = ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")
    return f"{len(items)} object{'s' if len(items) != 1 else ''} ({names})"


COMMANDS = (_Backup(), _Restore())
