"""Issue 12, point 15: a malformed frame queued behind an intercepted statement hung the session
("Task exception was never retrieved": the interceptor's worker task died decoding it and nobody
answered). Want: ErrorResponse 08P01, then the connection closed, nothing unhandled in the log.
Driven with raw protocol bytes through the shared pgkeep."""
from __future__ import annotations

import random
import socket
import struct

import pytest

from proxy.wire import messages as m
from tests.e2e.rawpg import RawConn, error_fields, read_all_until_eof

_PARSE_SHOW_JOBS = m.frame(b"P", b"\0SHOW JOBS\0\0\0")
_SYNC = m.frame(b"S")


def _messages(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    while len(data) >= 5:
        (length,) = struct.unpack("!i", data[1:5])
        out.append((data[:1], data[5:1 + length]))
        data = data[1 + length:]
    assert not data, data
    return out


def _after_intercepted_parse(pgkeep, malformed: bytes) -> list[tuple[bytes, bytes]]:
    """Send Parse(SHOW JOBS), `malformed`, Sync in one write; return every message pgkeep sends
    until it closes the connection (TimeoutError if it never does: the old hang)."""
    offset = len(pgkeep.log())
    with RawConn(pgkeep.port) as c:
        c.login()
        c.send(_PARSE_SHOW_JOBS + malformed + _SYNC)
        msgs = _messages(c.buf + read_all_until_eof(c.sock, timeout=10))
    log = pgkeep.log()[offset:]
    assert "Task exception was never retrieved" not in log, log
    assert "Traceback" not in log, log
    return msgs


def _assert_protocol_violation_then_close(msgs, words: str) -> None:
    kinds = [k for k, _ in msgs]
    assert kinds == [b"1", b"E"], msgs  # ParseComplete for SHOW JOBS, then the 08P01
    fields = error_fields(msgs[-1][1])
    assert fields["C"] == "08P01", fields
    assert fields["S"] == "FATAL", fields
    assert words in fields["M"], fields


def test_close_with_bad_subtype_behind_intercepted_parse_hangs_session(pgkeep):
    msgs = _after_intercepted_parse(pgkeep, m.frame(b"C", b"Z\0"))
    _assert_protocol_violation_then_close(msgs, "CLOSE")


def test_bind_with_bad_parameter_count_behind_intercepted_parse_hangs_session(pgkeep):
    # Declares three parameters but carries one: the frame ends before the others.
    bind = m.frame(b"B", b"\0\0" + struct.pack("!hh", 0, 3) + struct.pack("!i", 1) + b"x")
    msgs = _after_intercepted_parse(pgkeep, bind)
    _assert_protocol_violation_then_close(msgs, "invalid message format")


def test_truncated_describe_behind_intercepted_parse_hangs_session(pgkeep):
    msgs = _after_intercepted_parse(pgkeep, m.frame(b"D", b"S"))
    _assert_protocol_violation_then_close(msgs, "invalid message format")


@pytest.mark.parametrize("malformed", [m.frame(b"C", b"Z\0"), m.frame(b"D", b"S")])
def test_malformed_frame_not_behind_intercepted_statement_still_closes(pgkeep, malformed):
    """The same frames with nothing intercepted before them (the session decodes them itself
    when it holds local statements): same answer."""
    with RawConn(pgkeep.port) as c:
        c.login()
        c.send(_PARSE_SHOW_JOBS + _SYNC)
        assert [k for k, _ in c.read_until(b"Z")] == [b"1", b"Z"]
        c.send(malformed + _SYNC)
        msgs = _messages(c.buf + read_all_until_eof(c.sock, timeout=10))
    assert [k for k, _ in msgs] == [b"E"], msgs
    assert error_fields(msgs[0][1])["C"] == "08P01"


def test_session_usable_by_others_after_malformed_frames(pgkeep):
    with RawConn(pgkeep.port) as c:
        assert c.login().scalar("SELECT 41 + 1") == "42"


def test_random_frames_behind_intercepted_statement_hang_session(pgkeep):
    """Seeded random frames (of every type the interceptor decodes, bodies mostly malformed)
    behind an intercepted Parse, Query or Bind, then Sync: each gets an answer ending in
    ReadyForQuery, or an ErrorResponse and the close; never a hang. The old code hung on about
    a quarter of them."""
    rnd = random.Random(12)
    leads = [_PARSE_SHOW_JOBS, m.frame(b"Q", b"SHOW JOBS\0"),
             m.frame(b"P", b"s\0SHOW JOBS\0\0\0") + m.frame(b"B", b"p\0s\0\0\0\0\0\0\0")]
    offset = len(pgkeep.log())
    for i in range(60):
        kind = rnd.choice(b"BDCEPQHSd")
        body = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 12)))
        if rnd.random() < 0.5:
            body = rnd.choice([b"\0", b"S", b"P\0", b"\0\0", b"\0\0\0\x05"]) + body[:3]
        frame = m.frame(bytes([kind]), body)
        with RawConn(pgkeep.port) as c:
            c.login()
            c.send(rnd.choice(leads) + frame + _SYNC)
            try:
                while c.read()[0] != b"Z":
                    pass
            except (EOFError, ConnectionResetError):
                pass  # closed after its ErrorResponse
            except socket.timeout:
                pytest.fail(f"no answer to {frame!r} (case {i})")
    log = pgkeep.log()[offset:]
    assert "Task exception was never retrieved" not in log
