"""CancelRequest through pgkeep: clients get BackendKeyData with the upstream backend's real pid
and pgkeep's own secret, mapped to the upstream's; a cancel with the right key stops the running
upstream query with 57014; a wrong or unknown key does nothing."""
from __future__ import annotations

import asyncio
import struct
import threading
import time

import asyncpg
import psycopg
import pytest

from proxy.wire import messages as m

from .helpers import assert_alive, wait_for
from .rawpg import RawConn, cancel_request, error_fields, query, read_all_until_eof, startup_packet

pytestmark = pytest.mark.timeout(60)


def _connect(proc):
    return psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10)


def _active_sleeps(admin, upstream_pid: int) -> int:
    return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active' "
                         "AND query LIKE 'SELECT pg_sleep%%'", (upstream_pid,)).fetchone()[0]


def _send_raw(port: int, data: bytes) -> bytes:
    """Open a connection, send `data`, return what comes back until the server closes."""
    with RawConn(port) as c:
        c.send(data)
        return read_all_until_eof(c.sock, timeout=5)


def test_psycopg_cancel_running_query(pgkeep, pg18_admin):
    with _connect(pgkeep) as conn:
        upstream_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        cancelled_at = []

        def cancel_when_running():
            wait_for(lambda: _active_sleeps(pg18_admin, upstream_pid), 10)
            cancelled_at.append(time.monotonic())
            conn.cancel_safe(timeout=5)

        t = threading.Thread(target=cancel_when_running)
        start = time.monotonic()
        t.start()
        with pytest.raises(psycopg.errors.QueryCanceled) as err:
            conn.execute("SELECT pg_sleep(30)")
        t.join(10)
        assert err.value.sqlstate == "57014"
        assert "canceling statement due to user request" in str(err.value)
        assert cancelled_at and time.monotonic() - cancelled_at[0] < 3
        assert time.monotonic() - start < 10
        # the same session, same upstream backend, goes on
        assert conn.execute("SELECT pg_backend_pid(), 'usable'").fetchone() == (upstream_pid, "usable")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert_alive(pgkeep)


def test_psycopg_cancel_in_transaction_leaves_it_failed(pgkeep, pg18_admin):
    with _connect(pgkeep) as conn:
        upstream_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.execute("BEGIN")
        t = threading.Thread(target=lambda: (wait_for(lambda: _active_sleeps(pg18_admin, upstream_pid), 10),
                                             conn.cancel_safe(timeout=5)))
        t.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        t.join(10)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_asyncpg_timeout_cancels(pgkeep, pg18_admin):
    async def main():
        conn = await asyncpg.connect(pgkeep.dsn(), timeout=10)
        try:
            upstream_pid = await conn.fetchval("SELECT pg_backend_pid()")
            start = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetch("SELECT pg_sleep(30)", timeout=0.5)
            assert time.monotonic() - start < 3
            # usable at once, and the upstream query is gone (asyncpg sent a CancelRequest)
            assert await asyncio.wait_for(conn.fetchval("SELECT 'usable'"), 5) == "usable"
            assert await conn.fetchval("SELECT pg_backend_pid()") == upstream_pid
            return upstream_pid
        finally:
            await conn.close()

    upstream_pid = asyncio.run(asyncio.wait_for(main(), 20))
    assert _active_sleeps(pg18_admin, upstream_pid) == 0


def test_asyncpg_prepared_statement_timeout_cancels(pgkeep):
    async def main():
        conn = await asyncpg.connect(pgkeep.dsn(), timeout=10)
        try:
            stmt = await conn.prepare("SELECT pg_sleep($1::float8), 'done'")
            with pytest.raises(asyncio.TimeoutError):
                await stmt.fetchrow(30, timeout=0.5)
            row = await asyncio.wait_for(stmt.fetchrow(0), 5)
            assert tuple(row) == (None, "done")  # void decodes as None
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_wrong_secret_does_not_cancel(pgkeep):
    with _connect(pgkeep) as conn:
        pid = conn.info.backend_pid
        result = []

        def run():
            try:
                result.append(conn.execute("SELECT pg_sleep(1.5), 7").fetchone())
            except Exception as e:  # noqa: BLE001
                result.append(e)

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.3)
        for secret in (b"\0\0\0\0", b"\xff\xff\xff\xff", b"\x01\x02\x03\x04", b"wrongsecret-32-bytes-long-012345"):
            assert _send_raw(pgkeep.port, cancel_request(pid, secret)) == b""
        # an unknown pid does nothing either
        assert _send_raw(pgkeep.port, cancel_request((pid + 1) & 0x7FFFFFFF, b"\0\0\0\0")) == b""
        t.join(10)
        assert result == [("", 7)]
    assert_alive(pgkeep)


def test_upstream_secret_is_not_what_the_client_gets(pgkeep):
    """The pid is the upstream's, the secret pgkeep's own: a cancel with the right pid and any
    other secret does nothing (the same holds for a guessed one: 32 random bits, as PostgreSQL)."""
    with RawConn(pgkeep.port) as c, RawConn(pgkeep.port) as other:
        c.login()
        other.login()
        upstream_pid = int(c.scalar("SELECT pg_backend_pid()"))
        assert c.key[0] == upstream_pid and len(c.key[1]) == 4
        c.send(query("SELECT pg_sleep(1), 'not cancelled'"))
        time.sleep(0.3)
        # another client's secret with this pid, and the secret with the other client's pid
        assert _send_raw(pgkeep.port, cancel_request(upstream_pid, other.key[1])) == b""
        assert _send_raw(pgkeep.port, cancel_request(other.key[0], c.key[1])) == b""
        msgs = c.read_until(b"Z")
        assert [k for k, _ in msgs] == [b"T", b"D", b"C", b"Z"]


