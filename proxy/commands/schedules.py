"""Scheduled backups: CREATE SCHEDULE FOR BACKUP, SHOW [RUNNING|PAUSED] SCHEDULES [FOR BACKUP],
SHOW SCHEDULE, SHOW CREATE [ALL] SCHEDULE(S), PAUSE/RESUME/DROP SCHEDULE(S), ALTER BACKUP
SCHEDULE, EXECUTE SCHEDULE; and the scheduler's executor, which turns a schedule's stored
BACKUP statement into a run's job (the same spec builder as a client's BACKUP).

Rights (CockroachDB's): the owner or an admin may see, pause, resume and drop a schedule; only
its owner alters it; anyone else gets 42501. SHOW SCHEDULES lists the schedules the user may
see. Creating one needs the privileges its BACKUP needs (authz.authorize_backup).
Secrets never leave the catalog's payload table: every statement shown is redacted.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import ClassVar

from catalog.schedules import Schedule, UndefinedSchedule
from engine import collection
from engine.jobs import new_job_id
from engine.scheduler import (Scheduler, check_cron, full_cadence, next_after, system_clock)
from engine.spec import spec_to_dict

from .. import errors, sql
from ..wire.messages import Column
from ..wire.values import OID
from . import authz
from .backup import backup_spec, collection_uri
from .base import CommandContext, Result, literal_text
from .jobs import _query_ids, eval_id

__all__ = ["COMMANDS", "start_scheduler", "CREATE_COLUMNS", "SCHEDULES_COLUMNS", "BackupExecutor"]

_I8, _TS = dict(type_oid=OID.INT8, type_size=8), dict(type_oid=OID.TIMESTAMPTZ, type_size=8)
CREATE_COLUMNS = [Column("schedule_id", **_I8), Column("label"), Column("status"),
                  Column("first_run", **_TS), Column("schedule"), Column("backup_stmt")]
SCHEDULES_COLUMNS = [Column("id", **_I8), Column("label"), Column("schedule_status"),
                     Column("next_run", **_TS), Column("state"), Column("recurrence"),
                     Column("jobsrunning", **_I8), Column("owner"), Column("created", **_TS),
                     Column("on_previous_running"), Column("on_execution_failure"),
                     Column("command", type_oid=OID.JSONB), Column("last_success", **_TS)]
_BACKUP_TYPE = Column("backup_type")
_SHOW_CREATE_COLUMNS = [Column("schedule_id", **_I8), Column("create_statement")]
_WAITING = "Waiting for initial backup to complete"
_ON_FAILURE = {"retry": "RETRY_SOON", "reschedule": "RETRY_SCHED", "pause": "PAUSE_SCHED"}
_ON_RUNNING = {"start": "NO_WAIT", "skip": "SKIP", "wait": "WAIT"}
_DEFAULT_LABEL = "BACKUP"


def _wake(ctx: CommandContext) -> None:
    """A schedule changed here: this process's scheduler looks at once (others at their pace)."""
    scheduler = getattr(ctx.app, "scheduler", None)
    if scheduler is not None:
        scheduler.wake()


async def _now(ctx: CommandContext) -> dt.datetime:
    """The scheduler's clock, so a schedule's times agree with when it runs."""
    scheduler = getattr(ctx.app, "scheduler", None)
    return await (scheduler.clock if scheduler is not None else system_clock)()


async def _id(ctx: CommandContext, expr) -> int:
    return await eval_id(ctx, expr, "schedule")


def _parse_backup(text: str) -> sql.Backup:
    stmt = sql.parse_statement(text)
    if not isinstance(stmt, sql.Backup):
        raise errors.PgError("a schedule's stored statement is not a BACKUP", sqlstate="XX000")
    return stmt


def _shown(stmt: sql.Backup) -> str:
    return sql.format_statement(stmt, redact=True)


# ---- rights --------------------------------------------------------------------------------

