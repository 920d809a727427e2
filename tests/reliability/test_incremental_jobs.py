"""Incremental backups are jobs like fulls (issue 14 point 5, docs/FORMAT.md section 7.2):
DETACHED, PAUSE/RESUME (a pausepoint and PAUSE JOB), CANCEL (the layer and its chain claim
vanish), adoption after a crash at each step (PGKEEP_TESTING_CRASHPOINTS), progress that counts
what was moved; two incrementals into one chain at once: one wins, the other gets CockroachDB's
58P02 lock error and no forked chain; a stale chain claim of an ended job does not block.

A job is held at a known point by a transaction holding ACCESS EXCLUSIVE on the source table:
the job has claimed its chain position and layer, and waits for its snapshot's table lock."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
import pytest

from tests.e2e.helpers import psql
from tests.support.datasets import row_hashes
from tests.support.pgkeep import PgkeepProcess

from .jobtools import job_row, query, wait_done, wait_job, wait_until

DB = "incjobs"
ROWS = 3000


@pytest.fixture(scope="module")
def source(pgkeep, pg18):
    settings = {"pgkeep.backup.chunk_size": "'64 KiB'", "pgkeep.backup.parallelism": "1"}
    for k, v in settings.items():
        query(pgkeep, f"SET CLUSTER SETTING {k} = {v}")
    pg18.psql(f"DROP DATABASE IF EXISTS {DB}")
    pg18.psql(f"CREATE DATABASE {DB}")
    pg18.psql(f"CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL, pad text);"
              f"INSERT INTO t SELECT g, 0, repeat(md5(g::text), 3) FROM generate_series(1, {ROWS}) g", DB)
    yield DB
    for k in [*settings, "jobs.debug.pausepoints"]:
        query(pgkeep, f"RESET CLUSTER SETTING {k}")


def new_chain(pgkeep, name: str) -> tuple[str, object]:
    """A collection holding a full backup of the source; (URI, its directory)."""
    coll = f"nodelocal://self/incjobs-{name}-{uuid.uuid4().hex[:8]}"
    query(pgkeep, f"BACKUP DATABASE {DB} INTO '{coll}'")
    return coll, pgkeep.workdir / "data" / "external" / coll.split("/")[-1]


def change(pg18, *ids: int) -> None:
    """Rewrite the rows `ids` (each in its own chunk for ids far apart)."""
    pg18.psql(f"UPDATE t SET n = n + 1 WHERE id IN ({', '.join(map(str, ids))})", DB)


def layers(proc, coll) -> list[tuple]:
    """[(backup_type, start_time, end_time)] of the chain, oldest first."""
    return query(proc, f"SELECT DISTINCT backup_type, start_time, end_time FROM "
                       f"[SHOW BACKUP FROM LATEST IN '{coll}'] ORDER BY end_time")


def assert_linear(chain) -> None:
    assert chain[0][0] == "full" and all(c[0] == "incremental" for c in chain[1:]), chain
    for prev, cur in zip(chain, chain[1:]):
        assert cur[1] == prev[2], f"a layer does not extend its predecessor: {chain}"


def layer_dirs(root) -> list[str]:
    """Every layer directory under incrementals/ holding an object, committed or not (nodelocal
    leaves the empty folders of deleted objects behind: an object store has none)."""
    return sorted(str(p.relative_to(root)) for p in root.glob("incrementals/*/*/*/*/*")
                  if p.is_dir() and any(f.is_file() for f in p.rglob("*")))


def claims(root) -> list:
    return sorted(root.glob("incrementals/*/*/*/claims/*"))


def claim_of(root, job_id: int):
    """The chain claim job `job_id` holds, if any."""
    for c in claims(root):
        try:
            if json.loads(c.read_bytes())["job_id"] == job_id:
                return c
        except (FileNotFoundError, ValueError):
            pass
    return None


def restored_matches(proc, pg18, coll, expected, target: str) -> None:
    pg18.psql(f"DROP DATABASE IF EXISTS {target}")
    query(proc, f"RESTORE DATABASE {DB} FROM LATEST IN '{coll}' WITH new_db_name = '{target}'")
    assert row_hashes(pg18, target) == expected
    pg18.psql(f"DROP DATABASE {target}")


class TableLock:
    """ACCESS EXCLUSIVE on t, held until release(): a backup that started waits for its
    snapshot's lock, its chain position and layer directory claimed."""

    def __init__(self, pg18) -> None:
        self.conn = psycopg.connect(pg18.dsn(DB))
        self.conn.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()


