"""ALTER BACKUP SCHEDULE id cmd, ...: CockroachDB's commands, applied to the schedule and the
other schedule of its full/incremental pair in one transaction; only the owner may alter.

    SET LABEL 'x'                  both schedules
    SET INTO 'uri'                 both statements (the incremental's stays INTO LATEST IN)
    SET WITH opt [= v], ...        both statements' backup options (what BACKUP refuses, refused)
    SET RECURRING 'cron'           the incremental's cadence, or the full's when it runs alone
    SET FULL BACKUP 'cron'         the full's cadence; a full running alone gains an incremental
                                   (with the full's former cadence)
    SET FULL BACKUP ALWAYS         the incremental is dropped, the full takes its cadence
    SET SCHEDULE OPTION k = v      both (on_execution_failure, on_previous_running, first_run)
    EXECUTE [FULL] IMMEDIATELY     the incremental (the full with FULL or when alone) runs now

Returns CREATE SCHEDULE's columns, one row per schedule of the pair.
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import ClassVar

from catalog.schedules import Schedule
from engine.jobs import new_job_id
from engine.scheduler import check_cron, next_after

from .. import sql
from . import authz
from .backup import backup_spec
from .base import CommandContext, Result, literal_text
from .schedules import (_WAITING, CREATE_COLUMNS, _create_row, _first_run, _id, _now, _parse_backup,
                        _require, _schedule_options, _shown, _wake)

__all__ = ["COMMANDS"]


def _merge(options: sql.BackupOptions, changes: sql.BackupOptions) -> sql.BackupOptions:
    return replace(options, **{f.name: getattr(changes, f.name) for f in fields(changes)
                               if getattr(changes, f.name) is not None})


async def _save(store, conn, s: Schedule, statement: str) -> None:
    values = {f.name: getattr(s, f.name) for f in fields(s) if f.name != "schedule_id"}
    await store.update(s.schedule_id, conn, statement=statement, **values)


class _AlterBackupSchedule:
    statement_types: ClassVar = (sql.AlterBackupSchedule,)

    def describe(self, stmt):
        return CREATE_COLUMNS

    async def execute(self, ctx: CommandContext, stmt: sql.AlterBackupSchedule) -> Result:
        store = ctx.app.catalog.schedules
        now = await _now(ctx)
        async with store.transaction() as conn:
            s = await store.get(await _id(ctx, stmt.schedule_id), conn, lock=True)
            await _require(ctx, s, "alter")
            other = await store.get(s.dependent_id, conn, lock=True) if s.dependent_id is not None else None
            full = s if s.backup_type == "FULL" else other
            inc = s if s.backup_type == "INCREMENTAL" else other
            backup = _parse_backup(await store.statement((full or s).schedule_id, conn))
            dropped: Schedule | None = None
            for cmd in stmt.commands:
                if isinstance(cmd, sql.SetLabel):
                    for x in (full, inc):
                        if x is not None:
                            x.label = literal_text(cmd.label, "the schedule label")
                elif isinstance(cmd, sql.SetInto):
                    backup = replace(backup, collection=cmd.collection)
                elif isinstance(cmd, sql.SetWith):
                    backup = replace(backup, options=_merge(backup.options, cmd.options))
                elif isinstance(cmd, sql.SetRecurring):
                    target = inc or full
                    target.recurrence = check_cron(literal_text(cmd.recurring, "RECURRING"))
                    if not target.paused:
                        target.next_run = next_after(target.recurrence, now)
                elif isinstance(cmd, sql.SetFullBackup):
                    if cmd.always:
                        if inc is not None:
                            full.recurrence, dropped, inc = inc.recurrence, inc, None
                            full.dependent_id = full.unpause_on_success = None
                            if not full.paused:
                                full.next_run = next_after(full.recurrence, now)
                    else:
                        cron = check_cron(literal_text(cmd.recurring, "FULL BACKUP"))
                        if inc is None:
                            inc = replace(full, schedule_id=new_job_id(), backup_type="INCREMENTAL",
                                          on_previous_running="wait", unpause_on_success=None,
                                          dependent_id=full.schedule_id, last_run=None, last_success=None,
                                          next_run=next_after(full.recurrence, now) if full.last_success else None,
                                          state=None if full.last_success else _WAITING)
                            full.dependent_id = inc.schedule_id
                            full.unpause_on_success = None if full.last_success else inc.schedule_id
                            await store.insert(inc, "", conn)
                        full.recurrence = cron
                        if not full.paused:
                            full.next_run = next_after(cron, now)
                elif isinstance(cmd, sql.SetScheduleOption):
                    o = cmd.options
                    for name, value in _schedule_options(o).items():
                        for x in (full, inc):
                            if x is not None and not (x is inc and name == "on_previous_running"):
                                setattr(x, name, value)
                    first = await _first_run(ctx, o.first_run, now)
                    if first is not None:
                        full.next_run = first
                    if o.updates_cluster_last_backup_time_metric is not None:
                        await ctx.require_admin("set updates_cluster_last_backup_time_metric")
                elif isinstance(cmd, sql.ExecuteImmediately):
                    target = full if cmd.full or inc is None or inc.paused else inc
                    target.next_run = now
            spec, _ = backup_spec(backup, ctx.user, s.database, now)   # what BACKUP refuses
            await authz.authorize_backup(ctx, spec)
            backup = replace(backup, latest=False, subdir=None, options=replace(backup.options, detached=True))
            full.backup_statement = _shown(backup)
            await _save(store, conn, full, sql.format_statement(backup, redact=False))
            if inc is not None:
                inc_stmt = replace(backup, latest=True)
                inc.backup_statement = _shown(inc_stmt)
                await _save(store, conn, inc, sql.format_statement(inc_stmt, redact=False))
            if dropped is not None:
                await store.delete(dropped.schedule_id, conn)
        _wake(ctx)
        return Result(CREATE_COLUMNS, [_create_row(x) for x in (inc, full) if x is not None])


COMMANDS = (_AlterBackupSchedule(),)
