"""Authentication and startup relayed end to end: trust, password, md5 and SCRAM users log in
through pgkeep (which knows no password), wrong passwords fail with 28P01, and startup
parameters and ParameterStatus travel both ways. Against PostgreSQL 18 and 15."""
from __future__ import annotations

import asyncio
import hashlib
import struct

import asyncpg
import psycopg
import pytest

from tests.support.clusters import USERS
from proxy.wire import messages as m
from tests.support.pgkeep import PgkeepProcess

from .helpers import assert_alive, psql
from .rawpg import RawConn, error_fields, startup_packet

pytestmark = pytest.mark.timeout(60)

LOGINS = [("postgres", None)] + [(user, pw) for user, (pw, _method) in USERS.items()]
PASSWORD_USERS = list(USERS)


@pytest.fixture(scope="module")
def pgkeep15(workdir, pg15):
    proc = PgkeepProcess(workdir / "pgkeep-auth15", pg15.dsn()).start()
    yield proc
    proc.stop()


@pytest.fixture(params=["pg18", "pg15"])
def front(request):
    """(pgkeep process, expected server major version) for each upstream version."""
    if request.param == "pg18":
        return request.getfixturevalue("pgkeep"), 18
    return request.getfixturevalue("pgkeep15"), 15


def _conninfo(proc, user, password, **extra):
    parts = {"host": "127.0.0.1", "port": proc.port, "user": user, "dbname": "postgres",
             "connect_timeout": 10, **extra}
    if password is not None:
        parts["password"] = password
    return " ".join(f"{k}='{v}'" for k, v in parts.items())


@pytest.mark.parametrize("user,password", LOGINS, ids=[u for u, _ in LOGINS])
def test_psycopg_login(front, user, password):
    proc, major = front
    with psycopg.connect(_conninfo(proc, user, password), autocommit=True) as conn:
        assert conn.execute("SELECT current_user, session_user").fetchone() == (user, user)
        assert conn.info.server_version // 10000 == major
    assert_alive(proc)


@pytest.mark.parametrize("user,password", LOGINS, ids=[u for u, _ in LOGINS])
def test_asyncpg_login(front, user, password):
    proc, major = front

    async def main():
        conn = await asyncpg.connect(host="127.0.0.1", port=proc.port, user=user, password=password,
                                     database="postgres", timeout=10, ssl=False)
        try:
            assert await conn.fetchval("SELECT current_user") == user
            assert conn.get_server_version().major == major
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(main(), 20))


@pytest.mark.parametrize("user", PASSWORD_USERS)
def test_wrong_password_psycopg(front, user):
    proc, _ = front
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(_conninfo(proc, user, "wrong password"))
    assert f'password authentication failed for user "{user}"' in str(info.value)
    # (libpq keeps no SQLSTATE for connection failures; asyncpg and the raw test check 28P01)
    assert_alive(proc)