async def _require(ctx: CommandContext, s: Schedule, verb: str) -> None:
    """Owner or admin (`verb` 'alter': the owner only), else 42501."""
    if s.owner == ctx.user:
        return
    if verb != "alter" and await ctx.is_admin():
        return
    if verb == "alter":
        raise errors.InsufficientPrivilege(f"only the owner of schedule {s.schedule_id} may alter it",
                                           hint=f"its owner is {s.owner}")
    raise errors.InsufficientPrivilege(f"must be admin or owner of the schedule {s.schedule_id} to {verb} it")


# ---- CREATE SCHEDULE --------------------------------------------------------------------------

def _option_text(expr, what: str) -> str:
    return literal_text(expr, what).strip().lower()


async def _first_run(ctx: CommandContext, expr, now: dt.datetime) -> dt.datetime | None:
    if expr is None:
        return None
    text = literal_text(expr, "first_run")
    if text.strip().lower() == "now":
        return now
    try:   # PostgreSQL's timestamptz input, as CockroachDB takes any timestamptz
        return await ctx.app.catalog.pool.fetchval("SELECT $1::text::timestamptz", text)
    except Exception:  # noqa: BLE001 - the upstream's parse error
        raise errors.InvalidParameterValue(f"invalid first_run {text!r}: expected a timestamptz or 'now'") from None


def _schedule_options(o: sql.ScheduleOptions) -> dict:
    """The enumerations (the parser lowercases literals; a placeholder's value is checked here).
    A key the parser kept as unknown is refused here, with CockroachDB's error."""
    for key, _ in o.unknown:
        raise errors.InvalidParameterValue(f'invalid option "{key}"',
                                           hint="schedule options: first_run, on_execution_failure, "
                                                "on_previous_running, ignore_existing_backups, "
                                                "updates_cluster_last_backup_time_metric")
    out = {}
    for name, allowed in (("on_execution_failure", _ON_FAILURE), ("on_previous_running", _ON_RUNNING)):
        value = getattr(o, name)
        if value is not None:
            text = _option_text(value, name)
            if text not in allowed:
                raise errors.InvalidParameterValue(
                    f"{name} must be one of {', '.join(allowed)}; got {text!r}")
            out[name] = text
    return out


async def _check_collection(ctx: CommandContext, uri: str, ignore_existing: bool) -> None:
    """A new schedule's collection must not hold backups already (CockroachDB's rule), unless
    ignore_existing_backups; the URI is opened, so a bad one fails here."""
    store = await ctx.app.engine.store(uri)
    try:
        if ignore_existing:
            return
        if await collection.list_backups(store):
            raise errors.PgError(
                f"backups already created in {sql.redact_uri(uri)}; to ignore existing backups, the "
                "schedule can be created with the 'ignore_existing_backups' option", sqlstate="55000")
    finally:
        await store.close()


def _create_row(s: Schedule) -> tuple:
    status = "ACTIVE" if not s.paused else f"PAUSED: {s.state}" if s.state else "PAUSED"
    return (s.schedule_id, s.label, status, s.next_run, s.recurrence, s.backup_statement)


