"""Issue 16, point 3: every pgkeep process runs a scheduler, and each slot of a schedule must run
exactly once however many there are; a pgkeep that dies while it holds a due run must not lose
the slot. Slots are driven by the scheduler's injected clock (pgkeep.scheduler.debug_now), which
all processes read from the catalog. Fault point: scheduler.after_claim (kill -9 while the claim
and the run's job are not committed).

The tests run on their own PostgreSQL cluster, so no other pgkeep of the session sees them."""
from __future__ import annotations

import datetime as dt
import re
import time
import uuid

import pytest

from tests.support.clusters import make_cluster
from tests.support.pgkeep import PgkeepProcess

from .jobtools import query, wait_exit

UTC = dt.timezone.utc
T0 = dt.datetime(2031, 3, 3, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("sched")
    c = make_cluster(base, "pg")
    c.psql("CREATE DATABASE tiny")
    c.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)", "tiny")
    c.base = base
    yield c
    c.destroy()


def _pgkeep(cluster, name, root, crash=None) -> PgkeepProcess:
    return PgkeepProcess(cluster.base / name, cluster.dsn(),
                         args=["--nodelocal-root", str(root), "--job-lease", "2"],
                         env={"PGKEEP_TESTING_CRASHPOINTS": crash} if crash else None)


def _set_clock(proc, t: dt.datetime) -> None:
    query(proc, f"SET CLUSTER SETTING pgkeep.scheduler.debug_now = '{t.isoformat()}'")


def _slots(cluster, schedule_id: int) -> list[str]:
    """The AS OF SYSTEM TIME of every job the schedule started (read upstream, directly)."""
    out = cluster.psql(f"SELECT description FROM pgkeep.jobs WHERE schedule_id = {schedule_id} ORDER BY job_id")
    return [re.search(r"AS OF SYSTEM TIME '([^']+)'", line).group(1) for line in out.splitlines() if line]


def _wait(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out: {what}")


def test_two_processes_run_each_slot_once(cluster, tmp_path):
    root = tmp_path / "root"
    a = _pgkeep(cluster, f"a-{uuid.uuid4().hex[:6]}", root).start()
    b = _pgkeep(cluster, f"b-{uuid.uuid4().hex[:6]}", root).start()
    try:
        query(a, "SET CLUSTER SETTING jobs.scheduler.pace = '20ms'")
        _set_clock(a, T0)
        [row] = query(a, "CREATE SCHEDULE FOR BACKUP DATABASE tiny INTO 'nodelocal://self/twice' "
                         "RECURRING '* * * * *' FULL BACKUP ALWAYS "
                         "WITH SCHEDULE OPTIONS on_previous_running = 'start'")
        sid = row[0]
        n = 20
        for i in range(1, n + 1):
            _set_clock(b if i % 2 else a, T0 + dt.timedelta(minutes=i))
            _wait(f"slot {i}", lambda: len(_slots(cluster, sid)) >= i)
            time.sleep(0.15)     # both schedulers make several passes at this time
        slots = _slots(cluster, sid)
        want = [(T0 + dt.timedelta(minutes=i)).isoformat() for i in range(1, n + 1)]
        assert slots == want, slots
        ran_by = cluster.psql(f"SELECT count(DISTINCT result->>'coordinator') FROM pgkeep.jobs "
                              f"WHERE schedule_id = {sid} AND status = 'succeeded'")
        _wait("all runs ended", lambda: cluster.psql(
            f"SELECT count(*) FROM pgkeep.jobs WHERE schedule_id = {sid} AND finished IS NULL").strip() == "0")
        assert int(ran_by) >= 1
        assert "scheduler pass failed" not in a.log() + b.log()
    finally:
        query(a, "RESET CLUSTER SETTING pgkeep.scheduler.debug_now")
        a.stop()
        b.stop()


def test_killed_while_holding_a_due_run_loses_nothing(cluster, tmp_path):
    root = tmp_path / "root"
    a = _pgkeep(cluster, f"a-{uuid.uuid4().hex[:6]}", root, crash="scheduler.after_claim").start()
    query(a, "SET CLUSTER SETTING jobs.scheduler.pace = '50ms'")
    _set_clock(a, T0)
    [row] = query(a, "CREATE SCHEDULE FOR BACKUP DATABASE tiny INTO 'nodelocal://self/killed' "
                     "RECURRING '@hourly' FULL BACKUP ALWAYS")
    sid = row[0]
    _set_clock(a, T0 + dt.timedelta(hours=1, minutes=1))
    assert wait_exit(a) == 137
    # the claim died with its holder: no job, the slot still due
    assert _slots(cluster, sid) == []
    assert cluster.psql(f"SELECT next_run = '{(T0 + dt.timedelta(hours=1)).isoformat()}' "
                        f"FROM pgkeep.schedules WHERE schedule_id = {sid}").strip() == "t"
    b = _pgkeep(cluster, f"b-{uuid.uuid4().hex[:6]}", root).start()
    try:
        _wait("the slot runs on the survivor", lambda: len(_slots(cluster, sid)) == 1, timeout=30)
        time.sleep(0.5)
        assert _slots(cluster, sid) == [(T0 + dt.timedelta(hours=1)).isoformat()]
        _wait("the run succeeds", lambda: cluster.psql(
            f"SELECT status FROM pgkeep.jobs WHERE schedule_id = {sid}").strip() == "succeeded")
        assert cluster.psql(f"SELECT last_success IS NOT NULL FROM pgkeep.schedules "
                            f"WHERE schedule_id = {sid}").strip() == "t"
    finally:
        query(b, "RESET CLUSTER SETTING pgkeep.scheduler.debug_now")
        b.stop()
