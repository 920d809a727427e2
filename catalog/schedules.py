"""Schedules in the catalog: CockroachDB's scheduled jobs, for BACKUP (CREATE SCHEDULE FOR BACKUP).

A schedule is paused exactly when its next_run is NULL (CockroachDB's rule). Its run of a slot
is claimed with SELECT ... FOR UPDATE SKIP LOCKED, and the run's job is created and next_run
moved on in that same transaction (engine/scheduler.py), so any number of pgkeep processes run
each slot once; a process that dies while it holds a claim rolls it back with its connection,
and another one claims the slot. The statement a run executes (secrets included) is kept apart
in schedule_payloads, which only pgkeep reads; every column of `schedules` may be shown.
"""
from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, fields

from .errors import CatalogError

__all__ = ["Schedule", "ScheduleStore", "UndefinedSchedule", "DuplicateSchedule"]


class UndefinedSchedule(CatalogError):
    sqlstate = "42704"


class DuplicateSchedule(CatalogError):
    sqlstate = "42710"


@dataclass
class Schedule:
    schedule_id: int
    label: str
    owner: str
    database: str
    created: dt.datetime
    recurrence: str
    next_run: dt.datetime | None
    state: str | None
    backup_type: str                       # FULL | INCREMENTAL
    backup_statement: str                  # redacted
    on_execution_failure: str = "reschedule"
    on_previous_running: str = "wait"
    updates_metric: bool = False
    dependent_id: int | None = None
    unpause_on_success: int | None = None
    last_run: dt.datetime | None = None
    last_success: dt.datetime | None = None

    @property
    def paused(self) -> bool:
        return self.next_run is None


_FIELDS = tuple(f.name for f in fields(Schedule))
_COLUMNS = ", ".join(_FIELDS)
_RUNNING = "SELECT count(*) FROM pgkeep.jobs j WHERE j.schedule_id = s.schedule_id AND j.status = 'running'"
_UNENDED = "'pending', 'running', 'pause-requested', 'paused', 'cancel-requested', 'reverting'"


def _schedule(row) -> Schedule:
    return Schedule(**{k: row[k] for k in _FIELDS})