@pytest.fixture
def held(pgkeep, pg18):
    """held(coll, root) -> (job_id, lock): a detached incremental job waiting on the table lock,
    its chain claim and layer directory made. Every lock is released at the end of the test."""
    locks = []

    def start(coll, root):
        lock = TableLock(pg18)
        locks.append(lock)
        job_id = query(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}' WITH DETACHED")[0][0]
        wait_until(pgkeep, job_id, lambda r: r["status"] == "running" and claim_of(root, job_id),
                   timeout=30)
        return job_id, lock

    yield start
    for lock in locks:
        lock.release()


def test_detached_incremental_and_progress_of_what_it_moved(pgkeep, pg18, source):
    coll, root = new_chain(pgkeep, "detached")
    change(pg18, 10)
    out = psql(pgkeep.dsn(), "-A", "-t", "-c",
               f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}' WITH DETACHED").stdout.split()
    job_id = int(out[0])
    assert wait_done(pgkeep, job_id) == ("succeeded", None)
    assert job_row(pgkeep, job_id)["fraction_completed"] == 1.0
    chain = layers(pgkeep, coll)
    assert len(chain) == 2
    assert_linear(chain)
    assert claims(root) == [claim_of(root, job_id)]          # a committed layer's claim stays
    # the result row counts what the layer moved, not the chain's rows: here nothing
    nothing = query(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}'")[0]
    assert nothing[1:] == ("succeeded", 1.0, 0, 0, 0), nothing
    # and here the one chunk it copied, as SHOW BACKUP lists it for that layer
    change(pg18, 20)
    one = query(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}'")[0]
    (rows, size), = query(pgkeep, f"SELECT rows, size_bytes FROM [SHOW BACKUP FROM LATEST IN '{coll}'] "
                                  "WHERE object_name = 't' ORDER BY end_time DESC LIMIT 1")
    assert (one[3], one[5]) == (rows, size) and 0 < rows < ROWS / 4, (one, rows, size)
    restored_matches(pgkeep, pg18, coll, row_hashes(pg18, DB), "incjobs_det")


def test_pausepoint_then_resume_takes_the_resumed_snapshot(pgkeep, pg18, source):
    coll, root = new_chain(pgkeep, "pausepoint")
    change(pg18, 1, 1500, 2900)
    query(pgkeep, "SET CLUSTER SETTING jobs.debug.pausepoints = 'backup.after_chunk'")
    try:
        job_id = query(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}' WITH DETACHED")[0][0]
        paused = wait_job(pgkeep, job_id)
    finally:
        query(pgkeep, "RESET CLUSTER SETTING jobs.debug.pausepoints")
    assert paused["status"] == "paused", paused
    # the progress as of the pause: one chunk of the three changed ones copied
    assert 0 < paused["fraction_completed"] < 1, paused
    status = paused["running_status"]
    assert status.startswith("paused at a checkpoint (backing up incjobs: "), status
    done, total = re.search(r": ([\d.]+ \w+) of ([\d.]+ \w+)\)$", status).groups()
    assert done != total and not done.startswith("0 "), status
    assert len(layers(pgkeep, coll)) == 1                 # not committed: invisible
    change(pg18, 2000)                                    # while paused
    expected = row_hashes(pg18, DB)
    query(pgkeep, f"RESUME JOB {job_id}")
    assert wait_done(pgkeep, job_id) == ("succeeded", None)
    assert job_row(pgkeep, job_id)["fraction_completed"] == 1.0
    chain = layers(pgkeep, coll)
    assert len(chain) == 2
    assert_linear(chain)
    restored_matches(pgkeep, pg18, coll, expected, "incjobs_pp")


