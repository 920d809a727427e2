"""An ObjectStore in memory that refuses to overwrite an object, for engine tests without a server.

Why it exists: the code above the stores (backups, restores, collections, chains of layers) can
be tested against it in milliseconds, with no server to start, and under a stricter contract
than the real stores give: like restic's mem backend, it never replaces an object. A writer's
commit or a put onto an existing path raises AlreadyExists (58P02), as `create` does, where the
real stores replace the object silently. Objects in a collection are written once (a backup
never rewrites nor deletes what a successful one wrote, so S3 Object Lock and versioned buckets
keep working), and a test on this store fails on any code path that would rewrite one.
Everything else is base.py's contract, checked by the conformance suite
(tests/engine/test_storage.py), which marks the one difference: overwrites are refused.

It is not a storage scheme users can name (no mem:// URI is registered): tests construct it.
Several instances may share one set of objects, `MemoryStore(objects=other.objects)`, as
several pgkeep processes share a bucket. Objects are immutable bytes, so a `get` streams the
object as it was when the read began, in pieces of `chunk_size` bytes. Nothing is stored before
a writer commits: there is no debris of unfinished writes (`discard_incomplete` returns 0).
"""
from __future__ import annotations

from typing import AsyncIterator

from ..errors import AlreadyExists, NotFound, StorageError
from .base import DELIMITER, Listed, ObjectInfo, PrefixInfo, check_delimiter
from .uri import check_name

__all__ = ["MemoryStore"]


class _MemoryWriter:
    def __init__(self, store: "MemoryStore", path: str) -> None:
        self._store = store
        self._path = path
        self._parts: list[bytes] = []
        self._closed = False

    def _check_open(self, action: str) -> None:
        if self._closed:
            raise StorageError(f"{action} {self._path} in {self._store.uri} after commit or abort")

    async def write(self, data: bytes) -> None:
        self._check_open("write to")
        if data:
            self._parts.append(bytes(data))

    async def commit(self) -> None:
        self._check_open("commit of")
        self._closed = True
        data, self._parts = b"".join(self._parts), []
        self._store._add(self._path, data, "this store never overwrites an object")

    async def abort(self) -> None:
        self._closed = True
        self._parts = []


class MemoryStore:
    """See the module docstring. `objects` maps names to contents; tests may read it."""

    def __init__(self, name: str = "test", *, objects: dict[str, bytes] | None = None,
                 chunk_size: int = 64 << 10) -> None:
        self.uri = f"mem://{name}"
        self.objects: dict[str, bytes] = {} if objects is None else objects
        self.chunk_size = chunk_size

    def _add(self, path: str, data: bytes, why: str = "") -> None:
        """The one place an object appears: only where none is (no await between the check
        and the write, so concurrent tasks cannot both pass it)."""
        if path in self.objects:
            raise AlreadyExists(f"{path} already exists in {self.uri}" + (f" ({why})" if why else ""))
        self.objects[path] = data

    def _existing(self, path: str) -> bytes:
        check_name(path, self.uri)
        try:
            return self.objects[path]
        except KeyError:
            raise NotFound(f"{path} does not exist in {self.uri}") from None

    async def writer(self, path: str) -> _MemoryWriter:
        check_name(path, self.uri)
        return _MemoryWriter(self, path)

    async def create(self, path: str, data: bytes) -> None:
        check_name(path, self.uri)
        self._add(path, bytes(data))

    async def get(self, path: str) -> AsyncIterator[bytes]:
        data = self._existing(path)
        for i in range(0, len(data), self.chunk_size):
            yield data[i:i + self.chunk_size]

    async def get_range(self, path: str, offset: int, length: int) -> bytes:
        data = self._existing(path)
        return data[offset:offset + length] if length > 0 else b""

    async def list(self, prefix: str = "", delimiter: str | None = None) -> AsyncIterator[Listed]:
        check_delimiter(delimiter)
        found: dict[str, Listed] = {}
        for name, data in list(self.objects.items()):
            if not name.startswith(prefix):
                continue
            cut = name.find(DELIMITER, len(prefix)) if delimiter else -1
            if cut < 0:
                found[name] = ObjectInfo(name, len(data))
            else:
                found.setdefault(name[:cut + 1], PrefixInfo(name[:cut + 1]))
        for path in sorted(found):
            yield found[path]

    async def delete(self, path: str) -> None:
        check_name(path, self.uri)
        self.objects.pop(path, None)

    async def stat(self, path: str) -> ObjectInfo:
        return ObjectInfo(path, len(self._existing(path)))

    async def discard_incomplete(self, prefix: str) -> int:
        return 0

    async def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"MemoryStore({self.uri}, {len(self.objects)} objects)"
