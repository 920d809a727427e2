"""Scheduled backups through pgkeep (issue 16): CREATE SCHEDULE FOR BACKUP and its result rows,
the full/incremental pairing, SHOW SCHEDULE(S), PAUSE/RESUME/DROP, jobs FOR SCHEDULE, the runs
driven by the scheduler's injected clock (pgkeep.scheduler.debug_now: no sleeping for slots),
failures following on_execution_failure, and who may do what.

The module runs its own PostgreSQL and pgkeep, so the clock it sets reaches no other test."""
from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import psycopg
import pytest

from tests.support.clusters import make_cluster
from tests.support.pgkeep import PgkeepProcess

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 1, 7, 0, 0, tzinfo=UTC)        # a Monday, midnight


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("schedules")
    cluster = make_cluster(base, "pg")
    cluster.psql("CREATE DATABASE shop")
    cluster.psql("CREATE TABLE items (id int PRIMARY KEY, v text); "
                 "INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 2000) g", "shop")
    cluster.psql("CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE admin NOLOGIN; "
                 "CREATE ROLE dave LOGIN; GRANT admin TO dave")
    proc = PgkeepProcess(base / "pgkeep", cluster.dsn(), args=["--job-lease", "2"]).start()
    q(proc, "SET CLUSTER SETTING jobs.scheduler.pace = '100ms'")
    set_clock(proc, T0)
    q(proc, "GRANT SYSTEM BACKUP, EXTERNALIOIMPLICITACCESS TO alice")
    yield cluster, proc
    proc.stop()
    cluster.destroy()


