"""The session's steady-state relay: the compiled one (proxy/wire/_relay.pyx) by default, the
pure-Python one with PGKEEP_PURE_PYTHON=1 (`make test` runs this file and the proxy's end-to-end
suites both ways). Each test here goes through a real pgkeep in front of a real PostgreSQL and
aims at a place where the compiled relay hands the session back to Python: an intercepted
statement, a frame split across reads, a frame longer than one read, a client too slow to take
its results, an upstream error in the middle of a batch, a Terminate."""
from __future__ import annotations

import os
import struct
import time

import psycopg
import pytest

from proxy.wire import framing
from proxy.wire import messages as m
from proxy.wire.framing import FrameScanner
from tests.e2e.rawpg import RawConn, query
from tests.support.pgkeep import PgkeepProcess

PURE = os.environ.get("PGKEEP_PURE_PYTHON", "") not in ("", "0")


def test_the_expected_relay_is_active():
    """The compiled relay is built by `pip install` (setup.py); a build that silently failed
    would leave pgkeep on the Python path, so say it here."""
    assert framing.RELAY == ("pure-python" if PURE else "compiled")
    assert (framing.fast_relay is None) == PURE


def test_a_session_is_relayed_by_the_expected_relay(pg18, tmp_path):
    proc = PgkeepProcess(tmp_path / "pgkeep", pg18.dsn(), args=["--log-level", "DEBUG"]).start()
    try:
        with psycopg.connect(proc.dsn(), autocommit=True) as conn:
            for i in range(20):
                assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        deadline = time.monotonic() + 5
        while "compiled relay" not in proc.log() and not PURE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ("session steady state: compiled relay" in proc.log()) == (not PURE)
    finally:
        proc.stop()


# ---- FrameScanner.handoff / take_back: where one walker stops, the other goes on ----------------

def test_handoff_only_at_a_boundary_or_inside_a_passed_frame():
    s = FrameScanner(1 << 20)
    assert s.handoff() == (0, 0)
    frame = m.frame(b"D", b"x" * 100)
    assert s.pass_all(frame[:50], frozenset(), None) == []
    assert s.handoff() == (len(frame) - 50, ord("D"))
    assert s.pass_all(frame[50:] + b"Z", frozenset(), None) is None  # a partial header stays
    assert s.handoff() is None


def test_take_back_resumes_inside_a_frame_and_with_a_held_header():
    s = FrameScanner(1 << 20)
    z = m.frame(b"Z", b"T")
    s.take_back(3, ord("C"), b"")
    assert s.pass_all(b"abc" + z, frozenset(), None) == [ord("C"), ord("Z")]
    assert s.last_status == b"T"
    s.take_back(0, 0, z[:2])
    assert s.next(frozenset()) is None
    s.feed(z[2:])
    assert s.next(frozenset()) == (framing.PASS, z, [ord("Z")])


# ---- through pgkeep ------------------------------------------------------------------------------

def _rows(msgs):
    return [m.decode_data_row(body) for kind, body in msgs if kind == b"D"]


def test_intercepted_statements_between_relayed_ones(pgkeep):
    with psycopg.connect(pgkeep.dsn(), autocommit=True) as conn:
        for _ in range(3):
            for i in range(10):
                assert conn.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)
            cur = conn.execute("SHOW JOBS")  # pgkeep's: the relay hands it to the interceptor
            assert "job_id" in [c.name for c in cur.description]
            # an intercept word in a statement that is PostgreSQL's: forwarded by the Python path
            assert conn.execute("SELECT 'backup' AS job").fetchone() == ("backup",)


def test_transaction_status_seen_by_pgkeep_commands(pgkeep):
    """ReadyForQuery's status, tracked by whichever relay forwarded it, is what pgkeep's
    commands check: SET CLUSTER SETTING refuses to run inside a transaction."""
    with psycopg.connect(pgkeep.dsn()) as conn:
        for _ in range(5):
            conn.execute("SELECT 1")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        with pytest.raises(psycopg.errors.ActiveSqlTransaction):
            conn.execute("SET CLUSTER SETTING pgkeep.backup.parallelism = 2")
        conn.rollback()
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_frames_split_at_every_byte(pgkeep):
    """A Query that arrives one byte at a time (partial headers held back, never forwarded
    before the frame is decided), and pgkeep's own statement the same way."""
    c = RawConn(pgkeep.port).login()
    try:
        for sql in ("SELECT 41 + 1", "SHOW JOBS", "SELECT 'x'"):
            for b in query(sql):
                c.send(bytes([b]))
                time.sleep(0.001)
            msgs = c.read_until(b"Z")
            assert b"E" not in [k for k, _ in msgs], msgs
        c.send(query("SELECT 1") + query("SELECT 2")[:3])
        time.sleep(0.05)
        c.send(query("SELECT 2")[3:])
        assert _rows(c.read_until(b"Z")) == [("1",)]
        assert _rows(c.read_until(b"Z")) == [("2",)]
    finally:
        c.sock.close()


