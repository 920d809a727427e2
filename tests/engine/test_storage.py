"""The ObjectStore contract (engine/storage/base.py), checked against every store: nodelocal,
S3 (SeaweedFS), GCS (fake-gcs-server) and Azure (Azurite), the servers real processes on
127.0.0.1 (tests/support/objstores.py), each test in a new, empty bucket or container; and the
in-memory store of engine tests (engine/storage/memory.py), whose one difference is marked."""
from __future__ import annotations

import asyncio
import errno
import os
import shutil
import tempfile
import tracemalloc
from pathlib import Path

import pytest

from engine.errors import AlreadyExists, InvalidURI, NotFound, StorageError, Unsupported
from engine.storage import ObjectInfo, PrefixInfo, StoreContext, create, open_store, put, read_all
from engine.storage.memory import MemoryStore
from engine.storage.wrappers import RetryingStore
from tests.support.objstores import azure_server, gcs_server, s3_server  # noqa: F401 (fixtures)

URI_STORES = ["nodelocal", "nodelocal-tmpfs", "s3", "gcs", "azure"]
STORES = URI_STORES + ["memory"]
_SERVER_FIXTURE = {"s3": "s3_server", "gcs": "gcs_server", "azure": "azure_server"}


def _open(kind: str, request, tmp_path):
    """A store of `kind` as the engine gets it (under the retry wrapper), in a new, empty
    place; `s._another()` opens one more instance of the same store, as another process would.
    Two contracts differ by store: the in-memory one (engine/storage/memory.py) refuses to
    overwrite an object (`s.overwrites`), and nodelocal, whose folders are directories, cannot
    hold an object `a` and objects under `a/` at once (`s.name_is_object_and_folder`); nor can
    the GCS test server, fake-gcs-server, whose filesystem backend stores objects the same way
    (Cloud Storage itself can)."""
    if kind == "memory":
        s = RetryingStore(MemoryStore())
        s._another = lambda: RetryingStore(MemoryStore(objects=s.inner.objects))
        s.kind, s.overwrites, s.name_is_object_and_folder = kind, False, True
        return s
    root = tmp_path / "root"
    if kind == "nodelocal-tmpfs":  # no O_DIRECT there: the buffered fallback
        root = Path(tempfile.mkdtemp(dir="/dev/shm")) / "root"
        request.addfinalizer(lambda: shutil.rmtree(root.parent, ignore_errors=True))
    root.mkdir()
    if kind.startswith("nodelocal"):
        uri = "nodelocal://self/coll"
    else:
        server = request.getfixturevalue(_SERVER_FIXTURE[kind])
        uri = server.collection_uri("coll")
    s = open_store(uri, StoreContext(root))
    s._root_for_tests = root
    s._another = lambda: open_store(uri, StoreContext(root))
    s.kind, s.overwrites = kind.split("-")[0], True
    s.name_is_object_and_folder = s.kind not in ("nodelocal", "gcs")
    return s


@pytest.fixture(params=STORES)
def store(request, tmp_path):
    """Every store, the in-memory one included."""
    s = _open(request.param, request, tmp_path)
    yield s
    asyncio.run(s.close())


@pytest.fixture(params=URI_STORES)
def uri_store(request, tmp_path):
    """The stores a URI names (for contracts of a place in a bucket or directory, or of
    streaming: the in-memory store holds every object whole by design)."""
    s = _open(request.param, request, tmp_path)
    yield s
    asyncio.run(s.close())


def run(coro):
    return asyncio.run(coro)


async def names(store, prefix=""):
    return [o.path async for o in store.list(prefix)]


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
    """A commit replaces an object atomically; the in-memory store refuses it instead
    (AlreadyExists, the object untouched): its one contract that differs."""
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
        if store.overwrites:
            await w.commit()
            assert await read_all(store, "obj") == b"new"
        else:
            with pytest.raises(AlreadyExists) as e:
                await w.commit()
            assert e.value.message == "obj already exists in mem://test (this store never overwrites an object)"
            with pytest.raises(AlreadyExists):
                await put(store, "obj", b"again")
            assert await read_all(store, "obj") == b"old"
        assert [o.path async for o in store.list()] == ["obj"]
    run(main())


