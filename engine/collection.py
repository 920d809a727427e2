"""Reading a collection: which backups it holds, which one LATEST means, and a backup's manifest
and schemas, each verified before use (docs/FORMAT.md sections 1, 4 and 5).

A subdir is a backup only if BACKUP_MANIFEST and BACKUP_MANIFEST-CHECKSUM both exist and agree.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from concurrent.futures import Executor
from dataclasses import dataclass

from . import schema as schema_mod
from .errors import DataCorrupted, InvalidURI, NotFound, Unsupported
from .format import layout
from .format.envelope import Opener, open_bytes
from .format.manifest import FileRef, Manifest
from .storage import ObjectStore, PrefixInfo, join_uri, read_all

__all__ = ["list_backups", "resolve_subdir", "read_manifest", "read_schema", "read_file",
           "BackupHandle", "open_backup"]


_YEAR = re.compile(r"\d{4}/")
_MONTH = re.compile(r"\d{2}/")
_READ_AHEAD = 8          # backups whose manifests are read at once


async def list_backups(store: ObjectStore) -> list[str]:
    """Full backup subdirs ('/2026/11/25-101500.00') whose manifest and checksum both exist and
    agree, ordered by the manifests' recorded end times (then by name): never by the subdir
    names, which come from the clock of whichever pgkeep took the backup.

    Subdirs are found level by level with delimiter listings (YYYY/, MM/, DD-HHMMSS.ss/), so
    nothing inside a backup is ever listed: the cost is a listing per year and per month that
    holds backups, plus two reads per backup (its checksum, then its manifest), however many
    files the backups hold. Other top-level folders (incrementals/, metadata/) hold no full
    backup and are not entered."""
    subdirs = []
    for year in await _folders(store, "", _YEAR):
        for month in await _folders(store, year, _MONTH):
            subdirs += ["/" + f.rstrip("/") for f in await _folders(store, month)
                        if layout.SUBDIR_RE.match(f)]
    gate = asyncio.Semaphore(_READ_AHEAD)

    async def end_time(sub: str) -> dt.datetime | None:
        async with gate:
            return await _verified_end_time(store, sub)
    ends = await asyncio.gather(*(end_time(sub) for sub in subdirs))
    return [sub for _, sub in sorted((end, sub) for end, sub in zip(ends, subdirs) if end is not None)]


async def _folders(store: ObjectStore, prefix: str, name: re.Pattern | None = None) -> list[str]:
    """The folders directly under `prefix` (paths ending with '/') whose own part matches `name`."""
    return [f.path async for f in store.list(prefix, "/") if isinstance(f, PrefixInfo)
            and (name is None or name.fullmatch(f.path[len(prefix):]))]


async def _verified_end_time(store: ObjectStore, subdir: str) -> dt.datetime | None:
    """The recorded end time of the backup in `subdir`, if its manifest and checksum agree
    (whatever the manifest's format version: a newer pgkeep's backup is listed too). The
    checksum is read first: a backup writes it after the manifest, so without it the subdir
    holds no committed backup and its manifest, maybe large, is not read."""
    try:
        expected = (await read_all(store, layout.checksum_path(subdir))).decode().strip()
        stored = await read_all(store, layout.manifest_path(subdir))
        end = json.loads(open_bytes("BACKUP_MANIFEST", stored, expected))["end_time"]
        when = dt.datetime.fromisoformat(end)
        return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    except (DataCorrupted, NotFound, Unsupported, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None   # not a backup (RESTORE says why when it is named)


async def _marker_target(store: ObjectStore, path: str) -> str:
    """The subdir a LATEST marker names, if it holds a valid backup; DataCorrupted saying why
    not otherwise."""
    try:
        raw = await read_all(store, path)
        sub = layout.parse_subdir(raw.decode("utf-8"))
    except NotFound:
        raise DataCorrupted(f"LATEST marker {path} vanished while being read") from None
    except UnicodeDecodeError:
        raise DataCorrupted(f"LATEST marker {path} is damaged (not a subdir name)") from None
    if sub == "/" or not layout.SUBDIR_RE.match(sub):
        raise DataCorrupted(f"LATEST marker {path} is damaged (not a subdir name)")
    try:
        await read_manifest(store, sub)
    except (DataCorrupted, NotFound, Unsupported) as e:
        raise DataCorrupted(f"LATEST marker {path} names {sub}, which holds no valid backup "
                            f"({e.message})") from None
    return sub


async def resolve_subdir(store: ObjectStore, subdir: str | None, latest: bool) -> str:
    """A named subdir, or LATEST's: the first marker (newest end time first) naming a subdir
    with a valid backup. Damaged markers are skipped; when no marker is valid the error
    (XX001) names the newest damaged one, and with no marker at all it is 58P01."""
    if not latest:
        sub = layout.parse_subdir(subdir or "")
        if sub == "/":
            raise InvalidURI("a backup subdirectory is required",
                             hint="use SHOW BACKUPS IN to list the backups of a collection, and "
                                  "FROM LATEST IN or FROM '<subdir>' IN to pick one")
        return sub
    first_problem: DataCorrupted | None = None
    async for info in store.list(layout.LATEST_PREFIX):
        try:
            return await _marker_target(store, info.path)
        except DataCorrupted as e:
            first_problem = first_problem or e
    if first_problem is not None:
        raise DataCorrupted(f"no valid backup behind the LATEST markers of {store.uri}: "
                            f"{first_problem.message}",
                            hint="SHOW BACKUPS IN lists the valid backups; restore one by its subdir")
    raise NotFound(f"no backup found in {store.uri}",
                   hint="take one with BACKUP ... INTO this collection")


async def read_manifest(store: ObjectStore, subdir: str) -> Manifest:
    try:
        stored = await read_all(store, layout.manifest_path(subdir))
    except NotFound:
        raise NotFound(f"{join_uri(store.uri, subdir)} does not contain a backup (no BACKUP_MANIFEST)",
                       hint="SHOW BACKUPS IN lists the backups of a collection") from None
    try:
        expected = (await read_all(store, layout.checksum_path(subdir))).decode().strip()
    except NotFound:
        raise DataCorrupted(f"{join_uri(store.uri, subdir)}: BACKUP_MANIFEST-CHECKSUM is missing") from None
    body = open_bytes("BACKUP_MANIFEST", stored, expected)
    return Manifest.from_bytes(body)


async def read_file(store: ObjectStore, ref: FileRef, pool: Executor | None = None):
    """Yields a file's content, verifying size and SHA-256 at the end (XX001 on mismatch).
    Hashing and decompression run in `pool` when given (they release the GIL), so the event
    loop keeps feeding other COPY streams meanwhile; output comes in bounded pieces."""
    opener = Opener(ref.path, ref.sha256, ref.size)
    loop = asyncio.get_running_loop()
    try:
        async for chunk in store.get(ref.path):
            opener.push(chunk)
            while True:
                piece = opener.pull() if pool is None else await loop.run_in_executor(pool, opener.pull)
                if piece is None:
                    break
                yield piece
    except NotFound:
        raise DataCorrupted(f"backup file {ref.path} is missing",
                            hint="the backup was altered after it was written") from None
    opener.finish()


async def read_schema(store: ObjectStore, ref: FileRef) -> "schema_mod.Schema":
    data = b"".join([c async for c in read_file(store, ref)])
    return schema_mod.Schema.from_json(json.loads(data))


@dataclass
class BackupHandle:
    store: ObjectStore
    subdir: str
    manifest: Manifest


async def open_backup(store: ObjectStore, subdir: str | None, latest: bool) -> BackupHandle:
    sub = await resolve_subdir(store, subdir, latest)
    return BackupHandle(store, sub, await read_manifest(store, sub))
