"""SHOW [AUTOMATIC] JOB(S) [WHEN COMPLETE], PAUSE/RESUME/CANCEL JOB(S), over the catalog's jobs.

Visibility and control: authz.JobRights, the one rule (own jobs; VIEWJOB / CONTROLJOB for
others' but never an admin's; admins everything). A job the user may not see is
indistinguishable from an unknown id: SHOW JOB answers no row for both, PAUSE/RESUME/CANCEL JOB
the same 42704 for both. `<select>` forms run
the query on the client's own upstream connection, so it reads only what the client may read.
"""
from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from catalog.jobs import UndefinedJob

from .. import errors, sql
from ..wire.messages import Column
from ..wire.values import OID
from . import authz
from .base import CommandContext, Result, literal_text

__all__ = ["COMMANDS", "JOBS_COLUMNS", "DESCRIPTION_WIDTH", "cut_description"]

_log = logging.getLogger("pgkeep.jobs")

_I8, _TS, _F8 = (dict(type_oid=OID.INT8, type_size=8), dict(type_oid=OID.TIMESTAMPTZ, type_size=8),
                 dict(type_oid=OID.FLOAT8, type_size=8))
JOBS_COLUMNS = [Column("job_id", **_I8), Column("job_type"), Column("description"), Column("statement"),
                Column("user_name"), Column("status"), Column("running_status"),
                Column("created", **_TS), Column("started", **_TS), Column("finished", **_TS),
                Column("modified", **_TS), Column("fraction_completed", **_F8), Column("error"),
                Column("coordinator_id"), Column("trace_id", **_I8), Column("execution_errors")]
_TERMINAL = ("succeeded", "failed", "canceled")
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


def _job_id(expr) -> int:
    text = literal_text(expr, "the job ID")
    try:
        return int(text)
    except ValueError:
        raise errors.InvalidParameterValue(f"invalid job ID {text!r}") from None


async def _query_ids(ctx: CommandContext, query: sql.SelectFromShow) -> list[int]:
    from .show_sources import rewrite_query
    text = await rewrite_query(ctx, query) if query.sources else query.sql
    rows = await ctx.client_query(text)
    try:
        return [int(r[0]) for r in rows if r and r[0] is not None]
    except ValueError:
        raise errors.InvalidParameterValue("the query must return job IDs") from None


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
        if all(j.status in _TERMINAL for j in jobs) or asyncio.get_running_loop().time() > deadline:
            return jobs
        await asyncio.sleep(0.25)


class _ShowJobs:
    statement_types: ClassVar = (sql.ShowJobs, sql.ShowJob)

    def describe(self, stmt):
        return JOBS_COLUMNS

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        store = ctx.app.catalog.jobs
        if getattr(stmt, "schedule_id", None) is not None or getattr(stmt, "schedules_query", None):
            raise errors.FeatureNotSupported(f"{stmt.own_words()}: schedules are not supported by pgkeep yet")
        if isinstance(stmt, sql.ShowJob):
            # No row for an unknown id, as for one the user may not see (CockroachDB's SHOW JOB
            # is a query over the jobs the user may see).
            ids, cut = [_job_id(stmt.job_id)], False
        elif stmt.query is not None:
            ids, cut = await _query_ids(ctx, stmt.query), True
        elif stmt.automatic:
            return Result(JOBS_COLUMNS, [])  # pgkeep runs no automatic jobs
        else:
            ids, cut = None, True
        if stmt.block:
            # Wait only for visible jobs: waiting for another user's would reveal it.
            jobs = await _wait(ctx, await _visible_ids(ctx, ids) if ids is not None else [
                j.job_id for j in await _visible(ctx, await store.list()) if j.status not in _TERMINAL])
        else:
            jobs = await store.list(job_ids=ids, recent_hours=None if ids else 12)
        return Result(JOBS_COLUMNS, [_row(j, cut) for j in await _visible(ctx, jobs)])


_ACTIONS = {sql.PauseJobs: ("pause-requested", "pause", "PAUSE"),
            sql.ResumeJobs: ("running", "resume", "RESUME"),
            sql.CancelJobs: ("cancel-requested", "cancel", "CANCEL")}


class _ControlJobs:
    statement_types: ClassVar = tuple(_ACTIONS)

    def describe(self, stmt):
        return None

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        new, verb, word = _ACTIONS[type(stmt)]
        store = ctx.app.catalog.jobs
        if stmt.schedule_id is not None or stmt.schedules_query is not None:
            raise errors.FeatureNotSupported(f"{stmt.own_words()}: schedules are not supported by pgkeep yet")
        if stmt.job_id is not None:
            ids = [_job_id(stmt.job_id)]
        elif stmt.query is not None:
            ids = await _query_ids(ctx, stmt.query)
        else:  # ALL type JOBS: the ones the user may see
            ids = [j.job_id for j in await _visible(ctx, await store.list(job_types=(stmt.all_type,)))
                   if j.status not in _TERMINAL]
        reason = literal_text(stmt.reason, "the reason") if getattr(stmt, "reason", None) else None
        for job_id in ids:
            job = await _controllable(ctx, job_id)
            if stmt.all_type is not None or stmt.query is not None:
                if (verb == "resume" and job.status != "paused") or (verb != "resume" and job.status in _TERMINAL):
                    continue  # the bulk forms act on the jobs they can act on
            after = await store.request(job_id, new, verb, reason)
            if after.status == "paused":   # a pending job, paused before any process ran it
                _log.info("job %d paused: %s", job_id, after.description)
            ctx.app.jobs.request_local(job_id, "cancel" if verb == "cancel" else
                                       ("pause" if verb == "pause" else None))
        if verb == "resume":
            ctx.app.jobs.wake()
        return Result(tag=f"{word} JOB" if stmt.job_id is not None else f"{word} JOBS {len(ids)}")


COMMANDS = (_ShowJobs(), _ControlJobs())
