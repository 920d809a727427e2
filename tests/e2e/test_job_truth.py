"""Issue 13, points 5 and 6, through a real pgkeep: jobs are made only for work that starts, and
a job's progress tells the truth.

- A statement refused before any work (0A000 families, an existing target database, a missing
  into_db, unknown tables or databases, a bad URI, a missing backup, a table that exists) answers
  its SQLSTATE at once, detached or not, and leaves no job row and no file.
- Target validation of 600-table lists (BACKUP TABLE, RESTORE TABLE) is fast (the figures are
  printed; the bound asserted is only a guard).
- A restore's running_status names its phase at each pause point (restoring rows, building
  indexes n/m, validating constraints n/m, renaming); fraction_completed never goes backwards
  across pauses and resumes; RESUME clears "paused at a checkpoint".
- Every end of a job (succeeded, failed, paused, canceled) is one log line with the job id, the
  redacted description and the error; a job that re-checks its target after a pause fails
  cleanly; no "lost the lease" warning for jobs submitted while a heartbeat is in flight.
- SHOW JOBS cuts long descriptions at a word boundary with an ellipsis; SHOW JOB shows them whole.

Runs on its own PostgreSQL cluster and pgkeep, so that the catalog's job rows and the log hold
only this module's jobs.
"""
from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid

import psycopg
import pytest

from tests.support.clusters import make_cluster
from tests.support.pgkeep import PgkeepProcess

WIDE = 600          # tables of the wide database
AT_ONCE = 5.0       # seconds: a refusal "at once" (a guard; the figures are far lower)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("truth")
    cluster = make_cluster(base, "pg")
    cluster.psql("CREATE DATABASE truth_src")
    cluster.psql(
        "CREATE TABLE a(id int PRIMARY KEY, v text, w int); "
        "INSERT INTO a SELECT g, md5(g::text), g % 1000 FROM generate_series(1, 200000) g; "
        "CREATE INDEX a_v ON a(v); CREATE INDEX a_w ON a(w); "
        "CREATE TABLE b(id int PRIMARY KEY, a_id int REFERENCES a); "
        "INSERT INTO b SELECT g, g FROM generate_series(1, 50000) g; CREATE INDEX b_a ON b(a_id); "
        "CREATE TABLE c(id serial PRIMARY KEY, b_id int REFERENCES b); "
        "INSERT INTO c(b_id) SELECT g FROM generate_series(1, 1000) g", "truth_src")
    proc = PgkeepProcess(base / "k", cluster.dsn(), args=["--max-jobs", "16"]).start()
    yield cluster, proc
    proc.stop()
    cluster.destroy()


def run(proc, sql: str, db: str = "postgres"):
    with psycopg.connect(proc.dsn(db), autocommit=True, connect_timeout=30) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


def job(proc, job_id: int) -> dict:
    with psycopg.connect(proc.dsn(), autocommit=True) as conn:
        cur = conn.execute(f"SHOW JOB {job_id}")
        return dict(zip([c.name for c in cur.description], cur.fetchone()))


