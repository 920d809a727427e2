"""Failures and limits: the upstream dies, the network to it is cut, the client vanishes, and
startup/message/connection limits are hit. Every case ends in an ErrorResponse or a clean
close for that one client, never a crash: pgkeep keeps serving everybody else."""
from __future__ import annotations

import socket
import struct
import threading
import time

import psycopg
import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.pgkeep import PgkeepProcess

from .helpers import assert_alive, wait_for
from .rawpg import RawConn, error_fields, query, read_all_until_eof, startup_packet

pytestmark = pytest.mark.timeout(60)


def _connect(proc, **kw):
    return psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10, **kw)


def _still_serves(proc) -> None:
    with _connect(proc) as conn:
        assert conn.execute("SELECT 'still serving'").fetchone() == ("still serving",)
    assert_alive(proc)


def _backend_exists(admin, pid: int) -> bool:
    return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                         (pid,)).fetchone()[0] == 1


# ---- the upstream dies -------------------------------------------------------------------------

def test_terminated_upstream_backend_raw(pgkeep, pg18_admin):
    """Exact bytes: the upstream's own FATAL 57P01 is relayed, then pgkeep closes the client."""
    with RawConn(pgkeep.port) as victim, RawConn(pgkeep.port) as bystander:
        victim.login()
        bystander.login()
        upstream_pid = int(victim.scalar("SELECT pg_backend_pid()"))
        assert pg18_admin.execute("SELECT pg_terminate_backend(%s)", (upstream_pid,)).fetchone() == (True,)
        kind, body = victim.read()
        assert kind == b"E"
        fields = error_fields(body)
        assert (fields["S"], fields["C"]) == ("FATAL", "57P01")
        assert victim.at_eof()
        assert bystander.scalar("SELECT 'bystander ok'") == "bystander ok"
    _still_serves(pgkeep)


def test_terminated_upstream_backend_psycopg(pgkeep, pg18_admin):
    with _connect(pgkeep) as victim, _connect(pgkeep) as bystander:
        upstream_pid = victim.execute("SELECT pg_backend_pid()").fetchone()[0]
        pg18_admin.execute("SELECT pg_terminate_backend(%s)", (upstream_pid,))
        wait_for(lambda: not _backend_exists(pg18_admin, upstream_pid), 5)
        with pytest.raises(psycopg.OperationalError) as err:
            victim.execute("SELECT 1")
        assert (err.value.sqlstate in ("57P01", "08006")
                or "terminating connection due to administrator command" in str(err.value)
                or "server closed the connection" in str(err.value)), err.value
        assert victim.closed or victim.broken
        assert bystander.execute("SELECT 2").fetchone() == (2,)
    _still_serves(pgkeep)


def test_upstream_terminated_mid_query(pgkeep, pg18_admin):
    with _connect(pgkeep) as victim:
        upstream_pid = victim.execute("SELECT pg_backend_pid()").fetchone()[0]

        def kill():
            wait_for(lambda: pg18_admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active'",
                (upstream_pid,)).fetchone()[0], 10)
            pg18_admin.execute("SELECT pg_terminate_backend(%s)", (upstream_pid,))

        t = threading.Thread(target=kill)
        t.start()
        start = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as err:
            victim.execute("SELECT pg_sleep(30)")
        t.join(10)
        assert time.monotonic() - start < 5
        assert err.value.sqlstate == "57P01", err.value
    _still_serves(pgkeep)


@pytest.fixture
def faulty(workdir, pg18):
    """A pgkeep whose upstream goes through a FaultProxy relay."""
    relay = FaultProxy(pg18.port)
    proc = PgkeepProcess(workdir / f"pgkeep-fault-{relay.port}",
                         f"postgresql://postgres@127.0.0.1:{relay.port}/postgres?sslmode=disable").start()
    yield proc, relay
    proc.stop()
    relay.close()


def test_network_cut_mid_query(faulty):
    proc, relay = faulty
    with RawConn(proc.port) as c, _connect(proc) as conn:
        c.login()
        assert c.scalar("SELECT 1") == "1"
        c.send(query("SELECT pg_sleep(30)"))
        result = []

        def run():
            try:
                result.append(conn.execute("SELECT pg_sleep(30)").fetchone())
            except Exception as e:  # noqa: BLE001
                result.append(e)

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.5)
        start = time.monotonic()
        relay.cut()
        # raw client: pgkeep's own FATAL 08006, then the close
        kind, body = c.read()
        assert kind == b"E", (kind, body)
        fields = error_fields(body)
        assert (fields["S"], fields["C"]) == ("FATAL", "08006"), fields
        assert c.at_eof()
        t.join(10)
        assert time.monotonic() - start < 5
        assert len(result) == 1 and isinstance(result[0], psycopg.OperationalError), result
        assert result[0].sqlstate == "08006", result[0]
    assert_alive(proc)
    # the relay accepts again: a new connection through the same pgkeep works
    _still_serves(proc)