def test_create_claims_an_absent_name_and_never_overwrites(store):
    """Create-if-absent (issue 12, point 1): the claim is the write itself, never a check first."""
    async def main():
        await create(store, "claims/lock", b"first")
        assert await read_all(store, "claims/lock") == b"first"
        with pytest.raises(AlreadyExists) as e:
            await create(store, "claims/lock", b"second, longer than the first")
        assert e.value.sqlstate == "58P02" and store.uri in e.value.message
        assert await read_all(store, "claims/lock") == b"first"       # untouched
        with pytest.raises(AlreadyExists):
            await create(store, "claims/lock", b"first")   # even the same bytes: nothing was resent
        await put(store, "claims/put", b"by put")                     # an object put() wrote ...
        with pytest.raises(AlreadyExists):
            await create(store, "claims/put", b"x")                   # ... is just as present
        assert await read_all(store, "claims/put") == b"by put"
        await create(store, "claims/empty", b"")
        assert (await store.stat("claims/empty")).size == 0
        assert await names(store, "claims/") == ["claims/empty", "claims/lock", "claims/put"]
    run(main())


def test_concurrent_creates_of_one_name_have_exactly_one_winner(store):
    """20 store instances (as 20 processes would have), all creating one name at once."""
    async def main():
        stores = [store._another() for _ in range(20)]
        try:
            for round_ in range(2):
                name = f"race/{round_}"
                results = await asyncio.gather(
                    *(create(s, name, f"writer {i} of round {round_}".encode()) for i, s in enumerate(stores)),
                    return_exceptions=True)
                winners = [i for i, r in enumerate(results) if r is None]
                losers = [r for r in results if isinstance(r, AlreadyExists)]
                assert len(winners) == 1 and len(losers) == 19, results
                assert await read_all(store, name) == f"writer {winners[0]} of round {round_}".encode()
        finally:
            await asyncio.gather(*(s.close() for s in stores))
        assert await names(store, "race/") == ["race/0", "race/1"]   # and no temporary leftovers
        if store.kind == "nodelocal":
            assert sorted(os.listdir(store._root_for_tests / "coll" / "race")) == ["0", "1"]
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
        assert await level(s) == [] and await level(s, "link/") == []    # never followed
        assert [o async for o in s.list("link/")] == []
    run(main())
    assert list(outside.iterdir()) == []


def test_nodelocal_listings_hide_temporary_files_only(tmp_path):
    """Only a writer's temporary name (`.<name>.<32 hex>.tmp`) is debris: an object whose name
    merely ends with '.tmp' is listed like any other, with and without a delimiter."""
    root = tmp_path / "root"
    root.mkdir()
    s = open_store("nodelocal://self/coll", StoreContext(root))

    async def main():
        await put(s, "notes.tmp", b"n")
        await put(s, "d/.hidden.tmp", b"h")
        (root / "coll" / "d" / f".x.{'0' * 32}.tmp").write_bytes(b"debris")
        assert await names(s) == ["d/.hidden.tmp", "notes.tmp"]
        assert await level(s) == [F("d/"), O("notes.tmp", 1)]
        assert await level(s, "d/") == [O("d/.hidden.tmp", 1)]
    run(main())


def test_unknown_and_unbuilt_schemes():
    ctx = StoreContext(__import__("pathlib").Path("/tmp"))
    with pytest.raises(InvalidURI):
        open_store("http://example/x", ctx)
    with pytest.raises(Unsupported):
        open_store("userfile://defaultdb.public.userfiles_root/x", ctx)
    with pytest.raises(InvalidURI):
        open_store("s3://bucket/x?AUTH=implicit&BOGUS=1", ctx)


