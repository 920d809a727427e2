"""PostgreSQL protocol messages: the few pgkeep decodes, and the encoders for what it answers.

Sans-IO: bytes in, dataclasses out, and back. Forwarded frames are never decoded here; they stay
raw and are re-sent byte for byte. Frontend and backend message types are kept apart because the
same letter means different things per direction ('D' is Describe from a client and DataRow from
a server; 'S' is Sync or ParameterStatus; 'C' is Close or CommandComplete; 'E' Execute or Error).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..errors import ProtocolViolation

__all__ = [
    "SSL_REQUEST_CODE", "GSSENC_REQUEST_CODE", "CANCEL_REQUEST_CODE", "PROTOCOL_3_0", "PROTOCOL_3_2",
    "StartupMessage", "CancelRequest", "UnsupportedProtocol", "Query", "Parse", "Bind", "Describe",
    "Execute", "Close",
    "decode_startup", "decode_cancel", "decode_query", "decode_parse", "decode_bind",
    "decode_describe", "decode_execute", "decode_close",
    "Column", "frame", "error_response", "notice_response", "ready_for_query", "row_description",
    "data_row", "command_complete", "parameter_description", "PARSE_COMPLETE", "BIND_COMPLETE",
    "CLOSE_COMPLETE", "NO_DATA", "EMPTY_QUERY", "PORTAL_SUSPENDED", "backend_key_data",
    "strip_sasl_plus", "auth_code", "encode_parse", "decode_data_row", "decode_error_fields",
]

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
PROTOCOL_3_0 = 196608
PROTOCOL_3_2 = 196610

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_HDR = struct.Struct("!ci")


class _Reader:
    """Cursor over a message body; every read past the end is a protocol violation."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes | memoryview, pos: int = 0) -> None:
        self.buf = bytes(buf)
        self.pos = pos

    def cstring(self) -> str:
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolViolation("invalid message format: unterminated string")
        s = self.buf[self.pos:end].decode("utf-8", "replace")
        self.pos = end + 1
        return s

    def int16(self) -> int:
        if self.pos + 2 > len(self.buf):
            raise ProtocolViolation("invalid message format")
        (v,) = _I16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return v

    def int32(self) -> int:
        if self.pos + 4 > len(self.buf):
            raise ProtocolViolation("invalid message format")
        (v,) = _I32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def uint32(self) -> int:
        return self.int32() & 0xFFFFFFFF

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise ProtocolViolation("invalid message format")
        v = self.buf[self.pos:self.pos + n]
        self.pos += n
        return v

    def byte(self) -> bytes:
        return self.take(1)


# ---- untyped startup phase ---------------------------------------------------------------

@dataclass(frozen=True)
class StartupMessage:
    protocol: int
    params: dict[str, str]
    raw: bytes  # the whole packet, length word included, re-sent to the upstream as is


@dataclass(frozen=True)
class CancelRequest:
    pid: int
    secret: bytes


class UnsupportedProtocol(ProtocolViolation):
    """A startup packet asking for a protocol major version other than 3. PostgreSQL answers a
    client that asked for 2.x in that version's format: `error_bytes` is what it sends."""

    def __init__(self, protocol: int) -> None:
        super().__init__(f"unsupported frontend protocol {protocol >> 16}.{protocol & 0xFFFF}: "
                         "server supports 3.0 to 3.2", sqlstate="0A000", severity="FATAL")
        self.protocol = protocol

    def error_bytes(self, fields: dict[str, str]) -> bytes:
        if self.protocol >> 16 >= 3:
            return error_response(fields)
        return b"E" + f"FATAL:  {fields['M']}\n".encode() + b"\0"  # protocol 2's ErrorResponse


def decode_startup(packet: bytes) -> StartupMessage:
    """A StartupMessage read as PostgreSQL's ProcessStartupPacket reads it (same checks, same
    order, same errors): name/value pairs up to a terminator that must be the last byte."""
    protocol = int.from_bytes(packet[4:8], "big")
    if protocol >> 16 != 3:
        raise UnsupportedProtocol(protocol)
    buf = bytes(packet[4:]) + b"\0"  # as PostgreSQL: every string in the packet is terminated
    size = len(buf) - 1
    params: dict[str, str] = {}
    offset = 4
    while offset < size:
        if buf[offset] == 0:
            break  # the terminator
        value_at = buf.index(b"\0", offset) + 1
        if value_at >= size:
            break  # a name without a value: refused below
        value_end = buf.index(b"\0", value_at)
        params[buf[offset:value_at - 1].decode("utf-8", "replace")] = \
            buf[value_at:value_end].decode("utf-8", "replace")
        offset = value_end + 1
    if offset != size - 1:
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte",
                                severity="FATAL")
    if not params.get("user"):
        raise ProtocolViolation("no PostgreSQL user name specified in startup packet",
                                sqlstate="28000", severity="FATAL")
    return StartupMessage(protocol, params, bytes(packet))


def decode_cancel(packet: bytes) -> CancelRequest:
    r = _Reader(packet, 8)
    pid = r.uint32()
    return CancelRequest(pid, r.buf[r.pos:])


# ---- frontend messages pgkeep acts on (bodies, without type byte and length) ------------

@dataclass(frozen=True)
class Query:
    sql: str


@dataclass(frozen=True)
class Parse:
    name: str
    sql: str
    param_types: tuple[int, ...]


@dataclass(frozen=True)
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]


@dataclass(frozen=True)
class Describe:
    kind: str  # 'S' statement or 'P' portal
    name: str


@dataclass(frozen=True)
class Execute:
    portal: str
    max_rows: int


@dataclass(frozen=True)
class Close:
    kind: str
    name: str


