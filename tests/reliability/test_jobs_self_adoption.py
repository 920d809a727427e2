"""A pgkeep process whose lease on a job it is running ran out (a starved event loop, a slow
catalog) claimed that same job again and ran it a second time beside the first: under load in CI
a RESTORE created its temporary database twice and failed ("adopted job N" logged by the very
process that ran N). The claim now skips the jobs the process runs already.

The test holds a backup in a lock wait (the test holds an ACCESS EXCLUSIVE lock on one of its
tables) while it keeps expiring the job's lease in the catalog, as a late heartbeat would leave
it; the process's next claim must not take its own job."""
from __future__ import annotations

import re
import threading
import time
import uuid

import psycopg

from tests.reliability.jobtools import query, wait_job
from tests.support.pgkeep import PgkeepProcess


def test_a_process_never_adopts_the_job_it_runs(pg18, workdir, pg18_admin):
    db = f"selfadopt_{uuid.uuid4().hex[:6]}"
    pg18_admin.execute(f"CREATE DATABASE {db}")
    pg18.psql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)", db)
    proc = PgkeepProcess(workdir / f"pgkeep-{db}", pg18.dsn(), args=["--job-lease", "1"]).start()
    try:
        with psycopg.connect(pg18.dsn(db), autocommit=True) as locker:
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
            job_id = query(proc, f"BACKUP DATABASE {db} INTO 'nodelocal://self/{db}' WITH detached")[0][0]
            stop = threading.Event()

            def expire():           # the lease runs out again and again, as a late heartbeat's would
                with psycopg.connect(pg18.dsn(), autocommit=True) as c:
                    while not stop.is_set():
                        c.execute("UPDATE pgkeep.jobs SET lease_expires = now() - interval '1 second' "
                                  "WHERE job_id = %s", (job_id,))
                        time.sleep(0.003)
            t = threading.Thread(target=expire)
            t.start()
            time.sleep(6)
            stop.set()
            t.join()
            locker.execute("COMMIT")
        assert wait_job(proc, job_id)["status"] == "succeeded"
        assert not re.search(rf"adopted job {job_id}\b", proc.log()), proc.log()[-3000:]
    finally:
        proc.stop()
        pg18_admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
