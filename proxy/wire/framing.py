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

`fast_relay` is the compiled steady-state relay (proxy/wire/_relay.pyx, built by `pip install`),
or None where it is not built or PGKEEP_PURE_PYTHON=1 forces the pure-Python path; `RELAY` names
the path in use ("compiled" or "pure-python").
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Union

from .. import errors
from .messages import (CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE,
                       decode_cancel, decode_startup, CancelRequest, StartupMessage)

__all__ = ["RELAY", "fast_relay", "PASS", "STREAM", "DISCARD", "STREAM_HEAD", "FrameScanner", "StartupLengthError",
           "StartupReader", "SSLRequest", "GSSENCRequest", "DirectTLS", "StartupPacket", "MAX_STARTUP_PACKET",
           "MAX_AUTH_MESSAGE"]

PASS = -1  # event kind of a raw pass-through run
STREAM = -2  # event kind of the head of an inspected frame too long to hold (see FrameScanner)
DISCARD = -3  # event kind of the rest of a streamed frame the caller chose to drop
STREAM_HEAD = 4096  # bytes of such a frame handed out as its head: enough for its names
_COMPACT_MIN = 1 << 16
_HEADER = struct.Struct("!BI")
MAX_STARTUP_PACKET = 10000  # PostgreSQL's own limit for the startup packet
# PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH for a message body during authentication, as a length
# word (which counts itself).
MAX_AUTH_MESSAGE = 65535 + 4