def test_raw_cancel_with_right_key(pgkeep):
    with RawConn(pgkeep.port) as c:
        c.login()
        pid, secret = c.key
        c.send(query("SELECT pg_sleep(30)"))
        time.sleep(0.3)
        start = time.monotonic()
        assert _send_raw(pgkeep.port, cancel_request(pid, secret)) == b""
        msgs = c.read_until(b"Z")
        assert time.monotonic() - start < 3
        errors = [error_fields(body) for kind, body in msgs if kind == b"E"]
        assert [e["C"] for e in errors] == ["57014"]
        assert msgs[-1] == (b"Z", b"I")
        assert c.scalar("SELECT 'after cancel'") == "after cancel"


def test_cancel_of_idle_session_is_harmless(pgkeep):
    with RawConn(pgkeep.port) as c:
        c.login()
        assert _send_raw(pgkeep.port, cancel_request(*c.key)) == b""
        time.sleep(0.2)
        assert c.scalar("SELECT 'fine'") == "fine"


def test_client_sees_the_upstreams_real_pid(pgkeep, pg18_admin):
    """BackendKeyData carries the upstream backend's pid: what psycopg and asyncpg report is
    pg_backend_pid(), so pg_stat_activity, pg_cancel_backend and pg_terminate_backend on it
    reach the session's backend."""
    with _connect(pgkeep) as conn:
        pid = conn.info.backend_pid
        assert conn.execute("SELECT pg_backend_pid()").fetchone() == (pid,)
        assert pg18_admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                  (pid,)).fetchone() == (1,)
        t = threading.Thread(target=lambda: (wait_for(lambda: _active_sleeps(pg18_admin, pid), 10),
                                             pg18_admin.execute("SELECT pg_cancel_backend(%s)", (pid,))))
        t.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        t.join(10)
        assert conn.execute("SELECT 'usable'").fetchone() == ("usable",)
        assert pg18_admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")

    async def main():
        conn = await asyncpg.connect(pgkeep.dsn(), timeout=10)
        try:
            return conn.get_server_pid(), await conn.fetchval("SELECT pg_backend_pid()")
        finally:
            await conn.close()

    apg_client_pid, apg_upstream_pid = asyncio.run(asyncio.wait_for(main(), 20))
    assert apg_client_pid == apg_upstream_pid
    assert_alive(pgkeep)


def test_notify_to_self_names_the_listeners_own_pid(pgkeep):
    """NotificationResponse's sender pid is the upstream's: a session that notifies itself sees
    its own backend pid, as libpq clients use to ignore their own notifications."""
    with _connect(pgkeep) as conn:
        conn.execute("LISTEN pgkeep_self")
        conn.execute("NOTIFY pgkeep_self, 'hello'")
        note = next(conn.notifies(timeout=5))
        assert (note.channel, note.payload, note.pid) == ("pgkeep_self", "hello", conn.info.backend_pid)


def test_protocol_3_2_gets_a_long_secret_that_cancels(pgkeep):
    """A client that negotiates protocol 3.2 gets a secret as long as PostgreSQL 18's (32 bytes),
    and a CancelRequest carrying it stops the running query; the same secret cut to 4 bytes
    does nothing."""
    with RawConn(pgkeep.port) as c:
        c.send(startup_packet(protocol=m.PROTOCOL_3_2))
        for kind, body in c.read_until(b"Z"):
            assert kind != b"E", error_fields(body)
            if kind == b"K":
                c.key = (struct.unpack("!I", body[:4])[0], body[4:])
        pid, secret = c.key
        assert len(secret) == 32 and pid == int(c.scalar("SELECT pg_backend_pid()"))
        c.send(query("SELECT pg_sleep(30)"))
        time.sleep(0.3)
        assert _send_raw(pgkeep.port, cancel_request(pid, secret[:4])) == b""
        time.sleep(0.3)
        assert _send_raw(pgkeep.port, cancel_request(pid, secret)) == b""
        msgs = c.read_until(b"Z")
        assert [error_fields(body)["C"] for kind, body in msgs if kind == b"E"] == ["57014"]


def test_every_client_gets_a_distinct_key(pgkeep):
    conns = [RawConn(pgkeep.port).login() for _ in range(10)]
    try:
        keys = [c.key for c in conns]
        assert all(k is not None and len(k[1]) >= 4 for k in keys)
        assert len({k[0] for k in keys}) == 10
        assert len({k[1] for k in keys}) == 10
    finally:
        for c in conns:
            c.close()


def test_cancel_request_with_bad_length_is_refused(pgkeep):
    """A CancelRequest shorter than 16 bytes: 08P01 or a plain close, never a crash."""
    data = _send_raw(pgkeep.port, struct.pack("!ii", 12, 80877102) + b"\0\0\0\1")
    if data:
        assert data[:1] == b"E" and error_fields(data[5:])["C"] == "08P01"
    assert_alive(pgkeep)
