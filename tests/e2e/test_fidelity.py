"""Issue 13, point 7 through a real pgkeep: small fidelity fixes, checked with psql, psycopg and
asyncpg (SQLSTATE and message, and the session usable after every error).

- an empty new_db_name / into_db is CockroachDB's 42601 "empty database name", and no job;
- pgkeep's GRANT/REVOKE forms say which family is not built yet; PostgreSQL's own GRANT and
  REVOKE still reach the upstream and take effect there;
- 0A000 messages use the statement's own words (PAUSE SCHEDULE, RESUME SCHEDULES <select>);
- fraction_completed is float8 and prints the same through SHOW JOBS and [SHOW JOBS];
- forms of CockroachDB's grammar pgkeep does not run answer 0A000 naming them, never 42601,
  and never reach PostgreSQL (ALTER BACKUP ... ADD NEW_KMS used to be forwarded, KMS URIs and
  all).
"""
from __future__ import annotations

import asyncio
import re
import uuid

import asyncpg
import psycopg
import pytest

from proxy.wire.values import float8_text

from .helpers import psql

FLOAT8 = 701


def _errors(pgkeep, statements: list[str]) -> list[tuple[str, str]]:
    """Runs each statement in one psql session, each followed by a liveness SELECT; returns
    (SQLSTATE, message) per statement, and asserts the session answered every SELECT."""
    script = "\\set VERBOSITY verbose\n" + "".join(
        f"{s};\nSELECT 'alive-{i}';\n" for i, s in enumerate(statements))
    r = psql(pgkeep.dsn(), "-At", "-v", "ON_ERROR_STOP=0", input=script, check=False)
    for i in range(len(statements)):
        assert f"alive-{i}" in r.stdout, (r.stdout, r.stderr)
    found = re.findall(r"^ERROR:  ([0-9A-Z]{5}): (.*)$", r.stderr, flags=re.M)
    assert len(found) == len(statements), r.stderr
    return found


def _job_count(conn) -> int:
    return conn.execute("SELECT count(*) FROM [SHOW JOBS]").fetchone()[0]


def test_empty_new_db_name_is_an_error_and_makes_no_job(pgkeep):
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        before = _job_count(conn)
    got = _errors(pgkeep, [
        "RESTORE DATABASE fid FROM LATEST IN 'nodelocal://self/fid-none' WITH new_db_name = ''",
        "RESTORE DATABASE fid FROM LATEST IN 'nodelocal://self/fid-none' WITH detached, new_db_name = ''",
        "RESTORE TABLE fid.t FROM LATEST IN 'nodelocal://self/fid-none' WITH into_db = ''",
    ])
    assert got == [("42601", "empty database name")] * 3
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        assert _job_count(conn) == before
        # A bound empty name is the same error as a literal one.
        with pytest.raises(psycopg.errors.SyntaxError) as err:
            conn.execute("RESTORE DATABASE fid FROM LATEST IN 'nodelocal://self/fid-none' "
                         "WITH new_db_name = %s", ("",))
        assert err.value.diag.message_primary == "empty database name"
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_pgkeep_grant_forms_are_pgkeeps(pgkeep):
    """pgkeep answers its own GRANT forms (an unknown grantee is CockroachDB's wording, not
    PostgreSQL's `role "x" does not exist`); the privilege tests are tests/e2e/test_privileges.py."""
    got = _errors(pgkeep, [
        "GRANT SYSTEM BACKUP TO fid_nobody",
        "REVOKE SYSTEM VIEWJOB FROM fid_nobody",
        "GRANT RESTORE ON DATABASE postgres TO fid_nobody",
        "GRANT USAGE ON EXTERNAL CONNECTION fid_conn TO fid_nobody",
    ])
    assert got == [
        ("42704", 'role/user "fid_nobody" does not exist'),
        ("42704", 'role/user "fid_nobody" does not exist'),
        ("42704", 'role/user "fid_nobody" does not exist'),
        ("42704", "external connection with name fid_conn does not exist"),
    ]


