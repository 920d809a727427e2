"""SHOW [AUTOMATIC] JOB(S) [WHEN COMPLETE], PAUSE/RESUME/CANCEL JOB(S), over the catalog's jobs.

Visibility and control: authz.JobRights, the one rule (own jobs; VIEWJOB / CONTROLJOB for
others' but never an admin's; admins everything). A job the user may not see is
indistinguishable from an unknown id: SHOW JOB answers no row for both, PAUSE/RESUME/CANCEL JOB
the same 42704 for both. `<select>` forms run
the query on the client's own upstream connection, so it reads only what the client may read.
"""
from __future__ import annotations

import asyncio
from typing import ClassVar

from catalog.jobs import TERMINAL, JobStatus, UndefinedJob

from .. import errors, sql
from ..wire.messages import Column
from ..wire.values import OID
from . import authz
from .base import CommandContext, Result, literal_text

__all__ = ["COMMANDS", "JOBS_COLUMNS", "DESCRIPTION_WIDTH", "cut_description", "eval_id"]

_I8, _TS, _F8 = (dict(type_oid=OID.INT8, type_size=8), dict(type_oid=OID.TIMESTAMPTZ, type_size=8),
                 dict(type_oid=OID.FLOAT8, type_size=8))
JOBS_COLUMNS = [Column("job_id", **_I8), Column("job_type"), Column("description"), Column("statement"),
                Column("user_name"), Column("status"), Column("running_status"),
                Column("created", **_TS), Column("started", **_TS), Column("finished", **_TS),
                Column("modified", **_TS), Column("fraction_completed", **_F8), Column("error"),
                Column("coordinator_id"), Column("trace_id", **_I8), Column("execution_errors")]
DESCRIPTION_WIDTH = 100  # SHOW JOBS' description column, as CockroachDB's (SHOW JOB id: in full)
_WAIT_TIMEOUT = 24 * 3600.0  # SHOW JOB WHEN COMPLETE gives up after a day, as CockroachDB


def cut_description(text: str, width: int = DESCRIPTION_WIDTH) -> str:
    """`text` in at most `width` characters: cut at the last space that leaves half of it or
    more, then an ellipsis."""
    if len(text) <= width:
        return text
    head = text[:width - 1]
    space = head.rfind(" ")
    if space >= width // 2:
        head = head[:space]
    return head.rstrip() + "\u2026"


def _row(job, cut: bool) -> tuple:
    desc = cut_description(job.description) if cut else job.description
    return (job.job_id, job.job_type, desc, job.statement, job.user_name, job.status,
            job.running_status, job.created, job.started, job.finished, job.modified,
            job.fraction_completed, job.error, job.coordinator_id, None, None)


async def eval_id(ctx: CommandContext, expr, what: str = "job") -> int:
    """A job or schedule ID: a literal, or an expression (sql.ScalarExpr) the upstream evaluates
    on the client's own connection, as CockroachDB evaluates any a_expr there."""
    if isinstance(expr, sql.ScalarExpr):
        rows = await ctx.client_query(f"SELECT ({expr.sql})::int8")
        if not rows or rows[0][0] is None:
            raise errors.InvalidParameterValue(f"the {what} ID is NULL")
        text = str(rows[0][0])
    else:
        text = literal_text(expr, f"the {what} ID")
    try:
        return int(text)
    except ValueError:
        raise errors.InvalidParameterValue(f"invalid {what} ID {text!r}") from None


async def _query_ids(ctx: CommandContext, query: sql.SelectFromShow, what: str = "job") -> list[int]:
    """The first column of `query`'s rows, run on the client's own connection."""
    from .show_sources import rewrite_query
    text = await rewrite_query(ctx, query) if query.sources else query.sql
    rows = await ctx.client_query(text)
    try:
        return [int(r[0]) for r in rows if r and r[0] is not None]
    except ValueError:
        raise errors.InvalidParameterValue(f"the query must return {what} IDs") from None


async def _schedule_jobs(ctx: CommandContext, stmt) -> list[int]:
    """The ids of the jobs started by the schedule(s) a FOR SCHEDULE[S] form names."""
    if stmt.schedule_id is not None:
        schedules = [await eval_id(ctx, stmt.schedule_id, "schedule")]
    else:
        schedules = await _query_ids(ctx, stmt.schedules_query, "schedule")
    return [j.job_id for j in await ctx.app.catalog.jobs.list(schedule_ids=schedules)]


async def _visible(ctx: CommandContext, jobs):
    """The jobs among `jobs` that ctx.user may see (authz.JobRights). A job the user may not see
    is answered exactly as an unknown id: SHOW JOB gives no row for either, PAUSE, RESUME and
    CANCEL JOB the same 42704 for either, so no id's existence leaks."""
    rights = await authz.job_rights(ctx, jobs)
    return [j for j in jobs if rights.may_see(j)]


