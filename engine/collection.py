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
from .errors import DataCorrupted, EngineError, InvalidURI, NotFound, Unsupported
from .format import layout
from .format.envelope import Opener, open_bytes
from .format.manifest import ChainLink, FileRef, Manifest
from .storage import ObjectStore, PrefixInfo, join_uri, read_all

__all__ = ["list_backups", "resolve_subdir", "read_manifest", "read_layer", "read_schema", "read_file",
           "BackupHandle", "open_backup", "Chain", "layers_of", "open_chain", "InvalidRestoreTime"]


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
    return (await read_layer(store, subdir))[0]


async def read_layer(store: ObjectStore, subdir: str) -> tuple[Manifest, str]:
    """The verified manifest of a full or a layer, and its SHA-256 (its checksum file's text)."""
    try:
        stored = await read_all(store, layout.manifest_path(subdir))
    except NotFound:
        raise NotFound(f"{join_uri(store.uri, subdir)} does not contain a backup (no BACKUP_MANIFEST)",
                       hint="SHOW BACKUPS IN lists the backups of a collection") from None
    try:
        expected = (await read_all(store, layout.checksum_path(subdir))).decode().strip()
    except NotFound:
        raise DataCorrupted(f"{join_uri(store.uri, subdir)}: BACKUP_MANIFEST-CHECKSUM is missing") from None
    except UnicodeDecodeError:
        raise DataCorrupted(f"{join_uri(store.uri, subdir)}: BACKUP_MANIFEST-CHECKSUM is damaged") from None
    body = open_bytes("BACKUP_MANIFEST", stored, expected)
    return Manifest.from_bytes(body), expected


# ---- chains of incremental layers (docs/FORMAT.md section 7) --------------------------------

class InvalidRestoreTime(EngineError):
    sqlstate = "22023"


_DAY = re.compile(r"\d{8}/")


async def _layer_paths(store: ObjectStore, full: str) -> list[str]:
    """Directories of the shape of an incremental layer of `full` (committed or not), found by
    folder listings: never a listing of the layers' data files."""
    base = layout.incrementals_of(full)
    out = []
    for day in await _folders(store, base, _DAY):
        for layer in await _folders(store, day):
            if layout.LAYER_RE.match(layer[len(base):].rstrip("/")):
                out.append("/" + layer.rstrip("/"))
    return out


async def layers_of(store: ObjectStore, full: str) -> list[tuple[str, Manifest, str]]:
    """The committed incremental layers of `full` (path, manifest, SHA-256), oldest first by
    end time. A directory without a valid manifest is no layer (section 1's rule)."""
    found = []
    for path in await _layer_paths(store, full):
        try:
            m, sha = await read_layer(store, path)
        except (NotFound, DataCorrupted, Unsupported):
            continue
        if m.backup_type == "incremental" and m.chain and m.chain[0].path == full:
            found.append((m.end_datetime, path, m, sha))
    return [(p, m, sha) for _, p, m, sha in sorted(found, key=lambda x: (x[0], x[1]))]


@dataclass
class Chain:
    """A full and the layers up to the chosen one, each with its manifest (full first)."""
    paths: list[str]
    manifests: list[Manifest]
    shas: list[str]

    @property
    def tip(self) -> Manifest:
        return self.manifests[-1]

    @property
    def tip_path(self) -> str:
        return self.paths[-1]

    def link(self) -> list[ChainLink]:
        """The `chain` of a layer appended to the tip: every layer of this chain."""
        return [ChainLink(p, m.id, m.end_time, sha)
                for p, m, sha in zip(self.paths, self.manifests, self.shas)]


