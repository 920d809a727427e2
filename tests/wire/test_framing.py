"""The sans-IO framing layer, fed byte streams split at every offset (and in 1-byte pieces)."""
from __future__ import annotations

import struct

import pytest

from proxy.errors import PgError
from proxy.wire import messages as m
from proxy.wire.framing import (PASS, DirectTLS, FrameScanner, GSSENCRequest, SSLRequest,
                                StartupReader)

FRAMES = [
    m.frame(b"P", b"s1\0SELECT $1\0\0\0"),
    m.frame(b"B", b"\0s1\0\0\0\0\x01\0\0\0\x011\0\0"),
    m.frame(b"E", b"\0\0\0\0\0"),
    m.frame(b"d", b"x" * 300),          # a CopyData that passes through
    m.frame(b"Q", b"SELECT 1\0"),
    m.frame(b"S"),
    m.frame(b"Z", b"T"),
]
STREAM = b"".join(FRAMES)


def _run(chunks, inspect):
    scan = FrameScanner(1 << 20)
    passed = bytearray()
    inspected, completed = [], []
    for chunk in chunks:
        scan.feed(chunk)
        while (ev := scan.next(inspect)) is not None:
            kind, raw, types = ev
            if kind == PASS:
                passed += raw
                completed += types
            else:
                inspected.append(raw)
                completed.append(kind)
    return bytes(passed), inspected, completed, scan


@pytest.mark.parametrize("inspect", [frozenset(), frozenset(b"QP"), frozenset(range(256))])
def test_every_split_point_gives_the_same_frames(inspect):
    expected_inspected = [f for f in FRAMES if f[0] in inspect]
    expected_passed = b"".join(f for f in FRAMES if f[0] not in inspect)
    for cut in range(len(STREAM) + 1):
        for chunks in ([STREAM[:cut], STREAM[cut:]],
                       [STREAM[:cut], STREAM[cut:cut + 7], STREAM[cut + 7:]]):
            passed, inspected, completed, scan = _run(chunks, inspect)
            assert inspected == expected_inspected, cut
            assert passed == expected_passed, cut
            assert completed == [f[0] for f in FRAMES], cut
            assert scan.at_boundary
            assert scan.last_status == (b"T" if 90 not in inspect else b"I")


def test_one_byte_at_a_time_keeps_order():
    passed, inspected, completed, _ = _run([STREAM[i:i + 1] for i in range(len(STREAM))],
                                            frozenset(b"Q"))
    assert inspected == [FRAMES[4]]
    assert completed == [f[0] for f in FRAMES]


def test_inspect_set_can_change_between_frames():
    scan = FrameScanner(1 << 20)
    scan.feed(STREAM)
    kind, raw, _ = scan.next(frozenset(b"P"))
    assert raw == FRAMES[0]
    # the decision on P makes the following Bind interesting at once
    kind, raw, _ = scan.next(frozenset(b"PB"))
    assert raw == FRAMES[1]


def test_message_too_large_and_bad_length():
    scan = FrameScanner(100)
    scan.feed(m.frame(b"Q", b"x" * 200))
    with pytest.raises(PgError) as e:
        scan.next(frozenset())
    assert e.value.sqlstate == "08P01"
    scan = FrameScanner(100)
    scan.feed(b"Q\0\0\0\x02")
    with pytest.raises(PgError):
        scan.next(frozenset())


def _startup(params: dict[str, str], version=m.PROTOCOL_3_0) -> bytes:
    body = struct.pack("!i", version) + b"".join(k.encode() + b"\0" + v.encode() + b"\0"
                                                 for k, v in params.items()) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def test_startup_packets_at_every_split():
    ssl_req = struct.pack("!ii", 8, m.SSL_REQUEST_CODE)
    startup = _startup({"user": "alice", "database": "db", "application_name": "x"})
    for cut in range(len(startup) + 1):
        r = StartupReader()
        assert r.feed(startup[:cut]) is None or cut == len(startup)
        pkt = r.feed(startup[cut:]) if cut < len(startup) else r.feed(b"")
        if cut == len(startup):
            continue
        assert isinstance(pkt, m.StartupMessage)
        assert pkt.params == {"user": "alice", "database": "db", "application_name": "x"}
        assert pkt.raw == startup
    r = StartupReader()
    assert isinstance(r.feed(ssl_req + b"junk"), SSLRequest) and r.leftover == b"junk"
    assert isinstance(StartupReader().feed(struct.pack("!ii", 8, m.GSSENC_REQUEST_CODE)), GSSENCRequest)
    cancel = StartupReader().feed(struct.pack("!iiI", 16, m.CANCEL_REQUEST_CODE, 42) + b"abcd")
    assert cancel == m.CancelRequest(42, b"abcd")
    assert isinstance(StartupReader().feed(b"\x16\x03\x01\x02\x00"), DirectTLS)


