"""The ObjectStore protocol: what the engine needs from any storage backend.

Contracts (every backend, checked by one conformance suite):
- Paths are '/'-separated object names relative to the store's base; no leading '/', no '..'.
- `writer(path)` streams an object in; nothing is visible under `path` until `commit()` returns,
  and then the whole object is (atomic put). `abort()` leaves nothing behind. Overwriting an
  existing object replaces it atomically.
- `get(path)` streams an object out in order; `get_range` reads `length` bytes at `offset`
  (fewer only at the end of the object). Both raise `NotFound` for a missing object.
- `list(prefix)` yields an `ObjectInfo` (name, size) for every object whose name starts with
  `prefix`, at any depth, sorted by name. `prefix` is any string: it need not end with '/'.
- `list(prefix, "/")` lists one level, like a directory: an `ObjectInfo` for each object whose
  name after `prefix` holds no '/', and one `PrefixInfo` per folder, that is per distinct
  `prefix` + the rest of a name up to and including its first '/' (S3's CommonPrefixes, GCS's
  prefixes, Azure's BlobPrefix), however many objects lie under it, without listing them. Both
  kinds come in one sequence sorted by path ("a" < "a-b" < "a/" < "ab": a folder's path ends
  with its '/'). A writer's unfinished object makes no folder. A folder whose objects were all
  deleted is gone on S3, GCS, Azure and nodelocal (which hides such a directory), but some
  S3-compatible servers keep it listed a while (SeaweedFS): a folder says objects may lie
  under it, never that one does. Each backend uses its service's delimiter listing (nodelocal
  reads one directory), so the cost is that of the level, not of everything under it. '/' is
  the only delimiter (any other is ValueError).
- `delete(path)` removes an object; deleting a missing one is not an error.
- `stat(path)` returns the size, or raises `NotFound`.
- `create(path, data)` is create-if-absent, the one way to claim a name: it writes `data` only if
  no object exists at `path`, atomically (the whole content becomes visible at once, and of any
  number of concurrent creates of one path, from any processes, exactly one succeeds), else raises
  `AlreadyExists` and leaves the existing object untouched. Never emulated by a check then a
  write: nodelocal links a finished temporary file to the name (link(2) fails if it exists), S3
  sends `If-None-Match: *`, GCS `ifGenerationMatch=0`, Azure `If-None-Match: *`. For small objects
  (locks, markers): one request. A create whose answer was lost and was sent again may find its
  own object: wrappers.RetryingStore then reads it back and counts identical bytes as success, so
  callers put something unique to them (a job id, a random token) in `data`.
- `discard_incomplete(prefix)` removes the store's own debris of writes that never finished
  under `prefix` (a writer killed before commit or abort): nodelocal's temporary
  `.<name>.<32 hex>.tmp` files, S3's unfinished multipart uploads. It never touches a committed
  object, and never anything `list` yields. It returns how many it removed; a removal the store
  refuses raises StorageError. A store whose service expires such debris by itself does nothing
  and returns 0 (GCS, Azure: see their modules). Whoever calls it must own every write under
  `prefix`: a live writer's debris is its temporary object, and removing it fails that writer.
- Any other failure raises `StorageError` (58030) with a message naming the store by its redacted
  URI. Retries, rate limits and fault injection are wrappers, never code inside a backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Protocol, overload

__all__ = ["ObjectInfo", "PrefixInfo", "Listed", "ObjectStore", "ObjectWriter", "DELIMITER",
           "check_delimiter", "put", "create", "read_all"]

DELIMITER = "/"


@dataclass(frozen=True)
class ObjectInfo:
    """An object: its name relative to the store's base, and its size in bytes."""
    path: str
    size: int


@dataclass(frozen=True)
class PrefixInfo:
    """A folder of a delimiter listing: a name prefix ending with the delimiter ('2026/',
    'a/b/') under which at least one object lies. It has no size: it is not an object."""
    path: str


Listed = ObjectInfo | PrefixInfo


def check_delimiter(delimiter: str | None) -> None:
    """Only '/' (or no delimiter) is supported: every store's names are '/'-separated."""
    if delimiter is not None and delimiter != DELIMITER:
        raise ValueError(f"unsupported list delimiter {delimiter!r}: only '/' is supported")


class ObjectWriter(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> None: ...

    async def abort(self) -> None: ...


class ObjectStore(Protocol):
    uri: str  # redacted, for messages

    async def writer(self, path: str) -> ObjectWriter: ...

    def get(self, path: str) -> AsyncIterator[bytes]: ...

    async def get_range(self, path: str, offset: int, length: int) -> bytes: ...

    @overload
    def list(self, prefix: str = "", delimiter: None = None) -> AsyncIterator[ObjectInfo]: ...

    @overload
    def list(self, prefix: str, delimiter: str) -> AsyncIterator[Listed]: ...

    async def delete(self, path: str) -> None: ...

    async def stat(self, path: str) -> ObjectInfo: ...

    async def create(self, path: str, data: bytes) -> None: ...

    async def discard_incomplete(self, prefix: str) -> int: ...

    async def close(self) -> None: ...


async def put(store: ObjectStore, path: str, data: bytes) -> None:
    """Write a small object in one go (atomic)."""
    w = await store.writer(path)
    try:
        await w.write(data)
    except BaseException:
        await w.abort()
        raise
    await w.commit()


async def create(store: ObjectStore, path: str, data: bytes) -> None:
    """Claim `path` with `data`: AlreadyExists if anything is there (see the module contract)."""
    await store.create(path, data)


async def read_all(store: ObjectStore, path: str) -> bytes:
    return b"".join([chunk async for chunk in store.get(path)])