def test_network_cut_while_idle(faulty):
    proc, relay = faulty
    with _connect(proc) as conn, RawConn(proc.port) as raw:
        raw.login()
        assert conn.execute("SELECT 1").fetchone() == (1,)
        relay.cut()
        kind, body = raw.read()
        assert kind == b"E" and error_fields(body)["C"] == "08006"
        assert raw.at_eof()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    _still_serves(proc)


def test_intercepted_statement_works_after_network_cut(faulty):
    """The catalog's own connections went through the relay too: they recover."""
    proc, relay = faulty
    with _connect(proc) as conn:
        assert conn.execute("SHOW CLUSTER SETTING bulkio.backup.file_size").fetchone() is not None
    relay.cut()
    time.sleep(0.2)
    with _connect(proc) as conn:
        value = conn.execute("SHOW CLUSTER SETTING bulkio.backup.file_size").fetchone()
        assert value is not None and value[0].endswith("iB")
    assert_alive(proc)


# ---- the client vanishes -----------------------------------------------------------------------

def test_client_vanishes_upstream_closed(pgkeep, pg18_admin):
    c = RawConn(pgkeep.port).login()
    assert c.scalar("SELECT pg_sleep(0)") == ""
    upstream_pid = int(c.scalar("SELECT pg_backend_pid()"))
    assert _backend_exists(pg18_admin, upstream_pid)
    c.abort()
    assert wait_for(lambda: not _backend_exists(pg18_admin, upstream_pid), 5), (
        "the upstream backend outlived its client")
    _still_serves(pgkeep)


def test_client_vanishes_in_transaction_upstream_rolls_back(pgkeep, pg18_admin):
    pg18_admin.execute("DROP TABLE IF EXISTS vanish_t; CREATE TABLE vanish_t(a int)")
    c = RawConn(pgkeep.port).login()
    upstream_pid = int(c.scalar("SELECT pg_backend_pid()"))
    c.simple("BEGIN; INSERT INTO vanish_t VALUES (1)")
    c.abort()
    assert wait_for(lambda: not _backend_exists(pg18_admin, upstream_pid), 5)
    assert pg18_admin.execute("SELECT count(*) FROM vanish_t").fetchone() == (0,)


def test_client_closes_without_terminate(pgkeep, pg18_admin):
    """A FIN without a Terminate message closes the upstream too."""
    c = RawConn(pgkeep.port).login()
    upstream_pid = int(c.scalar("SELECT pg_backend_pid()"))
    c.sock.shutdown(socket.SHUT_WR)
    assert c.at_eof()
    c.close()
    assert wait_for(lambda: not _backend_exists(pg18_admin, upstream_pid), 5)


def test_client_vanishes_during_startup(pgkeep):
    for cut_at in (3, 8, 20):
        s = socket.create_connection(("127.0.0.1", pgkeep.port), timeout=5)
        s.sendall(startup_packet()[:cut_at])
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    _still_serves(pgkeep)


# ---- limits ------------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [10005, 20000, 1 << 30])  # PostgreSQL: 10000 after the word
def test_startup_packet_too_large(pgkeep, length):
    s = socket.create_connection(("127.0.0.1", pgkeep.port), timeout=5)
    try:
        packet = startup_packet(application_name="x" * 20000)
        s.sendall(struct.pack("!i", length) + packet[4:min(len(packet), length)])
        data = read_all_until_eof(s, timeout=5)
    finally:
        s.close()
    # As PostgreSQL: an invalid startup length is logged and the connection closed, no answer.
    assert data == b"", data
    _still_serves(pgkeep)


def test_startup_packet_at_limit_is_accepted(pgkeep):
    """10000 bytes exactly is still a valid startup packet (PostgreSQL's own limit)."""
    base = startup_packet(application_name="")
    pad = 10000 - len(base)
    packet = startup_packet(application_name="a" * pad)
    assert len(packet) == 10000
    with RawConn(pgkeep.port) as c:
        c.send(packet)
        msgs = c.read_until(b"Z")
        assert msgs[0] == (b"R", b"\0\0\0\0")


def test_startup_packet_garbage_protocol(pgkeep):
    s = socket.create_connection(("127.0.0.1", pgkeep.port), timeout=5)
    try:
        s.sendall(struct.pack("!ii", 16, 0x12345678) + b"user\0x\0\0\0")
        data = read_all_until_eof(s, timeout=5)
    finally:
        s.close()
    assert data[:1] == b"E"
    assert error_fields(data[5:])["C"] in ("0A000", "08P01")
    _still_serves(pgkeep)