async def _visible_ids(ctx: CommandContext, ids: list[int]) -> list[int]:
    """The ids among `ids` of jobs the user may see (unknown ones dropped too)."""
    return [j.job_id for j in await _visible(ctx, await ctx.app.catalog.jobs.list(job_ids=ids))]


async def _controllable(ctx: CommandContext, job_id: int):
    """The job if the user may control it; the catalog's 42704 for an unknown id and the very
    same error for a job the user may not see; 42501 for one it may see but not control."""
    job = await ctx.app.catalog.jobs.get(job_id)
    rights = await authz.job_rights(ctx, [job])
    if rights.may_control(job):
        return job
    if rights.may_see(job):
        raise errors.InsufficientPrivilege(
            f"user {ctx.user} does not have CONTROLJOB privilege to control job {job_id}",
            hint="its owner, an admin or a holder of SYSTEM CONTROLJOB may")
    raise UndefinedJob(f"job with ID {job_id} does not exist")


async def _wait(ctx: CommandContext, job_ids: list[int]):
    store = ctx.app.catalog.jobs
    deadline = asyncio.get_running_loop().time() + _WAIT_TIMEOUT
    while True:
        jobs = await store.list(job_ids=job_ids)
        if all(j.status in TERMINAL for j in jobs) or asyncio.get_running_loop().time() > deadline:
            return jobs
        await asyncio.sleep(0.25)


class _ShowJobs:
    statement_types: ClassVar = (sql.ShowJobs, sql.ShowJob)

    def describe(self, stmt):
        return JOBS_COLUMNS

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        store = ctx.app.catalog.jobs
        if isinstance(stmt, sql.ShowJob):
            # No row for an unknown id, as for one the user may not see (CockroachDB's SHOW JOB
            # is a query over the jobs the user may see).
            ids, cut = [await eval_id(ctx, stmt.job_id)], False
        elif stmt.query is not None:
            ids, cut = await _query_ids(ctx, stmt.query), True
        elif stmt.schedule_id is not None or stmt.schedules_query is not None:
            ids, cut = await _schedule_jobs(ctx, stmt), True
            if not ids:
                return Result(JOBS_COLUMNS, [])
        elif stmt.automatic:
            return Result(JOBS_COLUMNS, [])  # pgkeep runs no automatic jobs
        else:
            ids, cut = None, True
        if stmt.block:
            # Wait only for visible jobs: waiting for another user's would reveal it.
            jobs = await _wait(ctx, await _visible_ids(ctx, ids) if ids is not None else [
                j.job_id for j in await _visible(ctx, await store.list()) if j.status not in TERMINAL])
        else:
            jobs = await store.list(job_ids=ids, recent_hours=None if ids else 12)
        return Result(JOBS_COLUMNS, [_row(j, cut) for j in await _visible(ctx, jobs)])


_ACTIONS = {sql.PauseJobs: ("pause", "PAUSE"), sql.ResumeJobs: ("resume", "RESUME"),
            sql.CancelJobs: ("cancel", "CANCEL")}


class _ControlJobs:
    statement_types: ClassVar = tuple(_ACTIONS)

    def describe(self, stmt):
        return None

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        verb, word = _ACTIONS[type(stmt)]
        store = ctx.app.catalog.jobs
        bulk = stmt.job_id is None
        if stmt.job_id is not None:
            ids = [await eval_id(ctx, stmt.job_id)]
        elif stmt.query is not None:
            ids = await _query_ids(ctx, stmt.query)
        elif stmt.schedule_id is not None or stmt.schedules_query is not None:
            ids = [j.job_id for j in await _visible(ctx, await store.list(job_ids=await _schedule_jobs(ctx, stmt)))]
        else:  # ALL type JOBS: the ones the user may see
            ids = [j.job_id for j in await _visible(ctx, await store.list(job_types=(stmt.all_type,)))
                   if j.status not in TERMINAL]
        reason = literal_text(stmt.reason, "the reason") if getattr(stmt, "reason", None) else None
        for job_id in ids:
            job = await _controllable(ctx, job_id)
            if bulk:
                if (verb == "resume" and job.status != JobStatus.PAUSED) or (
                        verb != "resume" and job.status in TERMINAL):
                    continue  # the bulk forms act on the jobs they can act on
            await ctx.app.jobs.control(job_id, verb, reason)
        return Result(tag=f"{word} JOB" if stmt.job_id is not None else f"{word} JOBS {len(ids)}")


COMMANDS = (_ShowJobs(), _ControlJobs())
