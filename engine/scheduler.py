"""The scheduler: runs every pgkeep process and starts the due runs of schedules (CockroachDB's
job scheduler daemon), each slot exactly once whatever the number of processes.

Contract:
- Time comes from an injected clock (CockroachDB's JobSchedulerEnv): `clock()` is awaited once
  per pass and nothing here reads the wall clock, so tests drive schedules by setting time.
- A pass claims due schedules (next_run <= now) with FOR UPDATE SKIP LOCKED, and for each one,
  in the transaction that holds it, creates the run's job (pending: any process with room
  claims it) and moves next_run to the first cron slot after now. Commit = the slot is spent
  and its job exists; a process that dies before the commit rolls both back and another
  process claims the slot on its next pass.
- A run is for the latest slot that is due: after a long outage, or a clock jump forwards,
  the missed slots collapse into one run (never several), for the newest. next_run only moves
  forwards, so a clock jump backwards delays the next run and never repeats one.
- on_previous_running: 'wait' leaves a due schedule due while a job of it has not ended,
  'skip' spends the slot without a run, 'start' runs anyway.
- A run's end reaches its schedule inside the transaction that records the end (the job
  registry's terminal hook): success records last_success and un-pauses the incremental
  schedule a full was waiting for; a failure (or a run that could not even start) follows
  on_execution_failure: 'retry' runs again a minute later, 'reschedule' waits for the next
  slot, 'pause' pauses the schedule; SHOW SCHEDULES' state says what happened.

Cron: UTC, 5 fields or @hourly/@daily/@weekly/@monthly/@yearly, through croniter.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Awaitable, Callable, Protocol

from croniter import croniter

from catalog.schedules import Schedule, ScheduleStore

from .errors import EngineError

__all__ = ["Scheduler", "Executor", "Clock", "system_clock", "check_cron", "next_after",
           "latest_at", "full_cadence", "InvalidCron", "RETRY_AFTER", "run_slot"]

_log = logging.getLogger("pgkeep.scheduler")
RETRY_AFTER = dt.timedelta(minutes=1)   # on_execution_failure = 'retry' (CockroachDB's)
_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
UTC = dt.timezone.utc

Clock = Callable[[], Awaitable[dt.datetime]]


async def system_clock() -> dt.datetime:
    return dt.datetime.now(UTC)


class InvalidCron(EngineError):
    sqlstate = "22023"


def check_cron(expr: str) -> str:
    """`expr` if it is a cron expression pgkeep runs (5 fields or a macro), else 22023."""
    text = expr.strip()
    ok = text.lower() in _MACROS if text.startswith("@") else len(text.split()) == 5
    if ok:
        try:
            croniter(text, dt.datetime(2000, 1, 1, tzinfo=UTC)).get_next(dt.datetime)
        except (ValueError, KeyError) as e:
            raise InvalidCron(f"invalid cron expression {expr!r}: {e}") from None
        return text
    raise InvalidCron(f"invalid cron expression {expr!r}",
                      hint="use 5 fields (minute hour day-of-month month day-of-week, in UTC) or "
                           "@hourly, @daily, @weekly, @monthly, @yearly")


def next_after(expr: str, t: dt.datetime) -> dt.datetime:
    """The first slot of `expr` strictly after `t` (UTC)."""
    return croniter(expr, t.astimezone(UTC)).get_next(dt.datetime).astimezone(UTC)


def latest_at(expr: str, t: dt.datetime) -> dt.datetime:
    """The newest slot of `expr` at or before `t`."""
    t = t.astimezone(UTC)
    nxt = next_after(expr, t - dt.timedelta(microseconds=1))
    if nxt == t:
        return t
    return croniter(expr, t).get_prev(dt.datetime).astimezone(UTC)


def full_cadence(expr: str, now: dt.datetime) -> str | None:
    """CockroachDB's default full-backup cadence for RECURRING `expr` without a FULL BACKUP
    clause: at most hourly -> '@daily', at most daily -> '@weekly', else None (every run
    full). The period is the gap between the next two slots."""
    first = next_after(expr, now)
    period = next_after(expr, first) - first
    if period <= dt.timedelta(hours=1):
        return "@daily"
    if period <= dt.timedelta(days=1):
        return "@weekly"
    return None


def run_slot(schedule: Schedule, now: dt.datetime) -> dt.datetime:
    """The slot a due schedule runs for: the newest cron slot at or before `now`, or its
    next_run when that is later (a first_run or EXECUTE IMMEDIATELY between slots)."""
    return max(schedule.next_run, latest_at(schedule.recurrence, now))


class Executor(Protocol):
    """What the proxy gives the scheduler: building a run from a schedule's stored statement
    (the engine never sees SQL)."""

    async def start_run(self, conn, schedule: Schedule, slot: dt.datetime, now: dt.datetime) -> int:
        """Create the run's job (pending, schedule_id set) through `conn`; returns its id."""

    async def ended_description(self, conn, schedule: Schedule, job) -> str | None:
        """The description a run's job ends with (a full names the subdir it wrote), or None."""


