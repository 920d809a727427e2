"""Issue 12, point 9: one client stalled pgkeep by trickling a large message, before
authentication too. The frame scanner copied its whole buffer on every read (quadratic), every
frame was held whole in the AUTH state and frames up to 1 GiB were accepted: 94% CPU, other logins
failing, RSS 36 -> 257 MB. Want: linear buffering, pre-authentication messages capped as
PostgreSQL caps them, long statements streamed rather than held, and other clients unaffected.

Each phase runs a steady stream of other clients (log in, SELECT 1, log out) and measures pgkeep's
CPU (psutil on its pid) and RSS; the baseline is the same stream with no trickler, measured here."""
from __future__ import annotations

import socket
import statistics
import struct
import threading
import time
from dataclasses import dataclass, field

import psutil
import psycopg
import pytest

from proxy.wire import messages as m
from tests.e2e.rawpg import RawConn, error_fields, read_all_until_eof, startup_packet
from tests.support.pgkeep import PgkeepProcess

PHASE = 4.0  # seconds of each trickle phase


@pytest.fixture(scope="module")
def front(workdir, pg18):
    proc = PgkeepProcess(workdir / "pgkeep-trickle", pg18.dsn()).start()
    yield proc
    proc.stop()


@dataclass
class Load:
    cpu: float = 0.0                 # pgkeep CPU seconds per wall second
    rss_growth: int = 0              # most RSS above the phase's start, bytes
    logins: list[float] = field(default_factory=list)  # seconds per login + SELECT 1 + close
    failures: list[str] = field(default_factory=list)


def _under_load(front: PgkeepProcess, action) -> Load:
    """Run `action()` while other clients keep logging in; measure pgkeep meanwhile."""
    proc = psutil.Process(front.proc.pid)
    load = Load()
    stop = threading.Event()

    def logins():
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                with psycopg.connect(front.dsn(), connect_timeout=10, autocommit=True) as c:
                    c.execute("SELECT 1").fetchone()
                load.logins.append(time.monotonic() - t0)
            except psycopg.Error as e:
                load.failures.append(str(e))
            stop.wait(0.05)

    def rss():
        start = proc.memory_info().rss
        while not stop.is_set():
            load.rss_growth = max(load.rss_growth, proc.memory_info().rss - start)
            stop.wait(0.05)

    threads = [threading.Thread(target=logins), threading.Thread(target=rss)]
    cpu0, wall0 = sum(proc.cpu_times()[:2]), time.monotonic()
    for t in threads:
        t.start()
    try:
        action()
    finally:
        stop.set()
        for t in threads:
            t.join()
    load.cpu = (sum(proc.cpu_times()[:2]) - cpu0) / (time.monotonic() - wall0)
    return load


def _idle() -> None:
    time.sleep(PHASE)


def _trickle(sock: socket.socket, piece: bytes, seconds: float, pause: float) -> int:
    """Send `piece` again and again for `seconds`; the bytes sent (stops if the peer closes)."""
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock.sendall(piece)
        except OSError:
            break
        sent += len(piece)
        if pause:
            time.sleep(pause)
    return sent


def _assert_unaffected(base: Load, load: Load, what: str) -> None:
    print(f"{what}: cpu {base.cpu:.2f} -> {load.cpu:.2f}, rss +{load.rss_growth >> 10} KiB, login "
          f"median {statistics.median(base.logins):.3f} -> {statistics.median(load.logins):.3f} s")
    assert not load.failures, (what, load.failures[:3])
    assert len(load.logins) >= 5, (what, load.logins)
    normal = statistics.median(base.logins)
    assert statistics.median(load.logins) < 4 * normal + 0.1, (what, normal, load.logins)
    assert max(load.logins) < max(10 * normal, 2.0), (what, normal, load.logins)
    assert load.cpu < base.cpu + 0.35, (what, base.cpu, load.cpu)
    assert load.rss_growth < 8 << 20, (what, load.rss_growth)