class _CreateSchedule:
    statement_types: ClassVar = (sql.CreateSchedule,)

    def describe(self, stmt):
        return CREATE_COLUMNS

    async def execute(self, ctx: CommandContext, stmt: sql.CreateSchedule) -> Result:
        now = await _now(ctx)
        label = literal_text(stmt.label, "the schedule label") if stmt.label is not None else _DEFAULT_LABEL
        recurring = check_cron(literal_text(stmt.recurring, "RECURRING"))
        if stmt.full_backup_always:
            full_cron = None
        elif stmt.full_backup is not None:
            full_cron = check_cron(literal_text(stmt.full_backup, "FULL BACKUP"))
        else:
            full_cron = full_cadence(recurring, now)
        so = stmt.schedule_options
        opts = _schedule_options(so)
        metric = so.updates_cluster_last_backup_time_metric is not None and (
            not isinstance(so.updates_cluster_last_backup_time_metric, sql.BoolLit)
            or so.updates_cluster_last_backup_time_metric.value)
        if metric:
            await ctx.require_admin("set updates_cluster_last_backup_time_metric")
            ctx.notify("updates_cluster_last_backup_time_metric has no effect in pgkeep, which exports "
                       "no metrics: SHOW SCHEDULES' last_success column shows each schedule's last "
                       "successful backup")
        full_stmt = sql.Backup(stmt.targets, stmt.collection,
                               options=replace(stmt.backup_options, detached=True))
        spec, notices = backup_spec(full_stmt, ctx.user, ctx.database, now)   # refuses what BACKUP refuses
        await authz.authorize_backup(ctx, spec)
        if stmt.if_not_exists and await ctx.app.catalog.schedules.labelled(label):
            ctx.notify(f"schedule {label!r} already exists, skipping")
            return Result(CREATE_COLUMNS, [])
        await _check_collection(ctx, collection_uri(stmt.collection), so.ignore_existing_backups)
        first = await _first_run(ctx, so.first_run, now)
        common = dict(label=label, owner=ctx.user, database=ctx.database, created=now, state=None,
                      updates_metric=metric, **opts)
        full_id = new_job_id()
        full = Schedule(schedule_id=full_id, recurrence=full_cron or recurring, backup_type="FULL",
                        next_run=first or next_after(full_cron or recurring, now),
                        backup_statement=_shown(full_stmt), **common)
        rows: list[tuple[Schedule, str]] = []
        if full_cron is not None:
            inc_stmt = replace(full_stmt, latest=True)
            inc = Schedule(schedule_id=new_job_id(), recurrence=recurring, backup_type="INCREMENTAL",
                           next_run=None, backup_statement=_shown(inc_stmt), dependent_id=full_id,
                           **{**common, "state": _WAITING, "on_previous_running": "wait"})
            full.dependent_id = full.unpause_on_success = inc.schedule_id
            rows.append((inc, sql.format_statement(inc_stmt, redact=False)))
        rows.append((full, sql.format_statement(full_stmt, redact=False)))
        if not await ctx.app.catalog.schedules.create(rows, label_unique=stmt.if_not_exists):
            ctx.notify(f"schedule {label!r} already exists, skipping")
            return Result(CREATE_COLUMNS, [])
        for notice in notices:
            ctx.notify(notice)
        _wake(ctx)
        if spec.scope == "cluster":
            ctx.notify("full cluster backups are not supported by pgkeep yet: this schedule's runs "
                       "will fail (and follow on_execution_failure) until they are")
        return Result(CREATE_COLUMNS, [_create_row(s) for s, _ in rows])


# ---- SHOW SCHEDULES ----------------------------------------------------------------------------

def _command(s: Schedule) -> dict:
    command = {"backup_statement": s.backup_statement}
    if s.backup_type == "INCREMENTAL":
        command["backup_type"] = 1
    if s.unpause_on_success is not None:
        command["unpause_on_success"] = s.unpause_on_success
    return command


def _show_row(s: Schedule, running: int, backup: bool) -> tuple:
    row = (s.schedule_id, s.label, "PAUSED" if s.paused else "ACTIVE", s.next_run, s.state,
           s.recurrence, running, s.owner, s.created, _ON_RUNNING[s.on_previous_running],
           _ON_FAILURE[s.on_execution_failure])
    return row + ((s.backup_type,) if backup else ()) + (_command(s), s.last_success)


def _show_columns(backup: bool) -> list[Column]:
    return SCHEDULES_COLUMNS[:11] + ([_BACKUP_TYPE] if backup else []) + SCHEDULES_COLUMNS[11:]


async def _visible(ctx: CommandContext, ids=None, paused=None) -> list[tuple[Schedule, int]]:
    owner = None if await ctx.is_admin() else ctx.user
    return await ctx.app.catalog.schedules.list(ids=ids, paused=paused, owner=owner)


