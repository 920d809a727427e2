"""The file envelope of docs/FORMAT.md section 2: an 8-byte header, then zstd frames.

`Sealer` turns content into stored bytes incrementally and keeps the SHA-256 and size of what it
produced; `Opener` does the reverse and checks the header. Pure: no I/O. zstd releases the GIL,
so callers run `feed` in worker threads to overlap compression with COPY.
"""
from __future__ import annotations

import hashlib

import zstandard

from ..errors import DataCorrupted, Unsupported

__all__ = ["MAGIC", "VERSION", "FLAG_ZSTD", "FLAG_ENCRYPTED", "HEADER_SIZE", "Sealer", "Opener",
           "seal", "open_bytes"]

MAGIC = b"PGKF"
VERSION = 1
FLAG_ZSTD = 1
FLAG_ENCRYPTED = 2
HEADER_SIZE = 8


class Sealer:
    """Content in, stored bytes out. `stored_size` and `sha256` cover everything returned."""

    def __init__(self, level: int = 3) -> None:
        self._c = zstandard.ZstdCompressor(level=level).compressobj()
        self._h = hashlib.sha256()
        self.stored_size = 0
        self.logical_size = 0
        self._started = False

    def _out(self, data: bytes) -> bytes:
        if not self._started:
            self._started = True
            data = MAGIC + bytes((VERSION, FLAG_ZSTD, 0, 0)) + data
        self._h.update(data)
        self.stored_size += len(data)
        return data

    def feed(self, content: bytes) -> bytes:
        self.logical_size += len(content)
        return self._out(self._c.compress(content))

    def finish(self) -> bytes:
        return self._out(self._c.flush())

    @property
    def sha256(self) -> str:
        return self._h.hexdigest()


class Opener:
    """Stored bytes in, content out; checks the header and, at `finish`, the SHA-256 and size."""

    def __init__(self, name: str, expected_sha256: str | None = None,
                 expected_size: int | None = None) -> None:
        self.name = name
        self._expected = expected_sha256
        self._expected_size = expected_size
        self._h = hashlib.sha256()
        self._d = None
        self._head = b""
        self.stored_size = 0

    def feed(self, data: bytes) -> bytes:
        self._h.update(data)
        self.stored_size += len(data)
        if self._d is None:
            self._head += data
            if len(self._head) < HEADER_SIZE:
                return b""
            head, data = self._head[:HEADER_SIZE], self._head[HEADER_SIZE:]
            if head[:4] != MAGIC or head[4] != VERSION:
                raise DataCorrupted(f"{self.name} is not a pgkeep backup file (bad header)")
            flags = head[5]
            if flags & FLAG_ENCRYPTED:
                raise Unsupported(f"{self.name} is encrypted, which this pgkeep cannot read yet")
            self._d = zstandard.ZstdDecompressor().decompressobj() if flags & FLAG_ZSTD else False
        if self._d is False:
            return data
        try:
            return self._d.decompress(data)
        except zstandard.ZstdError as e:
            raise DataCorrupted(f"{self.name} is corrupted: {e}") from None

    def finish(self) -> None:
        if self._expected_size is not None and self.stored_size != self._expected_size:
            raise DataCorrupted(f"{self.name} has {self.stored_size} bytes, the manifest says "
                                f"{self._expected_size}", hint="the file was truncated or altered")
        if self._expected is not None and self._h.hexdigest() != self._expected:
            raise DataCorrupted(f"checksum mismatch for {self.name}",
                                hint="the file was altered after the backup was written")
        if self._d is None or (self._d is not False and not self._d.eof):
            raise DataCorrupted(f"{self.name} is truncated")


def seal(content: bytes, level: int = 3) -> tuple[bytes, str]:
    s = Sealer(level)
    out = s.feed(content) + s.finish()
    return out, s.sha256


def open_bytes(name: str, stored: bytes, expected_sha256: str | None = None) -> bytes:
    o = Opener(name, expected_sha256, len(stored) if expected_sha256 is None else None)
    out = o.feed(stored)
    o.finish()
    return out
