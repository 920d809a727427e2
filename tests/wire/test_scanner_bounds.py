"""FrameScanner's time and memory bounds (issue 12, point 9): a client trickling a large message
costs pgkeep linear time, and a frame longer than the inspection bound is streamed, never held."""
from __future__ import annotations

import time

import pytest

from proxy.errors import PgError
from proxy.wire import messages as m
from proxy.wire.framing import (MAX_AUTH_MESSAGE, PASS, STREAM, STREAM_HEAD, FrameScanner,
                                StartupLengthError, StartupReader)

_Q = frozenset(b"Q")


def _trickle_seconds(frame: bytes, deadline: float) -> float | None:
    """Feed `frame` one byte at a time to a scanner that holds it whole (it is inspected and
    below stream_over); None when `deadline` seconds pass first."""
    scan = FrameScanner(1 << 30)
    started = time.perf_counter()
    got = None
    for i in range(len(frame)):
        scan.feed(frame[i:i + 1])
        if (ev := scan.next(_Q)) is not None:
            got = ev
        if i & 0xFFF == 0 and time.perf_counter() - started > deadline:
            return None
    elapsed = time.perf_counter() - started
    assert got is not None and got[0] == ord("Q") and got[1] == frame
    return elapsed


def test_trickled_frame_rescanned_quadratically():
    """Feeding 1 MB one byte at a time must cost about ten times what 100 KB costs, per byte the
    same. The old scanner copied its whole buffer on every read: 1 MB took hours."""
    small = m.frame(b"Q", b"x" * 100_000 + b"\0")
    big = m.frame(b"Q", b"x" * 1_000_000 + b"\0")
    t_small = min(_trickle_seconds(small, 60) or 60 for _ in range(2))
    per_byte_small = t_small / len(small)
    # Generous: 4x the small run's per-byte cost (a loaded machine), and never under 2 s.
    budget = max(4 * per_byte_small * len(big), 2.0)
    t_big = _trickle_seconds(big, budget)
    assert t_big is not None, \
        f"1 MB took over {budget:.1f}s one byte at a time (100 KB: {t_small:.2f}s)"


def test_long_inspected_frame_held_whole():
    """A Query longer than stream_over comes out as a STREAM head then pass-through runs; the
    scanner never holds more than what one read brought."""
    body = b"SELECT '" + b"y" * 200_000 + b"'\0"
    frame = m.frame(b"Q", body)
    stream = frame + m.frame(b"S")
    for step in (1, 7, 4096, 65536):
        scan = FrameScanner(1 << 30, stream_over=50_000)
        out, events, completed, most = bytearray(), [], [], 0
        for i in range(0, len(stream), step):
            scan.feed(stream[i:i + step])
            most = max(most, scan.pending)
            while (ev := scan.next(_Q)) is not None:
                events.append(ev[0])
                out += ev[1]
                completed += ev[2]
            most = max(most, scan.pending)
        assert bytes(out) == stream, step
        assert events[0] == STREAM and STREAM not in events[1:] and ord("Q") not in events
        assert completed == [ord("Q"), ord("S")]
        assert most < STREAM_HEAD + step, (step, most)
        assert scan.at_boundary


def test_streamed_frame_at_every_split_point():
    frames = [m.frame(b"Q", b"SELECT 1\0"), m.frame(b"Q", b"z" * 6000 + b"\0"),
              m.frame(b"P", b"\0SELECT 2\0\0\0"), m.frame(b"S")]
    stream = b"".join(frames)
    inspect = frozenset(b"QP")
    for cut in range(len(stream) + 1):
        scan = FrameScanner(1 << 20, stream_over=STREAM_HEAD)
        events = []
        out = bytearray()
        for chunk in (stream[:cut], stream[cut:]):
            scan.feed(chunk)
            while (ev := scan.next(inspect)) is not None:
                if ev[0] != PASS:
                    events.append((ev[0], ev[1]))
                out += ev[1]
        assert bytes(out) == stream, cut
        assert events == [(ord("Q"), frames[0]), (STREAM, frames[1][:STREAM_HEAD]),
                          (ord("P"), frames[2])], cut


def test_long_frame_while_holding_blocks_instead_of_buffering():
    """With stream=False (the interceptor holds the client's messages in order) a long frame is
    not handed out at all: the caller stops reading until it may stream it."""
    frame = m.frame(b"d", b"c" * 10_000)
    scan = FrameScanner(1 << 20, stream_over=STREAM_HEAD)
    scan.feed(frame[:5000])
    assert scan.next(frozenset(range(256)), stream=False) is None
    assert scan.blocked and scan.pending == 5000
    ev = scan.next(frozenset(range(256)))
    assert ev[0] == STREAM and not scan.blocked


def test_auth_message_over_postgres_limit():
    """During authentication a message body over PG_MAX_AUTH_TOKEN_LENGTH is refused from its
    header alone, before any of its body is buffered."""
    scan = FrameScanner(MAX_AUTH_MESSAGE)
    scan.feed(b"p" + (MAX_AUTH_MESSAGE + 1).to_bytes(4, "big"))
    with pytest.raises(PgError) as e:
        scan.next(frozenset(range(256)))
    assert e.value.sqlstate == "08P01"
    scan = FrameScanner(MAX_AUTH_MESSAGE)
    scan.feed(m.frame(b"p", b"a" * 65535))
    assert scan.next(frozenset(range(256)))[0] == ord("p")


def test_startup_length_error_is_its_own_kind():
    """The session closes silently (as PostgreSQL) on exactly this error."""
    with pytest.raises(StartupLengthError):
        StartupReader().feed((1 << 30).to_bytes(4, "big") + b"\0\3\0\0")


def test_discarded_frame_never_reaches_a_pass_run():
    """After a STREAM head the caller may drop the frame (a long statement of pgkeep's): the rest
    of it comes out as DISCARD runs, at every split point, and the next frame as usual."""
    from proxy.wire.framing import DISCARD
    frames = [m.frame(b"Q", b"BACKUP " + b"w" * 6000 + b"\0"), m.frame(b"Q", b"SELECT 1\0")]
    stream = b"".join(frames)
    for cut in range(0, len(stream) + 1, 7):
        scan = FrameScanner(1 << 20, stream_over=STREAM_HEAD)
        dropped, passed, inspected = bytearray(), bytearray(), []
        for chunk in (stream[:cut], stream[cut:]):
            if scan.pass_all(chunk, frozenset(b"Q"), lambda k, f: True) is not None:
                passed += chunk
                continue
            while (ev := scan.next(frozenset(b"Q"))) is not None:
                if ev[0] == STREAM:
                    scan.discard()
                    dropped += ev[1]
                elif ev[0] == DISCARD:
                    assert ev[2] == [], cut
                    dropped += ev[1]
                elif ev[0] == PASS:
                    passed += ev[1]
                else:
                    inspected.append(ev[1])
        assert bytes(dropped) == frames[0], cut
        assert not passed and inspected == [frames[1]], cut
