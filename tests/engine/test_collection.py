"""SHOW BACKUPS' listing (engine/collection.list_backups): full backups found by delimiter
listings, year, month, then subdir, never by listing the files inside backups (issue 14). Run on
the in-memory store (engine/storage/memory.py) and on nodelocal, each behind a wrapper that
records every listing and every read the engine makes."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path

import pytest

from engine.collection import list_backups
from engine.format import layout
from engine.format.envelope import seal
from engine.storage import StoreContext, open_store, put
from engine.storage.memory import MemoryStore
from engine.storage.wrappers import RetryingStore

INSIDE_A_BACKUP = re.compile(r"\d{4}/\d{2}/\d{2}-\d{6}\.\d{2}/.")
DATA_FILES = 60


class RecordingStore:
    """A store that passes every call on to `inner`, recording each listing (prefix,
    delimiter, paths yielded) and each object read."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.listings: list[tuple[str, str | None, list[str]]] = []
        self.reads: list[str] = []

    async def list(self, prefix="", delimiter=None):
        seen: list[str] = []
        self.listings.append((prefix, delimiter, seen))
        async for entry in self.inner.list(prefix, delimiter):
            seen.append(entry.path)
            yield entry

    def get(self, path):
        self.reads.append(path)
        return self.inner.get(path)

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def backup(store, subdir: str, end_time: str, *, checksum: str | None = "right",
                 data: int = DATA_FILES) -> None:
    """A full backup's objects as BACKUP writes them: its lock, schema and data files, then
    the manifest and its checksum (the commit point; None: not committed yet)."""
    sub = subdir.strip("/")
    await put(store, layout.lock_path(subdir), b"{}")
    await put(store, f"{sub}/schema/0.json", b"{}")
    for i in range(data):
        await put(store, f"{sub}/data/0/16384-{i}-0.pgkd", b"rows")
    stored, sha = seal(json.dumps({"format_version": 1, "end_time": end_time}).encode())
    await put(store, layout.manifest_path(subdir), stored)
    if checksum is not None:
        await put(store, layout.checksum_path(subdir), (sha if checksum == "right" else "0" * 64).encode())


async def collection(store) -> list[str]:
    """Fills `store`; returns the valid full backups in the order SHOW BACKUPS gives them."""
    # the subdir names come from each pgkeep's clock: their order is not the end times'
    await backup(store, "/2026/01/05-100000.00", "2026-01-05T10:00:09+00:00")
    await backup(store, "/2025/12/31-235959.99", "2026-01-05T11:00:00+00:00")
    await backup(store, "/2026/02/01-080000.00", "2026-02-01T08:00:01")     # naive: UTC
    await backup(store, "/2026/02/01-090000.00", "2026-02-01T09:00:01+00:00", checksum=None)
    await backup(store, "/2026/02/03-090000.00", "2026-02-03T09:00:01+00:00", checksum="wrong")
    await put(store, layout.lock_path("/2026/02/04-090000.00"), b"{}")      # just claimed
    await backup(store, "/2026/02/05-090000.00x", "2026-02-05T09:00:01+00:00")  # not a subdir name
    # an incremental layer of the first full, and LATEST markers: not fulls, never entered
    layer = "/incrementals/2026/01/05-100000.00/20260106/000000.00-20260105-100000.00"
    await backup(store, layer, "2026-01-06T00:00:00+00:00")
    await put(store, layout.latest_marker(dt.datetime(2026, 2, 1, 8, 0, 1, tzinfo=dt.timezone.utc)),
              b"/2026/02/01-080000.00")
    await put(store, "2026/README", b"not a month")
    await put(store, "2026/01/notes", b"not a backup")
    return ["/2026/01/05-100000.00", "/2025/12/31-235959.99", "/2026/02/01-080000.00"]


def _open(kind: str, tmp_path: Path):
    if kind == "memory":
        return RetryingStore(MemoryStore())
    (tmp_path / "root").mkdir()
    return open_store("nodelocal://self/coll", StoreContext(tmp_path / "root"))


@pytest.mark.parametrize("kind", ["memory", "nodelocal"])
def test_show_backups_lists_folders_never_the_files_inside_backups(kind, tmp_path):
    inner = _open(kind, tmp_path)
    store = RecordingStore(inner)

    async def main():
        expected = await collection(inner)
        total = len([o async for o in inner.list()])
        assert total > 5 * DATA_FILES
        assert await list_backups(store) == expected
        listed = [p for _, _, seen in store.listings for p in seen]
        assert all(delimiter == "/" for _, delimiter, _ in store.listings), store.listings
        assert not [p for p in listed if INSIDE_A_BACKUP.match(p)]
        assert not [p for p in listed if re.match(r"(incrementals|metadata)/.", p)]
        assert sorted(prefix for prefix, _, _ in store.listings) == [
            "", "2025/", "2025/12/", "2026/", "2026/01/", "2026/02/"]
        assert len(listed) < 20
        # two small reads per candidate: the checksum, then (if there is one) the manifest
        committed = ["/2026/01/05-100000.00", "/2025/12/31-235959.99", "/2026/02/01-080000.00",
                     "/2026/02/03-090000.00"]
        unfinished = ["/2026/02/01-090000.00", "/2026/02/04-090000.00"]
        assert sorted(store.reads) == sorted(
            [layout.checksum_path(s) for s in committed + unfinished]
            + [layout.manifest_path(s) for s in committed])
    asyncio.run(main())
    asyncio.run(inner.close())


@pytest.mark.parametrize("kind", ["memory", "nodelocal"])
def test_show_backups_of_an_empty_or_foreign_collection(kind, tmp_path):
    store = _open(kind, tmp_path)

    async def main():
        assert await list_backups(store) == []
        await put(store, "1999/xx/nothing", b"")
        await put(store, "readme", b"")
        assert await list_backups(store) == []
    asyncio.run(main())