def decode_query(body: bytes) -> Query:
    return Query(_Reader(body).cstring())


def decode_parse(body: bytes) -> Parse:
    r = _Reader(body)
    name, sql = r.cstring(), r.cstring()
    n = r.int16()
    return Parse(name, sql, tuple(r.uint32() for _ in range(n)))


def decode_bind(body: bytes) -> Bind:
    r = _Reader(body)
    portal, statement = r.cstring(), r.cstring()
    pf = tuple(r.int16() for _ in range(r.int16()))
    params: list[bytes | None] = []
    for _ in range(r.int16()):
        n = r.int32()
        params.append(None if n == -1 else r.take(n))
    rf = tuple(r.int16() for _ in range(r.int16()))
    return Bind(portal, statement, pf, tuple(params), rf)


def decode_describe(body: bytes) -> Describe:
    r = _Reader(body)
    kind = r.byte().decode("ascii", "replace")
    if kind not in ("S", "P"):
        raise ProtocolViolation(f"invalid DESCRIBE message subtype {kind!r}")
    return Describe(kind, r.cstring())


def decode_execute(body: bytes) -> Execute:
    r = _Reader(body)
    return Execute(r.cstring(), r.int32())


def decode_close(body: bytes) -> Close:
    r = _Reader(body)
    kind = r.byte().decode("ascii", "replace")
    if kind not in ("S", "P"):
        raise ProtocolViolation(f"invalid CLOSE message subtype {kind!r}")
    return Close(kind, r.cstring())


# ---- backend messages pgkeep sends ---------------------------------------------------------

@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int = 25  # text
    type_size: int = -1


def frame(kind: bytes, body: bytes = b"") -> bytes:
    return _HDR.pack(kind, len(body) + 4) + body


def _fields(fields: dict[str, str]) -> bytes:
    out = bytearray()
    for code, value in fields.items():
        out += code.encode("ascii") + value.encode("utf-8", "replace") + b"\0"
    return bytes(out) + b"\0"


def error_response(fields: dict[str, str]) -> bytes:
    return frame(b"E", _fields(fields))


def notice_response(message: str, *, severity: str = "NOTICE", sqlstate: str = "00000",
                    detail: str | None = None, hint: str | None = None) -> bytes:
    f = {"S": severity, "V": severity, "C": sqlstate, "M": message}
    if detail:
        f["D"] = detail
    if hint:
        f["H"] = hint
    return frame(b"N", _fields(f))


def ready_for_query(status: bytes) -> bytes:
    return frame(b"Z", status)


def row_description(columns: Sequence[Column], formats: Sequence[int] = ()) -> bytes:
    body = bytearray(_I16.pack(len(columns)))
    for i, c in enumerate(columns):
        fmt = _format_for(formats, i)
        body += c.name.encode() + b"\0" + struct.pack("!ihihih", 0, 0, c.type_oid, c.type_size, -1, fmt)
    return frame(b"T", bytes(body))


def _format_for(formats: Sequence[int], i: int) -> int:
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else formats[i]


def data_row(values: Iterable[bytes | None]) -> bytes:
    vals = list(values)
    body = bytearray(_I16.pack(len(vals)))
    for v in vals:
        if v is None:
            body += _I32.pack(-1)
        else:
            body += _I32.pack(len(v)) + v
    return frame(b"D", bytes(body))


def command_complete(tag: str) -> bytes:
    return frame(b"C", tag.encode() + b"\0")


def encode_parse(name: str, sql: str, param_types: Sequence[int]) -> bytes:
    return frame(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + _I16.pack(len(param_types))
                 + b"".join(struct.pack("!I", t) for t in param_types))


def parameter_description(oids: Sequence[int]) -> bytes:
    return frame(b"t", _I16.pack(len(oids)) + b"".join(struct.pack("!I", o) for o in oids))


def backend_key_data(pid: int, secret: bytes) -> bytes:
    return frame(b"K", struct.pack("!I", pid) + secret)


PARSE_COMPLETE = frame(b"1")
BIND_COMPLETE = frame(b"2")
CLOSE_COMPLETE = frame(b"3")
NO_DATA = frame(b"n")
EMPTY_QUERY = frame(b"I")
PORTAL_SUSPENDED = frame(b"s")


def decode_data_row(body: bytes) -> tuple[str | None, ...]:
    """A DataRow in text format, as str values (pgkeep's internal queries ask for text)."""
    r = _Reader(body)
    out: list[str | None] = []
    for _ in range(r.int16()):
        n = r.int32()
        out.append(None if n == -1 else r.take(n).decode("utf-8", "replace"))
    return tuple(out)


def decode_error_fields(body: bytes) -> dict[str, str]:
    r = _Reader(body)
    fields: dict[str, str] = {}
    while r.pos < len(r.buf) and r.buf[r.pos] != 0:
        code = chr(r.buf[r.pos])
        r.pos += 1
        fields[code] = r.cstring()
    return fields


# ---- authentication ------------------------------------------------------------------------

def auth_code(body: bytes) -> int:
    """The request code of an Authentication ('R') message body."""
    return _I32.unpack_from(body, 0)[0]


def strip_sasl_plus(body: bytes) -> bytes:
    """Drop channel-binding (-PLUS) mechanisms from an AuthenticationSASL body.

    The upstream binds SCRAM-SHA-256-PLUS to *its* TLS channel with pgkeep, which the client
    cannot reproduce, so a client that picked it would always fail (PgBouncer and PgDog do the same).
    """
    r = _Reader(body, 4)
    mechs = []
    while True:
        m = r.cstring()
        if not m:
            break
        if not m.endswith("-PLUS"):
            mechs.append(m)
    return body[:4] + b"".join(m.encode() + b"\0" for m in mechs) + b"\0"