def test_second_backup_into_an_occupied_subdir_is_refused(store):
    """A subdir is claimed by creating its lock: never one holding a backup (its lock is
    removed again), another job's lock, or a version-1 BACKUP-LOCK-<job_id>."""
    from engine.backup import claim_subdir

    async def main():
        await put(store, "2026/01/01-000000.00/BACKUP_MANIFEST", b"x")
        assert not await claim_subdir(store, "/2026/01/01-000000.00", 2, "t2")
        assert [i.path async for i in store.list("2026/01/01-000000.00/")] == [
            "2026/01/01-000000.00/BACKUP_MANIFEST"]
        await put(store, "2026/01/02-000000.00/BACKUP-LOCK-7", b"")
        assert not await claim_subdir(store, "/2026/01/02-000000.00", 8, "t8")
        assert await claim_subdir(store, "/2026/01/03-000000.00", 9, "t9")
        assert not await claim_subdir(store, "/2026/01/03-000000.00", 10, "t10")
        assert b'"token": "t9"' in await read_all(store, "2026/01/03-000000.00/BACKUP-LOCK")
    run(main())


# -- more of the contract, for every store --
def test_listing_is_sorted_complete_and_paged(store):
    """Sorted by name (bytewise), every object under the prefix, nothing else, across pages."""
    wanted = ["a/b/one", "a/two", "a-b", "a0", "a/b/c/d/deep", "b", "sp ace/ü+x=1.bin", "z"]
    inner = store.inner
    if hasattr(inner, "list_page_size"):
        inner.list_page_size = 2

    async def main():
        for i, n in enumerate(wanted):
            await put(store, n, n.encode() * (i + 1))
        assert await names(store) == sorted(wanted)
        assert await names(store, "a/") == ["a/b/c/d/deep", "a/b/one", "a/two"]
        assert await names(store, "a") == sorted(n for n in wanted if n.startswith("a"))
        assert await names(store, "nothing/") == []
        sizes = {o.path: o.size async for o in store.list()}
        assert sizes == {n: len(n.encode()) * (i + 1) for i, n in enumerate(wanted)}
        assert await read_all(store, "sp ace/ü+x=1.bin") == "sp ace/ü+x=1.bin".encode() * 7
    run(main())


# -- listings with a delimiter: one level, folders as PrefixInfo (base.py) --
def _page_size(store, n: int) -> None:
    if hasattr(store.inner, "list_page_size"):
        store.inner.list_page_size = n


async def level(store, prefix=""):
    return [o async for o in store.list(prefix, "/")]


def O(path, size):     # noqa: E743 - reads as the listing it stands for
    return ObjectInfo(path, size)


def F(path):
    return PrefixInfo(path)


def test_delimiter_listing_is_one_level_sorted_by_path(store):
    """Objects directly under the prefix and one entry per folder, merged in path order, never
    what lies inside a folder; names sharing a start with a folder ('a', 'a/', 'a-b', 'ab')
    each in their place; a prefix that does not end with '/' cuts names mid-segment. Pages of
    two entries, so folders and objects cross page boundaries."""
    objects = ["top", "d1/x", "d1/sub/y", "d1/sub/deeper/z", "d2/w", "a", "a/b", "ab", "a-b",
               "a/c/d", "a0"]
    size = {n: i + 1 for i, n in enumerate(objects)}
    if not store.name_is_object_and_folder:        # no object 'a' beside 'a/' (_open)
        objects.remove("a")
    _page_size(store, 2)

    def want(*entries):
        return [e for e in entries if isinstance(e, PrefixInfo) or e.path in objects]

    async def main():
        for n in objects:
            await put(store, n, b"x" * size[n])
        assert await level(store) == want(O("a", 6), O("a-b", 9), F("a/"), O("a0", 11), O("ab", 8),
                                          F("d1/"), F("d2/"), O("top", 1))
        assert await level(store, "a") == want(O("a", 6), O("a-b", 9), F("a/"), O("a0", 11),
                                               O("ab", 8))
        assert await level(store, "a/") == [O("a/b", 7), F("a/c/")]
        assert await level(store, "d1/") == [F("d1/sub/"), O("d1/x", 2)]
        assert await level(store, "d1/sub/") == [F("d1/sub/deeper/"), O("d1/sub/y", 3)]
        assert await level(store, "d1/sub/deeper/") == [O("d1/sub/deeper/z", 4)]
        assert await level(store, "d1/s") == [F("d1/sub/")]
        assert await level(store, "d") == [F("d1/"), F("d2/")]
        for empty in ("nothing/", "x", "a/b/", "top/", "d1/sub/deeper/z/", "d3"):
            assert await level(store, empty) == [], empty
        # without a delimiter: every object at any depth, as before
        assert [o async for o in store.list("a")] == want(O("a", 6), O("a-b", 9), O("a/b", 7),
                                                          O("a/c/d", 10), O("a0", 11), O("ab", 8))
        with pytest.raises(ValueError):
            [o async for o in store.list("", "|")]
    run(main())