def _password_prompt(port: int) -> socket.socket:
    """A connection waiting for a cleartext password: authentication under way."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(startup_packet("pwuser", "postgres"))
    head = s.recv(9)
    assert head[:1] == b"R" and struct.unpack("!i", head[5:9])[0] == 3, head
    return s


def test_trickled_message_stalls_pgkeep_before_and_after_authentication(front):
    base = _under_load(front, _idle)
    assert not base.failures and len(base.logins) >= 5, base

    # Before authentication, within PostgreSQL's limit: a 64 KiB password, a few bytes a time.
    s = _password_prompt(front.port)
    try:
        header = b"p" + struct.pack("!i", 65535 + 4)
        load = _under_load(front, lambda: (s.sendall(header),
                                           _trickle(s, b"pw" * 8, PHASE, 0.0005)))
    finally:
        s.close()
    _assert_unaffected(base, load, "trickled password")

    # Before authentication, a message PostgreSQL would never read (1 GiB): closed at once,
    # without an answer, as PostgreSQL does; the trickler cannot keep pgkeep busy.
    s = _password_prompt(front.port)
    try:
        header = b"p" + struct.pack("!i", 1 << 30)
        got = {}

        def oversized():
            s.sendall(header)
            started = time.monotonic()
            _trickle(s, b"x" * 1024, PHASE, 0)
            got["data"] = read_all_until_eof(s, timeout=5)
            got["closed_after"] = time.monotonic() - started
            time.sleep(max(0.0, PHASE - got["closed_after"]))  # the others keep logging in
        load = _under_load(front, oversized)
    finally:
        s.close()
    assert got["data"] == b"", got
    assert got["closed_after"] < 2.0, got  # at the header, not after the trickle
    _assert_unaffected(base, load, "oversized pre-authentication message")

    # After authentication: a Query declared at 100 MB, trickled in 1 KiB pieces, then 24 MB at
    # full speed. pgkeep must stream it to the upstream, not hold it.
    c = RawConn(front.port).login()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        def huge_query():
            c.sock.sendall(b"Q" + struct.pack("!i", 100_000_000) + b"SELECT '")
            _trickle(c.sock, b"x" * 1024, PHASE, 0.001)
            c.sock.sendall(b"x" * (24 << 20))
        load = _under_load(front, huge_query)
    finally:
        c.abort()
    _assert_unaffected(base, load, "huge trickled Query")


def test_statement_over_inspection_bound_still_runs(front):
    """A long statement pgkeep streams uninspected is still the upstream's to run, in order with
    the client's other messages."""
    text = "SELECT length('" + "y" * (3 << 20) + "')"
    with psycopg.connect(front.dsn(), connect_timeout=10, autocommit=True) as conn:
        assert conn.execute(text).fetchone() == (3 << 20,)
        assert conn.execute("SELECT length(%s::text)", ["z" * (2 << 20)]).fetchone() == (2 << 20,)
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with RawConn(front.port) as raw:
        raw.login()
        raw.send(m.frame(b"Q", text.encode() + b"\0") + m.frame(b"Q", b"SELECT 7\0"))
        first = raw.read_until(b"Z")
        assert [k for k, _ in first][-2:] == [b"C", b"Z"], first[:3]
        assert raw.read_until(b"Z")[1][0] == b"D"
        # Behind an intercepted statement the long one waits (pgkeep stops reading rather than
        # queue it), then streams, in order.
        raw.send(m.frame(b"Q", b"SHOW JOBS\0") + m.frame(b"Q", text.encode() + b"\0")
                 + m.frame(b"Q", b"SELECT 8\0"))
        assert raw.read_until(b"Z")[-2][0] == b"C"
        assert [k for k, _ in raw.read_until(b"Z")][-3:] == [b"D", b"C", b"Z"]
        eight = raw.read_until(b"Z")
        assert [body[-1:] for k, body in eight if k == b"D"] == [b"8"], eight
        assert raw.scalar("SELECT 9") == "9"
        # After an error in an extended-protocol batch, a long message before the Sync is
        # skipped like the rest of the batch (not waited for: the Sync behind it ends the skip).
        raw.send(m.frame(b"P", b"\0SELEC broken\0\0\0") + m.frame(b"H"))
        assert raw.read()[0] == b"E"
        param = b"q" * (3 << 20)
        bind = m.frame(b"B", b"\0\0\0\0\0\1" + struct.pack("!i", len(param)) + param + b"\0\0")
        raw.send(bind + m.frame(b"S"))
        assert raw.read()[0] == b"Z"
        assert raw.scalar("SELECT 10") == "10"


def test_long_pgkeep_statement_held_whole_in_memory(front, pg18):
    """A statement of pgkeep's longer than the inspection bound (1 MiB) used to be held whole
    (up to 1 GiB per client). Now pgkeep judges it by its leading words, refuses it with 54000
    (simple and extended protocol), never hands it to the upstream (its text may carry
    credentials), and the session stays usable, in or out of a transaction."""
    secret = "pgkeep-long-statement-secret"
    text = (f"BACKUP INTO 'nodelocal://self/long?AWS_SECRET_ACCESS_KEY={secret}&pad="
            + "p" * (4 << 20) + "'")
    proc = psutil.Process(front.proc.pid)
    rss0 = proc.memory_info().rss
    upstream_log = pg18.logfile.stat().st_size
    with psycopg.connect(front.dsn(), connect_timeout=10, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute(text, prepare=False)
        assert e.value.sqlstate == "54000", e.value
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.Error) as e:  # extended protocol: Parse
            conn.execute(text + " /* %s */", ["x"])
        assert e.value.sqlstate == "54000", e.value
        assert conn.execute("SELECT 2").fetchone() == (2,)
        conn.execute("BEGIN")
        with pytest.raises(psycopg.Error) as e:
            conn.execute(text, prepare=False)
        assert e.value.sqlstate == "54000"
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT 3")
        assert e.value.sqlstate == "25P02"  # aborted, as PostgreSQL after any error
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT 4").fetchone() == (4,)
    with RawConn(front.port) as raw:  # the simple protocol, bytes as sent
        raw.login()
        msgs = raw.simple(text)
        assert [k for k, _ in msgs] == [b"E", b"Z"], msgs
        assert error_fields(msgs[0][1])["C"] == "54000"
        assert raw.scalar("SELECT 5") == "5"
    assert proc.memory_info().rss - rss0 < 8 << 20
    with open(pg18.logfile, "rb") as f:
        f.seek(upstream_log)
        assert secret.encode() not in f.read()


@pytest.mark.parametrize("length", [10005, 1 << 30])  # PostgreSQL: at most 10000 after the word
def test_oversized_startup_packet_answered_unlike_postgres(front, length):
    """An impossible startup length is logged and the connection closed at once, with no
    ErrorResponse: what PostgreSQL does (the peer may not speak the protocol at all)."""
    offset = len(front.log())
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as s:
        s.sendall(struct.pack("!ii", length, 3 << 16) + b"user\0")
        started = time.monotonic()
        assert read_all_until_eof(s, timeout=5) == b""
        assert time.monotonic() - started < 3
    assert "invalid length of startup packet" in front.log()[offset:]
