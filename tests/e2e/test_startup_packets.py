"""The startup phase through pgkeep answers as PostgreSQL 18 itself does, compared on the wire:
the same bytes for every packet PostgreSQL closes on without a word (an impossible length, a
Terminate before the StartupMessage, a truncated packet, a malformed CancelRequest), and the same
ErrorResponse (severity, SQLSTATE, message) where PostgreSQL sends one."""
from __future__ import annotations

import socket
import struct

import pytest

from proxy.wire import messages as m

from .helpers import assert_alive
from .rawpg import cancel_request, error_fields, gssenc_request, read_all_until_eof, ssl_request

pytestmark = pytest.mark.timeout(60)


def _packet(body: bytes) -> bytes:
    return struct.pack("!i", len(body) + 4) + body


def _params(*pairs: bytes) -> bytes:
    return b"".join(p + b"\0" for p in pairs)


V3 = struct.pack("!i", m.PROTOCOL_3_0)

CASES = {
    "terminate before startup": b"X\0\0\0\x04",
    "terminate and more before startup": b"X\0\0\0\x04" + _packet(V3 + _params(b"user", b"postgres") + b"\0"),
    "length word 4": struct.pack("!ii", 4, m.PROTOCOL_3_0),
    "length word 7": struct.pack("!i", 7) + V3,
    "length word 0": b"\0" * 8,
    "negative length word": struct.pack("!ii", -8, m.PROTOCOL_3_0),
    "length word over 10000": struct.pack("!ii", 10001, m.PROTOCOL_3_0) + b"\0" * 10001,
    "length word only, then EOF": struct.pack("!i", 10001),
    "a huge length word alone": b"\x7f\xff\xff\xff",
    "truncated packet, then EOF": struct.pack("!i", 40) + V3 + b"user\0",
    "three bytes, then EOF": b"\0\0\0",
    "no terminator": _packet(V3 + b"user\0postgres\0"),
    "no user": _packet(V3 + _params(b"database", b"postgres") + b"\0"),
    "unterminated value": _packet(V3 + b"user\0postgres"),
    "protocol 2.0": _packet(struct.pack("!i", 2 << 16) + _params(b"user", b"postgres") + b"\0"),
    "protocol 4.0": _packet(struct.pack("!i", 4 << 16) + _params(b"user", b"postgres") + b"\0"),
    "cancel request too short": struct.pack("!ii", 12, m.CANCEL_REQUEST_CODE) + b"\0\0\0\1",
    "cancel request without a key": struct.pack("!iiI", 12, m.CANCEL_REQUEST_CODE, 1),
    "cancel request with a 300-byte key": cancel_request(1, b"k" * 300),
    "cancel request with an unknown key": cancel_request(1, b"\0\0\0\0"),
    "SSLRequest twice": ssl_request() + ssl_request(),
    "SSLRequest with a body, then EOF": struct.pack("!ii", 12, m.SSL_REQUEST_CODE) + b"\0\0\0\0",
    "GSSENCRequest twice": gssenc_request() + gssenc_request(),
}


def _exchange(port: int, data: bytes, eof: bool) -> bytes:
    """Send `data` (then end our side, if `eof`), return everything the server sends until it
    closes (PostgreSQL's authentication_timeout is a minute: a wait is a failure here)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        if eof:
            s.shutdown(socket.SHUT_WR)
        return read_all_until_eof(s, timeout=10)


def _messages(data: bytes) -> list:
    """The answer as comparable items: 'S'/'N' bytes, and ErrorResponses reduced to the fields
    pgkeep can match (PostgreSQL also names its source file, line and routine)."""
    out: list = []
    while data:
        if data[:1] in (b"S", b"N") and (len(data) == 1 or data[1:2] in (b"E", b"S", b"N")):
            out.append(data[:1].decode())
            data = data[1:]
            continue
        length = int.from_bytes(data[1:5], "big")
        if data[:1] == b"E" and len(data) >= 5 and length < len(data):  # else protocol 2's
            fields = error_fields(data[5:1 + length])
            out.append({k: fields.get(k) for k in "SVCM"})
            data = data[1 + length:]
            continue
        out.append(data)  # anything else verbatim
        break
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_startup_answer_matches_postgresql(name, pgkeep, pg18):
    data = CASES[name]
    eof = "EOF" in name
    expected = _exchange(pg18.port, data, eof)
    got = _exchange(pgkeep.port, data, eof)
    if not expected or b"E" not in expected[:2]:
        assert got == expected, (name, expected, got)
    else:
        assert _messages(got) == _messages(expected), (name, expected, got)
    assert_alive(pgkeep)


def _one_by_one(port: int, packets: list[bytes]) -> bytes:
    """Send each packet after the server answered the one before (one byte: 'S'/'N')."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        got = b""
        for p in packets[:-1]:
            s.sendall(p)
            got += s.recv(1)
        s.sendall(packets[-1])
        return got + read_all_until_eof(s, timeout=10)


@pytest.mark.parametrize("packets", [
    [ssl_request(), ssl_request()],
    [gssenc_request(), gssenc_request()],
    [ssl_request(), gssenc_request(), ssl_request()],
], ids=["SSL twice", "GSS twice", "SSL, GSS, SSL"])
def test_a_second_negotiation_request_is_refused_as_postgresql_does(packets, pgkeep, pg18):
    """After 'N' to an SSLRequest (or GSSENCRequest), another one of its kind is read as a
    startup packet of protocol 1234.5679 (or .5680) and refused with 0A000."""
    expected = _one_by_one(pg18.port, packets)
    assert expected[:len(packets) - 1] == b"N" * (len(packets) - 1)
    assert _messages(_one_by_one(pgkeep.port, packets)) == _messages(expected), expected
