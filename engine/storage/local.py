"""nodelocal://<node|self>/path: a directory under pgkeep's --nodelocal-root.

No path can escape the root: '..' segments and absolute paths are refused when the URI is
parsed, and every operation checks that the real path (symlinks resolved) stays inside the root.
Writes go to a temporary file in the target directory, are fsynced, then renamed over the name
(`create`: hard-linked to it, which fails if the name exists). A failed write removes its
temporary file. Running out of space (ENOSPC, EDQUOT) is DiskFull (53100) naming the store and
the object; any other OS failure is StorageError (58030) with the OS's short text, never a raw
OSError. Blocking file I/O runs in worker threads so the event loop keeps serving clients.

Folders are directories and objects files, so unlike a bucket, nodelocal cannot hold an object
`a` and objects under `a/` at once: writing either beside the other fails with a StorageError
that says so (pgkeep's own layout never does). Reads, stats and deletes of a name that is a directory, or
goes through a file, find no object (NotFound; a delete does nothing). Listings never follow a
symlinked directory and never show writers' temporary files (`.<name>.<32 hex>.tmp`), nor a
directory holding nothing else; `list(prefix, "/")` reads one directory.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import mmap
import os
import re
import uuid
from pathlib import Path
from stat import S_ISDIR
from typing import AsyncIterator

from ..errors import AlreadyExists, DiskFull, InvalidURI, NotFound, StorageError
from .base import Listed, ObjectInfo, PrefixInfo, check_delimiter

__all__ = ["LocalStore"]

_READ_SIZE = 1 << 20
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")   # a writer's or create's temporary file


def _holds_object(directory: str) -> bool:
    """Whether an object lies anywhere under `directory` (temporary files do not count,
    symlinked directories are not followed, as in listings). Stops at the first one found,
    reading each directory whole before going deeper."""
    pending = [directory]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for e in entries:
                    if e.is_dir():
                        if not e.is_symlink():
                            pending.append(e.path)
                    elif not _TEMPORARY.fullmatch(e.name):
                        return True
        except FileNotFoundError:
            continue
    return False


_DIRECT_BUFFER = 4 << 20
_BLOCK = 4096
_SPARE_BUFFERS: list[mmap.mmap] = []   # reused: a fresh mapping page-faults all its pages in
_MAX_SPARE = 8


def _take_buffer() -> mmap.mmap:
    try:
        return _SPARE_BUFFERS.pop()
    except IndexError:
        return mmap.mmap(-1, _DIRECT_BUFFER)


def _give_buffer(buf: mmap.mmap) -> None:
    if len(_SPARE_BUFFERS) < _MAX_SPARE:
        _SPARE_BUFFERS.append(buf)
    else:
        buf.close()


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# No object at a path: nothing there, a part of its name is a file, or it is a directory.
_ABSENT = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


def os_failure(uri: str, op: str, path: str, e: OSError) -> StorageError:
    """The engine error for an OS failure of `op` ('write', 'delete', ...) on `path`."""
    if e.errno in _NO_SPACE:
        return DiskFull(f"{uri}: {os.strerror(e.errno).lower()} writing {path}",
                        hint="free space on pgkeep's --nodelocal-root filesystem, or back up elsewhere")
    if op == "write" and e.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        # a directory is a folder and a file an object: one name cannot be both here
        what = "a folder" if e.errno == errno.EISDIR else "an object"
        return StorageError(f"cannot write {path} in {uri}: {what} of that name exists "
                            f"(nodelocal cannot hold an object and a folder of one name)")
    return StorageError(f"cannot {op} {path} in {uri}: {e.strerror or type(e).__name__}")


def _drop_direct(fd: int) -> bool:
    """Turn O_DIRECT off on an open file; False if it was not on."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if not flags & getattr(os, "O_DIRECT", 0):
        return False
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
    return True


