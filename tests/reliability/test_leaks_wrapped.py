"""Issue 12, point 14 (c): a PostgreSQL statement wrapping one of pgkeep's (EXPLAIN BACKUP ...,
PREPARE p AS BACKUP ...) was forwarded, so the upstream logged it with the storage secret
(log_statement = all, and log_min_error_statement's STATEMENT line for the syntax error).
pgkeep now refuses these with 0A000 and forwards nothing.

A cluster of its own with log_statement = all and a pgkeep in front; the wrapped statements go
through psql and psycopg, by the simple protocol and the extended one (a named prepared
statement and the unnamed one of pipeline mode); then the upstream's log must not hold the
secret, while a forwarded marker proves the log is being written."""
from __future__ import annotations

import psycopg
import pytest

from tests.e2e.helpers import psql, wait_for
from tests.support.clusters import make_cluster
from tests.support.pgkeep import PgkeepProcess

SECRET = "WRAPSECRETq7x2"
URI = f"'s3://bucket/coll?AWS_ACCESS_KEY_ID=AKIAEXAMPLE&AWS_SECRET_ACCESS_KEY={SECRET}'"
WRAPPED = [
    f"EXPLAIN BACKUP DATABASE postgres INTO {URI}",
    f"EXPLAIN ANALYZE VERBOSE BACKUP INTO {URI}",
    f"EXPLAIN (ANALYZE, FORMAT JSON) RESTORE DATABASE d FROM LATEST IN {URI}",
    f"PREPARE leak AS BACKUP DATABASE postgres INTO {URI}",
    f"PREPARE leak (int) AS SHOW BACKUPS IN {URI}",
    f"DECLARE leak CURSOR WITH HOLD FOR SHOW BACKUP FROM LATEST IN {URI}",
    f"CREATE RULE leak AS ON INSERT TO t DO INSTEAD (SELECT 1; BACKUP INTO {URI})",
    f"WITH x AS (BACKUP INTO {URI}) SELECT 1",
    f"WITH x AS (SELECT 1) RESTORE FROM LATEST IN {URI}",
    f"COPY (SHOW BACKUP FROM LATEST IN {URI}) TO STDOUT",
    f"CREATE TABLE leak AS SHOW BACKUPS IN {URI}",
    f"CREATE FUNCTION leak() RETURNS void LANGUAGE sql BEGIN ATOMIC BACKUP INTO {URI}; END",
    f"CREATE SCHEMA leak CREATE EXTERNAL CONNECTION c AS {URI}",
    f"(BACKUP INTO {URI})",
    f"EXPLAIN BACKUP garbage {URI} WITH ???",  # malformed inside: refused all the same
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("leaks-wrapped")
    base.chmod(0o755)
    cluster = make_cluster(base, "pg")
    cluster.psql("ALTER SYSTEM SET log_statement = 'all'")
    cluster.psql("SELECT pg_reload_conf()")
    proc = PgkeepProcess(base / "pgkeep", cluster.dsn()).start()
    try:
        yield cluster, proc
    finally:
        proc.stop()
        cluster.destroy()


def _upstream_log(cluster) -> str:
    return cluster.logfile.read_text(errors="replace")


def _refused(err: psycopg.Error) -> None:
    assert err.diag.sqlstate == "0A000", (err.diag.sqlstate, str(err))
    assert SECRET not in f"{err} {err.diag.message_detail} {err.diag.message_hint}"


def _psycopg_all_ways(proc, statement: str) -> None:
    with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10) as conn:
        for how in ("simple", "prepared", "pipeline"):
            with pytest.raises(psycopg.Error) as info:
                if how == "simple":
                    conn.execute(statement)
                elif how == "prepared":
                    conn.execute(statement, prepare=True)
                else:
                    with conn.pipeline():
                        conn.execute(statement)
            _refused(info.value)
            assert conn.execute("SELECT 1").fetchone() == (1,), "the session stays usable"


def test_wrapped_statements_put_the_secret_in_the_upstream_log(stack):
    """EXPLAIN/PREPARE/DECLARE/RULE/WITH/COPY/... around a pgkeep statement were forwarded, and
    the upstream logged the statement with its secret."""
    cluster, proc = stack
    marker = "forwarded-marker-5c1d"
    with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"SELECT '{marker}'")
    assert wait_for(lambda: marker in _upstream_log(cluster), 10), "the upstream logs statements"
    for statement in WRAPPED:
        out = psql(proc.dsn(), "-v", "ON_ERROR_STOP=0", "-c", statement, "-c", "SELECT 'psql-alive'",
                   check=False)
        assert "0A000" in out.stderr or "not supported by pgkeep" in out.stderr, (statement, out.stderr)
        assert SECRET not in out.stderr + out.stdout and "psql-alive" in out.stdout, (statement, out)
        _psycopg_all_ways(proc, statement)
    # Also a simple-protocol Query holding a forwarded statement before the wrapped one (the
    # whole Query fails before any of it runs, as PostgreSQL does for a syntax error).
    out = psql(proc.dsn(), "-c", f"SELECT 'before-wrapped'; {WRAPPED[0]}; SELECT 'after'", check=False)
    assert out.returncode != 0 and SECRET not in out.stderr
    end = f"end-marker-{len(WRAPPED)}"
    with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"SELECT '{end}'")
    assert wait_for(lambda: end in _upstream_log(cluster), 10)
    log = _upstream_log(cluster)
    assert SECRET not in log, [line for line in log.splitlines() if SECRET in line][:5]
    assert SECRET not in proc.log()



def test_job_payload_secret_in_upstream_parameter_log(stack):
    """pgkeep's catalog stored a job's spec (its storage URI, secret included) as a bind
    parameter, which log_statement = all logged in a 'Parameters:' DETAIL line. pgkeep's own
    sessions now turn parameter logging off."""
    cluster, proc = stack
    secret = "PARAMSECRETz8k1"
    uri = ("s3://bucket/coll?AWS_ENDPOINT=http://127.0.0.1:9&AWS_REGION=us-east-1"
           f"&AWS_ACCESS_KEY_ID=AKIAEXAMPLE&AWS_SECRET_ACCESS_KEY={secret}")
    with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10) as conn:
        job_id = conn.execute(f"BACKUP DATABASE postgres INTO '{uri}' WITH detached").fetchone()[0]
        # the job row (and its spec) is in the catalog once the statement answered
        conn.execute(f"CANCEL JOB {job_id}")
    log = _upstream_log(cluster)
    assert "pgkeep.jobs" in log or "INSERT INTO pgkeep" in log, "the catalog's statements are logged"
    assert secret not in log