def test_pause_job_resume_cancel_and_the_next_layer(pgkeep, pg18, source, held):
    coll, root = new_chain(pgkeep, "pausecancel")
    change(pg18, 5, 2500)
    # PAUSE JOB while it runs
    job_id, lock = held(coll, root)
    query(pgkeep, f"PAUSE JOB {job_id}")
    lock.release()
    assert wait_job(pgkeep, job_id)["status"] == "paused"
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:     # a paused job holds its claim
        with pytest.raises(psycopg.errors.DuplicateFile, match=f"job {job_id} "):
            conn.execute(f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}'")
    query(pgkeep, f"RESUME JOB {job_id}")
    assert wait_done(pgkeep, job_id) == ("succeeded", None)
    first = layers(pgkeep, coll)
    assert len(first) == 2
    kept_dirs, kept_claims = layer_dirs(root), claims(root)
    # CANCEL JOB while it runs: its layer and its chain claim vanish
    change(pg18, 7)
    job_id, lock = held(coll, root)
    assert len(layer_dirs(root)) == 2 and len(claims(root)) == 2
    query(pgkeep, f"CANCEL JOB {job_id}")
    lock.release()
    assert wait_done(pgkeep, job_id)[0] == "canceled"
    assert layer_dirs(root) == kept_dirs and claims(root) == kept_claims
    assert layers(pgkeep, coll) == first
    # CANCEL JOB of a paused job
    job_id, lock = held(coll, root)
    query(pgkeep, f"PAUSE JOB {job_id}")
    lock.release()
    assert wait_job(pgkeep, job_id)["status"] == "paused"
    query(pgkeep, f"CANCEL JOB {job_id}")
    assert wait_done(pgkeep, job_id)[0] == "canceled"
    assert layer_dirs(root) == kept_dirs and claims(root) == kept_claims
    # the next incremental extends the same parent
    query(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}'")
    chain = layers(pgkeep, coll)
    assert len(chain) == 3
    assert_linear(chain)
    restored_matches(pgkeep, pg18, coll, row_hashes(pg18, DB), "incjobs_pc")


def test_concurrent_incrementals_one_wins_no_fork(pgkeep, pg18, source, held):
    coll, root = new_chain(pgkeep, "race")
    change(pg18, 100)
    winner, lock = held(coll, root)
    try:
        r = psql(pgkeep.dsn(), "-v", "VERBOSITY=verbose", "-c",
                 f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}'", check=False)
        assert r.returncode != 0
        assert "58P02" in r.stderr and "already contains a BACKUP-LOCK file" in r.stderr, r.stderr
        assert "(is another operation already in progress?)" in r.stderr and str(winner) in r.stderr
        with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.DuplicateFile):
                conn.execute(f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}'")
        assert len(layer_dirs(root)) == 1          # the losers left nothing
    finally:
        lock.release()
    assert wait_done(pgkeep, winner) == ("succeeded", None)
    chain = layers(pgkeep, coll)
    assert len(chain) == 2
    # after the winner's commit, a new incremental extends the winner's layer
    change(pg18, 200)
    query(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}'")
    chain = layers(pgkeep, coll)
    assert len(chain) == 3
    assert_linear(chain)
    # two at once, unheld: never a fork (one fails with 58P02, or both commit in a line)
    change(pg18, 300)
    ids = [query(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}' WITH DETACHED")[0][0]
           for _ in range(2)]
    ends = [wait_done(pgkeep, i) for i in ids]
    assert ("succeeded", None) in ends, ends
    for status, error in ends:
        assert status == "succeeded" or "already contains a BACKUP-LOCK file" in error, ends
    chain = layers(pgkeep, coll)
    assert len(chain) == 3 + sum(s == "succeeded" for s, _ in ends)
    assert_linear(chain)
    assert len(layer_dirs(root)) == len(chain) - 1


def chattr(flag: str, path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True)


def test_claim_a_cancelled_job_could_not_delete_does_not_block(pgkeep, pg18, source, held):
    """The store refuses the delete of the chain claim (an immutable file: chattr +i bites even
    for root): the claim stays behind the cancelled job. It is stale: the next incremental
    takes the claim's next generation and extends the same parent."""
    coll, root = new_chain(pgkeep, "refused")
    change(pg18, 9)
    job_id, lock = held(coll, root)
    (claim,) = claims(root)
    chattr("+i", claim)
    try:
        query(pgkeep, f"CANCEL JOB {job_id}")
        lock.release()
        assert wait_done(pgkeep, job_id)[0] == "canceled"
        assert layer_dirs(root) == [] and claims(root) == [claim]
        # the next generation's job, cancelled, deletes its own claim only
        second, lock = held(coll, root)
        assert claim_of(root, second) == claim.with_name(claim.name + ".1")
        query(pgkeep, f"CANCEL JOB {second}")
        lock.release()
        assert wait_done(pgkeep, second)[0] == "canceled"
        assert layer_dirs(root) == [] and claims(root) == [claim]
        (next_id, status, *_), = query(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}'")
    finally:
        chattr("-i", claim)
    assert status == "succeeded"
    assert claim_of(root, job_id) == claim and claim_of(root, next_id) == claim.with_name(claim.name + ".1")
    chain = layers(pgkeep, coll)
    assert len(chain) == 2
    assert_linear(chain)