def q(proc, sql, user="postgres", db="shop"):
    with psycopg.connect(proc.dsn(db, user=user), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


def qd(proc, sql, user="postgres", db="shop") -> list[dict]:
    with psycopg.connect(proc.dsn(db, user=user), autocommit=True) as conn:
        cur = conn.execute(sql)
        return [dict(zip([c.name for c in cur.description], r)) for r in cur.fetchall()]


def fails(proc, sql, state, user="postgres") -> str:
    with pytest.raises(psycopg.Error) as e:
        q(proc, sql, user)
    assert e.value.sqlstate == state, (e.value.sqlstate, str(e.value))
    return str(e.value)


def set_clock(proc, t: dt.datetime) -> None:
    q(proc, f"SET CLUSTER SETTING pgkeep.scheduler.debug_now = '{t.isoformat()}'")


def coll() -> str:
    return f"nodelocal://self/s-{uuid.uuid4().hex[:8]}"


def schedule(proc, sid) -> dict:
    return qd(proc, f"SHOW SCHEDULE {sid}")[0]


def jobs_for(proc, sid) -> list[dict]:
    return qd(proc, f"SHOW JOBS FOR SCHEDULE {sid}")


def description(proc, job_id) -> str:
    return qd(proc, f"SHOW JOB {job_id}")[0]["description"]


def wait_for(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def wait_jobs(proc, sid, n, statuses=("succeeded",), timeout=60) -> list[dict]:
    return wait_for(f"{n} ended job(s) of schedule {sid}",
                    lambda: (lambda js: js if len(js) >= n and all(j["status"] in statuses for j in js) else None)(
                        jobs_for(proc, sid)), timeout)


@pytest.fixture(autouse=True)
def clock_at_t0(env):
    set_clock(env[1], T0)
    yield


def test_create_pairs_full_and_incremental_as_cockroachdb(env):
    _, p = env
    c = coll()
    rows = qd(p, f"CREATE SCHEDULE hourly FOR BACKUP DATABASE shop INTO '{c}' RECURRING '@hourly'")
    assert [r["status"] for r in rows] == ["PAUSED: Waiting for initial backup to complete", "ACTIVE"]
    inc, full = rows
    assert list(inc) == ["schedule_id", "label", "status", "first_run", "schedule", "backup_stmt"]
    assert (inc["first_run"], inc["schedule"], full["schedule"]) == (None, "@hourly", "@daily")
    assert full["first_run"] == T0 + dt.timedelta(days=1)       # the next @daily slot
    assert inc["backup_stmt"] == f"BACKUP DATABASE shop INTO LATEST IN '{c}' WITH OPTIONS (detached)"
    assert full["backup_stmt"] == f"BACKUP DATABASE shop INTO '{c}' WITH OPTIONS (detached)"
    # at most daily: weekly fulls; less often: every run is full (one schedule)
    daily = qd(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{coll()}' RECURRING '0 3 * * *'")
    assert [r["schedule"] for r in daily] == ["0 3 * * *", "@weekly"]
    weekly = qd(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{coll()}' RECURRING '@weekly'")
    assert [(r["label"], r["schedule"], r["status"]) for r in weekly] == [("BACKUP", "@weekly", "ACTIVE")]
    always = qd(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{coll()}' RECURRING '@hourly' "
                   "FULL BACKUP ALWAYS")
    assert len(always) == 1 and always[0]["schedule"] == "@hourly"
    explicit = qd(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{coll()}' RECURRING '*/10 * * * *' "
                     "FULL BACKUP '@monthly' WITH SCHEDULE OPTIONS first_run = '2030-02-01 12:00:00+00'")
    assert [r["schedule"] for r in explicit] == ["*/10 * * * *", "@monthly"]
    assert explicit[1]["first_run"] == dt.datetime(2030, 2, 1, 12, tzinfo=UTC)

    shown = {r["id"]: r for r in qd(p, "SHOW SCHEDULES FOR BACKUP")}
    s_inc, s_full = shown[inc["schedule_id"]], shown[full["schedule_id"]]
    assert list(s_inc) == ["id", "label", "schedule_status", "next_run", "state", "recurrence", "jobsrunning",
                           "owner", "created", "on_previous_running", "on_execution_failure",
                           "backup_type", "command", "last_success"]
    assert (s_inc["schedule_status"], s_inc["backup_type"], s_inc["state"]) == (
        "PAUSED", "INCREMENTAL", "Waiting for initial backup to complete")
    assert (s_full["schedule_status"], s_full["backup_type"], s_full["owner"], s_full["created"]) == (
        "ACTIVE", "FULL", "postgres", T0)
    assert (s_full["on_previous_running"], s_full["on_execution_failure"]) == ("WAIT", "RETRY_SCHED")
    assert s_full["command"] == {"backup_statement": full["backup_stmt"],
                                 "unpause_on_success": inc["schedule_id"]}
    assert s_inc["command"] == {"backup_statement": inc["backup_stmt"], "backup_type": 1}
    assert "backup_type" not in qd(p, "SHOW SCHEDULES")[0]
    paused = {r["id"] for r in qd(p, "SHOW PAUSED SCHEDULES")}
    running = {r["id"] for r in qd(p, "SHOW RUNNING SCHEDULES")}
    assert inc["schedule_id"] in paused - running and full["schedule_id"] in running - paused
    assert q(p, f"SELECT label FROM [SHOW SCHEDULES] WHERE id = {full['schedule_id']}") == [("hourly",)]


def test_create_refusals_and_if_not_exists(env):
    _, p = env
    c = coll()
    q(p, f"BACKUP DATABASE shop INTO '{c}'")
    msg = fails(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{c}' RECURRING '@daily'", "55000")
    assert "backups already created in" in msg and "'ignore_existing_backups' option" in msg
    assert qd(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{c}' RECURRING '@daily' "
                 "WITH SCHEDULE OPTIONS ignore_existing_backups")
    assert "invalid cron" in fails(p, f"CREATE SCHEDULE FOR BACKUP INTO '{coll()}' RECURRING 'nope'", "22023")
    fails(p, f"CREATE SCHEDULE FOR BACKUP INTO '{coll()}' RECURRING '@daily' "
             "WITH SCHEDULE OPTIONS first_run = 'not a time'", "22023")
    fails(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{coll()}' WITH revision_history "
             "RECURRING '@daily'", "0A000")
    fails(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{coll()}' AS OF SYSTEM TIME '-1s' "
             "RECURRING '@daily'", "42601")
    # any key parses (CockroachDB's kv_option); an unknown one is refused when it runs
    assert 'invalid option "frequency"' in fails(
        p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{coll()}' RECURRING '@daily' "
           "WITH SCHEDULE OPTIONS frequency = 'daily'", "22023")
    label = f"once-{uuid.uuid4().hex[:6]}"
    first = q(p, f"CREATE SCHEDULE IF NOT EXISTS '{label}' FOR BACKUP DATABASE shop INTO '{coll()}' "
                 "RECURRING '@weekly'")
    again = q(p, f"CREATE SCHEDULE IF NOT EXISTS '{label}' FOR BACKUP DATABASE shop INTO '{coll()}' "
                 "RECURRING '@weekly'")
    assert len(first) == 1 and again == []
    assert len(q(p, f"SELECT id FROM [SHOW SCHEDULES] WHERE label = '{label}'")) == 1
    # a metric only admins may ask for
    fails(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{coll()}' RECURRING '@weekly' WITH "
             "SCHEDULE OPTIONS updates_cluster_last_backup_time_metric", "42501", user="alice")


def test_runs_follow_the_clock_full_then_incrementals_each_slot_once(env):
    _, p = env
    c = coll()
    inc, full = [r[0] for r in q(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{c}' "
                                    "RECURRING '*/15 * * * *' WITH SCHEDULE OPTIONS first_run = 'now'")]
    [j] = wait_jobs(p, full, 1)
    d = description(p, j["job_id"])
    assert d.startswith("BACKUP DATABASE shop INTO '/2") and f"IN '{c}'" in d
    assert "AS OF SYSTEM TIME '2030-01-07T00:00:00+00:00'" in d
    s = wait_for("the incremental un-paused", lambda: (lambda r: r if r["schedule_status"] == "ACTIVE" else None)(
        schedule(p, inc)))
    assert s["next_run"] == T0 + dt.timedelta(minutes=15) and s["state"] is None
    assert schedule(p, full)["last_success"] == T0
    assert schedule(p, full)["next_run"] == T0 + dt.timedelta(days=1)
    full_subdir = q(p, f"SHOW BACKUPS IN '{c}'")[0][0]
    assert f"INTO '{full_subdir}' IN" in d

    set_clock(p, T0 + dt.timedelta(minutes=15))
    [i1] = wait_jobs(p, inc, 1)
    assert f"INTO '{full_subdir}' IN '{c}'" in description(p, i1["job_id"])
    # a jump far forwards: one run, for the newest slot, not one per missed slot
    set_clock(p, T0 + dt.timedelta(hours=2, minutes=7))
    wait_jobs(p, inc, 2)
    time.sleep(1)
    runs = jobs_for(p, inc)
    assert len(runs) == 2
    [i2] = [r["job_id"] for r in runs if r["job_id"] != i1["job_id"]]
    assert "AS OF SYSTEM TIME '2030-01-07T02:00:00+00:00'" in description(p, i2)
    assert schedule(p, inc)["next_run"] == T0 + dt.timedelta(hours=2, minutes=15)
    # and back: nothing runs again
    set_clock(p, T0 + dt.timedelta(minutes=20))
    time.sleep(1)
    assert len(jobs_for(p, inc)) == 2
    assert schedule(p, inc)["next_run"] == T0 + dt.timedelta(hours=2, minutes=15)
    layers = q(p, f"SHOW BACKUP FROM LATEST IN '{c}'")
    assert layers
    assert len(q(p, f"SHOW BACKUPS IN '{c}'")) == 1


def test_failures_follow_on_execution_failure(env):
    _, p = env
    # a cluster schedule: its runs fail (cluster backups are not built yet)
    [pause] = q(p, f"CREATE SCHEDULE FOR BACKUP INTO '{coll()}' RECURRING '@weekly' "
                   "WITH SCHEDULE OPTIONS first_run = 'now', on_execution_failure = 'pause'")
    sid = pause[0]
    [j] = wait_jobs(p, sid, 1, ("failed",))
    s = wait_for("paused", lambda: (lambda r: r if r["schedule_status"] == "PAUSED" else None)(schedule(p, sid)))
    assert s["state"] == (f"schedule paused: backup job {j['job_id']} failed with err=full cluster backups "
                          "are not supported by pgkeep yet")
    assert s["last_success"] is None
    [retry] = q(p, f"CREATE SCHEDULE FOR BACKUP INTO '{coll()}' RECURRING '@weekly' "
                   "WITH SCHEDULE OPTIONS first_run = 'now', on_execution_failure = 'retry'")
    wait_jobs(p, retry[0], 1, ("failed",))
    s = wait_for("retrying", lambda: (lambda r: r if (r["state"] or "").startswith("retrying:") else None)(
        schedule(p, retry[0])))
    assert s["next_run"] == T0 + dt.timedelta(minutes=1)
    [resched] = q(p, f"CREATE SCHEDULE FOR BACKUP INTO '{coll()}' RECURRING '@weekly' "
                     "WITH SCHEDULE OPTIONS first_run = 'now'")
    wait_jobs(p, resched[0], 1, ("failed",))
    s = wait_for("rescheduled", lambda: (lambda r: r if (r["state"] or "").startswith("reschedule:") else None)(
        schedule(p, resched[0])))
    assert s["next_run"] == dt.datetime(2030, 1, 13, tzinfo=UTC)    # the next @weekly slot (Sunday)
    for sid in (pause[0], retry[0], resched[0]):
        q(p, f"DROP SCHEDULE {sid}")


def test_pause_resume_drop_and_jobs_for_schedule(env):
    _, p = env
    inc, full = [r[0] for r in q(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{coll()}' "
                                    "RECURRING '@hourly'")]
    assert q(p, f"PAUSE SCHEDULE {full}") is None
    assert schedule(p, full)["schedule_status"] == "PAUSED" and schedule(p, full)["next_run"] is None
    q(p, f"RESUME SCHEDULE {full}")
    assert schedule(p, full)["next_run"] == T0 + dt.timedelta(days=1)
    assert jobs_for(p, full) == []
    q(p, f"PAUSE SCHEDULES SELECT id FROM [SHOW SCHEDULES] WHERE id IN ({inc}, {full})")
    assert {schedule(p, x)["schedule_status"] for x in (inc, full)} == {"PAUSED"}
    q(p, "PAUSE SCHEDULE 12345")          # unknown: nothing to do, as CockroachDB
    q(p, f"DROP SCHEDULE {full}")         # the full takes its incremental with it
    assert q(p, f"SHOW SCHEDULE {full}") == [] and q(p, f"SHOW SCHEDULE {inc}") == []
    # jobs FOR SCHEDULE(S)
    [one] = q(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{coll()}' RECURRING '@weekly' "
                 "WITH SCHEDULE OPTIONS first_run = 'now'")
    [j] = wait_jobs(p, one[0], 1)
    assert [r["job_id"] for r in qd(p, f"SHOW JOBS FOR SCHEDULES SELECT id FROM [SHOW SCHEDULES] "
                                       f"WHERE id = {one[0]}")] == [j["job_id"]]
    assert q(p, f"CANCEL JOBS FOR SCHEDULE {one[0]}") is None     # ended jobs are left alone
    assert jobs_for(p, one[0])[0]["status"] == "succeeded"
    fails(p, f"EXECUTE SCHEDULE {one[0]}", "0A000")
    q(p, f"DROP SCHEDULES SELECT id FROM [SHOW SCHEDULES] WHERE id = {one[0]}")
    assert q(p, f"SHOW SCHEDULE {one[0]}") == []


def test_show_create_schedule(env):
    _, p = env
    c = coll()
    inc, full = [r[0] for r in q(p, f"CREATE SCHEDULE 'nightly' FOR BACKUP DATABASE shop INTO '{c}' "
                                    "RECURRING '@hourly' FULL BACKUP '@daily' "
                                    "WITH SCHEDULE OPTIONS on_execution_failure = 'pause'")]
    want = (f"CREATE SCHEDULE 'nightly' FOR BACKUP DATABASE shop INTO '{c}' WITH OPTIONS (detached) "
            "RECURRING '@hourly' FULL BACKUP '@daily' WITH SCHEDULE OPTIONS "
            "on_execution_failure = 'pause', on_previous_running = 'wait'")
    assert q(p, f"SHOW CREATE SCHEDULE {full}") == [(full, want)]
    assert q(p, f"SHOW CREATE SCHEDULE {inc}") == [(inc, want)]
    assert (full, want) in q(p, "SHOW CREATE ALL SCHEDULES")
    fails(p, "SHOW CREATE SCHEDULE 424242", "42704")


def test_secrets_never_shown(env):
    _, p = env
    uri = "s3://bucket/path?AWS_ACCESS_KEY_ID=key&AWS_SECRET_ACCESS_KEY=hunter2&AWS_ENDPOINT=http://127.0.0.1:1"
    try:
        rows = q(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{uri}' RECURRING '@weekly' "
                    "WITH SCHEDULE OPTIONS ignore_existing_backups")
    except psycopg.Error as e:
        assert "hunter2" not in str(e)
        return
    text = json.dumps([rows, q(p, "SHOW SCHEDULES"), q(p, f"SHOW CREATE SCHEDULE {rows[0][0]}")], default=str)
    assert "hunter2" not in text and "redacted" in text


def test_who_may_show_pause_alter_drop(env):
    _, p = env
    [mine] = q(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{coll()}' RECURRING '@weekly'",
               user="alice")
    sid = mine[0]
    assert schedule(p, sid)["owner"] == "alice"
    assert [r[0] for r in q(p, "SHOW SCHEDULES", user="bob")] == []
    assert sid in [r[0] for r in q(p, "SHOW SCHEDULES", user="alice")]
    assert sid in [r[0] for r in q(p, "SHOW SCHEDULES", user="dave")]       # an admin sees all
    for stmt in (f"SHOW SCHEDULE {sid}", f"PAUSE SCHEDULE {sid}", f"RESUME SCHEDULE {sid}",
                 f"DROP SCHEDULE {sid}", f"SHOW CREATE SCHEDULE {sid}"):
        assert "must be admin or owner of the schedule" in fails(p, stmt, "42501", user="bob")
    q(p, f"PAUSE SCHEDULE {sid}", user="dave")
    q(p, f"RESUME SCHEDULE {sid}", user="alice")
    fails(p, f"DROP SCHEDULE {sid}", "42501", user="bob")
    # creating one needs what its BACKUP needs
    fails(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{coll()}' RECURRING '@weekly'", "42501", user="bob")
    q(p, f"DROP SCHEDULE {sid}", user="dave")
    assert q(p, f"SHOW SCHEDULE {sid}") == []


def test_a_revoked_owner_stops_its_schedules_backups(env):
    """Each run is checked against its owner's privileges as they are when it runs: a grant
    revoked after CREATE SCHEDULE stops the backups (the run fails to start, no job, the state
    says why), and the next run after a new grant goes ahead."""
    _, p = env
    q(p, "GRANT BACKUP ON DATABASE shop TO bob; GRANT SYSTEM EXTERNALIOIMPLICITACCESS TO bob")
    try:
        first = T0 + dt.timedelta(days=1)
        [row] = q(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{coll()}' RECURRING '@weekly' "
                     f"FULL BACKUP ALWAYS WITH SCHEDULE OPTIONS first_run = '{first.isoformat()}'", user="bob")
        sid = row[0]
        q(p, "REVOKE BACKUP ON DATABASE shop FROM bob")
        set_clock(p, first)
        s = wait_for("a refused run", lambda: (lambda r: r if "does not have BACKUP privilege" in (r["state"] or "")
                                               else None)(schedule(p, sid)))
        assert s["state"].startswith("reschedule: failed to start the backup")
        assert jobs_for(p, sid) == []
        q(p, f"DROP SCHEDULE {sid}")
    finally:
        q(p, "REVOKE SYSTEM EXTERNALIOIMPLICITACCESS FROM bob; REVOKE BACKUP ON DATABASE shop FROM bob")


def test_alter_backup_schedule(env):
    _, p = env
    c, c2 = coll(), coll()
    inc, full = [r[0] for r in q(p, f"CREATE SCHEDULE 'a1' FOR BACKUP DATABASE shop INTO '{c}' "
                                    "RECURRING '@hourly'")]
    rows = qd(p, f"ALTER BACKUP SCHEDULE {inc} SET LABEL 'a2', SET INTO '{c2}', "
                 "SET RECURRING '*/30 * * * *', SET FULL BACKUP '@weekly', "
                 "SET SCHEDULE OPTION on_execution_failure = 'pause'")
    assert [(r["schedule_id"], r["label"], r["schedule"]) for r in rows] == [
        (inc, "a2", "*/30 * * * *"), (full, "a2", "@weekly")]
    assert rows[0]["backup_stmt"] == f"BACKUP DATABASE shop INTO LATEST IN '{c2}' WITH OPTIONS (detached)"
    assert rows[1]["first_run"] == dt.datetime(2030, 1, 13, tzinfo=UTC)
    assert schedule(p, full)["on_execution_failure"] == "PAUSE_SCHED"
    # SET WITH: what BACKUP refuses is refused, and nothing changes
    fails(p, f"ALTER BACKUP SCHEDULE {full} SET WITH revision_history", "0A000")   # bare: = true
    assert schedule(p, full)["label"] == "a2"
    # EXECUTE FULL IMMEDIATELY: the full runs at once, then the incremental is un-paused
    q(p, f"ALTER BACKUP SCHEDULE {full} EXECUTE FULL IMMEDIATELY")
    wait_jobs(p, full, 1)
    wait_for("incremental active", lambda: schedule(p, inc)["schedule_status"] == "ACTIVE")
    q(p, f"ALTER BACKUP SCHEDULE {full} EXECUTE IMMEDIATELY")       # the incremental now
    [j] = wait_jobs(p, inc, 1)
    assert f"IN '{c2}'" in description(p, j["job_id"])
    # FULL BACKUP ALWAYS drops the incremental; the full takes its cadence
    rows = qd(p, f"ALTER BACKUP SCHEDULE {full} SET FULL BACKUP ALWAYS")
    assert [(r["schedule_id"], r["schedule"]) for r in rows] == [(full, "*/30 * * * *")]
    assert q(p, f"SHOW SCHEDULE {inc}") == []
    # and back to a pair: the new incremental is active, the full has succeeded already
    rows = qd(p, f"ALTER BACKUP SCHEDULE {full} SET FULL BACKUP '@daily'")
    assert [(r["status"], r["schedule"]) for r in rows] == [("ACTIVE", "*/30 * * * *"), ("ACTIVE", "@daily")]
    # only the owner alters, not even an admin
    assert "only the owner" in fails(p, f"ALTER BACKUP SCHEDULE {full} SET LABEL 'x'", "42501", user="dave")
    fails(p, "ALTER BACKUP SCHEDULE 4242 SET LABEL 'x'", "42704")
    fails(p, f"ALTER BACKUP SCHEDULE {full} SET SCHEDULE OPTION 'zap' = 'x'", "22023")
    q(p, f"DROP SCHEDULE {full}")


def test_on_previous_running(env):
    _, p = env
    q(p, "SET CLUSTER SETTING jobs.debug.pausepoints = 'backup.after_claim'")
    try:
        ids = {}
        for mode in ("wait", "skip", "start"):
            [row] = q(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{coll()}' RECURRING '@hourly' "
                         f"FULL BACKUP ALWAYS WITH SCHEDULE OPTIONS first_run = 'now', "
                         f"on_previous_running = '{mode}'")
            ids[mode] = row[0]
        first = {m: wait_jobs(p, sid, 1, ("paused",))[0]["job_id"] for m, sid in ids.items()}
        set_clock(p, T0 + dt.timedelta(hours=1))
        wait_jobs(p, ids["start"], 2, ("paused",))
        wait_for("skip and wait seen", lambda: schedule(p, ids["skip"])["state"] and schedule(p, ids["wait"])["state"])
        time.sleep(0.5)
        assert len(jobs_for(p, ids["wait"])) == 1 and len(jobs_for(p, ids["skip"])) == 1
        w, s = schedule(p, ids["wait"]), schedule(p, ids["skip"])
        assert w["state"] == f"waiting for job {first['wait']} of the previous run to end"
        assert w["next_run"] == T0 + dt.timedelta(hours=1)           # still due
        assert s["state"] == (f"skipped the run due at 2030-01-07 01:00:00+00: job {first['skip']} of the "
                              "previous run has not ended")
        assert s["next_run"] == T0 + dt.timedelta(hours=2)
        # the waiting one runs its slot once the previous run ends
        q(p, "RESET CLUSTER SETTING jobs.debug.pausepoints")
        q(p, f"RESUME JOB {first['wait']}")
        runs = wait_jobs(p, ids["wait"], 2)
        assert any("AS OF SYSTEM TIME '2030-01-07T01:00:00+00:00'" in description(p, r["job_id"]) for r in runs)
        assert schedule(p, ids["wait"])["state"] is None
    finally:
        q(p, "RESET CLUSTER SETTING jobs.debug.pausepoints")
        for sid in ids.values():
            q(p, f"CANCEL JOBS FOR SCHEDULE {sid}")
            q(p, f"DROP SCHEDULE {sid}")


def test_real_clock_first_run_now_then_an_incremental_that_restores(env):
    """No injected clock: a `first_run = 'now'` schedule with a one-minute cron takes a full at
    once and, at the next minute, an incremental that holds what was written in between."""
    cluster, p = env
    q(p, "RESET CLUSTER SETTING pgkeep.scheduler.debug_now")
    cluster.psql("CREATE DATABASE live")
    cluster.psql("CREATE TABLE t (id int PRIMARY KEY, v text); "
                 "INSERT INTO t SELECT g, 'full' FROM generate_series(1, 500) g", "live")
    c = coll()
    inc, full = [r[0] for r in q(p, f"CREATE SCHEDULE FOR BACKUP DATABASE live INTO '{c}' "
                                    "RECURRING '* * * * *' WITH SCHEDULE OPTIONS first_run = 'now'")]
    wait_jobs(p, full, 1, timeout=60)
    cluster.psql("INSERT INTO t SELECT g, 'incremental' FROM generate_series(501, 700) g", "live")
    wait_jobs(p, inc, 1, timeout=90)
    assert len(q(p, f"SHOW BACKUPS IN '{c}'")) == 1
    types = {r["backup_type"] for r in qd(p, f"SHOW BACKUP FROM LATEST IN '{c}'")}
    assert types == {"full", "incremental"}
    q(p, f"RESTORE DATABASE live FROM LATEST IN '{c}' WITH new_db_name = 'live_back'")
    assert cluster.psql("SELECT count(*), count(*) FILTER (WHERE v = 'incremental') FROM t",
                        "live_back").strip() == "700|200"
    q(p, f"DROP SCHEDULE {full}")


def test_ids_are_any_scalar_expression(env):
    _, p = env
    [row] = q(p, f"CREATE SCHEDULE FOR BACKUP DATABASE shop INTO '{coll()}' RECURRING '@weekly' "
                 "WITH SCHEDULE OPTIONS first_run = 'now'")
    sid = row[0]
    [j] = wait_jobs(p, sid, 1)
    half = sid // 2
    q(p, f"PAUSE SCHEDULE {half} + {sid - half}")
    assert schedule(p, sid)["schedule_status"] == "PAUSED"
    assert [r[0] for r in q(p, f"SHOW SCHEDULE (SELECT {sid}::int8)")] == [sid]
    assert [r["job_id"] for r in qd(p, f"SHOW JOBS FOR SCHEDULE {sid} * 1")] == [j["job_id"]]
    assert q(p, f"SHOW JOB {j['job_id']} - 0")[0][0] == j["job_id"]
    with psycopg.connect(p.dsn("shop"), autocommit=True) as conn:     # a placeholder inside one
        conn.execute("RESUME SCHEDULE %s::int8 + 0", (str(sid),))
    assert schedule(p, sid)["schedule_status"] == "ACTIVE"
    fails(p, "PAUSE SCHEDULE NULL::int8", "22023")
    fails(p, "PAUSE SCHEDULE 'x' || 'y'", "22P02")        # the upstream's own error
    q(p, f"DROP SCHEDULE {sid} + 0")
    assert q(p, f"SHOW SCHEDULE {sid}") == []