async def open_chain(store: ObjectStore, full: str, as_of: dt.datetime | None = None) -> Chain:
    """The chain of `full` up to its tip, or up to the layer whose end time is `as_of`
    (CockroachDB's errors otherwise); every layer verified against the links the chosen one
    records (a deleted or altered layer is XX001 naming it)."""
    m, sha = await read_layer(store, full)
    if m.backup_type != "full":
        raise InvalidURI(f"{join_uri(store.uri, full)} is an incremental layer, not a full backup",
                         hint="name the full backup's subdir: its layers are found from it")
    layers = [(full, m, sha)] + await layers_of(store, full)
    chosen = len(layers) - 1
    if as_of is not None:
        chosen = _layer_at(layers, as_of)
    path, tip, _ = layers[chosen]
    known = {p: (mm, s) for p, mm, s in layers}
    for link in tip.chain:
        got = known.get(link.path)
        if got is None or got[1] != link.manifest_sha256 or got[0].id != link.id:
            raise DataCorrupted(f"layer {link.path} of the backup chain in {store.uri} is missing or "
                                f"was altered (the layer {path} needs it)",
                                hint="a chain is restorable only with every layer it was built on")
    if [link.path for link in tip.chain] != [p for p, _, _ in layers[:chosen]]:
        raise DataCorrupted(f"the layers of the backup chain in {join_uri(store.uri, full)} do not "
                            f"form one chain (the layer {path} does not name every earlier layer)")
    _check_paths(store, tip, [link.path for link in tip.chain] + [path])
    return Chain([p for p, _, _ in layers[:chosen + 1]], [mm for _, mm, _ in layers[:chosen + 1]],
                 [s for _, _, s in layers[:chosen + 1]])


def _layer_at(layers, as_of: dt.datetime) -> int:
    for i, (_, m, _) in enumerate(layers):
        if abs((m.end_datetime - as_of).total_seconds()) < 1e-6:
            return i
    if not layers[0][1].end_datetime < as_of < layers[-1][1].end_datetime:
        raise InvalidRestoreTime("invalid RESTORE timestamp: supplied backups do not cover requested time")
    times = [m.end_datetime for _, m, _ in layers]
    before = max((t for t in times if t < as_of), default=None)
    after = min((t for t in times if t > as_of), default=None)
    near = " or ".join(_crdb_time(t) for t in (before, after) if t is not None)
    prefix = ("invalid RESTORE timestamp: restoring to arbitrary time requires that BACKUP for "
              "requested time be created with 'revision_history' option.")
    raise InvalidRestoreTime(f"{prefix} nearest BACKUP time{'s are' if before and after else ' is'} {near}",
                             hint="pgkeep keeps no revision history: restore a layer at its end time; "
                                  "SHOW BACKUP lists them: " + ", ".join(t.isoformat() for t in times))


def _crdb_time(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


def _check_paths(store: ObjectStore, m: Manifest, dirs: list[str]) -> None:
    """Every file a layer names lies in its own directory or an earlier layer's of its chain."""
    roots = tuple(d.strip("/") + "/" for d in dirs)
    for ref in m.all_files():
        if not ref.path.startswith(roots) or ".." in ref.path.split("/"):
            raise DataCorrupted(f"the manifest of {join_uri(store.uri, dirs[-1])} names {ref.path}, "
                                "outside its backup chain")


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
    subdir: str                 # the chosen layer's directory (a full's subdir for a full)
    manifest: Manifest          # the chosen layer's: every chunk of every table, wherever it is
    chain: Chain | None = None  # the full and the layers up to the chosen one

    @property
    def layers(self) -> list[tuple[str, Manifest]]:
        if self.chain is None:
            return [(self.subdir, self.manifest)]
        return list(zip(self.chain.paths, self.chain.manifests))


async def open_backup(store: ObjectStore, subdir: str | None, latest: bool,
                      as_of: dt.datetime | None = None) -> BackupHandle:
    """The newest layer of the chain of the full that `subdir` or LATEST names, or its layer
    ending at `as_of`."""
    full = await resolve_subdir(store, subdir, latest)
    chain = await open_chain(store, full, as_of)
    return BackupHandle(store, chain.tip_path, chain.tip, chain)