def test_claim_of_a_failed_or_unknown_job_does_not_block(pgkeep, pg18, source):
    coll, root = new_chain(pgkeep, "stale")
    manifest = query(pgkeep, f"SHOW BACKUP FROM LATEST IN '{coll}' WITH as_json")[0][0]
    full_dir = next(root.glob("*/*/*/BACKUP_MANIFEST")).parent.relative_to(root)
    # an ended job: the full's own (a refused statement makes no job any more, issue 13)
    (failed,) = query(pgkeep, "SELECT job_id FROM [SHOW JOBS] WHERE status = 'succeeded' "
                              f"AND description LIKE '%{coll}%' ORDER BY created DESC LIMIT 1")[0]
    claim = root / "incrementals" / str(full_dir) / "claims" / manifest["id"]
    claim.parent.mkdir(parents=True, exist_ok=True)
    for job_id in (failed, 4242):      # a failed job's; a job the catalog does not know
        # as its cleanup left it: the layer deleted, the claim not
        layer = f"/incrementals/{full_dir}/20200101/000000.00-20200101-000000.00"
        claim.write_text(json.dumps({"job_id": job_id, "token": "left-behind", "layer": layer}))
        (next_id, status, *_), = query(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}'")
        assert status == "succeeded"
        chain = layers(pgkeep, coll)
        assert len(chain) == 2, chain
        assert claim_of(root, job_id) == claim and claim_of(root, next_id) == claim.with_name(claim.name + ".1")
        (inc,) = layer_dirs(root)
        shutil.rmtree(root / inc)           # so that the next one extends the full again
        for c in claims(root):
            c.unlink()


def test_two_jobs_replacing_one_stale_claim_do_not_fork(pgkeep, pg18, workdir, source, held):
    """Two incrementals find the same stale claim. B (in a pgkeep frozen right after reading it,
    PGKEEP_TESTING_STALLPOINTS) wakes up after C replaced it: B must not take C's claim for the
    stale one (a delete-and-create by name would delete C's claim: both would commit on the same
    parent, a forked chain). One wins, the other gets 58P02."""
    coll, root = new_chain(pgkeep, "stalerace")
    manifest = query(pgkeep, f"SHOW BACKUP FROM LATEST IN '{coll}' WITH as_json")[0][0]
    full_dir = next(root.glob("*/*/*/BACKUP_MANIFEST")).parent.relative_to(root)
    claim = root / "incrementals" / str(full_dir) / "claims" / manifest["id"]
    claim.parent.mkdir(parents=True, exist_ok=True)
    claim.write_text(json.dumps({"job_id": 4243, "token": "left-behind",
                                 "layer": f"/incrementals/{full_dir}/20200101/000000.00-20200101-000000.00"}))
    change(pg18, 11)
    b_proc = PgkeepProcess(workdir / f"incjobs-stalerace-{uuid.uuid4().hex[:6]}", pg18.dsn(),
                           args=["--nodelocal-root", str(pgkeep.workdir / "data" / "external")],
                           env={"PGKEEP_TESTING_STALLPOINTS": "backup.stale_claim=4"}).start()
    try:
        b = query(b_proc, f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}' WITH DETACHED")[0][0]
        deadline = time.monotonic() + 30
        while "stallpoint backup.stale_claim reached" not in b_proc.log():
            assert time.monotonic() < deadline, b_proc.log()[-2000:]
            time.sleep(0.05)
        c, lock = held(coll, root)             # C replaces the stale claim while B sleeps
        # B wakes up and ends (58P02), or takes a claim: the fork, once C's lock is released
        wait_until(pgkeep, b, lambda r: r["status"] != "running" or claim_of(root, b), timeout=30)
        lock.release()
        ends = {b: wait_done(pgkeep, b), c: wait_done(pgkeep, c)}
    finally:
        b_proc.stop()
    assert sorted(s for s, _ in ends.values()) == ["failed", "succeeded"], ends
    (error,) = [e for s, e in ends.values() if s == "failed"]
    assert "already contains a BACKUP-LOCK file" in error, error
    chain = layers(pgkeep, coll)
    assert len(chain) == 2
    assert_linear(chain)


