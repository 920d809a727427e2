"""Jobs: every BACKUP and RESTORE runs as a job that can be watched, paused, resumed, canceled
and adopted by another pgkeep process if this one dies.

The registry of one pgkeep process (its coordinator id is unique per process) runs the jobs it
holds a lease on, renews the leases every `heartbeat` seconds, and claims jobs whose lease expired
(their process died) or that a user resumed. It notices PAUSE and CANCEL requests at the next
heartbeat and tells the job, which stops at its next chunk boundary: a pause saves a checkpoint
(the job's own `checkpoint()` calls), a cancel reverts (removes the job's files or database).
Job ids are CockroachDB-style: time in 10-microsecond units, then 15 random bits. Every end of
a job this process ran (succeeded, failed, canceled, paused) is one INFO line on the
`pgkeep.jobs` logger: `job <id> <status>: <redacted description>[ (error: <message>)]`.

What the engine's run_* functions get as `job` (a JobContext, or NoJob outside a job: call its
methods unconditionally, never `if job is not None`):

    job.check()                     at chunk boundaries: raises Canceled or JobStopped
    job.checkpoint                  the previous run's checkpoint (None on a first run)
    await job.save_checkpoint(d)    what a resumed or adopted run starts from
    job.stop                        None, 'pause', 'cancel' or 'release' (requested, not yet seen)

Progress, shown by SHOW JOBS as fraction_completed and running_status (the registry writes
them to the catalog every quarter second when they change):

    job.total_bytes += n            the bytes the job will go through (add as they are known)
    job.progress(nbytes, nrows)     bytes and rows done; fraction = done / total, at most 0.99
                                    until the job succeeds; a resumed run counts what its earlier
                                    run finished, and the catalog never lets the fraction drop
    job.phase = f"backing up {db}"  a phase measured by the byte counters:
                                    "backing up db: 80 MiB of 640 MiB" (the bare name while
                                    total_bytes is 0)
    job.begin("building indexes", steps=12); job.step()
                                    a phase measured in steps: "building indexes 3/12"
    job.begin("renaming")           a phase with no measure: "renaming"

A new phase replaces the previous one; the counters of bytes and rows run for the whole job
("80.0 MiB": one decimal). A paused job's running_status is "paused at a checkpoint (<the
phase it paused in>)"; RESUME clears it. For a plain message that is not a phase of work
(leftovers a store refused to delete, say), use job.begin(text), not job.phase.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from catalog.jobs import ENDED, JobStatus, TerminalHook

from .errors import Canceled, EngineError

__all__ = ["new_job_id", "JobRegistry", "JobContext", "JobHandle", "NoJob", "JobStopped", "Runner",
           "JobStatus"]

_log = logging.getLogger("pgkeep.jobs")


def new_job_id() -> int:
    return ((time.time_ns() // 10_000) << 15) | secrets.randbits(15)


class JobStopped(Exception):
    """Raised inside a job at a chunk boundary when it must stop: `reason` is 'pause' (the
    checkpoint is saved, the job becomes paused) or 'release' (this process is shutting down
    or lost the lease; another process continues from the checkpoint)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Progress:
    """A job's phase and counters, rendered as SHOW JOBS' running_status (see the module
    docstring); shared by JobContext and NoJob."""

    def __init__(self) -> None:
        self.total_bytes = 0
        self.done_bytes = 0
        self.done_rows = 0
        self._phase = ""
        self._steps: int | None = None      # a phase measured in steps: how many in all
        self._done_steps = 0
        self._bytes = False                 # a phase measured by the byte counters

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, name: str) -> None:
        """A phase measured by the byte counters: `name: 80 MiB of 640 MiB`."""
        self._phase, self._bytes, self._steps, self._done_steps = name, True, None, 0

    def begin(self, name: str, steps: int | None = None) -> None:
        """A phase measured in `steps` (`name 3/12`, counted by `step()`), or by nothing."""
        self._phase, self._bytes, self._steps, self._done_steps = name, False, steps, 0

    def step(self, n: int = 1) -> None:
        self._done_steps += n

    def progress(self, nbytes: int, nrows: int) -> None:
        self.done_bytes += nbytes
        self.done_rows += nrows

    @property
    def fraction(self) -> float:
        """Bytes done of all bytes, short of 1 until the job has succeeded."""
        return min(0.99, self.done_bytes / self.total_bytes) if self.total_bytes else 0.0

    def running_status(self) -> str | None:
        if not self._phase:
            return None
        if self._steps is not None:
            return f"{self._phase} {min(self._done_steps, self._steps)}/{self._steps}"
        if self._bytes and self.total_bytes:
            return f"{self._phase}: {_human(self.done_bytes)} of {_human(self.total_bytes)}"
        return self._phase


