"""Issue 12, point 13: unauthenticated clients held `--max-connections` slots until the upstream's
authentication timeout (60 s), so a few sockets stopped mid-login locked everyone out. Want:
`--client-login-timeout` (as PgBouncer's client_login_timeout) closes them and frees the slots."""
from __future__ import annotations

import socket
import ssl
import struct
import time

import psycopg
import pytest

from proxy.wire import messages as m
from tests.e2e.rawpg import error_fields, read_all_until_eof, ssl_request, startup_packet
from tests.support.pgkeep import PgkeepProcess
from tests.support.tls import make_cert

LOGIN_TIMEOUT = 1.0
MARGIN = 6.0  # a loaded machine


@pytest.fixture(scope="module")
def cert(workdir):
    return make_cert(workdir / "login-timeout-cert")


@pytest.fixture
def limited(workdir, pg18, cert):
    proc = PgkeepProcess(workdir / "pgkeep-login-timeout", pg18.dsn(),
                         args=["--max-connections", "3",
                               "--client-login-timeout", str(LOGIN_TIMEOUT),
                               "--tls-cert", str(cert[0]), "--tls-key", str(cert[1])]).start()
    yield proc
    proc.stop()


def _read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    head = b""
    while len(head) < 5:
        chunk = sock.recv(5 - len(head))
        assert chunk, "closed"
        head += chunk
    (length,) = struct.unpack("!i", head[1:5])
    body = b""
    while len(body) < length - 4:
        chunk = sock.recv(length - 4 - len(body))
        assert chunk, "closed"
        body += chunk
    return head[:1], body


def _stop_mid_scram(port: int, tls: ssl.SSLContext | None = None) -> socket.socket:
    """Start a SCRAM login and stop after the server's first message: slot taken, never done."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls is not None:
        s.sendall(ssl_request())
        assert s.recv(1) == b"S"
        s = tls.wrap_socket(s, server_hostname="localhost")
    s.sendall(startup_packet("scramuser", "postgres"))
    kind, body = _read_message(s)
    assert kind == b"R" and struct.unpack("!i", body[:4])[0] == 10, (kind, body)  # SASL
    first = b"n,,n=,r=pgkeeptestnonce0123456789"
    s.sendall(m.frame(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
    kind, body = _read_message(s)
    assert kind == b"R" and struct.unpack("!i", body[:4])[0] == 11, (kind, body)  # continue
    return s


def _login(proc: PgkeepProcess) -> None:
    with psycopg.connect(proc.dsn(), connect_timeout=5, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def _login_within(proc: PgkeepProcess, seconds: float) -> None:
    started = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - started < seconds:
        try:
            return _login(proc)
        except psycopg.OperationalError as e:
            last = e
            time.sleep(0.1)
    pytest.fail(f"no login within {seconds}s of the slots' theft: {last}")


def _until_closed(s: socket.socket) -> bytes:
    try:
        return read_all_until_eof(s, timeout=MARGIN)
    except ssl.SSLError:
        return b""  # closed without close_notify


def _assert_told_and_closed(s: socket.socket) -> None:
    data = _until_closed(s)
    assert data[:1] == b"E", data
    fields = error_fields(data[5:])
    assert fields["C"] == "08P01" and "authentication" in fields["M"], fields


def test_unauthenticated_clients_hold_connection_slots_until_upstream_timeout(limited):
    silent = [socket.create_connection(("127.0.0.1", limited.port), timeout=10) for _ in range(3)]
    stalled = [_stop_mid_scram(limited.port) for _ in range(3)]  # every slot taken
    started = time.monotonic()
    try:
        _login_within(limited, LOGIN_TIMEOUT + MARGIN)
        # Every stalled login was closed with a FATAL 08P01 saying why; silent ones too.
        for s in stalled:
            _assert_told_and_closed(s)
        for s in silent:
            data = read_all_until_eof(s, timeout=MARGIN)
            assert data[:1] in (b"", b"E"), data
        assert time.monotonic() - started < LOGIN_TIMEOUT + 2 * MARGIN
    finally:
        for s in silent + stalled:
            s.close()
    # The slots are free: three clients at once are admitted again.
    conns = [psycopg.connect(limited.dsn(), connect_timeout=5) for _ in range(3)]
    for c in conns:
        c.close()


def test_login_timeout_spares_authenticated_sessions(limited):
    """An authenticated session idle past the login timeout is not touched."""
    with psycopg.connect(limited.dsn(), connect_timeout=5, autocommit=True) as conn:
        time.sleep(LOGIN_TIMEOUT + 0.5)
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_unauthenticated_tls_clients_hold_connection_slots(limited, cert):
    """The same inside TLS: logins stopped mid-SCRAM are told (over TLS) and closed; a client that
    asked for TLS and never starts the handshake is closed without a plaintext byte."""
    tls = ssl.create_default_context(cafile=str(cert[0]))
    no_handshake = socket.create_connection(("127.0.0.1", limited.port), timeout=10)
    no_handshake.sendall(ssl_request())
    assert no_handshake.recv(1) == b"S"
    stalled = [_stop_mid_scram(limited.port, tls) for _ in range(3)]
    started = time.monotonic()
    try:
        _login_within(limited, LOGIN_TIMEOUT + MARGIN)
        for s in stalled:
            _assert_told_and_closed(s)
        assert read_all_until_eof(no_handshake, timeout=MARGIN) == b""
        assert time.monotonic() - started < LOGIN_TIMEOUT + 2 * MARGIN
    finally:
        for s in stalled + [no_handshake]:
            s.close()