def test_a_query_longer_than_one_read_and_a_large_result(pgkeep):
    c = RawConn(pgkeep.port).login()
    try:
        text = "y" * 700_000  # several reads: the relay hands the frame to the Python path
        c.send(query(f"SELECT length('{text}')"))
        assert _rows(c.read_until(b"Z")) == [("700000",)]
        c.send(query(f"SELECT length('{text}') AS backup"))  # an intercept word, not pgkeep's
        assert _rows(c.read_until(b"Z")) == [("700000",)]
        # ~40 MB of results while the client reads nothing for a while: the upstream fills
        # pgkeep's socket to the client and the relay hands the rest to the transport.
        c.send(query("SELECT repeat('z', 1000000) FROM generate_series(1, 40)"))
        time.sleep(1.0)
        rows = _rows(c.read_until(b"Z"))
        assert len(rows) == 40 and all(r == ("z" * 1_000_000,) for r in rows)
        c.send(query("SELECT 3"))
        assert _rows(c.read_until(b"Z")) == [("3",)]
    finally:
        c.sock.close()


def _ext(sql: str) -> bytes:
    return (m.frame(b"P", b"\0" + sql.encode() + b"\0\0\0") + m.frame(b"B", b"\0" * 8)
            + m.frame(b"E", b"\0\0\0\0\0"))


def test_upstream_error_in_the_middle_of_a_batch(pgkeep):
    """An ErrorResponse before the batch's Sync: the rest of the batch is skipped by PostgreSQL
    and pgkeep alike (the relay hands the error to the Python path), then the next batch runs."""
    c = RawConn(pgkeep.port).login()
    try:
        for _ in range(3):
            c.send(_ext("SELECT 1") + m.frame(b"S"))
            assert _rows(c.read_until(b"Z")) == [("1",)]
        c.send(_ext("SELECT 1/0"))
        c.send(m.frame(b"H"))  # Flush: the error comes before the client sends Sync
        kinds = [k for k, _ in c.read_until(b"E")]
        assert kinds[-1] == b"E"
        c.send(_ext("SHOW JOBS") + _ext("SELECT 5") + m.frame(b"S"))  # skipped, pgkeep's too
        msgs = c.read_until(b"Z")
        assert [k for k, _ in msgs] == [b"Z"] and msgs[-1][1] == b"I"
        c.send(_ext("SELECT 6") + m.frame(b"S") + query("SELECT 7"))
        assert _rows(c.read_until(b"Z")) == [("6",)]
        assert _rows(c.read_until(b"Z")) == [("7",)]
    finally:
        c.sock.close()


def test_terminate_closes_the_session(pgkeep):
    c = RawConn(pgkeep.port).login()
    for i in range(5):
        c.send(query(f"SELECT {i}"))
        c.read_until(b"Z")
    c.send(m.frame(b"X"))
    assert c.at_eof()


def test_many_sessions_pipelining(pgkeep):
    """Several raw sessions, each with many pipelined statements in one write, answered in order."""
    conns = [RawConn(pgkeep.port).login() for _ in range(6)]
    try:
        for n, c in enumerate(conns):
            c.send(b"".join(query(f"SELECT {n * 1000 + i}") for i in range(200)))
        for n, c in enumerate(conns):
            got = [_rows(c.read_until(b"Z"))[0][0] for _ in range(200)]
            assert got == [str(n * 1000 + i) for i in range(200)]
    finally:
        for c in conns:
            c.sock.close()


def test_a_bad_length_word_is_a_protocol_violation(pgkeep):
    c = RawConn(pgkeep.port).login()
    try:
        c.send(query("SELECT 1"))
        c.read_until(b"Z")
        c.send(b"B" + struct.pack("!i", 2))
        kind, body = c.read()
        assert kind == b"E" and b"C08P01" in body
        assert c.at_eof()
    finally:
        c.sock.close()