class JobContext(_Progress):
    """What a running job sees of the registry."""
    real = True                      # NoJob's is False

    def __init__(self, job_id: int, spec: dict, checkpoint: dict | None, registry: "JobRegistry",
                 *, description: str = "", adopted: bool = False) -> None:
        super().__init__()
        self.job_id = job_id
        self.spec = spec
        self.checkpoint = checkpoint
        self.registry = registry
        self.description = description   # redacted: the only form a log line may show
        self.adopted = adopted           # claimed from the catalog (after a crash, a resume, or
                                         # pending), not started by the statement that submitted it
        self.stop: str | None = None     # None, 'pause', 'cancel' or 'release'
        self.ending = False              # the registry is recording its end: no more reports
        self.reported: tuple | None = None

    def check(self) -> None:
        """Call at chunk boundaries: raises when the job must stop now."""
        if self.stop == "cancel":
            raise Canceled(f"job {self.job_id} was canceled")
        if self.stop in ("pause", "release"):
            raise JobStopped(self.stop)

    async def save_checkpoint(self, checkpoint: dict) -> None:
        self.checkpoint = checkpoint
        await self.registry.store.save_checkpoint(self.job_id, self.registry.coordinator, checkpoint)


class NoJob(_Progress):
    """The job handle of work run outside a job (engine tests, tools): the same interface as
    JobContext, doing nothing, so the engine never guards with `job is not None`."""
    real = False
    job_id = 0
    registry = None
    adopted = False
    description = ""

    def __init__(self) -> None:
        super().__init__()
        self.checkpoint: dict | None = None
        self.stop: str | None = None

    def check(self) -> None:
        pass

    async def save_checkpoint(self, checkpoint: dict) -> None:
        self.checkpoint = checkpoint


JobHandle = "JobContext | NoJob"   # what the engine's run_* functions take as `job`


def _transient(e: BaseException) -> bool:
    """A failure to reach the upstream (restart, network), as opposed to an answer from it."""
    state = getattr(e, "sqlstate", None) or ""
    return (isinstance(e, (OSError, asyncio.TimeoutError)) or state.startswith("08")
            or state in ("57P01", "57P02", "57P03")
            or type(e).__name__ in ("InterfaceError", "ConnectionDoesNotExistError"))