def test_postgres_grants_still_reach_the_upstream(pgkeep, pg18_admin):
    role, table = f"fid_{uuid.uuid4().hex[:8]}", f"fid_t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role}")
        conn.execute(f"CREATE TABLE {table} (x int)")
        try:
            conn.execute(f"GRANT SELECT ON TABLE {table} TO {role}")
            conn.execute(f"GRANT pg_read_all_settings TO {role}")
            conn.execute(f"GRANT CONNECT ON DATABASE postgres TO {role}")
            has = pg18_admin.execute(
                "SELECT has_table_privilege(%s, %s, 'SELECT'), pg_has_role(%s, 'pg_read_all_settings', 'MEMBER')",
                (role, table, role)).fetchone()
            assert has == (True, True)
            conn.execute(f"REVOKE SELECT ON TABLE {table} FROM {role}")
            conn.execute(f"REVOKE pg_read_all_settings FROM {role}")
            has = pg18_admin.execute(
                "SELECT has_table_privilege(%s, %s, 'SELECT'), pg_has_role(%s, 'pg_read_all_settings', 'MEMBER')",
                (role, table, role)).fetchone()
            assert has == (False, False)
        finally:
            conn.execute(f"DROP TABLE {table}")
            conn.execute(f"REVOKE CONNECT ON DATABASE postgres FROM {role}")
            conn.execute(f"DROP ROLE {role}")


def test_messages_use_the_statements_own_words(pgkeep):
    """A form pgkeep parses but does not run names itself in its own words, never a value."""
    got = _errors(pgkeep, [
        "ALTER JOB 1 OWNER TO someone",
        "alter job 1 owner to someone",
    ])
    assert got == [("0A000", "ALTER JOB ... OWNER TO is not supported by pgkeep yet")] * 2


def test_fraction_completed_is_float8_both_ways(pgkeep, tmp_path):
    coll = f"nodelocal://self/fid-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS fid_frac")
        conn.execute("CREATE DATABASE fid_frac")
        job_id = conn.execute(f"BACKUP DATABASE fid_frac INTO '{coll}'").fetchone()[0]
        direct = conn.execute(f"SHOW JOB {job_id}")
        assert [d.type_code for d in direct.description if d.name == "fraction_completed"] == [FLOAT8]
        via = conn.execute(f"SELECT fraction_completed FROM [SHOW JOB {job_id}]")
        assert [d.type_code for d in via.description] == [FLOAT8]
        via_jobs = conn.execute("SELECT fraction_completed FROM [SHOW JOBS] WHERE job_id = %s", (job_id,))
        assert [d.type_code for d in via_jobs.description] == [FLOAT8]
        assert via_jobs.fetchall() == [(1.0,)]
        conn.execute("DROP DATABASE fid_frac")

    async def attribute_types() -> list[str]:
        conn = await asyncpg.connect(pgkeep.dsn())
        try:
            out = []
            for q in (f"SHOW JOB {job_id}", f"SELECT * FROM [SHOW JOB {job_id}]"):
                stmt = await conn.prepare(q)
                out += [a.type.name for a in stmt.get_attributes() if a.name == "fraction_completed"]
            return out
        finally:
            await conn.close()
    assert asyncio.run(attribute_types()) == ["float8", "float8"]

    # psql prints what the server sends as text: the same through both paths, as PostgreSQL
    # prints a float8 (1, not 1.0).
    via_text = psql(pgkeep.dsn(), "-At", "-c",
                    f"SELECT fraction_completed FROM [SHOW JOB {job_id}]").stdout.strip()
    direct = psql(pgkeep.dsn(), "-At", "-c", f"SHOW JOB {job_id}").stdout.strip()
    direct_text = direct.split("|")[11]
    assert via_text == direct_text == "1"


def test_float8_text_matches_postgres(pg18_admin):
    values = [0.0, -0.0, 1.0, 0.5, 0.99, 1 / 3, 2 / 3, 1e-5, 0.0001, 123456789012345.0, 1e15,
              1.5e20, 1e100, -2.5e-7, 5e-324, 1.7976931348623157e308, 100.0, 0.1 + 0.2]
    for v in values + [float("nan"), float("inf"), float("-inf")]:
        upstream = pg18_admin.execute("SELECT %s::float8::text", (repr(v),)).fetchone()[0]
        assert float8_text(v) == upstream, v


