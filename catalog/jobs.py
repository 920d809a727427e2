"""Jobs in the catalog: the persisted state machine of every BACKUP and RESTORE.

Legal transitions live in TRANSITIONS and nowhere else; a request that is not legal from the
job's current status is SQLSTATE 55000. A job runs where it holds the lease: a process claims a
job atomically (FOR UPDATE SKIP LOCKED), renews the lease while it works, and any process may
claim a running job whose lease has expired (its coordinator died), so each job runs on exactly
one process at a time. A job may record a placement (engine.placement: the identity of the
nodelocal root its storage lives in): only a process at the same place claims it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Awaitable, Callable

from .errors import CatalogError

__all__ = ["Job", "JobStatus", "JobStore", "TRANSITIONS", "TERMINAL", "ENDED", "InvalidJobState",
           "UndefinedJob", "check_transition", "TerminalHook"]


class JobStatus(StrEnum):
    """A job's status, CockroachDB's words. A StrEnum: it is stored and shown as its text and
    compares equal to it."""
    PENDING = "pending"
    RUNNING = "running"
    PAUSE_REQUESTED = "pause-requested"
    PAUSED = "paused"
    CANCEL_REQUESTED = "cancel-requested"
    REVERTING = "reverting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


S = JobStatus
TERMINAL = frozenset((S.SUCCEEDED, S.FAILED, S.CANCELED))
ENDED = TERMINAL | {S.PAUSED}      # nothing runs such a job (a paused one waits for RESUME)
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.PENDING: frozenset((S.RUNNING, S.PAUSE_REQUESTED, S.CANCEL_REQUESTED, S.FAILED)),
    S.RUNNING: frozenset((S.SUCCEEDED, S.FAILED, S.PAUSE_REQUESTED, S.CANCEL_REQUESTED, S.RUNNING)),
    S.PAUSE_REQUESTED: frozenset((S.PAUSED, S.RUNNING, S.CANCEL_REQUESTED, S.FAILED, S.SUCCEEDED)),
    S.PAUSED: frozenset((S.RUNNING, S.CANCEL_REQUESTED)),
    # a cancel that arrives after a job's commit point is too late: the job succeeds
    S.CANCEL_REQUESTED: frozenset((S.REVERTING, S.CANCELED, S.FAILED, S.SUCCEEDED)),
    S.REVERTING: frozenset((S.CANCELED, S.FAILED)),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
}


class InvalidJobState(CatalogError):
    sqlstate = "55000"


class UndefinedJob(CatalogError):
    sqlstate = "42704"


def check_transition(job_id: int, current: str, new: str, verb: str) -> None:
    if new not in TRANSITIONS.get(current, frozenset()):
        raise InvalidJobState(f"job {job_id}: cannot {verb} a job in state {current}")


@dataclass
class Job:
    job_id: int
    job_type: str
    description: str
    statement: str
    user_name: str
    status: str
    running_status: str | None
    created: Any
    started: Any
    finished: Any
    modified: Any
    fraction_completed: float
    error: str | None
    coordinator_id: str | None
    lease_expires: Any
    pause_reason: str | None
    checkpoint: dict | None
    result: dict | None
    schedule_id: int | None = None     # the schedule that started it (None: a user's statement)


# What a job's end tells others, inside the transaction that records it (CockroachDB's
# NotifyJobTermination): `hook(conn, job)` with the job as just ended; an error rolls the end back.
TerminalHook = Callable[[Any, "Job"], Awaitable[None]]

_COLUMNS = ", ".join(Job.__dataclass_fields__)


def _job(row) -> Job:
    d = dict(row)
    for k in ("checkpoint", "result"):
        if isinstance(d[k], str):
            d[k] = json.loads(d[k])
    d["status"] = JobStatus(d["status"])
    return Job(**d)


class JobStore:
    def __init__(self, pool) -> None:
        self._pool = pool

    async def create(self, job_id: int, job_type: str, description: str, user: str, spec: dict,
                     coordinator: str | None, lease_seconds: float, placement: str | None = None,
                     *, schedule_id: int | None = None, conn=None) -> None:
        """A new job, already claimed by `coordinator` (it starts at once) when given; only
        processes at `placement` (when not None) may ever run it. `conn`: create it inside the
        caller's transaction (a schedule's run: the job exists exactly when the slot is spent)."""
        if conn is None:
            async with self._pool.acquire() as conn, conn.transaction():
                return await self.create(job_id, job_type, description, user, spec, coordinator,
                                         lease_seconds, placement, schedule_id=schedule_id, conn=conn)
        await conn.execute(
            "INSERT INTO pgkeep.jobs(job_id, job_type, description, statement, user_name, status, "
            "started, coordinator_id, lease_expires, placement, schedule_id) VALUES ($1, $2, $3, $3, $4, "
            "CASE WHEN $5::text IS NULL THEN 'pending' ELSE 'running' END, "
            "CASE WHEN $5::text IS NULL THEN NULL ELSE now() END, $5, "
            "now() + make_interval(secs => $6), $7, $8)",
            job_id, job_type, description, user, coordinator, lease_seconds, placement, schedule_id)
        await conn.execute("INSERT INTO pgkeep.job_payloads(job_id, spec) VALUES ($1, $2::jsonb)",
                           job_id, json.dumps(spec))

    async def get(self, job_id: int) -> Job:
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM pgkeep.jobs WHERE job_id = $1", job_id)
        if row is None:
            raise UndefinedJob(f"job with ID {job_id} does not exist")
        return _job(row)

    async def list(self, *, job_ids: list[int] | None = None, recent_hours: float | None = None,
                   job_types: tuple[str, ...] | None = None,
                   schedule_ids: list[int] | None = None) -> list[Job]:
        """CockroachDB's SHOW JOBS order: unfinished first (by start), then finished (by finish).
        `schedule_ids`: only the jobs those schedules started."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM pgkeep.jobs WHERE ($1::bigint[] IS NULL OR job_id = ANY($1)) "
            f"AND ($2::float8 IS NULL OR finished IS NULL OR finished > now() - make_interval(secs => $2 * 3600)) "
            f"AND ($3::text[] IS NULL OR job_type = ANY($3)) "
            f"AND ($4::bigint[] IS NULL OR schedule_id = ANY($4)) "
            f"ORDER BY finished IS NOT NULL, CASE WHEN finished IS NULL THEN coalesce(started, created) "
            f"ELSE finished END, job_id",
            job_ids, recent_hours, list(job_types) if job_types else None, schedule_ids)
        return [_job(r) for r in rows]

    async def payload(self, job_id: int) -> dict:
        spec = await self._pool.fetchval("SELECT spec FROM pgkeep.job_payloads WHERE job_id = $1", job_id)
        return json.loads(spec) if isinstance(spec, str) else spec

    async def request(self, job_id: int, new: str, verb: str, reason: str | None = None) -> Job:
        """A user's PAUSE (pause-requested, or paused at once when not running anywhere), RESUME
        (running, to be claimed) or CANCEL (cancel-requested)."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT status, coordinator_id FROM pgkeep.jobs WHERE job_id = $1 "
                                      "FOR UPDATE", job_id)
            if row is None:
                raise UndefinedJob(f"job with ID {job_id} does not exist")
            current = JobStatus(row["status"])
            new = JobStatus(new)
            if new == "pause-requested" and current in ("paused", "pause-requested"):
                raise InvalidJobState(f"job {job_id}: cannot pause a job in state {current}")
            check_transition(job_id, current, new, verb)
            if new == "pause-requested" and current == "pending":
                new = "paused"
            if new == "running":  # resumed: any process may claim it
                await conn.execute("UPDATE pgkeep.jobs SET status = 'running', coordinator_id = NULL, "
                                   "lease_expires = NULL, pause_reason = NULL, running_status = NULL, "
                                   "modified = now() WHERE job_id = $1", job_id)
            else:
                await conn.execute("UPDATE pgkeep.jobs SET status = $2, pause_reason = coalesce($3, "
                                   "pause_reason), modified = now() WHERE job_id = $1", job_id, str(new), reason)
        return await self.get(job_id)

    async def claim(self, coordinator: str, lease_seconds: float, place: str | None = None,
                    running: list[int] | None = None) -> Job | None:
        """Claim one running job that no live process holds (lease missing or expired) and
        that this process's `place` may run (the job has no placement, or this one), other than
        `running`: the jobs this process runs already, whose lease may have run out while a
        starved process was late renewing it (claiming one would run it twice here)."""
        row = await self._pool.fetchrow(
            f"UPDATE pgkeep.jobs SET coordinator_id = $1, lease_expires = now() + make_interval(secs => $2), "
            f"status = CASE WHEN status = 'pending' THEN 'running' ELSE status END, "
            f"started = coalesce(started, now()), modified = now() WHERE job_id = ("
            f"  SELECT job_id FROM pgkeep.jobs WHERE status IN ('running', 'pending', 'cancel-requested', "
            f"  'reverting', 'pause-requested') AND (lease_expires IS NULL OR lease_expires < now()) "
            f"  AND (placement IS NULL OR placement = $3) AND job_id <> ALL($4::bigint[]) "
            f"  ORDER BY created LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}",
            coordinator, lease_seconds, place, list(running or ()))
        return _job(row) if row else None

    async def heartbeat(self, coordinator: str, job_ids: list[int], lease_seconds: float) -> dict[int, str]:
        """Renew the leases of the jobs this process runs; returns their current status (a user
        may have asked to pause or cancel them). A job missing from the answer was lost: another
        process took it after our lease expired."""
        rows = await self._pool.fetch(
            "UPDATE pgkeep.jobs SET lease_expires = now() + make_interval(secs => $3) "
            "WHERE job_id = ANY($2) AND coordinator_id = $1 RETURNING job_id, status",
            coordinator, job_ids, lease_seconds)
        return {r[0]: r[1] for r in rows}

    async def progress(self, coordinator: str, reports: list[tuple[int, float, str | None]]) -> None:
        """(job_id, fraction, running_status) of jobs `coordinator` holds and runs, in one
        statement: a report that arrives after its job ended, paused or moved to another
        process changes nothing. fraction_completed never drops (a resumed or adopted run
        starts counting again)."""
        await self._pool.execute(
            "UPDATE pgkeep.jobs j SET fraction_completed = greatest(j.fraction_completed, u.f), "
            "running_status = u.s, modified = now() "
            "FROM unnest($2::bigint[], $3::float8[], $4::text[]) AS u(id, f, s) "
            "WHERE j.job_id = u.id AND j.coordinator_id = $1 AND j.finished IS NULL "
            "AND j.status <> 'paused'", coordinator, [r[0] for r in reports],
            [min(max(r[1], 0.0), 1.0) for r in reports], [r[2] for r in reports])

    async def statuses(self, job_ids: list[int]) -> dict[int, str]:
        rows = await self._pool.fetch("SELECT job_id, status FROM pgkeep.jobs WHERE job_id = ANY($1)",
                                      job_ids)
        return {r[0]: r[1] for r in rows}

    async def save_checkpoint(self, job_id: int, coordinator: str, checkpoint: dict) -> None:
        await self._pool.execute(
            "UPDATE pgkeep.jobs SET checkpoint = $3::jsonb, modified = now() "
            "WHERE job_id = $1 AND coordinator_id = $2", job_id, coordinator, json.dumps(checkpoint))

    async def finish(self, job_id: int, coordinator: str, status: str, *, error: str | None = None,
                     result: dict | None = None, running_status: str | None = None,
                     hooks: tuple[TerminalHook, ...] = ()) -> None:
        """End (or park) a job this process holds: succeeded, failed, canceled, or paused. A
        terminal end runs `hooks` in the same transaction, so what they record (a schedule's
        outcome) is there exactly when the end is."""
        async with self._pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval("SELECT status FROM pgkeep.jobs WHERE job_id = $1 FOR UPDATE",
                                          job_id)
            if current is None:
                return
            check_transition(job_id, JobStatus(current), JobStatus(status), "finish")
            terminal = status in TERMINAL
            row = await conn.fetchrow(
                "UPDATE pgkeep.jobs SET status = $2, error = $3, result = $4::jsonb, "
                "running_status = $5, modified = now(), "
                "finished = CASE WHEN $6 THEN now() ELSE NULL END, "
                "fraction_completed = CASE WHEN $2 = 'succeeded' THEN 1 ELSE fraction_completed END, "
                f"coordinator_id = NULL, lease_expires = NULL WHERE job_id = $1 RETURNING {_COLUMNS}",
                job_id, str(status), error, json.dumps(result) if result is not None else None,
                running_status, terminal)
            if terminal:
                job = _job(row)
                for hook in hooks:
                    await hook(conn, job)

    async def set_description(self, job_id: int, description: str, conn) -> None:
        """A job's description once its run resolved what it names (inside a terminal hook)."""
        await conn.execute("UPDATE pgkeep.jobs SET description = $2 WHERE job_id = $1", job_id, description)

    async def release(self, job_id: int, coordinator: str) -> None:
        """Give a job up without changing its status (shutdown): another process adopts it."""
        await self._pool.execute(
            "UPDATE pgkeep.jobs SET coordinator_id = NULL, lease_expires = NULL "
            "WHERE job_id = $1 AND coordinator_id = $2", job_id, coordinator)
