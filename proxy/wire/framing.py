"""Sans-IO framing of the PostgreSQL byte stream: no asyncio, no sockets.

Two readers:
- `StartupReader` knows the untyped startup phase (a length word, then a code or a protocol
  version): SSLRequest, GSSENCRequest, CancelRequest and StartupMessage, plus a TLS ClientHello
  sent without SSLRequest (direct TLS), which must never be mistaken for a startup packet.
- `FrameScanner` walks typed frames (one type byte, a length word, a body). Frames whose type the
  caller asks to inspect come out whole; every other byte comes out as raw pass-through runs, which
  may end in the middle of a frame, so a 500 MB CopyData is never buffered. It also records, in
  order, the type of each frame that *completed* in the chunk, so a caller can count responses
  without decoding them.

Both enforce a maximum length and raise `PgError` (08P01) on violation. Tests feed them streams
split at every offset.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Union

from .. import errors
from .messages import (CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE,
                       decode_cancel, decode_startup, CancelRequest, StartupMessage)

__all__ = ["PASS", "FrameScanner", "StartupReader", "SSLRequest", "GSSENCRequest", "DirectTLS",
           "StartupPacket", "MAX_STARTUP_PACKET"]

PASS = -1  # event kind of a raw pass-through run
_HEADER = struct.Struct("!BI")
MAX_STARTUP_PACKET = 10000  # PostgreSQL's own limit for the startup packet


class FrameScanner:
    """Incremental splitter of a typed message stream.

    `feed(data)` appends bytes; then `next(inspect)` returns events one at a time until None:
    `(PASS, run, types)` for a run of raw bytes to forward as is (it may end inside a frame;
    `types` lists the type of every frame that ended within it), or `(kind, frame, ())` for one
    complete frame whose type byte `kind` is in `inspect`, header included. The caller may change
    `inspect` between calls, so a decision taken on one frame applies to the very next one.
    `last_status` is the status byte of the last ReadyForQuery ('Z') that ended in a run.
    Bytes are never reordered or copied more than once.
    """

    __slots__ = ("max_size", "_data", "_pos", "_passing", "_passing_type", "last_status")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._data = b""
        self._pos = 0
        self._passing = 0         # bytes still to come of a pass-through frame
        self._passing_type = 0
        self.last_status = b"I"

    @property
    def at_boundary(self) -> bool:
        """True when no frame is partly received."""
        return self._pos >= len(self._data) and not self._passing

    def feed(self, data: bytes) -> None:
        if self._pos < len(self._data):
            self._data = self._data[self._pos:] + data
        else:
            self._data = data
        self._pos = 0

    def pass_all(self, data: bytes, inspect: frozenset[int], interesting) -> list[int] | None:
        """Hot path: if no frame starting in the pending bytes plus `data` has a type in
        `inspect` for which `interesting(kind, frame)` is true, consume everything and return
        the completed frame types (the caller forwards `data` as is). Otherwise consume nothing,
        keep `data` pending, and return None: the caller then walks events with `next`."""
        if self._pos < len(self._data):
            self.feed(data)
            return None
        n = len(data)
        pos = 0
        types: list[int] = []
        passing, passing_type = self._passing, self._passing_type
        if passing:
            take = passing if passing < n else n
            passing -= take
            pos = take
            if not passing:
                types.append(passing_type)
                if passing_type == 90:
                    self.last_status = data[pos - 1:pos]
        max_size = self.max_size
        last_z = -1
        unpack = _HEADER.unpack_from
        while n - pos >= 5 and not passing:
            kind, length = unpack(data, pos)
            if length < 4 or length > max_size:
                self.feed(data)
                return None  # next() raises the proper error
            end = pos + 1 + length
            if kind in inspect and (end > n or interesting(kind, data[pos:end])):
                self.feed(data)
                return None
            if end > n:
                passing, passing_type = end - n, kind
                pos = n
                break
            types.append(kind)
            if kind == 90:
                last_z = end
            pos = end
        if pos < n:  # a partial header: keep it, pass the rest
            self.feed(data)
            return None
        if last_z > 0:
            self.last_status = data[last_z - 1:last_z]
        self._passing, self._passing_type = passing, passing_type
        self._data, self._pos = b"", 0
        return types

    def next(self, inspect: frozenset[int] | set[int]) -> tuple[int, bytes, list[int]] | None:
        data, pos = self._data, self._pos
        n = len(data)
        if pos >= n:
            return None
        types: list[int] = []
        start = pos
        if self._passing:
            take = min(self._passing, n - pos)
            self._passing -= take
            pos += take
            if self._passing:
                self._pos = pos
                return (PASS, data[start:pos] if start or pos != n else data, types)
            types.append(self._passing_type)
            if self._passing_type == 90:
                self.last_status = data[pos - 1:pos]
        max_size = self.max_size
        while n - pos >= 5:
            kind = data[pos]
            length = int.from_bytes(data[pos + 1:pos + 5], "big")
            if length < 4:
                raise errors.ProtocolViolation(f"invalid message length {length}", severity="FATAL")
            if length > max_size:
                raise errors.message_too_large(length, max_size)
            end = pos + 1 + length
            if kind in inspect:
                if start < pos:
                    break  # hand out the run first; the frame comes on the next call
                if end > n:
                    self._pos = pos
                    return None  # wait for the rest of the frame
                self._pos = end
                return (kind, data[pos:end], ())
            if end > n:
                self._passing = end - n
                self._passing_type = kind
                pos = n
                break
            types.append(kind)
            if kind == 90:
                self.last_status = data[end - 1:end]
            pos = end
        self._pos = pos
        if start == pos:
            return None  # only a partial header is left
        return (PASS, data[start:pos] if start or pos != n else data, types)


@dataclass(frozen=True)
class SSLRequest:
    pass


@dataclass(frozen=True)
class GSSENCRequest:
    pass


@dataclass(frozen=True)
class DirectTLS:
    """A TLS ClientHello as the first bytes (libpq's sslnegotiation=direct)."""


StartupPacket = Union[SSLRequest, GSSENCRequest, CancelRequest, StartupMessage, DirectTLS]


class StartupReader:
    """Reads the untyped packets of the startup phase, one at a time.

    `feed(data)` returns the next complete packet or None; `leftover` holds bytes received after
    it (which, after an SSLRequest, must be empty: see the CVE-2021-23214 class of bug).
    """

    def __init__(self, max_size: int = MAX_STARTUP_PACKET) -> None:
        self.max_size = max_size
        self._buf = b""
        self.leftover = b""

    def feed(self, data: bytes) -> StartupPacket | None:
        buf = self._buf = self._buf + data
        if buf[:1] == b"\x16":
            self._buf = b""
            return DirectTLS()
        if len(buf) < 8:
            return None
        length = int.from_bytes(buf[:4], "big")
        if length < 8 or length > self.max_size:
            raise errors.startup_packet_too_large(length, self.max_size)
        if len(buf) < length:
            return None
        packet, self.leftover, self._buf = buf[:length], buf[length:], b""
        code = int.from_bytes(packet[4:8], "big")
        if code == SSL_REQUEST_CODE and length == 8:
            return SSLRequest()
        if code == GSSENC_REQUEST_CODE and length == 8:
            return GSSENCRequest()
        if code == CANCEL_REQUEST_CODE:
            if length < 16:
                raise errors.ProtocolViolation("invalid length of cancel request", severity="FATAL")
            return decode_cancel(packet)
        return decode_startup(packet)