class _ShowSchedules:
    statement_types: ClassVar = (sql.ShowSchedules, sql.ShowSchedule)

    def describe(self, stmt):
        return _show_columns(getattr(stmt, "executor", None) == "BACKUP")

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        if isinstance(stmt, sql.ShowSchedule):
            s = await ctx.app.catalog.schedules.find(await _id(ctx, stmt.schedule_id))
            if s is None:
                return Result(_show_columns(False), [])
            await _require(ctx, s, "show")
            found = await ctx.app.catalog.schedules.list(ids=[s.schedule_id])
            return Result(_show_columns(False), [_show_row(x, n, False) for x, n in found])
        backup = stmt.executor == "BACKUP"
        paused = {"RUNNING": False, "PAUSED": True}.get(stmt.state or "")
        rows = [_show_row(s, n, backup) for s, n in await _visible(ctx, paused=paused)]
        return Result(_show_columns(backup), rows)


async def _create_statement(ctx: CommandContext, s: Schedule) -> str:
    """The CREATE SCHEDULE that makes this schedule (and its pair), redacted."""
    store = ctx.app.catalog.schedules
    other = await store.find(s.dependent_id) if s.dependent_id is not None else None
    full = s if s.backup_type == "FULL" else other
    inc = s if s.backup_type == "INCREMENTAL" else other
    base = _parse_backup(await store.statement((full or s).schedule_id))
    options = [f"on_execution_failure = '{s.on_execution_failure}'",
               f"on_previous_running = '{(full or s).on_previous_running}'"]
    node = sql.CreateSchedule(
        label=sql.StrLit(s.label), targets=base.targets, collection=base.collection,
        recurring=sql.StrLit((inc or full or s).recurrence), backup_options=base.options,
        full_backup=sql.StrLit(full.recurrence) if inc is not None and full is not None else None,
        full_backup_always=inc is None)
    text = sql.format_statement(node, redact=True)
    return text + " WITH SCHEDULE OPTIONS " + ", ".join(options)


class _ShowCreateSchedule:
    statement_types: ClassVar = (sql.ShowCreateSchedule, sql.ShowCreateAllSchedules)

    def describe(self, stmt):
        return _SHOW_CREATE_COLUMNS

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        if isinstance(stmt, sql.ShowCreateSchedule):
            s = await ctx.app.catalog.schedules.get(await _id(ctx, stmt.schedule_id))
            await _require(ctx, s, "show")
            schedules = [s]
        else:
            schedules = [s for s, _ in await _visible(ctx)]
        return Result(_SHOW_CREATE_COLUMNS, [(s.schedule_id, await _create_statement(ctx, s)) for s in schedules])


# ---- PAUSE / RESUME / DROP ------------------------------------------------------------------------

async def _ids(ctx: CommandContext, stmt) -> list[int]:
    if stmt.schedule_id is not None:
        return [await _id(ctx, stmt.schedule_id)]
    return await _query_ids(ctx, stmt.query, "schedule")


_CONTROL = {sql.PauseSchedules: ("pause", "PAUSE"), sql.ResumeSchedules: ("resume", "RESUME"),
            sql.DropSchedules: ("drop", "DROP")}


class _ControlSchedules:
    statement_types: ClassVar = tuple(_CONTROL)

    def describe(self, stmt):
        return None

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        verb, word = _CONTROL[type(stmt)]
        store = ctx.app.catalog.schedules
        done = 0
        for schedule_id in await _ids(ctx, stmt):
            async with store.transaction() as conn:
                try:
                    s = await store.get(schedule_id, conn, lock=True)
                except UndefinedSchedule:
                    continue            # as CockroachDB: an unknown id is not an error
                await _require(ctx, s, verb)
                if verb == "pause":
                    await store.update(s.schedule_id, conn, next_run=None)
                elif verb == "resume":
                    if s.paused:
                        await store.update(s.schedule_id, conn, state=None,
                                           next_run=next_after(s.recurrence, await _now(ctx)))
                else:
                    await _drop(store, conn, s)
                done += 1
        _wake(ctx)
        return Result(tag=f"{word} SCHEDULES {done}")


async def _drop(store, conn, s: Schedule) -> None:
    """Dropping a full drops its incremental; dropping an incremental unlinks its full."""
    if s.dependent_id is not None:
        other = await store.find(s.dependent_id, conn)
        if other is not None and s.backup_type == "FULL":
            await store.delete(other.schedule_id, conn)
        elif other is not None:
            await store.update(other.schedule_id, conn, dependent_id=None, unpause_on_success=None)
    await store.delete(s.schedule_id, conn)