def test_forms_pgkeep_does_not_run_answer_0a000(pgkeep):
    secret = "fidleak" + uuid.uuid4().hex[:6]
    coll = "nodelocal://self/fid-forms"
    got = _errors(pgkeep, [
        f"BACKUP VIRTUAL CLUSTER 2 INTO '{coll}'",
        f"BACKUP TENANT 2 INTO 's3://b/p?AWS_SECRET_ACCESS_KEY={secret}'",
        f"RESTORE VIRTUAL CLUSTER 2 FROM LATEST IN '{coll}' WITH virtual_cluster_name = 'vc2'",
        f"ALTER BACKUP LATEST IN 's3://b/p?AWS_SECRET_ACCESS_KEY={secret}' "
        f"ADD NEW_KMS = 'aws:///arn:{secret}?REGION=r' WITH OLD_KMS = 'aws:///arn:k0?REGION=r'",
        "CREATE SCHEDULE FOR CHANGEFEED INTO 'kafka://h' AS SELECT 1 RECURRING '@daily'",
        f"BACKUP INTO '{coll}' WITH OPTIONS (revision_history, detached = false)",
        f"BACKUP INTO '{coll}' WITH kms = ('aws:///{secret}?REGION=r', 'aws:///k2?REGION=r')",
        f"SHOW BACKUP FROM LATEST IN '{coll}' WITH encryption_passphrase = '{secret}'",
        "ALTER JOB 123 OWNER TO postgres",
        "SHOW CHANGEFEED JOBS",
        f"RESTORE DATABASE fid FROM LATEST IN '{coll}' WITH EXPERIMENTAL DEFERRED COPY",
        f"RESTORE DATABASE fid FROM LATEST IN '{coll}' WITH virtual_cluster_name = 'vc'",
    ])
    assert [state for state, _ in got] == ["0A000"] * len(got), got
    messages = [m for _, m in got]
    assert messages[0].startswith("BACKUP VIRTUAL CLUSTER is not supported by pgkeep")
    assert messages[1].startswith("BACKUP TENANT is not supported by pgkeep")
    assert messages[2].startswith("RESTORE VIRTUAL CLUSTER is not supported by pgkeep")
    assert messages[3] == "ALTER BACKUP ... ADD NEW_KMS is not supported by pgkeep yet"
    assert messages[4].startswith("CREATE SCHEDULE FOR CHANGEFEED is not supported by pgkeep")
    assert "revision_history" in messages[5]
    assert "encrypted backups" in messages[6] and "encrypted backups" in messages[7]
    assert messages[8] == "ALTER JOB ... OWNER TO is not supported by pgkeep yet"
    assert messages[9].startswith("SHOW CHANGEFEED JOBS is not supported by pgkeep")
    assert messages[10] == "RESTORE option experimental deferred copy is not supported by pgkeep"
    assert messages[11] == "RESTORE option virtual_cluster_name is not supported by pgkeep"
    assert secret not in " ".join(messages)
    assert secret not in pgkeep.log()


def test_every_option_spelling_is_accepted(pgkeep, tmp_path):
    """The spellings CockroachDB's grammar takes run (or fail for the data, not the syntax)."""
    coll = f"nodelocal://self/fid-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS fid_opts")
        conn.execute("DROP DATABASE IF EXISTS fid_opts2")
        conn.execute("CREATE DATABASE fid_opts")
        try:
            job = conn.execute(f"BACKUP DATABASE fid_opts INTO '{coll}' WITH detached = true").fetchone()[0]
            conn.execute(f"SHOW JOB WHEN COMPLETE {job}")
            row = conn.execute(f"BACKUP DATABASE fid_opts INTO '{coll}-2' "
                               "WITH OPTIONS (detached = false)").fetchone()
            assert row[1] == "succeeded"
            row = conn.execute(f"RESTORE DATABASE fid_opts FROM LATEST IN '{coll}' "
                               "WITH detached = FALSE, new_db_name = fid_opts2").fetchone()
            assert row[1] == "succeeded"
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'fid_opts2'").fetchone() == (1,)
        finally:
            conn.execute("DROP DATABASE IF EXISTS fid_opts2")
            conn.execute("DROP DATABASE IF EXISTS fid_opts")
