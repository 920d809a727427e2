"""Issue 12, point 14 (d): errors of pgkeep's own superuser connections (its catalog pool, the
engine's connections of a job) reached clients and SHOW JOBS with their detail and hint, which
can echo key values and other users' data. Only pgkeep's own words may go out; the foreign
error goes to pgkeep's log only, and the client's connection stays usable.

A pgkeep of its own in front of a cluster of its own: the tests change pgkeep's catalog and
add an event trigger."""
from __future__ import annotations

import psycopg
import pytest

from tests.support.clusters import make_cluster
from tests.support.pgkeep import PgkeepProcess

SECRET = "leaked-3b9f"  # stands for another user's data or a credential


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("leaks-errors")
    base.chmod(0o755)
    cluster = make_cluster(base, "pg")
    proc = PgkeepProcess(base / "pgkeep", cluster.dsn()).start()
    try:
        yield cluster, proc
    finally:
        proc.stop()
        cluster.destroy()


def _connect(proc) -> psycopg.Connection:
    return psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10)


def _assert_sanitised(err: psycopg.Error, where: str) -> None:
    diag = err.diag
    shown = " ".join(str(x) for x in (diag.message_primary, diag.message_detail, diag.message_hint,
                                      diag.context, str(err)))
    assert SECRET not in shown, shown
    assert diag.message_detail is None and diag.message_hint is None, shown
    assert diag.sqlstate == "XX000", shown
    assert where in diag.message_primary and "see pgkeep's log" in diag.message_primary, shown


def test_catalog_unique_violation_detail_reaches_client(stack):
    """A unique violation in pgkeep's catalog echoed the key value in its DETAIL to the client."""
    cluster, proc = stack
    # An operator's extra rule on pgkeep's catalog: one connection per location.
    cluster.psql("CREATE UNIQUE INDEX IF NOT EXISTS one_name_per_uri ON pgkeep.external_connections (uri)")
    uri = f"nodelocal://self/{SECRET}"
    with _connect(proc) as conn:
        conn.execute(f"CREATE EXTERNAL CONNECTION first_conn AS '{uri}'")
        with pytest.raises(psycopg.Error) as info:
            conn.execute(f"CREATE EXTERNAL CONNECTION second_conn AS '{uri}'")
        _assert_sanitised(info.value, "catalog")
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert [r[0] for r in conn.execute("SHOW EXTERNAL CONNECTIONS")] == ["first_conn"]
    ref = info.value.diag.message_primary.rsplit("ref ", 1)[1]
    logged = [line for line in proc.log().splitlines() if ref in line]
    assert logged and "23505" in logged[0] and SECRET in logged[0], "the operator's log has it all"


def test_restore_ddl_failure_detail_reaches_client_and_show_jobs(stack):
    """A restore whose DDL failed inside PostgreSQL showed the failure's message, detail and hint
    (here an event trigger's, naming data) to the client and in SHOW JOBS' error column."""
    cluster, proc = stack
    cluster.psql("CREATE DATABASE errsrc")
    cluster.psql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')",
                 database="errsrc")
    cluster.psql("CREATE DATABASE errdst")
    cluster.psql(
        "CREATE FUNCTION refuse() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN "
        f"RAISE EXCEPTION 'payroll row of alice: {SECRET}' USING DETAIL = 'salary {SECRET}', "
        f"HINT = 'ask bob ({SECRET})'; END$$; "
        "CREATE EVENT TRIGGER refuse_ddl ON ddl_command_start EXECUTE FUNCTION refuse()",
        database="errdst")
    coll = "nodelocal://self/leaks-errors"
    with _connect(proc) as conn:
        conn.execute(f"BACKUP DATABASE errsrc INTO '{coll}'")
        with pytest.raises(psycopg.Error) as info:
            conn.execute(f"RESTORE TABLE errsrc.public.t FROM LATEST IN '{coll}' WITH into_db = 'errdst'")
        _assert_sanitised(info.value, "engine")
        assert conn.execute("SELECT 1").fetchone() == (1,)
        jobs = conn.execute("SELECT job_type, status, error FROM [SHOW JOBS] "
                            "WHERE job_type = 'RESTORE'").fetchall()
    assert jobs and all(status == "failed" for _, status, _ in jobs), jobs
    assert all(SECRET not in (error or "") and "see pgkeep's log" in error for _, _, error in jobs), jobs
    assert SECRET in proc.log(), "the foreign error is in pgkeep's log for the operator"


def test_sanitising_keeps_pgkeeps_own_restore_errors(stack):
    """Guard for the fix: errors pgkeep raises itself inside PostgreSQL (its restore plan's DO
    blocks) keep their SQLSTATE, words and hint."""
    cluster, proc = stack
    cluster.psql("CREATE DATABASE ownsrc")
    cluster.psql("CREATE SCHEMA s1; CREATE TABLE s1.t (id int)", database="ownsrc")
    cluster.psql("CREATE DATABASE owndst")
    coll = "nodelocal://self/leaks-own"
    with _connect(proc) as conn:
        conn.execute(f"BACKUP DATABASE ownsrc INTO '{coll}'")
        with pytest.raises(psycopg.errors.InvalidSchemaName) as info:
            conn.execute(f"RESTORE TABLE ownsrc.s1.t FROM LATEST IN '{coll}' WITH into_db = 'owndst'")
        assert 'a schema named "s1" needs to exist' in info.value.diag.message_primary
        assert info.value.diag.message_hint == "Create the schema first."
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_foreign_error_kept_foreign_detail_and_any_sqlstate():
    """error_fields() passed any foreign exception with a `sqlstate` through with its message,
    detail and hint; now only actionable SQLSTATE classes survive, in pgkeep's words."""
    import errno

    import asyncpg

    from proxy.errors import error_fields

    def foreign(cls, sqlstate_message: str):
        exc = cls(sqlstate_message)
        exc.detail, exc.hint = f"Key (v)=({SECRET})", f"see {SECRET}"
        return exc

    cases = {
        "08006": foreign(asyncpg.exceptions.ConnectionDoesNotExistError, SECRET),
        "57014": foreign(asyncpg.exceptions.QueryCanceledError, SECRET),
        "40001": foreign(asyncpg.exceptions.SerializationError, SECRET),
        "40P01": foreign(asyncpg.exceptions.DeadlockDetectedError, SECRET),
        "53100": foreign(asyncpg.exceptions.DiskFullError, SECRET),
        "XX000": foreign(asyncpg.exceptions.UniqueViolationError, SECRET),
    }
    for sqlstate, exc in cases.items():
        fields = error_fields(exc)
        assert fields["C"] == sqlstate and "D" not in fields and "H" not in fields, fields
        assert SECRET not in str(fields) and "see pgkeep's log" in fields["M"], fields
    assert error_fields(ConnectionResetError(SECRET))["C"] == "08006"
    assert error_fields(OSError(errno.ENOSPC, SECRET))["C"] == "53100"
    assert error_fields(OSError(errno.EIO, SECRET))["C"] == "58030"
    assert SECRET not in str(error_fields(KeyError(SECRET)))