@pytest.mark.parametrize("user", PASSWORD_USERS)
def test_wrong_password_asyncpg(front, user):
    proc, _ = front

    async def main():
        with pytest.raises(asyncpg.InvalidPasswordError) as info:
            await asyncpg.connect(host="127.0.0.1", port=proc.port, user=user, password="wrong",
                                  database="postgres", timeout=10, ssl=False)
        assert info.value.sqlstate == "28P01"
        assert f'password authentication failed for user "{user}"' in info.value.args[0]

    asyncio.run(asyncio.wait_for(main(), 20))
    # and the right password still works right after
    with psycopg.connect(_conninfo(proc, user, USERS[user][0]), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (user,)


@pytest.mark.parametrize("user", PASSWORD_USERS)
def test_wrong_password_psql(front, user):
    proc, _ = front
    r = psql(_conninfo(proc, user, "wrong"), "-c", "SELECT 1", check=False,
             env={"PGOPTIONS": "", "PGPASSWORD": ""})
    assert r.returncode == 2
    assert f'password authentication failed for user "{user}"' in r.stderr


@pytest.mark.parametrize("user", ["pwuser", "md5user"])
def test_wrong_password_raw_error_response(front, user):
    """The exact bytes: the upstream's FATAL 28P01 ErrorResponse, then the connection closes."""
    proc, _ = front
    with RawConn(proc.port) as c:
        c.send(startup_packet(user, "postgres"))
        kind, body = c.read()
        assert kind == b"R"
        code = struct.unpack("!i", body[:4])[0]
        if user == "pwuser":
            assert code == 3  # AuthenticationCleartextPassword
            c.send(m.frame(b"p", b"wrong\0"))
        else:
            assert code == 5  # AuthenticationMD5Password
            salt = body[4:8]
            inner = hashlib.md5(b"wrong" + user.encode()).hexdigest().encode()
            c.send(m.frame(b"p", b"md5" + hashlib.md5(inner + salt).hexdigest().encode() + b"\0"))
        kind, body = c.read()
        assert kind == b"E"
        fields = error_fields(body)
        assert (fields["S"], fields["C"]) == ("FATAL", "28P01")
        assert c.at_eof()
    assert_alive(proc)


def test_scram_offers_no_plus_mechanism(front):
    proc, _ = front
    with RawConn(proc.port) as c:
        c.send(startup_packet("scramuser", "postgres"))
        kind, body = c.read()
        assert kind == b"R" and struct.unpack("!i", body[:4])[0] == 10  # AuthenticationSASL
        mechanisms = [x for x in body[4:].split(b"\0") if x]
        assert mechanisms == [b"SCRAM-SHA-256"]


def test_missing_password_is_refused(front):
    proc, _ = front
    r = psql(_conninfo(proc, "scramuser", None), "-w", "-c", "SELECT 1", check=False,
             env={"PGPASSWORD": ""})
    assert r.returncode == 2
    assert "password" in r.stderr


def test_startup_parameters_relayed(front):
    proc, _ = front
    info = _conninfo(proc, "postgres", None, application_name="pgkeep-auth-test",
                     options="-c search_path=auth_schema,public -c work_mem=3MB")
    with psycopg.connect(info, autocommit=True) as conn:
        assert conn.execute("SELECT current_setting('application_name')").fetchone() == (
            "pgkeep-auth-test",)
        assert conn.execute(
            "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone() == ("pgkeep-auth-test",)
        assert conn.execute("SHOW search_path").fetchone() == ("auth_schema,public",)
        assert conn.execute("SHOW work_mem").fetchone() == ("3MB",)


def test_database_selected(front, request):
    proc, _ = front
    upstream = request.getfixturevalue("pg18" if proc is request.getfixturevalue("pgkeep") else "pg15")
    upstream.psql("DROP DATABASE IF EXISTS authdb")
    upstream.psql("CREATE DATABASE authdb")
    with psycopg.connect(_conninfo(proc, "scramuser", USERS["scramuser"][0], dbname="authdb"),
                         autocommit=True) as conn:
        assert conn.execute("SELECT current_database(), current_user").fetchone() == (
            "authdb", "scramuser")

    async def main():
        conn = await asyncpg.connect(host="127.0.0.1", port=proc.port, user="md5user",
                                     password=USERS["md5user"][0], database="authdb", timeout=10,
                                     ssl=False)
        try:
            assert await conn.fetchval("SELECT current_database()") == "authdb"
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(main(), 20))
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(_conninfo(proc, "postgres", None, dbname="no_such_db_x"))
    assert 'database "no_such_db_x" does not exist' in str(err.value)


def test_parameter_status_relayed(front):
    proc, major = front
    with psycopg.connect(_conninfo(proc, "postgres", None, application_name="ps-test"),
                         autocommit=True) as conn:
        assert conn.info.parameter_status("application_name") == "ps-test"
        assert conn.info.parameter_status("server_version").split(".")[0] == str(major)
        assert conn.info.parameter_status("server_encoding") == "UTF8"
        assert conn.info.parameter_status("client_encoding") == "UTF8"
        # ParameterStatus sent later, in the middle of a session, is relayed too
        conn.execute("SET application_name = 'changed-later'")
        assert conn.info.parameter_status("application_name") == "changed-later"
        conn.execute("SET TimeZone = 'Asia/Tokyo'")
        assert conn.info.parameter_status("TimeZone") == "Asia/Tokyo"

    async def main():
        conn = await asyncpg.connect(host="127.0.0.1", port=proc.port, user="postgres",
                                     database="postgres", timeout=10, ssl=False,
                                     server_settings={"application_name": "apg-ps"})
        try:
            assert conn.get_settings().application_name == "apg-ps"
            assert conn.get_settings().server_version.split(".")[0] == str(major)
            assert await conn.fetchval("SELECT current_setting('application_name')") == "apg-ps"
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_psql_login_matrix(front):
    proc, major = front
    for user, password in LOGINS:
        out = psql(_conninfo(proc, user, password), "-qAt", "-c",
                   "SELECT current_user || ' ' || current_setting('server_version_num')").stdout
        name, version = out.split()
        assert name == user and int(version) // 10000 == major