def test_an_object_and_a_folder_of_one_name(store):
    """A folder 'a/' is not an object 'a': reading, stating or deleting 'a' finds none. A
    bucket holds both an object 'a' and objects under 'a/'; nodelocal cannot (a file cannot be
    a directory), and says so when asked to, in either order."""
    async def main():
        await put(store, "a/b", b"1")
        for absent in (lambda: store.stat("a"), lambda: read_all(store, "a"),
                       lambda: store.get_range("a", 0, 1), lambda: store.stat("a/b/c"),
                       lambda: read_all(store, "a/b/c")):
            with pytest.raises(NotFound):
                await absent()
        await store.delete("a")
        await store.delete("a/b/c")
        await put(store, "x", b"2")
        if store.name_is_object_and_folder:
            await put(store, "a", b"3")
            await create(store, "x/y", b"4")
            assert await level(store) == [O("a", 1), F("a/"), O("x", 1), F("x/")]
            return
        if store.kind != "nodelocal":
            return              # the GCS test server (_open): its own 500s, retried, then 58030
        for attempt, name, what in ((lambda: put(store, "a", b"3"), "a", "a folder"),
                                    (lambda: create(store, "a", b"3"), "a", "a folder"),
                                    (lambda: put(store, "x/y", b"4"), "x/y", "an object"),
                                    (lambda: create(store, "x/y/z", b"4"), "x/y/z", "an object")):
            with pytest.raises(StorageError) as e:
                await attempt()
            assert type(e.value) is StorageError
            assert e.value.message == (f"cannot write {name} in {store.uri}: {what} of that name "
                                       "exists (nodelocal cannot hold an object and a folder of one name)")
        assert await level(store) == [F("a/"), O("x", 1)]
        assert await names(store) == ["a/b", "x"]
    run(main())


def test_delimiter_listing_of_an_empty_store(store):
    async def main():
        assert await level(store) == []
        assert await level(store, "a/") == []
    run(main())


def test_delimiter_listing_shows_no_unfinished_write_nor_emptied_folder(store):
    """A writer's unfinished object (nodelocal: its temporary file; S3: an open multipart
    upload) makes no folder, and a folder goes with its last object (nodelocal keeps the empty
    directory but hides it; SeaweedFS, the S3 test server, lists emptied folders a while,
    which base.py allows: real S3 has no folders to keep). The debris is really there on
    nodelocal, so the listing is what hides it."""
    _small_parts(store)
    data = os.urandom(6 << 20)       # past one part: a multipart upload on S3

    async def unfinished(path):
        w = await store.writer(path)
        for i in range(0, len(data), 1 << 20):
            await w.write(data[i:i + (1 << 20)])
        return w

    async def main():
        await put(store, "keep/obj", b"k")
        writers = [await unfinished("fresh/new/obj"), await unfinished("keep/unfinished"),
                   await unfinished("solo")]
        await put(store, "gone/deeper/x", b"x")
        await store.delete("gone/deeper/x")
        if store.kind == "nodelocal":
            top = store._root_for_tests / "coll"
            assert len(list((top / "fresh" / "new").glob(".obj.*.tmp"))) == 1
            assert len(list((top / "keep").glob(".unfinished.*.tmp"))) == 1
            assert (top / "gone" / "deeper").is_dir()
        emptied = [[], [F("gone/")]] if store.kind == "s3" else [[]]   # gone, or maybe not yet
        assert await level(store) in [e + [F("keep/")] for e in emptied]
        assert await level(store, "keep/") == [O("keep/obj", 1)]
        for empty in ("fresh/", "fresh/new/", "s"):
            assert await level(store, empty) == [], empty
        if store.kind != "s3":
            assert await level(store, "gone/") == []
        assert await names(store) == ["keep/obj"]
        for w in writers:
            await w.abort()
    run(main())


