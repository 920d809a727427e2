"""Issue 12 point 1: concurrent BACKUPs into one collection never clobber each other.

Pairs of `BACKUP DATABASE conc_a / conc_b INTO <one collection>` start together through one
pgkeep that runs many jobs at once: every job that says it succeeded must own its subdir, whose
manifest names that job and its database, whose files verify, and which restores to that
database's rows; cancelling one of two concurrent jobs never touches the other's backup.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.support.datasets import row_hashes
from tests.support.objstores import seaweedfs
from tests.support.pgkeep import PgkeepProcess

DBS = ("conc_a", "conc_b")


def run(proc, sql):
    with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=30) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


@pytest.fixture(scope="module")
def s3():
    return seaweedfs()


@pytest.fixture(scope="module")
def conc(workdir, pg18, pgkeep, s3):
    """A pgkeep running a dozen jobs at once, and two small databases with different rows. It
    shares the suite pgkeep's nodelocal root: both take jobs from the one catalog."""
    for i, db in enumerate(DBS):
        pg18.psql(f"DROP DATABASE IF EXISTS {db}")
        pg18.psql(f"CREATE DATABASE {db}")
        pg18.psql(f"CREATE TABLE only_{db}(id int, v text); "
                  f"INSERT INTO only_{db} SELECT g, '{db}' || g FROM generate_series(1, {10 + i}) g", db)
    proc = _conc_pgkeep(workdir / "conc", pg18, pgkeep, s3).start()
    yield proc
    proc.stop()


def _conc_pgkeep(where, pg18, pgkeep, s3) -> PgkeepProcess:
    return PgkeepProcess(where, pg18.dsn(), env=s3.env(),
                         args=["--max-jobs", "12", "--max-connections", "150",
                               "--nodelocal-root", str(pgkeep.workdir / "data" / "external")])


@pytest.fixture(scope="module")
def conc_two(conc, workdir, pg18, pgkeep, s3):
    """`conc` and a second such pgkeep on the same catalog: on S3 one process's CPU is the
    bottleneck (each job and SHOW BACKUP opens its own S3 client), and jobs from two processes
    racing for one collection's subdirs is the case atomic claims exist for."""
    other = _conc_pgkeep(workdir / "conc2", pg18, pgkeep, s3).start()
    yield [conc, other]
    other.stop()


