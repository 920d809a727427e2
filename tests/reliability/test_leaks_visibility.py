"""Issue 12, point 14 (a) and (b): what a non-admin could learn about other users' external
connections and jobs. SHOW EXTERNAL CONNECTIONS listed every connection; SHOW CREATE EXTERNAL
CONNECTION of another user's connection was refused with 42501 where an unknown one is 42704;
SHOW JOB of another user's job was an empty result where an unknown id is 42704, and PAUSE,
RESUME and CANCEL JOB told the two apart (42501 vs 42704). Now a user sees the connections it
may use and its own jobs, and whatever it may not see is answered exactly as the unknown."""
from __future__ import annotations

import threading

import psycopg
import pytest

from tests.e2e.helpers import wait_for

USER, PASSWORD = "md5user", "md5 secret"   # a non-admin of tests/support/clusters.USERS
UNKNOWN_JOB = 4242424242


def _run(pgkeep, sql: str, user: str = "postgres", password: str | None = None):
    with psycopg.connect(pgkeep.dsn(user=user, password=password), autocommit=True,
                         connect_timeout=10) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else None


def _as_user(pgkeep, sql: str):
    return _run(pgkeep, sql, USER, PASSWORD)


def _error(pgkeep, sql: str) -> tuple:
    """The fields of the error a non-admin gets."""
    with pytest.raises(psycopg.Error) as info:
        _as_user(pgkeep, sql)
    d = info.value.diag
    return (d.sqlstate, d.message_primary, d.message_detail, d.message_hint, d.severity)


@pytest.fixture
def connections(pgkeep, pg18_admin):
    """An admin's connection, and one owned by the non-admin (written to the catalog directly:
    only admins may create connections today)."""
    _run(pgkeep, "CREATE EXTERNAL CONNECTION IF NOT EXISTS leak_admins AS 'nodelocal://self/leak-admins'")
    pg18_admin.execute("INSERT INTO pgkeep.external_connections(name, uri, connection_type, owner) "
                       "VALUES ('leak_users', 'nodelocal://self/leak-users', 'STORAGE', %s) "
                       "ON CONFLICT (name) DO NOTHING", (USER,))
    yield
    _run(pgkeep, "DROP EXTERNAL CONNECTION leak_admins")
    pg18_admin.execute("DELETE FROM pgkeep.external_connections WHERE name = 'leak_users'")


def test_show_external_connections_lists_other_users_connections(pgkeep, connections):
    """SHOW EXTERNAL CONNECTIONS showed a non-admin every connection, its location included."""
    mine = [r[0] for r in _as_user(pgkeep, "SHOW EXTERNAL CONNECTIONS")]
    assert "leak_users" in mine and "leak_admins" not in mine
    assert [r[0] for r in _as_user(pgkeep, "SHOW CREATE ALL EXTERNAL CONNECTIONS")] == mine
    assert _as_user(pgkeep, "SHOW EXTERNAL CONNECTION leak_users")[0][0] == "leak_users"
    admin_sees = [r[0] for r in _run(pgkeep, "SHOW EXTERNAL CONNECTIONS")]
    assert {"leak_admins", "leak_users"} <= set(admin_sees)


def test_show_external_connection_of_other_user_differs_from_unknown(pgkeep, connections):
    """SHOW [CREATE] EXTERNAL CONNECTION of another user's connection answered 42501 (or its
    row), an unknown name 42704: a non-admin could probe for names."""
    for form in ("SHOW EXTERNAL CONNECTION {}", "SHOW CREATE EXTERNAL CONNECTION {}"):
        hidden = _error(pgkeep, form.format("leak_admins"))
        unknown = _error(pgkeep, form.format("leak_nothing"))
        assert hidden[0] == unknown[0] == "42704", (hidden, unknown)
        assert hidden[1:] == tuple(u.replace("leak_nothing", "leak_admins") if u else u
                                   for u in unknown[1:]), (hidden, unknown)
    assert "nodelocal://self/leak-users" in _as_user(
        pgkeep, "SHOW CREATE EXTERNAL CONNECTION leak_users")[0][1]


@pytest.fixture
def admins_job(pgkeep, pg18, pg18_admin):
    """A BACKUP job of the admin that stays running while the test runs: a lock held on its
    table holds it up."""
    pg18_admin.execute("DROP DATABASE IF EXISTS leakjobs")
    pg18_admin.execute("CREATE DATABASE leakjobs")
    with psycopg.connect(pg18.dsn("leakjobs"), autocommit=True, connect_timeout=10) as blocker:
        blocker.execute("CREATE TABLE t AS SELECT 1 AS id")
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        job_id = _run(pgkeep, "BACKUP DATABASE leakjobs INTO 'nodelocal://self/leak-jobs' "
                              "WITH DETACHED")[0][0]
        assert wait_for(lambda: _run(pgkeep, f"SHOW JOB {job_id}")[0][5] == "running", 30)
        yield job_id
        _run(pgkeep, f"CANCEL JOB {job_id}")
        blocker.execute("ROLLBACK")
    assert wait_for(lambda: _run(pgkeep, f"SHOW JOB {job_id}")[0][5] in ("canceled", "succeeded"), 30)


def _answer(pgkeep, sql: str):
    try:
        return ("rows", _as_user(pgkeep, sql))
    except psycopg.Error as e:
        d = e.diag
        return ("error", d.sqlstate, d.message_primary, d.message_detail, d.message_hint)


def test_show_job_of_other_user_differs_from_unknown_id(pgkeep, admins_job):
    """SHOW JOB of the admin's job gave an empty result, of an unknown id 42704."""
    for form in ("SHOW JOB {}", "SHOW JOBS SELECT {}"):
        hidden = _answer(pgkeep, form.format(admins_job))
        unknown = _answer(pgkeep, form.format(UNKNOWN_JOB))
        assert hidden == unknown == ("rows", []), (form, hidden, unknown)
    assert all(r[0] != admins_job for r in _as_user(pgkeep, "SHOW JOBS"))


def test_control_job_of_other_user_differs_from_unknown_id(pgkeep, admins_job):
    """PAUSE/RESUME/CANCEL JOB of the admin's job gave 42501, of an unknown id 42704."""
    for verb in ("PAUSE", "RESUME", "CANCEL"):
        hidden = _answer(pgkeep, f"{verb} JOB {admins_job}")
        unknown = _answer(pgkeep, f"{verb} JOB {UNKNOWN_JOB}")
        assert hidden[:2] == unknown[:2] == ("error", "42704"), (verb, hidden, unknown)
        assert hidden[2:] == tuple(u.replace(str(UNKNOWN_JOB), str(admins_job)) if u else u
                                   for u in unknown[2:]), (verb, hidden, unknown)
        bulk = _answer(pgkeep, f"{verb} JOBS SELECT {admins_job}")
        assert bulk[:2] == ("error", "42704"), bulk
    assert _answer(pgkeep, "PAUSE ALL BACKUP JOBS") == ("rows", None), \
        "ALL acts on the user's own jobs only, not failing on others'"
    assert _run(pgkeep, f"SHOW JOB {admins_job}")[0][5] == "running", "the job was left alone"


def test_show_job_when_complete_waits_for_other_users_job(pgkeep, admins_job):
    """SHOW JOB WHEN COMPLETE of another user's unfinished job blocked until that job ended,
    telling the user it exists (an unknown id returns at once)."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(
        _answer(pgkeep, f"SHOW JOB WHEN COMPLETE {admins_job}")), daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive() and result == [("rows", [])], result