class ScheduleStore:
    def __init__(self, pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def _conn(self, conn):
        if conn is not None:
            yield conn
            return
        async with self._pool.acquire() as c:
            yield c

    async def create(self, schedules: list[tuple[Schedule, str]], *, label_unique: bool = False) -> bool:
        """Insert `schedules` (each with the statement its runs execute) in one transaction.
        `label_unique` (IF NOT EXISTS): nothing is created, and False returned, when a schedule
        with the first one's label exists; concurrent creators of one label serialise on it."""
        async with self._pool.acquire() as conn, conn.transaction():
            if label_unique:
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('pgkeep.schedule:' || $1))",
                                   schedules[0][0].label)
                if await conn.fetchval("SELECT 1 FROM pgkeep.schedules WHERE label = $1",
                                       schedules[0][0].label):
                    return False
            for s, statement in schedules:
                await conn.execute(
                    f"INSERT INTO pgkeep.schedules({_COLUMNS}) VALUES "
                    f"({', '.join(f'${i + 1}' for i in range(len(_FIELDS)))})",
                    *(getattr(s, k) for k in _FIELDS))
                await conn.execute("INSERT INTO pgkeep.schedule_payloads(schedule_id, statement) "
                                   "VALUES ($1, $2)", s.schedule_id, statement)
        return True

    async def get(self, schedule_id: int, conn=None, *, lock: bool = False) -> Schedule:
        async with self._conn(conn) as c:
            row = await c.fetchrow(f"SELECT {_COLUMNS} FROM pgkeep.schedules WHERE schedule_id = $1"
                                   + (" FOR UPDATE" if lock else ""), schedule_id)
        if row is None:
            raise UndefinedSchedule(f"schedule with ID {schedule_id} does not exist")
        return _schedule(row)

    async def find(self, schedule_id: int, conn=None) -> Schedule | None:
        try:
            return await self.get(schedule_id, conn)
        except UndefinedSchedule:
            return None

    async def list(self, *, ids: list[int] | None = None, paused: bool | None = None,
                   owner: str | None = None) -> list[tuple[Schedule, int]]:
        """(schedule, its running jobs) by id; `paused` True/False filters, `owner` too."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS}, ({_RUNNING}) AS jobs_running FROM pgkeep.schedules s "
            f"WHERE ($1::bigint[] IS NULL OR schedule_id = ANY($1)) "
            f"AND ($2::bool IS NULL OR (next_run IS NULL) = $2) AND ($3::text IS NULL OR owner = $3) "
            f"ORDER BY schedule_id", ids, paused, owner)
        return [(_schedule(r), r["jobs_running"]) for r in rows]

    async def statement(self, schedule_id: int, conn=None) -> str:
        async with self._conn(conn) as c:
            text = await c.fetchval("SELECT statement FROM pgkeep.schedule_payloads WHERE schedule_id = $1",
                                    schedule_id)
        if text is None:
            raise UndefinedSchedule(f"schedule with ID {schedule_id} does not exist")
        return text

    async def update(self, schedule_id: int, conn=None, *, statement: str | None = None, **values) -> None:
        """Set columns of one schedule (and its statement when given)."""
        async with self._conn(conn) as c:
            if values:
                names = list(values)
                sets = ", ".join(f"{n} = ${i + 2}" for i, n in enumerate(names))
                await c.execute(f"UPDATE pgkeep.schedules SET {sets} WHERE schedule_id = $1",
                                schedule_id, *(values[n] for n in names))
            if statement is not None:
                await c.execute("UPDATE pgkeep.schedule_payloads SET statement = $2 WHERE schedule_id = $1",
                                schedule_id, statement)

    async def insert(self, schedule: Schedule, statement: str, conn) -> None:
        """One more schedule inside the caller's transaction (ALTER ... SET FULL BACKUP)."""
        await conn.execute(
            f"INSERT INTO pgkeep.schedules({_COLUMNS}) VALUES "
            f"({', '.join(f'${i + 1}' for i in range(len(_FIELDS)))})", *(getattr(schedule, k) for k in _FIELDS))
        await conn.execute("INSERT INTO pgkeep.schedule_payloads(schedule_id, statement) VALUES ($1, $2)",
                           schedule.schedule_id, statement)

    async def delete(self, schedule_id: int, conn=None) -> None:
        async with self._conn(conn) as c:
            await c.execute("DELETE FROM pgkeep.schedules WHERE schedule_id = $1", schedule_id)

    @contextlib.asynccontextmanager
    async def transaction(self):
        """A connection in a transaction, for changes that must land together."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn

    @contextlib.asynccontextmanager
    async def claim_due(self, now: dt.datetime, limit: int, hold_seconds: float):
        """(conn, due schedules) in a transaction that holds their rows: schedules that no other
        process holds and whose next_run is at or before `now`, oldest first. What the caller
        changes through `conn` commits when the block ends (rolls back on an error). The
        transaction ends itself when idle for `hold_seconds` (a process that stalls or dies
        while it holds a claim gives it up)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = {int(hold_seconds * 1000)}")
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM pgkeep.schedules WHERE next_run <= $1 "
                f"ORDER BY next_run, schedule_id LIMIT $2 FOR UPDATE SKIP LOCKED", now, limit)
            yield conn, [_schedule(r) for r in rows]

    async def unended_jobs(self, schedule_id: int, conn=None) -> list[int]:
        """The schedule's jobs that have not ended (a paused one has not: CockroachDB's rule)."""
        async with self._conn(conn) as c:
            rows = await c.fetch(f"SELECT job_id FROM pgkeep.jobs WHERE schedule_id = $1 AND status IN "
                                 f"({_UNENDED}) ORDER BY job_id", schedule_id)
        return [r[0] for r in rows]

    async def labelled(self, label: str) -> bool:
        return bool(await self._pool.fetchval("SELECT 1 FROM pgkeep.schedules WHERE label = $1", label))