def _human(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


Runner = Callable[[JobContext], Awaitable[dict]]  # runs a job to its end, returns its result


@dataclass
class _Running:
    ctx: JobContext
    task: asyncio.Task
    done: asyncio.Future = field(default=None)


class JobRegistry:
    def __init__(self, store, runners: dict[str, Runner], *, lease: float = 10.0,
                 heartbeat: float = 1.0, max_jobs: int = 4, placement=None) -> None:
        self.store = store                  # catalog.JobStore
        self.runners = runners              # job_type -> runner
        self.placement = placement          # engine.placement.Placement, or None: run anything
        self.lease = lease
        self.heartbeat_interval = heartbeat
        self.max_jobs = max_jobs
        self.coordinator = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._running: dict[int, _Running] = {}
        self._loop_task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._terminal_hooks: list[TerminalHook] = []

    def on_terminal(self, hook: TerminalHook) -> None:
        """Run `hook(conn, job)` inside the transaction that ends any job this process runs
        (succeeded, failed or canceled): a schedule learns how its run ended exactly once."""
        self._terminal_hooks.append(hook)

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self, timeout: float = 10.0) -> None:
        """Shutdown: running jobs stop at their next chunk boundary, keep their checkpoint and
        are released for another process (or this one, restarted) to adopt."""
        self._closing = True
        if self._loop_task:
            self._loop_task.cancel()
        for r in list(self._running.values()):
            r.ctx.stop = "release"
        tasks = [r.task for r in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for r in list(self._running.values()):
            r.task.cancel()

    # ---- submitting and waiting --------------------------------------------------------------

    async def submit(self, job_type: str, description: str, user: str, spec: dict,
                     job_id: int | None = None) -> int:
        job_id = job_id or new_job_id()
        run_here = len(self._running) < self.max_jobs and not self._closing
        place = await self.placement.of(spec) if self.placement is not None else None
        await self.store.create(job_id, job_type, description, user, spec,
                                self.coordinator if run_here else None, self.lease, place)
        if run_here:
            self._start(await self.store.get(job_id), spec)
        else:
            self.wake()  # pending: whichever process has room claims it
        return job_id

    async def create_pending(self, conn, job_type: str, description: str, user: str, spec: dict,
                             job_id: int, *, schedule_id: int | None = None) -> int:
        """A job created inside the caller's transaction (`conn`), pending: once committed, any
        process with room claims it (call wake() after the commit to claim it here soon)."""
        place = await self.placement.of(spec) if self.placement is not None else None
        await self.store.create(job_id, job_type, description, user, spec, None, 0, place,
                                schedule_id=schedule_id, conn=conn)     # no lease: claimable at once
        return job_id

    async def wait(self, job_id: int, poll: float = 0.5, outage: float = 120.0):
        """Until the job is succeeded, failed, canceled or paused; returns the catalog row. The
        catalog may be unreachable for a while (the upstream restarting, the job being adopted
        meanwhile): reads are retried with backoff through an outage of up to `outage` seconds."""
        local = self._running.get(job_id)
        if local is not None:
            await asyncio.shield(local.done)
        down_since: float | None = None
        delay = poll
        while True:
            try:
                job = await self.store.get(job_id)
            except Exception as e:  # noqa: BLE001 - only connection failures are retried
                if not _transient(e):
                    raise
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since > outage:
                    raise
                _log.info("job %d: the catalog is unreachable (%s), retrying", job_id, type(e).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            down_since, delay = None, poll
            if job.status in ENDED:
                return job
            await asyncio.sleep(poll)

    _REQUESTS = {"pause": JobStatus.PAUSE_REQUESTED, "resume": JobStatus.RUNNING,
                 "cancel": JobStatus.CANCEL_REQUESTED}

    async def control(self, job_id: int, verb: str, reason: str | None = None):
        """The one path of PAUSE, RESUME and CANCEL ('pause' | 'resume' | 'cancel'): the
        request is recorded in the catalog (55000 when the job's status does not allow it);
        a job this process runs sees a pause or cancel at once, any other at its runner's next
        heartbeat; a resumed job is claimed by whichever process has room. Returns the job's
        catalog row after the request."""
        after = await self.store.request(job_id, self._REQUESTS[verb], verb, reason)
        if after.status == JobStatus.PAUSED:   # pending: paused before any process ran it
            _log.info("job %d paused: %s", job_id, after.description)
        r = self._running.get(job_id)
        if r is not None and verb != "resume":
            r.ctx.stop = verb
        if verb == "resume":
            self.wake()
        return after

    def wake(self) -> None:
        """Look for jobs to adopt now (a job was resumed)."""
        self._wake.set()

    # ---- the loop: heartbeats, control requests, adoption -------------------------------------

    _PROGRESS_EVERY = 0.25  # seconds between progress updates in the catalog

    async def _loop(self) -> None:
        last_beat = 0.0
        while not self._closing:
            try:
                now = time.monotonic()
                if now - last_beat >= self.heartbeat_interval or self._wake.is_set():
                    last_beat = now
                    self._wake.clear()
                    await self._tick()
                else:
                    await self._report_progress()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the catalog may be briefly unreachable
                _log.exception("job registry tick failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self._PROGRESS_EVERY)
            except asyncio.TimeoutError:
                pass

    async def _report_progress(self) -> None:
        """What changed since the last report, for every job this process runs: one statement."""
        reports = []
        for job_id, r in list(self._running.items()):
            report = (r.ctx.fraction, r.ctx.running_status())
            if r.ctx.ending or r.ctx.stop == "release" or report in (r.ctx.reported, (0.0, None)):
                continue
            r.ctx.reported = report
            reports.append((job_id, *report))
        if reports:
            await self.store.progress(self.coordinator, reports)

    async def _tick(self) -> None:
        if self._running:
            # Not those ending or released: their lease is gone or going (one warning per
            # lost lease, however long the job takes to reach its next chunk boundary).
            held = [j for j, r in self._running.items() if not r.ctx.ending and r.ctx.stop != "release"]
            statuses = await self.store.heartbeat(self.coordinator, held, self.lease) if held else {}
            lost = [j for j in held if j not in statuses]
            now = await self.store.statuses(lost) if lost else {}
            for job_id in held:
                r = self._running.get(job_id)
                if r is None or r.ctx.ending:
                    continue    # it ended meanwhile: its lease went with its end
                status = statuses.get(job_id)
                if status is None:
                    if now.get(job_id) in ENDED:
                        # not a warning: nothing is left to run twice
                        _log.info("lost the lease of job %d, which another process has ended "
                                  "since (%s): this run stops", job_id, now[job_id])
                    else:
                        _log.warning("lost the lease of job %d; another process runs it now", job_id)
                    r.ctx.stop = "release"
                elif status == JobStatus.PAUSE_REQUESTED:
                    r.ctx.stop = r.ctx.stop or "pause"
                elif status == JobStatus.CANCEL_REQUESTED:
                    r.ctx.stop = "cancel"
            await self._report_progress()
        while not self._closing and len(self._running) < self.max_jobs:
            job = await self.store.claim(self.coordinator, self.lease,
                                         self.placement.here if self.placement is not None else None,
                                         list(self._running))
            if job is None:
                break
            _log.info("adopted job %d (%s, %s)", job.job_id, job.job_type, job.status)
            self._start(job, await self.store.payload(job.job_id), adopted=True)

    def _start(self, job, spec: dict, adopted: bool = False) -> None:
        ctx = JobContext(job.job_id, spec, job.checkpoint, self, description=job.description,
                         adopted=adopted)
        if job.status == JobStatus.PAUSE_REQUESTED:
            ctx.stop = "pause"
        elif job.status in (JobStatus.CANCEL_REQUESTED, JobStatus.REVERTING):
            ctx.stop = "cancel"
        done = asyncio.get_running_loop().create_future()
        task = asyncio.get_running_loop().create_task(self._run(job.job_type, ctx, done))
        self._running[job.job_id] = _Running(ctx, task, done)

    async def _run(self, job_type: str, ctx: JobContext, done: asyncio.Future) -> None:
        store, me = self.store, self.coordinator

        async def end(status: JobStatus, **kw) -> None:
            ctx.ending = True
            await store.finish(ctx.job_id, me, status, hooks=tuple(self._terminal_hooks), **kw)
            error = kw.get("error")
            _log.info("job %d %s: %s%s", ctx.job_id, status, ctx.description,
                      f" (error: {error})" if error else "")

        try:
            result = await self.runners[job_type](ctx)
            await end(JobStatus.SUCCEEDED, result={**result, "coordinator": me})
        except JobStopped as stop:
            if stop.reason == "pause":
                ctx.ending = True
                if (await store.get(ctx.job_id)).status == JobStatus.RUNNING:
                    # a pausepoint (engine.pausepoints): as if PAUSE JOB had been requested now
                    await store.request(ctx.job_id, JobStatus.PAUSE_REQUESTED, "pause", reason="pausepoint")
                where = ctx.running_status()
                if ctx.total_bytes:   # the progress as of the pause, not as of the last report
                    await store.progress(me, [(ctx.job_id, ctx.fraction, where)])
                await end(JobStatus.PAUSED, running_status="paused at a checkpoint"
                          + (f" ({where})" if where else ""))
            else:
                await store.release(ctx.job_id, me)
        except Canceled:
            await end(JobStatus.CANCELED, error="job canceled by a user")
        except asyncio.CancelledError:
            await asyncio.shield(store.release(ctx.job_id, me))
            raise
        except BaseException as e:  # noqa: BLE001 - a job's failure is its status
            if not isinstance(e, EngineError) and not hasattr(e, "sqlstate"):
                _log.exception("job %d failed", ctx.job_id)
            message = getattr(e, "message", None) or str(e) or type(e).__name__
            try:
                ctx.ending = True
                current = await store.get(ctx.job_id)
                status = (JobStatus.CANCELED if current.status in (JobStatus.CANCEL_REQUESTED, JobStatus.REVERTING)
                          else JobStatus.FAILED)
                await end(status, error=message,
                          result={"sqlstate": getattr(e, "sqlstate", "XX000"),
                                  "hint": getattr(e, "hint", None),
                                  "detail": getattr(e, "detail", None)})
            except Exception as lost:  # noqa: BLE001
                if not _transient(lost):
                    raise
                # The catalog is unreachable (the upstream restarting): the job keeps its
                # checkpoint and, once its lease expires, is adopted and resumed.
                _log.warning("job %d stopped (%s) while the catalog is unreachable: it will be "
                             "adopted again once its lease expires", ctx.job_id, message)
        finally:
            r = self._running.get(ctx.job_id)
            if r is not None and r.ctx is ctx:   # not a later run of the job, adopted again here
                del self._running[ctx.job_id]
            if not done.done():
                done.set_result(None)