@pytest.fixture(scope="module")
def limited(workdir, pg18):
    proc = PgkeepProcess(workdir / "pgkeep-limits", pg18.dsn(),
                         args=["--startup-timeout", "1", "--max-message-size", "4096",
                               "--max-connections", "2"]).start()
    yield proc
    proc.stop()


def test_startup_timeout(limited):
    s = socket.create_connection(("127.0.0.1", limited.port), timeout=5)
    start = time.monotonic()
    try:
        data = read_all_until_eof(s, timeout=5)
    finally:
        s.close()
    elapsed = time.monotonic() - start
    assert 0.8 <= elapsed < 3, elapsed
    assert data[:1] == b"E", data
    fields = error_fields(data[5:])
    assert (fields["S"], fields["C"]) == ("FATAL", "08P01")
    assert_alive(limited)


def test_startup_timeout_with_partial_packet(limited):
    s = socket.create_connection(("127.0.0.1", limited.port), timeout=5)
    start = time.monotonic()
    try:
        s.sendall(startup_packet()[:10])
        data = read_all_until_eof(s, timeout=5)
    finally:
        s.close()
    assert 0.8 <= time.monotonic() - start < 3
    assert data[:1] == b"E" and error_fields(data[5:])["C"] == "08P01"


def test_startup_timeout_does_not_hit_logged_in_sessions(limited):
    with _connect(limited) as conn:
        time.sleep(1.5)
        assert conn.execute("SELECT 'alive after the startup timeout'").fetchone() == (
            "alive after the startup timeout",)


def test_max_message_size(limited):
    with RawConn(limited.port) as big, _connect(limited) as other:
        big.login()
        assert big.scalar("SELECT '" + "y" * 3000 + "'") == "y" * 3000  # under the limit
        big.send(query("SELECT '" + "x" * 10000 + "'"))
        kind, body = big.read()
        assert kind == b"E", (kind, body)
        fields = error_fields(body)
        assert (fields["S"], fields["C"]) == ("FATAL", "08P01"), fields
        assert big.at_eof()
        assert other.execute("SELECT 'other ok'").fetchone() == ("other ok",)
    assert_alive(limited)


def test_max_message_size_psycopg(limited):
    with _connect(limited) as conn:
        with pytest.raises(psycopg.OperationalError) as err:
            conn.execute("SELECT %s::text", ("x" * 10000,))
        assert err.value.sqlstate == "08P01", err.value
        assert "exceeds the maximum" in str(err.value)
        assert conn.closed or conn.broken
    _still_serves(limited)


def test_max_message_size_header_only(limited):
    """The length word alone is enough to refuse: no need to wait for 1 GB to arrive."""
    with RawConn(limited.port) as c:
        c.login()
        c.send(b"Q" + struct.pack("!i", 1 << 30))
        kind, body = c.read()
        assert kind == b"E" and error_fields(body)["C"] == "08P01"
        assert c.at_eof()


def test_max_connections(limited):
    a = _connect(limited)
    b = _connect(limited)
    try:
        with RawConn(limited.port) as third:
            third.send(startup_packet())
            kind, body = third.read()
            assert kind == b"E", (kind, body)
            fields = error_fields(body)
            assert (fields["S"], fields["C"]) == ("FATAL", "53300"), fields
            assert third.at_eof()
        with pytest.raises(psycopg.OperationalError) as err:
            _connect(limited)
        assert "too many clients" in str(err.value)
        assert a.execute("SELECT 'a'").fetchone() == ("a",)
        a.close()

        def try_connect():
            try:
                with _connect(limited) as c:
                    return c.execute("SELECT 'new one'").fetchone()
            except psycopg.OperationalError:
                return None

        assert wait_for(try_connect, 3, interval=0.1) == ("new one",)
        assert b.execute("SELECT 'b'").fetchone() == ("b",)
    finally:
        a.close()
        b.close()
    assert_alive(limited)


def test_failed_logins_do_not_leak_connection_slots(limited):
    for _ in range(5):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(limited.dsn(user="md5user", password="wrong"), connect_timeout=5)
    for _ in range(5):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(limited.dsn(database="no_such_database_x"), connect_timeout=5)

    def two_at_once():
        try:
            with _connect(limited) as x, _connect(limited) as y:
                return x.execute("SELECT 1").fetchone() == y.execute("SELECT 1").fetchone() == (1,)
        except psycopg.OperationalError:
            return False

    assert wait_for(two_at_once, 3, interval=0.1)


def test_cancel_requests_do_not_use_connection_slots(limited):
    from .rawpg import cancel_request
    with _connect(limited) as a, _connect(limited) as b:
        for _ in range(3):
            with RawConn(limited.port) as c:
                c.send(cancel_request(a.info.backend_pid, b"\0\0\0\0"))
                assert read_all_until_eof(c.sock) == b""
        assert a.execute("SELECT 1").fetchone() == (1,)
        assert b.execute("SELECT 1").fetchone() == (1,)
