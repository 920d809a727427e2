"""The ObjectStore contract (engine/storage/base.py), checked against every store that runs here.
Issue 5 adds S3 (SeaweedFS), GCS (fake-gcs-server) and Azure (Azurite) to STORES."""
from __future__ import annotations

import asyncio
import os

import pytest

from engine.errors import InvalidURI, NotFound, Unsupported
from engine.storage import StoreContext, open_store, put, read_all


@pytest.fixture(params=["nodelocal"])
def store(request, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    s = open_store("nodelocal://self/coll", StoreContext(root))
    s._root_for_tests = root
    return s


def run(coro):
    return asyncio.run(coro)


def test_put_get_stat_list_delete(store):
    async def main():
        await put(store, "a/b/one", b"1" * 10)
        await put(store, "a/two", b"22")
        await put(store, "z", b"")
        assert await read_all(store, "a/b/one") == b"1" * 10
        assert (await store.stat("a/two")).size == 2
        assert [o.path async for o in store.list("a/")] == ["a/b/one", "a/two"]
        assert [o.path async for o in store.list()] == ["a/b/one", "a/two", "z"]
        assert await store.get_range("a/b/one", 3, 4) == b"1111"
        assert await store.get_range("a/two", 1, 100) == b"2"
        await store.delete("a/two")
        await store.delete("a/two")  # deleting a missing object is fine
        with pytest.raises(NotFound):
            await store.stat("a/two")
        with pytest.raises(NotFound):
            await read_all(store, "nope")
    run(main())


def test_put_is_atomic_and_abort_leaves_nothing(store):
    async def main():
        await put(store, "obj", b"old")
        w = await store.writer("obj")
        await w.write(b"new-but-unfinished")
        assert await read_all(store, "obj") == b"old"   # not visible before commit
        await w.abort()
        assert await read_all(store, "obj") == b"old"
        assert [o.path async for o in store.list()] == ["obj"]
        w = await store.writer("obj")
        await w.write(b"new")
        await w.commit()
        assert await read_all(store, "obj") == b"new"
    run(main())


def test_large_streaming_object_and_concurrent_writers(store):
    big = os.urandom(3 << 20)

    async def write(name, data):
        w = await store.writer(name)
        for i in range(0, len(data), 65536):
            await w.write(data[i:i + 65536])
        await w.commit()

    async def main():
        await asyncio.gather(*(write(f"big/{i}", big[i:] + big[:i]) for i in range(4)))
        for i in range(4):
            assert await read_all(store, f"big/{i}") == big[i:] + big[:i]
    run(main())


def test_nodelocal_cannot_escape_its_root(tmp_path):
    root = tmp_path / "root"
    (root / "coll").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "coll" / "link").symlink_to(outside)
    ctx = StoreContext(root)
    with pytest.raises(InvalidURI):
        open_store("nodelocal://self/../etc", ctx)
    with pytest.raises(InvalidURI):
        open_store("nodelocal://self/coll?FOO=1", ctx)
    with pytest.raises(InvalidURI):
        open_store("nodelocal://host.example/x", ctx)
    s = open_store("nodelocal://1/coll", ctx)

    async def main():
        with pytest.raises(InvalidURI):
            await put(s, "../x", b"1")
        with pytest.raises(InvalidURI):
            await put(s, "/abs", b"1")
        with pytest.raises(InvalidURI):
            await put(s, "link/x", b"1")
    run(main())
    assert list(outside.iterdir()) == []


def test_unknown_and_unbuilt_schemes():
    ctx = StoreContext(__import__("pathlib").Path("/tmp"))
    with pytest.raises(InvalidURI):
        open_store("http://example/x", ctx)
    with pytest.raises(Unsupported):
        open_store("s3://bucket/x?AUTH=implicit", ctx)


def test_second_backup_into_an_occupied_subdir_is_refused(store):
    from engine.backup import _claim_subdir
    from engine.errors import BackupExists

    async def main():
        await put(store, "2026/01/01-000000.00/BACKUP_MANIFEST", b"x")
        with pytest.raises(BackupExists) as e:
            await _claim_subdir(store, "/2026/01/01-000000.00", "2026/01/01-000000.00/BACKUP-LOCK-2")
        assert "already contains a BACKUP_MANIFEST file" in e.value.message
        await put(store, "2026/01/02-000000.00/BACKUP-LOCK-7", b"")
        with pytest.raises(BackupExists) as e:
            await _claim_subdir(store, "/2026/01/02-000000.00", "2026/01/02-000000.00/BACKUP-LOCK-8")
        assert "job 7" in e.value.message
        await _claim_subdir(store, "/2026/01/03-000000.00", "2026/01/03-000000.00/BACKUP-LOCK-9")
        assert (await store.stat("2026/01/03-000000.00/BACKUP-LOCK-9")).size == 0
    run(main())
