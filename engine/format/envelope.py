"""The file envelope of docs/FORMAT.md section 2: an 8-byte header, then zstd frames.

`Sealer` turns content into stored bytes incrementally and keeps the SHA-256 and size of what it
produced; `Opener` does the reverse and checks the header. Pure: no I/O. zstd releases the GIL,
so callers run `feed` in worker threads to overlap compression with COPY.
"""
from __future__ import annotations

import hashlib

import zstandard

from ..errors import DataCorrupted, Unsupported

__all__ = ["MAGIC", "VERSION", "FLAG_ZSTD", "FLAG_ENCRYPTED", "HEADER_SIZE", "FRAME_CONTENT", "LevelHint",
           "Sealer", "Opener", "seal", "open_bytes"]

MAGIC = b"PGKF"
VERSION = 1
FLAG_ZSTD = 1
FLAG_ENCRYPTED = 2
HEADER_SIZE = 8
FRAME_CONTENT = 4 << 20  # content bytes per zstd frame at most
# A frame that compressed at least this well says the content is highly redundant: it is then
# compressed at level 3 (zstd's "dfast" match finder) too, and if that is at least a tenth smaller
# the file's later frames use level 3. On blank-padded rows (pgbench_accounts) level 3 finds the
# long repeats level 1 misses: 22% smaller, at 1,900 instead of 2,800 MB/s. On rows of counters
# and short repeated strings it is larger and slower (ratio 11 instead of 14, 400 instead of
# 690 MB/s), and level 1 stays.
REDUNDANT_RATIO = 8
REDUNDANT_LEVEL = 3
REDUNDANT_GAIN = 0.9


class LevelHint:
    """Shared by the Sealers of one table's files: the level the first redundant frame chose
    (None until one is found), so the files opened after it start there instead of each
    compressing a frame twice to rediscover it. Set from worker threads, read on open. Files
    opened before that decide for themselves, and which file decides first depends on timing:
    where a table's files disagree (pgbench_accounts without its blanks), the backup's size
    varies a little from run to run (1.5 or 2.1 MB), never its content."""

    __slots__ = ("level",)

    def __init__(self) -> None:
        self.level: int | None = None


class Sealer:
    """Content in, stored bytes out. `stored_size` and `sha256` cover everything returned.

    The payload is a sequence of independent zstd frames of at most FRAME_CONTENT bytes of
    content each, so a reader decodes one bounded frame at a time whatever the ratio."""

    def __init__(self, level: int = 3, hint: LevelHint | None = None) -> None:
        self._hint = hint
        self._adapt = level < REDUNDANT_LEVEL
        if self._adapt and hint is not None and hint.level is not None:
            level, self._adapt = hint.level, False
        self._zc = zstandard.ZstdCompressor(level=level)
        self._level = level
        self._h = hashlib.sha256()
        self.stored_size = 0
        self.logical_size = 0
        self._started = False
        self._carry = b""           # content short of a whole frame, sealed by the next call

    def _out(self, data: bytes) -> bytes:
        if not self._started:
            self._started = True
            data = MAGIC + bytes((VERSION, FLAG_ZSTD, 0, 0)) + data
        self._h.update(data)
        self.stored_size += len(data)
        return data

    def feed(self, content: bytes | list[bytes]) -> bytes:
        """Seal `content` (or the concatenation of a list of pieces, joined here so that a
        caller running this in a worker thread does not copy on its event loop). Whole frames
        come out; the rest of the content waits for the next call or `finish`, so every frame
        but a file's last holds FRAME_CONTENT bytes whatever the size of the pieces fed."""
        pieces = content if isinstance(content, list) else [content]
        self.logical_size += sum(len(p) for p in pieces)
        if self._carry:
            pieces = [self._carry, *pieces]
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        whole = len(data) - len(data) % FRAME_CONTENT
        # a chunk's last batch is usually short of a frame: kept as it is, not copied
        self._carry = data if not whole and isinstance(data, bytes) else bytes(memoryview(data)[whole:])
        if not whole:
            return b""
        view = memoryview(data)
        frames = [self._frame(view[i:i + FRAME_CONTENT]) for i in range(0, whole, FRAME_CONTENT)]
        return self._out(frames[0] if len(frames) == 1 else b"".join(frames))

    def _frame(self, frame) -> bytes:
        out = self._zc.compress(frame)
        if self._adapt and len(out) * REDUNDANT_RATIO <= len(frame):
            self._adapt = False
            zc = zstandard.ZstdCompressor(level=REDUNDANT_LEVEL)
            alt = zc.compress(frame)
            if len(alt) <= len(out) * REDUNDANT_GAIN:
                self._zc, self._level, out = zc, REDUNDANT_LEVEL, alt
            if self._hint is not None and self._hint.level is None:
                self._hint.level = self._level
        return out

    def finish(self) -> bytes:
        tail, self._carry = self._carry, b""
        return self._out(self._frame(tail) if tail else b"")

    @property
    def sha256(self) -> str:
        return self._h.hexdigest()


class Opener:
    """Stored bytes in (`push`), content out one frame at a time (`pull`); checks the header
    and, at `finish`, the SHA-256, the size and that no frame was cut off."""

    def __init__(self, name: str, expected_sha256: str | None = None,
                 expected_size: int | None = None) -> None:
        self.name = name
        self._expected = expected_sha256
        self._expected_size = expected_size
        self._h = hashlib.sha256()
        self._zd = zstandard.ZstdDecompressor()
        self._obj = None          # the decompressor of the frame in progress
        self._head = b""
        self._compressed: bool | None = None
        self._pending = b""
        self.stored_size = 0

    def push(self, data: bytes) -> None:
        self._h.update(data)
        self.stored_size += len(data)
        if self._compressed is None:
            self._head += data
            if len(self._head) < HEADER_SIZE:
                return
            head, data = self._head[:HEADER_SIZE], self._head[HEADER_SIZE:]
            if head[:4] != MAGIC or head[4] != VERSION:
                raise DataCorrupted(f"{self.name} is not a pgkeep backup file (bad header)")
            if head[5] & FLAG_ENCRYPTED:
                raise Unsupported(f"{self.name} is encrypted, which this pgkeep cannot read yet")
            self._compressed = bool(head[5] & FLAG_ZSTD)
        self._pending = self._pending + data if self._pending else data

    def pull(self) -> bytes | None:
        """The next piece of content (at most one frame's), or None until more is pushed."""
        while self._pending:
            data, self._pending = self._pending, b""
            if not self._compressed:
                return data
            if self._obj is None:
                self._obj = self._zd.decompressobj()
            try:
                out = self._obj.decompress(data)
            except zstandard.ZstdError as e:
                raise DataCorrupted(f"{self.name} is corrupted: {e}") from None
            if self._obj.eof:
                self._pending = self._obj.unused_data
                self._obj = None
            if out:
                return out
        return None

    def feed(self, data: bytes) -> bytes:
        """push, then everything that can be pulled."""
        self.push(data)
        out = []
        while (piece := self.pull()) is not None:
            out.append(piece)
        return b"".join(out)

    def finish(self) -> None:
        if self._expected_size is not None and self.stored_size != self._expected_size:
            raise DataCorrupted(f"{self.name} has {self.stored_size} bytes, the manifest says "
                                f"{self._expected_size}", hint="the file was truncated or altered")
        if self._expected is not None and self._h.hexdigest() != self._expected:
            raise DataCorrupted(f"checksum mismatch for {self.name}",
                                hint="the file was altered after the backup was written")
        if self._compressed is None or self._obj is not None or self._pending:
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