def _fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class _LocalWriter:
    """Writes with O_DIRECT where the filesystem has it: a backup streams gigabytes that nobody
    reads back soon, and through the page cache each new page costs the kernel an allocation
    (often a reclaim) plus a copy, about a fifth of pgkeep's CPU during a backup here, while
    evicting the database's own cached pages. Bytes gather in a page-aligned buffer and go out
    in whole blocks; the last block is padded and the file truncated to its length. Where
    O_DIRECT is refused (tmpfs, some network filesystems) the file is written normally."""

    def __init__(self, store: "LocalStore", target: Path, rel: str) -> None:
        self._target = target
        self._rel = rel
        self._tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        self._f = None            # a buffered file, when O_DIRECT is not available
        self._fd: int | None = None
        self._buf: mmap.mmap | None = None
        self._pos = 0
        self._size = 0
        self._store = store

    async def _open(self) -> None:
        def op():
            self._target.parent.mkdir(parents=True, exist_ok=True)
            self._store._confine(self._target.parent)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            try:
                self._fd = os.open(self._tmp, flags | getattr(os, "O_DIRECT", 0), 0o644)
                self._buf = _take_buffer()
            except OSError as e:
                if e.errno != errno.EINVAL or not hasattr(os, "O_DIRECT"):
                    raise
                self._tmp.unlink(missing_ok=True)
                self._f = open(self._tmp, "xb")
        await asyncio.to_thread(op)

    def _write_all(self, view) -> None:
        while view:
            try:
                view = view[os.write(self._fd, view):]
            except OSError as e:  # a filesystem that opens with O_DIRECT but refuses its writes
                if e.errno != errno.EINVAL or not _drop_direct(self._fd):
                    raise

    def _put(self, data: bytes) -> None:
        view = memoryview(data)
        self._size += len(view)
        while view:
            take = min(len(view), _DIRECT_BUFFER - self._pos)
            self._buf[self._pos:self._pos + take] = view[:take]
            self._pos += take
            view = view[take:]
            if self._pos == _DIRECT_BUFFER:
                self._write_all(memoryview(self._buf))
                self._pos = 0

    async def _guard(self, fn, *args) -> None:
        """Run fn in a thread; an OS failure removes the temporary file, then raises mapped."""
        try:
            await asyncio.to_thread(fn, *args)
        except OSError as e:
            await self.abort()
            raise os_failure(self._store.uri, "write", self._rel, e) from None

    async def write(self, data: bytes) -> None:
        if data:
            await self._guard(self._f.write if self._f is not None else self._put, data)

    async def commit(self) -> None:
        def op():
            if self._f is not None:
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()
            else:
                if self._pos:
                    padded = -(-self._pos // _BLOCK) * _BLOCK
                    self._buf[self._pos:padded] = bytes(padded - self._pos)
                    self._write_all(memoryview(self._buf)[:padded])
                    os.ftruncate(self._fd, self._size)
                os.fsync(self._fd)
                self._close_direct()
            os.replace(self._tmp, self._target)
            _fsync_dir(self._target.parent)
        await self._guard(op)

    def _close_direct(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._buf is not None:
            _give_buffer(self._buf)
            self._buf = None

    async def abort(self) -> None:
        def op():
            if self._f and not self._f.closed:
                try:
                    self._f.close()     # flushes: may fail again on a full disk
                except OSError:
                    pass
            self._close_direct()
            try:
                self._tmp.unlink()
            except _ABSENT:     # never created (its directory could not be made)
                pass
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
        w = _LocalWriter(self, self._path(path), path)
        try:
            await w._open()
        except OSError as e:
            await w.abort()
            raise os_failure(self.uri, "write", path, e) from None
        return w

    async def create(self, path: str, data: bytes) -> None:
        target = self._path(path)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")

        def op() -> bool:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._confine(target.parent)
            try:
                with open(tmp, "xb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, target)        # atomic: fails with EEXIST if the name exists
                except FileExistsError:
                    if target.is_dir():         # a folder is there, not an object
                        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)) from None
                    return False
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(target.parent)
            return True
        try:
            created = await asyncio.to_thread(op)
        except OSError as e:
            raise os_failure(self.uri, "write", path, e) from None
        if not created:
            raise AlreadyExists(f"{path} already exists in {self.uri}")

    async def get(self, path: str) -> AsyncIterator[bytes]:
        """Streams the file in pieces, read with O_DIRECT where the filesystem has it (see
        _LocalWriter: no page-cache allocation, nothing of the database's cache evicted)."""
        p = self._path(path)

        def open_():
            flags = os.O_RDONLY | getattr(os, "O_DIRECT", 0)
            try:
                fd = os.open(p, flags)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                fd, flags = os.open(p, os.O_RDONLY), os.O_RDONLY
            if S_ISDIR(os.fstat(fd).st_mode):    # a folder, not an object
                os.close(fd)
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            return fd, (_take_buffer() if flags != os.O_RDONLY else None)

        def read(fd, buf):
            if buf is None:
                return os.read(fd, _READ_SIZE)
            try:
                n = os.readv(fd, [buf])
            except OSError as e:  # see _LocalWriter._write_all
                if e.errno != errno.EINVAL or not _drop_direct(fd):
                    raise
                n = os.readv(fd, [buf])
            return buf[:n]

        try:
            fd, buf = await asyncio.to_thread(open_)
        except _ABSENT:
            raise NotFound(f"{path} does not exist in {self.uri}") from None
        except OSError as e:
            raise StorageError(f"cannot read {path} in {self.uri}: {e.strerror}") from None
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(read, fd, buf)
                except OSError as e:
                    raise os_failure(self.uri, "read", path, e) from None
                if not chunk:
                    break
                yield chunk
        finally:
            os.close(fd)
            if buf is not None:
                _give_buffer(buf)

    async def get_range(self, path: str, offset: int, length: int) -> bytes:
        p = self._path(path)

        def op():
            with open(p, "rb") as f:
                f.seek(offset)
                return f.read(length)
        try:
            return await asyncio.to_thread(op)
        except _ABSENT:
            raise NotFound(f"{path} does not exist in {self.uri}") from None
        except OSError as e:
            raise os_failure(self.uri, "read", path, e) from None

    def _listing_dir(self, prefix: str) -> tuple[str, str] | None:
        """The directory that holds the names starting with `prefix` (those of its last
        '/'-separated part and below), and that directory's name relative to the store ('' or
        ending with '/'). None when no object can match: the directory is missing, or reached
        through a symlink (listings never follow one, as os.walk does not), or a part of the
        prefix is empty, '.' or '..', which no object name has."""
        top = prefix.rpartition("/")[0]
        parts = top.split("/") if top else []
        if any(part in ("", ".", "..") for part in parts):
            return None
        base = os.path.realpath(self.dir)
        real = os.path.realpath(os.path.join(self.dir, *parts))
        if real != os.path.join(base, *parts) or not os.path.isdir(real):
            return None
        self._confine(Path(real))
        return real, top + "/" if top else ""

    async def list(self, prefix: str = "", delimiter: str | None = None) -> AsyncIterator[Listed]:
        """Without a delimiter, walks the directory of the prefix (not the whole store); with
        '/', reads that one directory (base.py). Writers' temporary files are never listed,
        nor is a directory that holds nothing else."""
        check_delimiter(delimiter)
        op = self._list_all if delimiter is None else self._list_level
        try:
            found = await asyncio.to_thread(op, prefix)
        except OSError as e:
            raise os_failure(self.uri, "list", prefix or "/", e) from None
        for info in found:
            yield info

    def _list_all(self, prefix: str) -> list[ObjectInfo]:
        where = self._listing_dir(prefix)
        if where is None:
            return []
        start, rel = where
        head = prefix[len(rel):]
        out = []
        for dirpath, dirnames, filenames in os.walk(start):  # does not follow symlinks
            if dirpath == start:
                dirnames[:] = [d for d in dirnames if d.startswith(head)]
            sub = os.path.relpath(dirpath, self.dir)
            sub = "" if sub == "." else sub.replace(os.sep, "/") + "/"
            for name in filenames:
                full = sub + name
                if full.startswith(prefix) and not _TEMPORARY.fullmatch(name):
                    try:
                        size = os.stat(os.path.join(dirpath, name), follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue
                    out.append(ObjectInfo(full, size))
        out.sort(key=lambda o: o.path)
        return out

    def _list_level(self, prefix: str) -> list[Listed]:
        where = self._listing_dir(prefix)
        if where is None:
            return []
        start, rel = where
        head = prefix[len(rel):]
        out: list[Listed] = []
        try:
            entries = list(os.scandir(start))
        except FileNotFoundError:
            return []
        for e in entries:
            if not e.name.startswith(head):
                continue
            try:
                if e.is_dir():
                    if not e.is_symlink() and _holds_object(e.path):
                        out.append(PrefixInfo(rel + e.name + "/"))
                elif not _TEMPORARY.fullmatch(e.name):
                    out.append(ObjectInfo(rel + e.name, e.stat(follow_symlinks=False).st_size))
            except FileNotFoundError:
                continue        # removed meanwhile
        out.sort(key=lambda o: o.path)
        return out

    async def delete(self, path: str) -> None:
        p = self._path(path)
        try:
            await asyncio.to_thread(p.unlink)
        except _ABSENT:
            pass
        except OSError as e:    # e.g. EPERM on an immutable file or a read-only directory
            raise os_failure(self.uri, "delete", path, e) from None

    async def stat(self, path: str) -> ObjectInfo:
        p = self._path(path)
        try:
            st = await asyncio.to_thread(os.stat, p)
            if S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        except _ABSENT:
            raise NotFound(f"{path} does not exist in {self.uri}") from None
        except OSError as e:
            raise os_failure(self.uri, "stat", path, e) from None
        return ObjectInfo(path, st.st_size)

    async def discard_incomplete(self, prefix: str) -> int:
        """Unlink every temporary file (`.<name>.<uuid hex>.tmp`) of an object whose name starts
        with `prefix`: the files of writers that died before commit or abort. No committed
        object has such a name (`list` hides them)."""
        top = prefix.rpartition("/")[0]
        if any(part in ("..", ".") for part in top.split("/")) or prefix.startswith("/"):
            raise InvalidURI(f"invalid prefix {prefix!r} in {self.uri}")

        def op() -> int:
            start = self.dir / top if top else self.dir
            if not start.is_dir():
                return 0
            self._confine(start)
            removed = 0
            for dirpath, _, filenames in os.walk(start):  # does not follow symlinks
                rel = os.path.relpath(dirpath, self.dir)
                rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
                for name in filenames:
                    if not _TEMPORARY.fullmatch(name) or not (rel + name[1:-37]).startswith(prefix):
                        continue
                    try:
                        os.unlink(os.path.join(dirpath, name))
                        removed += 1
                    except FileNotFoundError:
                        pass        # its writer finished or aborted meanwhile
                    except OSError as e:
                        raise os_failure(self.uri, "delete", rel + name, e) from None
            return removed
        return await asyncio.to_thread(op)

    async def close(self) -> None:
        pass
