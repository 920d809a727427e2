"""What the reliability tests do with jobs through a pgkeep: run a statement, read a job's SHOW JOB
row, wait for a job to reach a state, wait for a pgkeep started with a crashpoint to die."""
from __future__ import annotations

import contextlib
import time
from typing import Callable

import psycopg

from tests.support.pgkeep import PgkeepProcess

__all__ = ["query", "job_row", "wait_job", "wait_until", "wait_done", "wait_exit", "ENDED"]

ENDED = ("succeeded", "failed", "canceled", "paused")


def query(proc, sql: str):
    """Rows of `sql` run through pgkeep `proc` (None for a statement without rows)."""
    with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=30) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


def job_row(proc, job_id: int) -> dict:
    """SHOW JOB's row, by column name."""
    with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=30) as conn:
        cur = conn.execute(f"SHOW JOB {job_id}")
        return dict(zip([c.name for c in cur.description], cur.fetchone()))


def wait_until(proc, job_id: int, done: Callable[[dict], bool], timeout: float = 120,
               poll: float = 0.05) -> dict:
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        row = job_row(proc, job_id)
        if done(row):
            return row
        time.sleep(poll)
    raise AssertionError(f"job {job_id} did not get there: {row}\n{proc.log()[-3000:]}")


def wait_job(proc, job_id: int, statuses=ENDED, timeout: float = 90) -> dict:
    """The job's row once its status is one of `statuses`."""
    return wait_until(proc, job_id, lambda r: r["status"] in statuses, timeout, poll=0.1)


def wait_done(proc, job_id: int, timeout: float = 120) -> tuple[str, str | None]:
    """(status, error) once the job succeeded, failed or was canceled."""
    row = wait_job(proc, job_id, ("succeeded", "failed", "canceled"), timeout)
    return row["status"], row["error"]


def wait_exit(proc, timeout: float = 60) -> int:
    """The exit code of a pgkeep that must die (a crashpoint)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            return proc.proc.returncode
        time.sleep(0.1)
    raise AssertionError(f"pgkeep did not crash:\n{proc.log()[-3000:]}")


@contextlib.contextmanager
def cluster_settings(proc, settings: dict[str, str], also_reset: tuple[str, ...] = ("jobs.debug.pausepoints",)):
    """SET CLUSTER SETTING each of `settings` (values as SQL literals) for the block; RESET them
    (and `also_reset`) after it: the settings are the whole test session's."""
    for k, v in settings.items():
        query(proc, f"SET CLUSTER SETTING {k} = {v}")
    try:
        yield
    finally:
        for k in [*settings, *also_reset]:
            query(proc, f"RESET CLUSTER SETTING {k}")


def crashing_pgkeep(pgkeep, workdir, name: str, point: str, lease: str = "2") -> PgkeepProcess:
    """A second pgkeep beside `pgkeep` (same upstream and nodelocal root, a short job lease) that
    exits as kill -9 would at the fault point `point` (PGKEEP_TESTING_CRASHPOINTS)."""
    args = ["--nodelocal-root", str(pgkeep.workdir / "data" / "external"), "--job-lease", lease]
    return PgkeepProcess(workdir / name, pgkeep.upstream, args=args,
                         env={"PGKEEP_TESTING_CRASHPOINTS": point}).start()