def start_together(procs: list, statements: list[str]) -> list:
    """Run each statement on its own connection (pair i on procs[i % len(procs)]), all
    released at once; each outcome is the result rows or the exception."""
    barrier = threading.Barrier(len(statements))

    def one(i_sql):
        i, sql = i_sql
        with psycopg.connect(procs[(i // 2) % len(procs)].dsn(), autocommit=True,
                             connect_timeout=60) as conn:
            barrier.wait(60)
            try:
                return conn.execute(sql).fetchall()
            except psycopg.Error as e:
                return e

    with ThreadPoolExecutor(len(statements)) as pool:
        return list(pool.map(one, enumerate(statements)))


def job_subdirs(proc, job_ids: list[int]) -> dict[int, str]:
    rows = run(proc, "SELECT job_id, result->>'subdir' FROM pgkeep.jobs "
                     f"WHERE job_id IN ({','.join(map(str, job_ids))})")
    return dict(rows)


def check_backups(procs: list, pg18, coll: str, jobs: dict[int, str], restores_per_db: int,
                  validate_per_db: int | None = None, workers: int = 8) -> None:
    """`jobs`: job id -> database, every job that said succeeded. Each has its own subdir
    holding its own manifest (naming that job and its database), listed once by SHOW BACKUPS;
    the files of `validate_per_db` backups of each database (all: None) verify, and
    `restores_per_db` of them restore to the database's rows. The subdirs are checked on
    `workers` connections at once, spread over `procs`."""
    proc = procs[0]
    subdirs = job_subdirs(proc, list(jobs))
    assert len(set(subdirs.values())) == len(jobs), "two succeeded jobs share a subdir"
    assert sorted(p for (p,) in run(proc, f"SHOW BACKUPS IN '{coll}'")) == sorted(subdirs.values())
    chosen = {db: [j for j in subdirs if jobs[j] == db] for db in DBS}
    validate = {j for db in DBS for j in chosen[db][:validate_per_db]}

    def check(item: tuple[int, tuple[int, str]]) -> tuple:
        k, (job_id, sub) = item
        with psycopg.connect(procs[k % len(procs)].dsn(), autocommit=True, connect_timeout=60) as conn:
            (manifest,), = conn.execute(f"SHOW BACKUP FROM '{sub}' IN '{coll}' WITH as_json").fetchall()
            m = manifest if isinstance(manifest, dict) else json.loads(manifest)
            valid = (conn.execute(f"SHOW BACKUP VALIDATE FROM '{sub}' IN '{coll}'").fetchall()
                     if job_id in validate else [("No problems found!",)])
        return (m["job_id"], [d["name"] for d in m["databases"]]), valid

    with ThreadPoolExecutor(workers) as pool:
        found = dict(zip(subdirs, pool.map(check, enumerate(subdirs.items()))))
    for job_id in subdirs:
        assert found[job_id] == ((job_id, [jobs[job_id]]), [("No problems found!",)]), job_id
    expected = {db: row_hashes(pg18, db) for db in DBS}
    for db in DBS:
        for job_id in chosen[db][:restores_per_db]:
            target = f"conc_r_{job_id % 100000}"
            pg18.psql(f"DROP DATABASE IF EXISTS {target}")
            run(proc, f"RESTORE DATABASE {db} FROM '{subdirs[job_id]}' IN '{coll}' "
                      f"WITH new_db_name = '{target}'")
            assert row_hashes(pg18, target) == expected[db]
            pg18.psql(f"DROP DATABASE {target}")


def backup_pairs(procs: list, pg18, coll: str, pairs: int, restores_per_db: int,
                 validate_per_db: int | None = None) -> None:
    started = time.monotonic()
    outcomes = start_together(procs, [f"BACKUP DATABASE {db} INTO '{coll}'"
                                     for _ in range(pairs) for db in DBS])
    jobs = {}
    for i, out in enumerate(outcomes):
        if not isinstance(out, Exception):
            (job_id, status, *_), = out
            assert status == "succeeded"
            jobs[job_id] = DBS[i % 2]
    assert len(jobs) >= pairs, [o for o in outcomes if isinstance(o, Exception)][:3]
    backed_up = time.monotonic()
    (coordinators,), = run(procs[0], "SELECT array_agg(DISTINCT result->>'coordinator') FROM pgkeep.jobs "
                                     f"WHERE job_id IN ({','.join(map(str, jobs))})")
    ran = {int(c.split(":")[1]) for c in coordinators}
    assert {p.proc.pid for p in procs} <= ran, (ran, [p.proc.pid for p in procs])
    check_backups(procs, pg18, coll, jobs, restores_per_db, validate_per_db)
    print(f"\n{pairs} pairs into {coll.split('?')[0]}: backups {backed_up - started:.1f} s, "
          f"checks {time.monotonic() - backed_up:.1f} s")


def test_fifty_concurrent_pairs_on_nodelocal_each_own_subdir(conc, pg18):
    backup_pairs([conc], pg18, f"nodelocal://self/conc-{uuid.uuid4().hex[:8]}", 50, restores_per_db=2)


@pytest.mark.timeout(600)   # the suite's slowest test (67 s alone); the 300 s hang guard was hit under load
def test_fifty_concurrent_pairs_on_s3_each_own_subdir(conc_two, pg18, s3):
    backup_pairs(conc_two, pg18, s3.collection_uri("conc"), 50, restores_per_db=1, validate_per_db=5)


def test_cancelled_concurrent_job_never_touches_the_others_backup(conc, pg18):
    """Ten pairs reach `backup.before_manifest` together; one job of each pair is cancelled
    (its cleanup runs), the other resumed: every resumed one's backup is whole."""
    coll = f"nodelocal://self/conc-cancel-{uuid.uuid4().hex[:8]}"
    run(conc, "SET CLUSTER SETTING jobs.debug.pausepoints = 'backup.before_manifest'")
    try:
        outcomes = start_together([conc], [f"BACKUP DATABASE {db} INTO '{coll}' WITH DETACHED"
                                         for _ in range(10) for db in DBS])
        ids = [out[0][0] for out in outcomes]
        array = f"SELECT unnest(ARRAY{ids}::int8[])"
        deadline = time.monotonic() + 60
        statuses = {r[5] for r in run(conc, f"SHOW JOBS {array}")}
        while statuses != {"paused"} and time.monotonic() < deadline:
            time.sleep(0.1)
            statuses = {r[5] for r in run(conc, f"SHOW JOBS {array}")}
        assert statuses == {"paused"}
    finally:
        run(conc, "RESET CLUSTER SETTING jobs.debug.pausepoints")
    for i, job_id in enumerate(ids):
        run(conc, f"{'CANCEL' if i % 2 else 'RESUME'} JOB {job_id}")
    final = {r[0]: r[5] for r in run(conc, f"SHOW JOBS WHEN COMPLETE {array}")}
    assert [final[j] for j in ids] == ["succeeded", "canceled"] * 10, final
    check_backups([conc], pg18, coll, {j: DBS[i % 2] for i, j in enumerate(ids) if not i % 2},
                  restores_per_db=2)