class _ExecuteSchedule:
    statement_types: ClassVar = (sql.ExecuteSchedule,)

    def describe(self, stmt):
        return None

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        s = await ctx.app.catalog.schedules.get(await _id(ctx, stmt.schedule_id))
        await _require(ctx, s, "execute")
        raise errors.FeatureNotSupported(
            "EXECUTE SCHEDULE is not allowed for backup schedules",
            hint=f"ALTER BACKUP SCHEDULE {s.schedule_id} EXECUTE IMMEDIATELY runs it now")


# ---- the scheduler's executor ----------------------------------------------------------------

class BackupExecutor:
    """Turns a due schedule into its run's job: the stored BACKUP statement, an incremental's
    LATEST resolved to the full it extends (the job's description names that subdir, as
    CockroachDB's does), AS OF SYSTEM TIME the slot's time (PostgreSQL cannot read the past: the
    snapshot is taken when the run starts, and the slot is recorded as the requested time)."""

    def __init__(self, app) -> None:
        self.app = app

    async def start_run(self, conn, schedule: Schedule, slot: dt.datetime, now: dt.datetime) -> int:
        stmt = _parse_backup(await self.app.catalog.schedules.statement(schedule.schedule_id, conn))
        # Each run is its owner's BACKUP: the owner's privileges are checked again now, so a
        # revoked grant (or a dropped owner) stops the schedule's backups, before any I/O.
        owner = CommandContext(self.app, user=schedule.owner, database=schedule.database,
                               txn_status=b"I")
        await authz.authorize_backup(owner, backup_spec(stmt, schedule.owner, schedule.database, now)[0])
        if stmt.latest:
            uri = collection_uri(stmt.collection)
            store = await self.app.engine.store(uri)
            try:
                full = await collection.resolve_subdir(store, None, True)
            finally:
                await store.close()
            stmt = replace(stmt, latest=False, subdir=sql.StrLit(full))
        stmt = replace(stmt, as_of=sql.StrLit(slot.isoformat()), options=replace(stmt.options, detached=True))
        spec, _ = backup_spec(stmt, schedule.owner, schedule.database, now)
        return await self.app.jobs.create_pending(conn, "BACKUP", _shown(stmt), schedule.owner,
                                                  spec_to_dict(spec), spec.job_id,
                                                  schedule_id=schedule.schedule_id)

    async def ended_description(self, conn, schedule: Schedule, job) -> str | None:
        subdir = (job.result or {}).get("subdir")
        if schedule.backup_type != "FULL" or not subdir:
            return None
        stmt = _parse_backup(await self.app.catalog.schedules.statement(schedule.schedule_id, conn))
        as_of = (await self.app.catalog.jobs.payload(job.job_id)).get("requested_as_of")
        return _shown(replace(stmt, subdir=sql.StrLit(subdir), as_of=sql.StrLit(as_of) if as_of else None,
                              options=replace(stmt.options, detached=True)))


def _clock(app):
    """The scheduler's clock: the real one, or pgkeep.scheduler.debug_now when set (tests)."""
    async def clock() -> dt.datetime:
        fixed = await app.catalog.settings.get("pgkeep.scheduler.debug_now")
        return dt.datetime.fromisoformat(fixed) if fixed else dt.datetime.now(dt.timezone.utc)
    return clock


def start_scheduler(app) -> Scheduler:
    """The composition root's one call: this process's scheduler, started."""
    async def pace() -> float:
        return await app.catalog.settings.get("jobs.scheduler.pace")
    scheduler = Scheduler(app.catalog.schedules, app.jobs, BackupExecutor(app), _clock(app),
                          pace=pace, hold=app.jobs.lease)
    scheduler.start()
    return scheduler


COMMANDS = (_CreateSchedule(), _ShowSchedules(), _ShowCreateSchedule(), _ControlSchedules(),
            _ExecuteSchedule())