class _CountingPolicy:
    """The request seam's policy (uri.Requests), counting each request by its operation."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.ops: list[str] = []

    async def run(self, attempt, *, store, op, path):
        self.ops.append(op)
        return await self.inner.run(attempt, store=store, op=op, path=path)


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure"])
def test_cloud_delimiter_listing_does_not_page_through_folders(kind, request, tmp_path):
    """The service's own delimiter listing: 30 objects in a folder, pages of 5 entries, and a
    listing of the level above is one request, where the full listing takes seven."""
    store = _open(kind, request, tmp_path)
    _page_size(store, 5)
    counting = store.inner.request_policy = _CountingPolicy(store.policy)

    async def main():
        for i in range(30):
            await put(store, f"big/{i:02d}", b"")
        await put(store, "x", b"1")
        counting.ops.clear()
        assert await level(store) == [F("big/"), O("x", 1)]
        assert counting.ops == ["list objects under"]
        assert len(await names(store)) == 31
        assert counting.ops.count("list objects under") == 1 + 7
        await store.close()
    run(main())


def test_store_is_rooted_at_its_path(uri_store):
    """Objects of one collection path never show in a sibling path of the same bucket."""
    store = uri_store
    if store.kind == "nodelocal":
        other = open_store("nodelocal://self/coll2", StoreContext(store._root_for_tests))
    else:
        inner = store.inner
        bucket = inner.bucket if hasattr(inner, "bucket") else inner.container
        server = {"s3": "seaweedfs", "gcs": "fake_gcs", "azure": "azurite"}[store.kind]
        from tests.support import objstores
        other = open_store(getattr(objstores, server)().collection_uri("coll2", bucket=bucket),
                           StoreContext(store._root_for_tests))

    async def main():
        await put(store, "x", b"1")
        await put(other, "y", b"2")
        assert await names(store) == ["x"]
        assert await names(other) == ["y"]
        await other.close()
    run(main())


def test_ranges_empty_objects_and_not_found(store):
    async def main():
        data = bytes(range(256)) * 40
        await put(store, "r", data)
        await put(store, "empty", b"")
        assert await store.get_range("r", 0, 10) == data[:10]
        assert await store.get_range("r", 5000, 300) == data[5000:5300]
        assert await store.get_range("r", len(data) - 3, 100) == data[-3:]
        assert await store.get_range("r", len(data), 10) == b""
        assert await store.get_range("r", len(data) + 100, 10) == b""
        assert await store.get_range("r", 7, 0) == b""
        assert (await store.stat("empty")).size == 0
        assert await read_all(store, "empty") == b""
        assert "empty" in await names(store)
        for op in (lambda: store.stat("missing"), lambda: read_all(store, "missing"),
                   lambda: store.get_range("missing", 0, 1), lambda: store.get_range("missing", 0, 0)):
            with pytest.raises(NotFound) as e:
                await op()
            assert e.value.sqlstate == "58P01"
            assert store.uri in e.value.message
        await store.delete("missing")
    run(main())


def test_invalid_object_names_are_refused(store):
    async def main():
        for bad in ("../x", "/abs", "a//b", "a/../b", ""):
            with pytest.raises(InvalidURI):
                await put(store, bad, b"1")
            with pytest.raises(InvalidURI):
                await store.stat(bad)
        assert await names(store) == []
    run(main())


def test_streaming_reads_can_stop_early(store):
    async def main():
        data = os.urandom(5 << 20)
        await put(store, "s", data)
        got = b""
        agen = store.get("s")
        async for chunk in agen:
            got += chunk
            break
        await agen.aclose()
        assert got and data.startswith(got)
        assert await read_all(store, "s") == data
    run(main())


def _small_parts(store):
    """Make the cloud writers cut small parts, so a 20 MiB object has many of them."""
    inner = store.inner
    if store.kind == "s3":
        inner.part_size = 5 << 20          # S3's smallest part
    elif hasattr(inner, "part_size"):
        inner.part_size = 2 << 20
    return getattr(inner, "part_size", 0)


def test_large_object_streams_with_bounded_memory(uri_store):
    """32+ MiB written in 64 KiB pieces (a multipart/resumable/staged upload), read back equal;
    the writer holds about three parts (two uploading, one filling) plus the SDK's own
    buffers, never the whole object."""
    store = uri_store
    part = _small_parts(store)
    data = os.urandom(max(32 << 20, 8 * part))

    async def main():
        with pytest.raises(NotFound):     # makes the SDK client (its models weigh ~10 MiB) first
            await store.stat("big/obj")
        w = await store.writer("big/obj")
        tracemalloc.start()
        try:
            for i in range(0, len(data), 65536):
                await w.write(data[i:i + 65536])
            assert await names(store) == []          # nothing visible before commit
            await w.commit()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        bound = 5 * part + (2 << 20)
        assert peak < bound < len(data), (peak, bound)
        assert (await store.stat("big/obj")).size == len(data)
        got = bytearray()
        async for chunk in store.get("big/obj"):
            assert len(chunk) <= 16 << 20
            got += chunk
        assert got == data
        assert await store.get_range("big/obj", (7 << 20) - 5, 10) == data[(7 << 20) - 5:(7 << 20) + 5]
    run(main())


def test_abort_of_a_large_upload_leaves_nothing(store):
    _small_parts(store)
    data = os.urandom(12 << 20)

    async def main():
        await put(store, "keep", b"k")
        w = await store.writer("big")
        for i in range(0, len(data), 1 << 20):
            await w.write(data[i:i + (1 << 20)])
        await w.abort()
        await w.abort()                              # twice is harmless
        assert await names(store) == ["keep"]
        with pytest.raises(NotFound):
            await store.stat("big")
    run(main())
    if store.kind == "s3":                           # and no multipart upload left open
        from tests.support.objstores import seaweedfs
        assert seaweedfs().uploads(store.inner.bucket) == []


def test_concurrent_writers_of_one_name(store):
    """Two writers of the same object at once: the result is one of them whole, never a mix.
    On Azure the first commit drops the other writer's uncommitted blocks, so the other one
    may fail (58030) instead; the in-memory store refuses the second commit (58P02, no
    overwrite); the engine never writes one name twice at once."""
    _small_parts(store)
    a, b = os.urandom(6 << 20), os.urandom(6 << 20)

    async def write(data):
        w = await store.writer("same")
        for i in range(0, len(data), 1 << 18):
            await w.write(data[i:i + (1 << 18)])
            await asyncio.sleep(0)
        await w.commit()

    async def main():
        results = await asyncio.gather(write(a), write(b), return_exceptions=True)
        ok = [d for d, r in zip((a, b), results) if r is None]
        failed = [r for r in results if r is not None]
        assert ok, results
        if not store.overwrites:
            assert len(ok) == 1 and len(failed) == 1 and isinstance(failed[0], AlreadyExists)
        else:
            if store.kind != "azure":
                assert not failed, failed
            assert all(isinstance(r, StorageError) and r.sqlstate == "58030" for r in failed)
        got = await read_all(store, "same")
        assert got in ok
    run(main())


def test_empty_and_small_puts_in_a_row(store):
    """Empty objects between others on the same kept-alive connections (with boto3's
    'Expect: 100-continue', SeaweedFS's at-once answer to an empty PUT desynchronised the
    connection: the next request hung for the whole read timeout)."""
    async def main():
        for i in range(4):
            await put(store, f"e{i}", b"")
            await put(store, f"s{i}", b"%d" % i * 100)
        for i in range(4):
            assert await read_all(store, f"e{i}") == b""
            assert await read_all(store, f"s{i}") == b"%d" % i * 100
    run(asyncio.wait_for(main(), 20))


def _direct_io_supported(directory: Path) -> bool:
    probe = directory / ".probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600))
        return True
    except OSError as e:
        assert e.errno == errno.EINVAL
        return False
    finally:
        probe.unlink(missing_ok=True)


@pytest.mark.parametrize("where", ["tmp", "tmpfs"])
def test_nodelocal_direct_writes_keep_every_byte(tmp_path, where):
    """nodelocal writes with O_DIRECT in whole blocks where the filesystem allows it, and
    buffered elsewhere; either way every size and split of the bytes comes back exactly."""
    base = tmp_path if where == "tmp" else Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        root = base / "root"
        root.mkdir()
        s = open_store("nodelocal://self/coll", StoreContext(root))
        block, buffer = 4096, 4 << 20
        sizes = [0, 1, block - 1, block, block + 1, buffer - 1, buffer, buffer + 1, 3 * buffer + 777]

        async def main():
            modes = set()
            for size in sizes:
                data = os.urandom(size)
                w = await s.writer(f"f{size}")
                modes.add(w._inner._fd is not None)  # under the retry wrapper
                step = 1000 + size % 7919
                for i in range(0, size, step):
                    await w.write(data[i:i + step])
                await w.commit()
                assert await read_all(s, f"f{size}") == data
                assert (await s.stat(f"f{size}")).size == size
            w = await s.writer("aborted")
            await w.write(os.urandom(buffer + 5))
            await w.abort()
            assert [o.path async for o in s.list("aborted")] == []
            assert not [p for p in (root / "coll").iterdir() if p.name.endswith(".tmp")]
            return modes

        assert run(main()) == {_direct_io_supported(root)}
    finally:
        if where == "tmpfs":
            shutil.rmtree(base, ignore_errors=True)


def test_nodelocal_falls_back_when_direct_io_is_refused_mid_file(tmp_path):
    """Some filesystems open with O_DIRECT but refuse its I/O (EINVAL): the file goes on
    buffered instead of failing the backup. An unaligned write makes ext4 refuse it the same way."""
    root = tmp_path / "root"
    root.mkdir()
    s = open_store("nodelocal://self/coll", StoreContext(root))
    if not _direct_io_supported(root):
        pytest.fail("this test needs a filesystem with O_DIRECT for tmp_path (ext4, xfs ...)")

    async def main():
        w = (await s.writer("f"))._inner
        w._write_all(memoryview(b"odd"))      # unaligned: EINVAL under O_DIRECT
        w._size = 3
        w._pos = 0
        await w.commit()
        assert await read_all(s, "f") == b"odd"
    run(main())


def _chattr(flag: str, path) -> None:
    import subprocess
    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True)


@pytest.mark.parametrize("immutable", ["file", "directory"])
def test_nodelocal_delete_the_filesystem_refuses_is_a_clear_58030(tmp_path, immutable):
    """Issue 12, point 7: a delete the store refuses (here an immutable file or directory:
    chattr +i bites even for root, where chmod 0555 does not) raises StorageError naming the
    store and the object, at once; it neither hangs nor reports success, and nothing is lost.
    A create or a write into an immutable directory is refused the same way."""
    root = tmp_path / "root"
    root.mkdir()
    store = open_store("nodelocal://self/coll", StoreContext(root))
    run(put(store, "locked/obj", b"keep me"))
    target = root / "coll" / "locked" / ("obj" if immutable == "file" else "")
    _chattr("+i", target)
    try:
        async def main():
            with pytest.raises(StorageError) as e:
                await asyncio.wait_for(store.delete("locked/obj"), 30)
            assert type(e.value) is StorageError and e.value.sqlstate == "58030"
            assert e.value.message == ("cannot delete locked/obj in nodelocal://self/coll: "
                                       "Operation not permitted"), e.value.message
            assert await read_all(store, "locked/obj") == b"keep me"
            if immutable == "directory":
                for attempt in (create(store, "locked/new", b"x"), put(store, "locked/new", b"x")):
                    with pytest.raises(StorageError) as e:
                        await attempt
                    assert e.value.message.startswith("cannot write locked/new in nodelocal://self/coll")
        run(main())
    finally:
        _chattr("-i", target)
    assert sorted(os.listdir(root / "coll" / "locked")) == ["obj"]   # no temporary leftovers
    run(store.close())


def test_s3_delete_the_store_refuses_is_a_clear_58030():
    """Issue 12, point 7, on a real S3 server: a key that may only read and list (SeaweedFS with
    identities). The delete is refused at once with the store's reason, never retried into a
    hang nor reported as done; the object stays. A create is refused the same way, and a refused
    create is not AlreadyExists."""
    from tests.support.objstores import seaweedfs_with_reader
    server = seaweedfs_with_reader()
    bucket = server.new_bucket()
    writer = open_store(server.collection_uri("coll", bucket=bucket), StoreContext(Path("/nonexistent")))
    reader = open_store(server.reader_uri(bucket), StoreContext(Path("/nonexistent")))

    async def main():
        await put(writer, "obj", b"keep me")
        assert await read_all(reader, "obj") == b"keep me"       # the reader key works ...
        for attempt in (reader.delete("obj"), create(reader, "new", b"x")):
            with pytest.raises(StorageError) as e:
                await asyncio.wait_for(attempt, 30)             # ... but may not change a thing
            err = e.value
            assert type(err) is StorageError and err.sqlstate == "58030", err
            assert "AccessDenied (HTTP 403)" in err.message and reader.uri in err.message
            assert "gave up" not in err.message                  # an answer, not retried
            for secret in server.secrets:
                assert secret not in err.message
        assert await read_all(writer, "obj") == b"keep me"
        assert [o.path async for o in writer.list()] == ["obj"]
        await writer.close()
        await reader.close()
    run(main())


def _debris(store, prefix: str) -> list[str]:
    """What a killed writer left under `prefix` that listings never show."""
    if store.kind == "nodelocal":
        top = store._root_for_tests / "coll"
        return sorted(str(p.relative_to(top)) for p in top.rglob("*.tmp")
                      if str(p.relative_to(top)).startswith(prefix))
    if store.kind == "s3":
        from tests.support.objstores import seaweedfs
        keys = seaweedfs().uploads(store.inner.bucket)
        return sorted(k for k in keys if k.startswith(f"coll/{prefix}"))
    return []


def test_discard_incomplete_removes_dead_writers_debris_and_nothing_else(store):
    """A writer that never commits nor aborts (its process killed) leaves a temporary file
    (nodelocal) or an open multipart upload (S3); `discard_incomplete(prefix)` removes exactly
    those under the prefix, never a committed object, and a writer whose debris went fails its
    commit instead of committing. GCS and Azure expire such debris themselves: a no-op there."""
    _small_parts(store)
    data = os.urandom(12 << 20)          # past one part: a multipart upload on S3

    async def dead_writer(path):
        w = await store.writer(path)
        for i in range(0, len(data), 1 << 20):
            await w.write(data[i:i + (1 << 20)])
        return w

    async def main():
        await put(store, "a/keep", b"k")
        await put(store, "a/sub/keep2", b"k2")
        inside, deeper, outside = (await dead_writer("a/x"), await dead_writer("a/sub/y"),
                                   await dead_writer("b/z"))
        if store.kind in ("nodelocal", "s3"):
            assert len(_debris(store, "a/")) == 2 and len(_debris(store, "b/")) == 1
        n = await store.discard_incomplete("a/")
        assert n == (2 if store.kind in ("nodelocal", "s3") else 0)
        assert _debris(store, "a/") == []
        assert await store.discard_incomplete("a/") == 0            # again: nothing left
        assert await names(store) == ["a/keep", "a/sub/keep2"]
        assert await read_all(store, "a/sub/keep2") == b"k2"
        if store.kind in ("nodelocal", "s3"):
            assert len(_debris(store, "b/")) == 1                   # outside the prefix: kept
            for w in (inside, deeper):                              # their writers fail
                with pytest.raises(StorageError):
                    await w.commit()
            assert await names(store, "a/") == ["a/keep", "a/sub/keep2"]
        else:
            for w in (inside, deeper):
                await w.abort()
        await outside.commit()                                      # untouched: still commits
        assert (await store.stat("b/z")).size == len(data)
        assert await store.discard_incomplete("nothing/here/") == 0
    run(main())
