"""nodelocal://<node|self>/path: a directory under pgkeep's --nodelocal-root.

No path can escape the root: '..' segments and absolute paths are refused when the URI is
parsed, and every operation checks that the real path (symlinks resolved) stays inside the root.
Writes go to a temporary file in the target directory, are fsynced, then renamed over the name.
Blocking file I/O runs in worker threads so the event loop keeps serving clients.
"""
from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import AsyncIterator

from ..errors import InvalidURI, NotFound, StorageError
from .base import ObjectInfo

__all__ = ["LocalStore"]

_READ_SIZE = 1 << 20


class _LocalWriter:
    def __init__(self, store: "LocalStore", target: Path) -> None:
        self._target = target
        self._tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        self._f = None
        self._store = store

    async def _open(self) -> None:
        def op():
            self._target.parent.mkdir(parents=True, exist_ok=True)
            self._store._confine(self._target.parent)
            return open(self._tmp, "wb")
        self._f = await asyncio.to_thread(op)

    async def write(self, data: bytes) -> None:
        if data:
            await asyncio.to_thread(self._f.write, data)

    async def commit(self) -> None:
        def op():
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.replace(self._tmp, self._target)
            dfd = os.open(self._target.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        await asyncio.to_thread(op)

    async def abort(self) -> None:
        def op():
            if self._f and not self._f.closed:
                self._f.close()
            self._tmp.unlink(missing_ok=True)
        await asyncio.to_thread(op)


class LocalStore:
    def __init__(self, root: Path, base: str, uri: str) -> None:
        self.root = root.resolve()
        self.base = base.strip("/")
        self.uri = uri
        self.dir = (self.root / self.base) if self.base else self.root

    def _confine(self, path: Path) -> Path:
        real = path.resolve()
        if real != self.root and self.root not in real.parents:
            raise InvalidURI(f"{self.uri}: path escapes the nodelocal root")
        return real

    def _path(self, name: str) -> Path:
        if name.startswith("/") or any(part in ("..", "") for part in name.split("/")):
            raise InvalidURI(f"invalid object name {name!r} in {self.uri}")
        path = self.dir / name
        self._confine(path.parent if not path.exists() else path)
        return path

    async def writer(self, path: str) -> _LocalWriter:
        w = _LocalWriter(self, self._path(path))
        try:
            await w._open()
        except OSError as e:
            raise StorageError(f"cannot write {path} in {self.uri}: {e.strerror}") from None
        return w

    async def get(self, path: str) -> AsyncIterator[bytes]:
        p = self._path(path)
        try:
            f = await asyncio.to_thread(open, p, "rb")
        except FileNotFoundError:
            raise NotFound(f"{path} does not exist in {self.uri}") from None
        except OSError as e:
            raise StorageError(f"cannot read {path} in {self.uri}: {e.strerror}") from None
        try:
            while chunk := await asyncio.to_thread(f.read, _READ_SIZE):
                yield chunk
        finally:
            f.close()

    async def get_range(self, path: str, offset: int, length: int) -> bytes:
        p = self._path(path)

        def op():
            with open(p, "rb") as f:
                f.seek(offset)
                return f.read(length)
        try:
            return await asyncio.to_thread(op)
        except FileNotFoundError:
            raise NotFound(f"{path} does not exist in {self.uri}") from None

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        def op():
            out = []
            if not self.dir.is_dir():
                return out
            for dirpath, dirnames, filenames in os.walk(self.dir):  # does not follow symlinks
                rel = os.path.relpath(dirpath, self.dir)
                rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
                for name in filenames:
                    full = rel + name
                    if full.startswith(prefix) and not name.endswith(".tmp"):
                        try:
                            size = os.stat(os.path.join(dirpath, name), follow_symlinks=False).st_size
                        except FileNotFoundError:
                            continue
                        out.append(ObjectInfo(full, size))
            out.sort(key=lambda o: o.path)
            return out
        for info in await asyncio.to_thread(op):
            yield info

    async def delete(self, path: str) -> None:
        p = self._path(path)
        await asyncio.to_thread(p.unlink, True)

    async def stat(self, path: str) -> ObjectInfo:
        p = self._path(path)
        try:
            st = await asyncio.to_thread(os.stat, p)
        except FileNotFoundError:
            raise NotFound(f"{path} does not exist in {self.uri}") from None
        return ObjectInfo(path, st.st_size)

    async def close(self) -> None:
        pass