class Scheduler:
    def __init__(self, store: ScheduleStore, jobs, executor: Executor, clock: Clock = system_clock,
                 *, pace: Callable[[], Awaitable[float]] | None = None, hold: float = 10.0,
                 batch: int = 16) -> None:
        self.store = store
        self.jobs = jobs                    # engine.jobs.JobRegistry
        self.executor = executor
        self.clock = clock
        self.pace = pace                    # seconds between passes (jobs.scheduler.pace)
        self.hold = hold                    # a claim dies with its holder within this many seconds
        self.batch = batch
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        jobs.on_terminal(self.job_ended)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping anyway
                pass

    def wake(self) -> None:
        """Make a pass now (a schedule was created, altered or resumed here)."""
        self._wake.set()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            last = loop.time()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the catalog may be briefly unreachable
                _log.exception("scheduler pass failed")
            # The pace is read again every second, so a change of it takes effect at once.
            while not self._wake.is_set():
                try:
                    delay = await self.pace() if self.pace is not None else 60.0
                except Exception:  # noqa: BLE001
                    delay = 60.0
                remaining = last + max(0.02, delay) - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._wake.wait(), min(remaining, 1.0))
                except asyncio.TimeoutError:
                    pass

    async def tick(self) -> int:
        """One pass: start the runs due now; returns how many were started."""
        from . import pausepoints
        now = await self.clock()
        started = 0
        async with self.store.claim_due(now, self.batch, self.hold) as (conn, due):
            for schedule in due:
                started += await self._due(conn, schedule, now)
            if due:
                pausepoints.reach("scheduler.after_claim")
        if started:
            self.jobs.wake()
        return started

    async def _due(self, conn, s: Schedule, now: dt.datetime) -> int:
        slot = run_slot(s, now)
        following = next_after(s.recurrence, max(now, slot))
        if s.on_previous_running != "start" or s.backup_type == "INCREMENTAL":
            previous = await self.store.unended_jobs(s.schedule_id, conn)
            if previous and (s.on_previous_running == "skip" and s.backup_type == "FULL"):
                await self.store.update(s.schedule_id, conn, next_run=following,
                                        state=f"skipped the run due at {_ts(slot)}: job {previous[0]} "
                                              "of the previous run has not ended")
                return 0
            if previous:
                state = f"waiting for job {previous[0]} of the previous run to end"
                if s.state != state:
                    await self.store.update(s.schedule_id, conn, state=state)
                return 0
        try:
            async with conn.transaction():       # a savepoint: a failed start leaves the claim
                job_id = await self.executor.start_run(conn, s, slot, now)
        except Exception as e:  # noqa: BLE001 - the run could not start: its failure
            message = getattr(e, "message", None) or str(e) or type(e).__name__
            _log.warning("schedule %d: the run due at %s could not start: %s", s.schedule_id, _ts(slot), message)
            await self.store.update(s.schedule_id, conn, next_run=following, last_run=slot)
            s.next_run = following
            await self._failed(conn, s, f"failed to start the backup: {message}", now)
            return 0
        await self.store.update(s.schedule_id, conn, next_run=following, last_run=slot,
                                state=None if (s.state or "").startswith("waiting for job") else s.state)
        _log.info("schedule %d: job %d started for the run due at %s", s.schedule_id, job_id, _ts(slot))
        return 1

    async def _failed(self, conn, s: Schedule, message: str, now: dt.datetime) -> None:
        """on_execution_failure (CockroachDB's DefaultHandleFailedRun)."""
        if s.on_execution_failure == "retry":
            await self.store.update(s.schedule_id, conn, state=f"retrying: {message}",
                                    next_run=None if s.paused else now + RETRY_AFTER)
        elif s.on_execution_failure == "pause":
            await self.store.update(s.schedule_id, conn, state=f"schedule paused: {message}", next_run=None)
        else:
            await self.store.update(s.schedule_id, conn, state=f"reschedule: {message}")

    async def job_ended(self, conn, job) -> None:
        """The registry's terminal hook: a run of a schedule ended (in the transaction that
        records the end)."""
        if job.schedule_id is None:
            return
        try:
            s = await self.store.get(job.schedule_id, conn, lock=True)
        except Exception:  # noqa: BLE001 - dropped meanwhile: nothing to tell
            return
        now = await self.clock()
        if job.status == "succeeded":
            await self.store.update(s.schedule_id, conn, last_success=now, state=None)
            description = await self.executor.ended_description(conn, s, job)
            if description is not None:
                await self.jobs.store.set_description(job.job_id, description, conn)
            if s.unpause_on_success is not None:
                inc = await self.store.find(s.unpause_on_success, conn)
                if inc is not None and inc.paused:
                    await self.store.update(inc.schedule_id, conn, state=None,
                                            next_run=next_after(inc.recurrence, now))
                await self.store.update(s.schedule_id, conn, unpause_on_success=None)
            return
        what = "canceled" if job.status == "canceled" else f"failed with err={job.error}"
        await self._failed(conn, s, f"backup job {job.job_id} {what}", now)


def _ts(t: dt.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00")
