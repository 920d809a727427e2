"""Structural decoding of a COPY stream (binary or text), incrementally and without I/O.

Used by RESTORE ... WITH schema_only, verify_backup_table_data to decode every row of a backup
without writing it: the binary format's header, every tuple's field count and field lengths, and
the trailer are checked, and rows are counted; text rows are counted by their line ends.
"""
from __future__ import annotations

import struct

from ..errors import DataCorrupted

__all__ = ["CopyDecoder", "BINARY_SIGNATURE"]

BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")


class CopyDecoder:
    def __init__(self, name: str, fmt: str, columns: int) -> None:
        self.name = name
        self.fmt = fmt
        self.columns = columns
        self.rows = 0
        self._buf = b""
        self._pos = 0
        self._header_done = False
        self._trailer = False

    def _bad(self, why: str) -> DataCorrupted:
        return DataCorrupted(f"{self.name}: invalid COPY data: {why}")

    def feed(self, data: bytes) -> None:
        if self.fmt == "text":
            self.rows += data.count(b"\n")
            self._buf = data[-1:] if data else self._buf
            return
        buf = self._buf[self._pos:] + data if self._pos < len(self._buf) else data
        pos, n = 0, len(buf)
        if not self._header_done:
            if n < 19:
                self._buf, self._pos = buf, 0
                return
            if buf[:11] != BINARY_SIGNATURE:
                raise self._bad("bad binary COPY signature")
            ext = _I32.unpack_from(buf, 15)[0]
            if n < 19 + ext:
                self._buf, self._pos = buf, 0
                return
            pos = 19 + ext
            self._header_done = True
        while pos < n:
            if self._trailer:
                raise self._bad("data after the trailer")
            if n - pos < 2:
                break
            fields = _I16.unpack_from(buf, pos)[0]
            if fields == -1:
                self._trailer = True
                pos += 2
                continue
            if fields != self.columns:
                raise self._bad(f"row {self.rows + 1} has {fields} fields, expected {self.columns}")
            p = pos + 2
            complete = True
            for _ in range(fields):
                if n - p < 4:
                    complete = False
                    break
                length = _I32.unpack_from(buf, p)[0]
                if length < -1:
                    raise self._bad(f"row {self.rows + 1} has a negative field length")
                p += 4 + max(length, 0)
                if p > n:
                    complete = False
                    break
            if not complete:
                break
            self.rows += 1
            pos = p
        self._buf, self._pos = buf, pos

    def finish(self) -> int:
        if self.fmt == "text":
            if self._buf not in (b"", b"\n"):
                raise self._bad("the last row is not terminated")
            return self.rows
        if not self._header_done or not self._trailer or self._pos != len(self._buf):
            raise self._bad("truncated stream")
        return self.rows