def _load_fast_relay():
    if os.environ.get("PGKEEP_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _relay
    except ImportError:
        return None
    return _relay


fast_relay = _load_fast_relay()
RELAY = "pure-python" if fast_relay is None else "compiled"


class StartupLengthError(errors.PgError):
    """A startup packet with an impossible length word. PostgreSQL logs it and closes the
    connection without an ErrorResponse (the peer may not even speak the protocol)."""


class FrameScanner:
    """Incremental splitter of a typed message stream.

    `feed(data)` appends bytes; then `next(inspect)` returns events one at a time until None:
    `(PASS, run, types)` for a run of raw bytes to forward as is (it may end inside a frame;
    `types` lists the type of every frame that ended within it), or `(kind, frame, ())` for one
    complete frame whose type byte `kind` is in `inspect`, header included. The caller may change
    `inspect` between calls, so a decision taken on one frame applies to the very next one.
    `last_status` is the status byte of the last ReadyForQuery ('Z') that ended in a run.

    Memory and time: a frame of an inspected type longer than `stream_over` (its length word) is
    never held whole: `next` hands out its first `STREAM_HEAD` bytes as `(STREAM, head, ())` and
    the rest as pass-through runs (its type is listed in the run where it ends). With
    `stream=False` it hands out nothing for such a frame and sets `blocked` instead, so the caller
    can stop reading until it may stream. After a head, `discard()` drops that frame: the rest
    of it comes out as `(DISCARD, run, ())` events, never in a PASS run. Pending bytes live in
    one buffer that is appended to and compacted only when more than half of it is consumed, so
    feeding n bytes in any pieces costs O(n): each byte is copied a bounded number of times
    (into the buffer, amortised compaction, out of it), never once per read.
    """

    __slots__ = ("max_size", "stream_over", "blocked", "_data", "_pos", "_passing",
                 "_passing_type", "_discarding", "last_status")

    def __init__(self, max_size: int, stream_over: int | None = None) -> None:
        """`stream_over`, when set, must be at least STREAM_HEAD (it may be changed later)."""
        self.max_size = max_size
        self.stream_over = max_size if stream_over is None else stream_over
        self.blocked = False       # the last next() stopped at a frame it may not stream
        self._data: bytes | bytearray = b""
        self._pos = 0
        self._passing = 0         # bytes still to come of a pass-through frame
        self._passing_type = 0
        self._discarding = False
        self.last_status = b"I"

    @property
    def at_boundary(self) -> bool:
        """True when no frame is partly received."""
        return self._pos >= len(self._data) and not self._passing

    @property
    def pending(self) -> int:
        """Bytes received and not yet handed out."""
        return len(self._data) - self._pos

    def handoff(self) -> tuple[int, int] | None:
        """(bytes left of the frame being passed, its type) when nothing is pending, so another
        walker (the compiled relay) can go on where this one stopped; else None."""
        if self._pos < len(self._data) or self._discarding:
            return None
        return self._passing, self._passing_type

    def take_back(self, passing: int, passing_type: int, held: bytes) -> None:
        """Go on where the other walker stopped: inside a passed frame, or at a frame start
        with `held` (a partial header it read and did not forward) pending."""
        self._passing, self._passing_type = passing, passing_type
        self._data, self._pos = held, 0

    def discard(self) -> None:
        """Drop the rest of the frame whose STREAM head was the last event."""
        assert self._passing, "discard() only right after a STREAM head"
        self._discarding = True

    def feed(self, data: bytes) -> None:
        buf, pos = self._data, self._pos
        if pos >= len(buf):
            self._data, self._pos = (data if type(data) is bytes else bytes(data)), 0
        elif type(buf) is bytes:  # the first append to a remainder: copy the remainder once
            buf = bytearray(memoryview(buf)[pos:])
            buf += data
            self._data, self._pos = buf, 0
        else:
            if pos > _COMPACT_MIN and pos * 2 > len(buf):
                del buf[:pos]
                self._pos = 0
            buf += data

    def pass_all(self, data: bytes, inspect: frozenset[int], interesting) -> list[int] | None:
        """Hot path: if no frame starting in the pending bytes plus `data` has a type in
        `inspect` for which `interesting(kind, frame)` is true (or that is longer than
        `stream_over`), consume everything and return the completed frame types (the caller
        forwards `data` as is). Otherwise consume nothing, keep `data` pending, and return
        None: the caller then walks events with `next`."""
        if self._pos < len(self._data) or self._discarding:
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
        stream_over = self.stream_over
        last_z = -1
        unpack = _HEADER.unpack_from
        while n - pos >= 5 and not passing:
            kind, length = unpack(data, pos)
            if length < 4 or length > max_size:
                self.feed(data)
                return None  # next() raises the proper error
            end = pos + 1 + length
            if kind in inspect and (end > n or length > stream_over
                                    or interesting(kind, data[pos:end])):
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

    def next(self, inspect: frozenset[int] | set[int],
             stream: bool = True) -> tuple[int, bytes, list[int]] | None:
        self.blocked = False
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
            if self._discarding:
                self._discarding = bool(self._passing)
                self._pos = pos
                return (DISCARD, _cut(data, start, pos), types)
            if self._passing:
                self._pos = pos
                return (PASS, _cut(data, start, pos), types)
            types.append(self._passing_type)
            if self._passing_type == 90:
                self.last_status = bytes(data[pos - 1:pos])
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
                if length > self.stream_over:
                    if not stream:
                        self.blocked = True
                        self._pos = pos
                        return None
                    if n - pos < STREAM_HEAD:
                        self._pos = pos
                        return None  # wait for the head
                    self._passing, self._passing_type = end - pos - STREAM_HEAD, kind
                    self._pos = pos + STREAM_HEAD
                    return (STREAM, _cut(data, pos, pos + STREAM_HEAD), types)
                if end > n:
                    self._pos = pos
                    return None  # wait for the rest of the frame
                self._pos = end
                return (kind, _cut(data, pos, end), types)
            if end > n:
                self._passing = end - n
                self._passing_type = kind
                pos = n
                break
            types.append(kind)
            if kind == 90:
                self.last_status = bytes(data[end - 1:end])
            pos = end
        self._pos = pos
        if start == pos:
            return None  # only a partial header is left
        return (PASS, _cut(data, start, pos), types)


def _cut(data: bytes | bytearray, start: int, end: int) -> bytes:
    """data[start:end] as bytes, without a copy when that is all of a bytes buffer."""
    if type(data) is bytes:
        return data if start == 0 and end == len(data) else data[start:end]
    return bytes(memoryview(data)[start:end])


@dataclass(frozen=True)
class SSLRequest:
    pass


@dataclass(frozen=True)
class GSSENCRequest:
    pass


@dataclass(frozen=True)
class DirectTLS:
    """A TLS ClientHello as the first bytes (libpq's sslnegotiation=direct)."""
    hello: bytes = b""  # the bytes read so far, to hand to the TLS layer


StartupPacket = Union[SSLRequest, GSSENCRequest, CancelRequest, StartupMessage, DirectTLS]


class StartupReader:
    """Reads the untyped packets of the startup phase, one at a time, as PostgreSQL's
    ProcessStartupPacket does.

    `feed(data)` returns the next complete packet or None; `leftover` holds bytes received after
    it (which, after an SSLRequest, must be empty: see the CVE-2021-23214 class of bug). The
    length word is judged as soon as its 4 bytes are in (so a Terminate sent before the startup
    packet is an impossible length at once). `ssl_done`/`gss_done`: that negotiation already
    took place, so another request of its kind is read as a startup packet (and refused).
    """

    def __init__(self, max_size: int = MAX_STARTUP_PACKET) -> None:
        self.max_size = max_size
        self._buf = b""
        self.leftover = b""
        self.ssl_done = False
        self.gss_done = False

    def feed(self, data: bytes) -> StartupPacket | None:
        buf = self._buf = self._buf + data
        if buf[:1] == b"\x16":
            self._buf = b""
            return DirectTLS(buf)
        if len(buf) < 4:
            return None
        length = int.from_bytes(buf[:4], "big")
        if length < 8 or length - 4 > self.max_size:  # PostgreSQL's limit is on the body
            raise StartupLengthError(f"invalid length of startup packet ({length} bytes, at most "
                                     f"{self.max_size + 4})", sqlstate="08P01", severity="FATAL")
        if len(buf) < length:
            return None
        packet, self.leftover, self._buf = buf[:length], buf[length:], b""
        code = int.from_bytes(packet[4:8], "big")
        if code == CANCEL_REQUEST_CODE:
            if not 16 <= length <= 12 + 256:  # a key of 4 (protocol 3.0) to 256 bytes (3.2)
                raise StartupLengthError("invalid length of cancel request packet",
                                         sqlstate="08P01", severity="FATAL")
            return decode_cancel(packet)
        if code == SSL_REQUEST_CODE and not self.ssl_done:
            return SSLRequest()
        if code == GSSENC_REQUEST_CODE and not self.gss_done:
            return GSSENCRequest()
        return decode_startup(packet)