def wait_for(proc, job_id: int, statuses, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = job(proc, job_id)
        if row["status"] in statuses:
            return row
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stayed {row['status']}\n{proc.log()[-3000:]}")


def coll(name: str) -> str:
    return f"nodelocal://self/{name}-{uuid.uuid4().hex[:8]}"


def external(proc):
    return proc.workdir / "data" / "external"


@pytest.fixture(scope="module")
def backed_up(env):
    """A backup of truth_src, and a table backup of its table a."""
    _, proc = env
    full, tables = coll("src"), coll("src-tables")
    run(proc, f"BACKUP DATABASE truth_src INTO '{full}'")
    run(proc, f"BACKUP TABLE a INTO '{tables}'", "truth_src")
    return full, tables


def _refusals(full: str, tables: str) -> list[tuple[str, str, str]]:
    """(what, statement, SQLSTATE): each is refused before any work."""
    return [
        ("cluster backup", f"BACKUP INTO '{coll('x')}'", "0A000"),
        ("revision_history", f"BACKUP DATABASE truth_src INTO '{coll('x')}' WITH revision_history", "0A000"),
        ("encrypted backup", f"BACKUP DATABASE truth_src INTO '{coll('x')}' WITH encryption_passphrase = 'p'",
         "0A000"),
        ("cluster restore", f"RESTORE FROM LATEST IN '{full}'", "0A000"),
        ("restore AS OF a time no layer ends at",
         f"RESTORE DATABASE truth_src FROM LATEST IN '{full}' AS OF SYSTEM TIME '-1s'", "22023"),
        ("existing target database", f"RESTORE DATABASE truth_src FROM LATEST IN '{full}'", "42P04"),
        ("missing into_db", f"RESTORE TABLE a FROM LATEST IN '{tables}' WITH into_db = 'no_such_db'",
         "42704"),
        ("existing table", f"RESTORE TABLE a FROM LATEST IN '{tables}'", "42P07"),
        ("unknown table in backup", f"RESTORE TABLE nope FROM LATEST IN '{tables}'", "42P01"),
        ("database not in backup", f"RESTORE DATABASE nope FROM LATEST IN '{full}'", "42P01"),
        ("unknown table to back up", f"BACKUP TABLE a, nope INTO '{coll('x')}'", "42P01"),
        ("unknown database to back up", f"BACKUP DATABASE truth_src, nope INTO '{coll('x')}'", "3D000"),
        ("bad URI scheme", "BACKUP DATABASE truth_src INTO 'nosuch://x/y'", "22023"),
        ("bad URI parameter", f"RESTORE DATABASE truth_src FROM LATEST IN '{full}?bogus=1' "
                              "WITH new_db_name = 'bad_uri'", "22023"),
        ("no backup there", f"RESTORE DATABASE truth_src FROM LATEST IN '{coll('empty')}' "
                            "WITH new_db_name = 'nothing'", "58P01"),
        ("unknown external connection", "BACKUP DATABASE truth_src INTO 'external://no_such_conn'", "42704"),
    ]


@pytest.mark.parametrize("detached", [False, True], ids=["attached", "detached"])
def test_refused_statements_answer_at_once_and_leave_no_job(env, backed_up, detached):
    cluster, proc = env
    before_files = sorted(p.relative_to(external(proc)) for p in external(proc).rglob("*"))
    before_jobs = run(proc, "SELECT count(*) FROM pgkeep.jobs")[0][0]
    seen = []
    for what, statement, state in _refusals(*backed_up):
        if detached:
            statement += (", detached" if " WITH " in statement else " WITH detached")
        started = time.monotonic()
        with pytest.raises(psycopg.Error) as err:
            run(proc, statement, "truth_src")
        took = time.monotonic() - started
        assert err.value.sqlstate == state, (what, statement, err.value.sqlstate, str(err.value))
        assert took < AT_ONCE, (what, took)
        seen.append((what, round(took, 3)))
        assert run(proc, "SELECT count(*) FROM pgkeep.jobs")[0][0] == before_jobs, (what, "left a job row")
    print(f"\nrefusals ({'detached' if detached else 'attached'}), seconds:", seen)
    assert not [r for r in run(proc, "SHOW JOBS") if r[5] == "failed"]
    after_files = sorted(p.relative_to(external(proc)) for p in external(proc).rglob("*"))
    assert after_files == before_files
    assert cluster.psql("SELECT datname FROM pg_database WHERE datname LIKE 'pgkeep\\_restore\\_%' "
                        "OR datname IN ('bad_uri', 'nothing')") == ""


def test_psql_sees_a_detached_restore_of_an_existing_database_refused(env, backed_up):
    """Before: a job id came back and the job failed in the background."""
    cluster, proc = env
    full, _ = backed_up
    out = subprocess.run([cluster.bin("psql"), "-X", proc.dsn("truth_src"), "-c",
                          f"RESTORE DATABASE truth_src FROM LATEST IN '{full}' WITH DETACHED"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and 'database "truth_src" already exists' in out.stderr, out
    assert "job_id" not in out.stdout


@pytest.fixture(scope="module")
def wide(env):
    """A database of 600 tables and a table backup of all of them."""
    cluster, proc = env
    cluster.psql("CREATE DATABASE wide")
    cluster.psql("".join(f"CREATE TABLE t{i}(id int PRIMARY KEY, v text);" for i in range(WIDE)), "wide")
    names = ", ".join(f"t{i}" for i in range(WIDE))
    where = coll("wide")
    run(proc, f"BACKUP TABLE {names} INTO '{where}'", "wide")
    return names, where


def _timed_refusal(proc, statement: str, state: str) -> float:
    started = time.monotonic()
    with pytest.raises(psycopg.Error) as err:
        run(proc, statement, "wide")
    took = time.monotonic() - started
    assert err.value.sqlstate == state, (statement[-200:], err.value.sqlstate, str(err.value))
    return took


def test_600_table_targets_are_validated_fast(env, wide):
    cluster, proc = env
    names, where = wide
    jobs = run(proc, "SELECT count(*) FROM pgkeep.jobs")[0][0]
    figures = {
        # every name resolved, then the last one refused
        "BACKUP TABLE 600 + unknown": _timed_refusal(
            proc, f"BACKUP TABLE {names}, nope INTO '{coll('w')}' WITH detached", "42P01"),
        "RESTORE TABLE 600 + unknown": _timed_refusal(
            proc, f"RESTORE TABLE {names}, nope FROM LATEST IN '{where}' WITH detached", "42P01"),
        "RESTORE TABLE 600, into_db missing": _timed_refusal(
            proc, f"RESTORE TABLE {names} FROM LATEST IN '{where}' WITH into_db = 'nope', detached",
            "42704"),
        # all 600 resolved and planned, then the existing tables found (one query)
        "RESTORE TABLE 600, tables exist": _timed_refusal(
            proc, f"RESTORE TABLE {names} FROM LATEST IN '{where}' WITH detached", "42P07"),
    }
    print("\n600-table target validation, seconds:", {k: round(v, 3) for k, v in figures.items()})
    assert max(figures.values()) < AT_ONCE, figures
    assert run(proc, "SELECT count(*) FROM pgkeep.jobs")[0][0] == jobs
    # and the real thing: 600 tables restored into another database
    cluster.psql("CREATE DATABASE wide_copy")
    run(proc, f"RESTORE TABLE {names} FROM LATEST IN '{where}' WITH into_db = 'wide_copy'", "wide")
    assert cluster.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", "wide_copy").strip() \
        == str(WIDE)


class _Watcher(threading.Thread):
    """Reads SHOW JOB every 20 ms; keeps every (fraction, status, running_status) seen."""

    def __init__(self, proc, job_id: int) -> None:
        super().__init__(daemon=True)
        self.proc, self.job_id = proc, job_id
        self.seen: list[tuple[float, str, str | None]] = []
        self.done = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.proc.dsn(), autocommit=True) as conn:
            while not self.done.is_set():
                row = conn.execute(f"SHOW JOB {self.job_id}").fetchone()
                self.seen.append((row[11], row[5], row[6]))
                time.sleep(0.02)


def test_restore_phases_fraction_and_resume(env, backed_up):
    """Pause points are reached again by a resumed run (as in CockroachDB), so the set changes
    between steps: first after the load, then after each post-data phase and before the
    renames, then none."""
    cluster, proc = env
    full, _ = backed_up
    steps = ["restore.after_load", "restore.after_post_phase,restore.before_rename", ""]
    run(proc, f"SET CLUSTER SETTING jobs.debug.pausepoints = '{steps.pop(0)}'")
    watcher = None
    try:
        job_id = run(proc, f"RESTORE DATABASE truth_src FROM LATEST IN '{full}' "
                           "WITH new_db_name = 'truth_phases', detached")[0][0]
        watcher = _Watcher(proc, job_id)
        watcher.start()
        pauses = []
        while True:
            row = wait_for(proc, job_id, ("paused", "succeeded", "failed"))
            if row["status"] != "paused":
                break
            pauses.append(row["running_status"])
            assert len(pauses) < 20, pauses
            if "(restoring rows: " in pauses[-1] or pauses[-1].endswith("(renaming)"):
                run(proc, f"SET CLUSTER SETTING jobs.debug.pausepoints = '{steps.pop(0)}'")
            run(proc, f"RESUME JOB {job_id}")
            resumed = job(proc, job_id)["running_status"]
            assert resumed is None or "paused" not in resumed, resumed
        assert row["status"] == "succeeded", row
        assert row["fraction_completed"] == 1.0
    finally:
        run(proc, "RESET CLUSTER SETTING jobs.debug.pausepoints")
        if watcher is not None:
            watcher.done.set()
            watcher.join()
    print("\nrunning_status at each pause:", pauses)
    assert all(p.startswith("paused at a checkpoint (") for p in pauses), pauses
    where = [p[len("paused at a checkpoint ("):-1] for p in pauses]
    assert re.fullmatch(r"restoring rows: [\d.]+ \w+ of [\d.]+ \w+", where[0]), where
    indexes = next(w for w in where if w.startswith("building indexes"))
    assert re.fullmatch(r"building indexes (\d+)/\1", indexes), where   # the phase, done
    assert int(indexes.split()[-1].split("/")[0]) >= 5                  # 3 keys, 3 indexes
    assert any(re.fullmatch(r"validating constraints (\d+)/\1", w) for w in where), where
    assert where[-1] == "renaming", where
    order = [next(i for i, w in enumerate(where) if w.startswith(p))
             for p in ("restoring rows", "building indexes", "validating constraints", "renaming")]
    assert order == sorted(order), where
    fractions = [f for f, _, _ in watcher.seen]
    assert all(a <= b for a, b in zip(fractions, fractions[1:])), fractions
    after_resume = [s for f, st, s in watcher.seen if st == "running" and s]
    assert not [s for s in after_resume if "paused" in s], after_resume
    assert any(s.startswith("building indexes") for s in after_resume + where)
    log = proc.log()
    assert len(re.findall(rf"job {job_id} paused: RESTORE DATABASE truth_src FROM LATEST IN ", log)) \
        == len(pauses)
    assert len(re.findall(rf"job {job_id} succeeded: RESTORE DATABASE truth_src FROM LATEST IN ", log)) == 1
    assert int(cluster.psql("SELECT count(*) FROM a", "truth_phases")) == 200000


def test_backup_phase_names_the_database_with_bytes(env):
    _, proc = env
    run(proc, "SET CLUSTER SETTING jobs.debug.pausepoints = 'backup.after_chunk'")
    try:
        job_id = run(proc, f"BACKUP DATABASE truth_src INTO '{coll('phase')}' WITH detached")[0][0]
        row = wait_for(proc, job_id, ("paused", "failed", "succeeded"))
    finally:
        run(proc, "RESET CLUSTER SETTING jobs.debug.pausepoints")
    assert row["status"] == "paused", row
    assert re.fullmatch(r"paused at a checkpoint \(backing up truth_src: [\d.]+ \w+ of [\d.]+ \w+\)",
                        row["running_status"]), row["running_status"]
    paused_at = row["fraction_completed"]
    run(proc, f"RESUME JOB {job_id}")
    assert "paused" not in (job(proc, job_id)["running_status"] or "")
    seen = [paused_at]
    while (row := job(proc, job_id))["status"] not in ("succeeded", "failed"):
        seen.append(row["fraction_completed"])
        time.sleep(0.02)
    assert row["status"] == "succeeded" and all(a <= b for a, b in zip(seen, seen[1:])), seen


def test_a_resumed_restore_rechecks_its_target_and_logs_each_end(env, backed_up):
    """The target is checked again when the job runs: created meanwhile, the job fails
    cleanly (its temporary database dropped) with one log line naming the error; a canceled
    job's line too."""
    cluster, proc = env
    full, _ = backed_up
    run(proc, "SET CLUSTER SETTING jobs.debug.pausepoints = 'restore.after_create'")
    try:
        late = run(proc, f"RESTORE DATABASE truth_src FROM LATEST IN '{full}' "
                         "WITH new_db_name = 'truth_late', detached")[0][0]
        canceled = run(proc, f"RESTORE DATABASE truth_src FROM LATEST IN '{full}' "
                             "WITH new_db_name = 'truth_canceled', detached")[0][0]
        for j in (late, canceled):
            assert wait_for(proc, j, ("paused", "failed", "succeeded"))["status"] == "paused"
    finally:
        run(proc, "RESET CLUSTER SETTING jobs.debug.pausepoints")
    cluster.psql("CREATE DATABASE truth_late")
    run(proc, f"RESUME JOB {late}")
    run(proc, f"CANCEL JOB {canceled}")
    row = wait_for(proc, late, ("failed", "succeeded"))
    assert row["status"] == "failed" and row["error"] == 'database "truth_late" already exists', row
    assert wait_for(proc, canceled, ("canceled", "failed", "succeeded"))["status"] == "canceled"
    assert cluster.psql("SELECT datname FROM pg_database WHERE datname LIKE 'pgkeep\\_restore\\_%' "
                        "OR datname = 'truth_canceled'") == ""
    description = job(proc, late)["description"]
    ends = re.compile(rf" pgkeep\.jobs: (job {late} (succeeded|failed|canceled|paused): .*)")
    lines = [m.group(1) for m in map(ends.search, proc.log().splitlines()) if m]
    assert lines == [
        f"job {late} paused: {description}",
        f"job {late} failed: {description} (error: database \"truth_late\" already exists)"], lines
    assert f"job {canceled} canceled: {job(proc, canceled)['description']} " \
           "(error: job canceled by a user)" in proc.log()


def test_jobs_submitted_during_a_heartbeat_are_not_lost(env):
    """Sixteen backups submitted at once: before, a job started while the registry's heartbeat
    was in flight was missing from its answer, taken for lost ("lost the lease"), released,
    and adopted again seconds later."""
    cluster, proc = env
    cluster.psql("CREATE DATABASE tiny")
    cluster.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g", "tiny")
    offset = len(proc.log())
    ids: list[int] = []

    def submit(i: int) -> None:
        ids.append(run(proc, f"BACKUP DATABASE tiny INTO '{coll(f'hb{i}')}' WITH detached")[0][0])

    for _round in range(3):
        threads = [threading.Thread(target=submit, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows = run(proc, f"SHOW JOBS WHEN COMPLETE SELECT unnest(ARRAY{ids}::bigint[])")
        assert {r[5] for r in rows} == {"succeeded"}, [r[12] for r in rows]
    log = proc.log()[offset:]
    assert "lost the lease" not in log and "adopted job" not in log, log[-3000:]
    assert all(log.count(f"job {j} succeeded: BACKUP DATABASE tiny INTO ") == 1 for j in ids)


def test_show_jobs_cuts_description_at_a_word_with_an_ellipsis(env, wide):
    _, proc = env
    names, _ = wide
    few = ", ".join(f"t{i}" for i in range(40))
    job_id = run(proc, f"BACKUP TABLE {few} INTO '{coll('desc')}' WITH detached", "wide")[0][0]
    wait_for(proc, job_id, ("succeeded",))
    full = job(proc, job_id)["description"]
    assert len(full) > 100 and full.startswith("BACKUP TABLE t0, t1")
    shown = next(r[2] for r in run(proc, "SHOW JOBS") if r[0] == job_id)
    assert len(shown) <= 100 and shown.endswith("\u2026"), shown
    head = shown[:-1]
    assert full.startswith(head) and full[len(head)] in " ,", (shown, full)
    assert run(proc, f"SELECT description FROM pgkeep.jobs WHERE job_id = {job_id}")[0][0] == full
    via_source = run(proc, f"SELECT description FROM [SHOW JOBS] WHERE job_id = {job_id}")[0][0]
    assert via_source == shown


@pytest.mark.parametrize("elsewhere", ["running", "ended"])
def test_a_lost_lease_is_warned_once_and_never_for_an_ended_job(env, elsewhere):
    """A job whose lease another process took keeps running here until its next chunk boundary
    (one slow chunk: zstd level 19). Before, every heartbeat of that time warned "lost the lease"
    again, also after the job had ended elsewhere. The other process is played by hand in the
    catalog: it holds the lease (`running`: one warning; the lease expires later and this
    process adopts the job again), or it has ended the job (`ended`: no warning at all)."""
    cluster, proc = env
    db = f"slow_{elsewhere}"
    cluster.psql(f"CREATE DATABASE {db}")
    cluster.psql("CREATE TABLE t(id int, v text); INSERT INTO t SELECT g, repeat(md5(g::text), 4) "
                 "FROM generate_series(1, 300000) g", db)
    settings = {"pgkeep.backup.chunk_size": "'1 GiB'", "pgkeep.backup.parallelism": "1",
                "pgkeep.backup.compression_level": "19"}
    for k, v in settings.items():
        run(proc, f"SET CLUSTER SETTING {k} = {v}")
    offset = len(proc.log())
    try:
        job_id = run(proc, f"BACKUP DATABASE {db} INTO '{coll('lease')}' WITH detached")[0][0]
        deadline = time.monotonic() + 60
        while not (job(proc, job_id)["running_status"] or "").startswith(f"backing up {db}"):
            assert time.monotonic() < deadline, job(proc, job_id)
            time.sleep(0.02)
        if elsewhere == "running":
            cluster.psql("UPDATE pgkeep.jobs SET coordinator_id = 'another-process', "
                         f"lease_expires = now() + interval '12 s' WHERE job_id = {job_id}")
        else:
            cluster.psql("UPDATE pgkeep.jobs SET status = 'succeeded', finished = now(), "
                         f"coordinator_id = NULL, lease_expires = NULL WHERE job_id = {job_id}")
        lost = f"lost the lease of job {job_id}"
        while lost not in proc.log()[offset:]:
            assert time.monotonic() < deadline, proc.log()[-2000:]
            time.sleep(0.05)
        run(proc, "RESET CLUSTER SETTING pgkeep.backup.compression_level")   # for the next run
        if elsewhere == "running":
            row = wait_for(proc, job_id, ("succeeded", "failed"), timeout=120)
            assert row["status"] == "succeeded", row
        else:
            time.sleep(4)   # heartbeats go on while the run here finishes its chunk
    finally:
        for k in settings:
            run(proc, f"RESET CLUSTER SETTING {k}")
    log = proc.log()[offset:]
    mentions = [line for line in log.splitlines() if lost in line]
    if elsewhere == "running":
        assert len(mentions) == 1 and " WARNING " in mentions[0], mentions
        assert f"adopted job {job_id}" in log
    else:
        assert len(mentions) == 1 and " INFO " in mentions[0] and "ended since (succeeded)" in mentions[0], \
            mentions