POINTS = ["backup.after_claim", "backup.after_chunk", "backup.before_manifest",
          "backup.after_manifest", "backup.after_checksum"]
KILLS = POINTS + ["cancel"]          # cancel: killed after its first chunk, then CANCEL JOB


@dataclass
class Killed:
    job_id: int
    coll: str
    root: object
    at_death: tuple          # (layers SHOW BACKUP lists, layer directories, chain claims)
    end: tuple               # (status, error) once adopted and ended


@pytest.fixture(scope="module")
def killed(pgkeep, pg18, workdir, source):
    """({kill: Killed}, the source's rows): one incremental per kill, each in its own pgkeep
    that dies (as by kill -9, PGKEEP_TESTING_CRASHPOINTS) at that point; the suite's pgkeep
    adopts them once their leases expired. All at once (the leases expire together), and all
    ended when it yields. --max-jobs 1: a dying pgkeep busy with its own job adopts no other."""
    chains = {k: new_chain(pgkeep, k.split(".")[-1].replace("_", "")) for k in KILLS}
    change(pg18, 1, 2900)
    expected = row_hashes(pg18, DB)

    def start(kill: str) -> PgkeepProcess:
        point = "backup.after_chunk" if kill == "cancel" else kill
        return PgkeepProcess(workdir / f"incjobs-{kill}-{uuid.uuid4().hex[:6]}", pg18.dsn(),
                             args=["--nodelocal-root", str(pgkeep.workdir / "data" / "external"),
                                   "--job-lease", "3", "--max-jobs", "1"],
                             env={"PGKEEP_TESTING_CRASHPOINTS": point}).start()

    with ThreadPoolExecutor(len(KILLS)) as pool:
        procs = dict(zip(KILLS, pool.map(start, KILLS)))
    try:
        jobs = {k: query(procs[k], f"BACKUP DATABASE {DB} INTO LATEST IN '{chains[k][0]}' WITH DETACHED")[0][0]
                for k in KILLS}
        at_death: dict[str, tuple] = {}
        deadline = time.monotonic() + 60
        while len(at_death) < len(KILLS):       # each one looked at as it dies, before adoption
            assert time.monotonic() < deadline, {k: p.log()[-1000:] for k, p in procs.items()}
            for k, a in procs.items():
                if k not in at_death and a.proc.poll() is not None:
                    assert a.proc.returncode == 137, a.log()[-2000:]
                    coll, root = chains[k]
                    at_death[k] = (len(layers(pgkeep, coll)), len(layer_dirs(root)), len(claims(root)))
                    if k == "cancel":
                        query(pgkeep, f"CANCEL JOB {jobs[k]}")
            time.sleep(0.05)
        ends = {k: wait_done(pgkeep, jobs[k]) for k in KILLS}
    finally:
        for a in procs.values():
            a.stop()
    yield {k: Killed(jobs[k], *chains[k], at_death[k], ends[k]) for k in KILLS}, expected


@pytest.mark.parametrize("point", POINTS)
def test_killed_incremental_is_adopted_and_invisible_until_committed(pgkeep, pg18, killed, point):
    runs, expected = killed
    k = runs[point]
    committed = point == "backup.after_checksum"
    assert k.at_death == (2 if committed else 1, 1, 1), k.at_death    # listed once committed
    assert k.end == ("succeeded", None), pgkeep.log()[-3000:]
    assert job_row(pgkeep, k.job_id)["fraction_completed"] == 1.0
    assert len(layers(pgkeep, k.coll)) == 2
    restored_matches(pgkeep, pg18, k.coll, expected, "incjobs_kill")
    change(pg18, 1500)
    query(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{k.coll}'")
    chain = layers(pgkeep, k.coll)
    assert len(chain) == 3 and len(layer_dirs(k.root)) == 2
    assert_linear(chain)


def test_killed_incremental_cancelled_leaves_nothing(pgkeep, killed):
    runs, _ = killed
    k = runs["cancel"]
    assert k.at_death == (1, 1, 1)           # invisible; its layer and claim are there
    assert k.end[0] == "canceled", k.end
    assert layer_dirs(k.root) == [] and claims(k.root) == []
    query(pgkeep, f"BACKUP DATABASE {DB} INTO LATEST IN '{k.coll}'")
    chain = layers(pgkeep, k.coll)
    assert len(chain) == 2
    assert_linear(chain)