def test_startup_limits():
    with pytest.raises(PgError) as e:
        StartupReader().feed(struct.pack("!ii", 20000, m.PROTOCOL_3_0))
    assert e.value.sqlstate == "08P01"
    with pytest.raises(PgError) as e:
        StartupReader().feed(_startup({"database": "x"}))
    assert e.value.sqlstate == "28000"
    with pytest.raises(PgError) as e:
        StartupReader().feed(_startup({"user": "x"}, version=2 << 16))
    assert e.value.sqlstate == "0A000"


def test_startup_length_word_judged_alone_as_postgresql():
    """PostgreSQL reads the 4-byte length word and judges it at once: at least 8, at most 10000
    bytes after the word. A Terminate sent before the startup packet is an impossible length."""
    from proxy.wire.framing import StartupLengthError
    for head in (b"X\0\0\0", struct.pack("!i", 7), struct.pack("!i", 10005), b"\xff\xff\xff\xff"):
        with pytest.raises(StartupLengthError):
            StartupReader().feed(head)
    assert StartupReader().feed(struct.pack("!i", 10004)) is None  # the largest: wait for it
    assert StartupReader().feed(b"\0\0\0") is None


@pytest.mark.parametrize("key_len,ok", [(0, False), (4, True), (32, True), (256, True), (257, False)])
def test_cancel_request_key_lengths(key_len, ok):
    from proxy.wire.framing import StartupLengthError
    packet = struct.pack("!iiI", 12 + key_len, m.CANCEL_REQUEST_CODE, 7) + b"k" * key_len
    if ok:
        assert StartupReader().feed(packet) == m.CancelRequest(7, b"k" * key_len)
    else:
        with pytest.raises(StartupLengthError):
            StartupReader().feed(packet)


def test_a_negotiation_request_already_answered_is_a_startup_packet():
    r = StartupReader()
    r.ssl_done = True
    with pytest.raises(m.UnsupportedProtocol) as e:
        r.feed(struct.pack("!ii", 8, m.SSL_REQUEST_CODE))
    assert e.value.message == "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.2"
    assert isinstance(r.feed(struct.pack("!ii", 8, m.GSSENC_REQUEST_CODE)), GSSENCRequest)


@pytest.mark.parametrize("body,message", [
    (b"user\0x\0", "invalid startup packet layout: expected terminator as last byte"),
    (b"user\0x", "invalid startup packet layout: expected terminator as last byte"),
    (b"user\0", "invalid startup packet layout: expected terminator as last byte"),
    (b"user\0x\0\0\0", "invalid startup packet layout: expected terminator as last byte"),
    (b"user\0\0\0", "no PostgreSQL user name specified in startup packet"),
    (b"\0", "no PostgreSQL user name specified in startup packet"),
])
def test_startup_layout_as_postgresql(body, message):
    packet = struct.pack("!ii", 8 + len(body), m.PROTOCOL_3_0) + body
    with pytest.raises(PgError) as e:
        StartupReader().feed(packet)
    assert e.value.message == message


def test_protocol_2_refusal_in_protocol_2_format():
    e = m.UnsupportedProtocol(2 << 16)
    assert e.error_bytes({"M": e.message}) == (
        b"EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.2\n\0")


@pytest.mark.parametrize("interesting_q", [False, True])
def test_pass_all_fast_path_matches_next_at_every_split(interesting_q):
    """pass_all either consumes a chunk whole (no interesting frame starts in it) or nothing,
    after which next() sees the same stream; together they must yield the same bytes, types,
    and inspected frames whatever the split."""
    inspect = frozenset(b"Q")
    for cut in range(len(STREAM) + 1):
        scan = FrameScanner(1 << 20)
        passed, inspected, completed = bytearray(), [], []
        for chunk in (STREAM[:cut], STREAM[cut:]):
            types = scan.pass_all(chunk, inspect, lambda k, f: interesting_q)
            if types is not None:
                passed += chunk
                completed += types
                continue
            while (ev := scan.next(inspect if interesting_q else frozenset())) is not None:
                kind, raw, t = ev
                if kind == PASS:
                    passed += raw
                    completed += t
                else:
                    inspected.append(raw)
                    completed.append(kind)
        expect_inspected = [FRAMES[4]] if interesting_q else []
        assert inspected == expect_inspected, cut
        assert bytes(passed) == b"".join(f for f in FRAMES if f not in expect_inspected), cut
        assert completed == [f[0] for f in FRAMES], cut
        assert scan.last_status == b"T"
