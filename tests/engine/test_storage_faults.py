"""Retries (engine/storage/wrappers.py): backoff, resumed streams and listings, writers that
abort when they fail for good; then S3 through a fault-injecting HTTP proxy in front of SeaweedFS
(tests/support/faulthttp.py): random 503 SlowDown, dropped connections (before and after the
server acted) and truncated bodies still give byte-identical objects, and a store that keeps
failing ends in 58030 naming the redacted store, with nothing visible in the bucket. The same
random faults in front of Azurite too. (fake-gcs-server hands out resumable-upload URLs on its own
address, which a proxy in front of it cannot intercept, so GCS is not under the proxy.)"""
from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from engine.errors import AlreadyExists, NotFound, StorageError
from engine.storage import ObjectInfo, PrefixInfo, StoreContext, create, open_store, read_all
from engine.storage.memory import MemoryStore
from engine.storage.uri import TransientStorageError
from engine.storage.wrappers import RetryingStore, RetryPolicy
from tests.support.faulthttp import FaultHTTPProxy
from tests.support.objstores import azure_server, s3_server  # noqa: F401 (fixtures)

CTX = StoreContext(Path("/nonexistent-nodelocal-root"))


def fast(seed: int = 0, attempts: int = 40) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, base_delay=0.005, max_delay=0.05, max_elapsed=30,
                       rng=random.Random(seed))


def run(coro):
    return asyncio.run(coro)


# -- the wrapper, over an in-memory store that fails on purpose --
class Flaky:
    """An in-memory ObjectStore whose operations fail transiently while `failures[op]` > 0."""
    uri = "mem://flaky?AWS_SECRET_ACCESS_KEY=redacted"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.failures: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.aborted = 0

    def _maybe_fail(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        if self.failures.get(op, 0) > 0:
            self.failures[op] -= 1
            raise TransientStorageError(f"cannot {op} in {self.uri}: SlowDown (HTTP 503)")

    async def writer(self, path):
        store = self

        class W:
            buf = b""

            async def write(self, data):
                store._maybe_fail("write")
                self.buf += data

            async def commit(self):
                store._maybe_fail("commit")
                store.objects[path] = self.buf

            async def abort(self):
                store.aborted += 1
        return W()

    async def get(self, path):
        if path not in self.objects:
            raise NotFound(f"{path} does not exist in {self.uri}")
        data = self.objects[path]
        for i in range(0, len(data), 10):
            if i == 30:
                self._maybe_fail("get-body")      # the stream breaks after 3 chunks
            yield data[i:i + 10]

    async def get_range(self, path, offset, length):
        self._maybe_fail("get_range")
        return self.objects[path][offset:offset + length]

    async def list(self, prefix="", delimiter=None):
        listing = MemoryStore(objects=self.objects).list(prefix, delimiter)
        i = 0
        async for info in listing:
            if i == 2:
                self._maybe_fail("list")
            i += 1
            yield info

    async def delete(self, path):
        self.objects.pop(path, None)

    async def create(self, path, data):
        """Fails transiently while failures['create'] > 0; with `lands` set, a failing attempt
        still stores the object first (the answer is lost, not the request)."""
        self.calls["create"] = self.calls.get("create", 0) + 1
        if path in self.objects:
            raise AlreadyExists(f"{path} already exists in {self.uri}")
        if self.failures.get("create", 0) > 0:
            self.failures["create"] -= 1
            if self.lands:
                self.objects[path] = data
            raise TransientStorageError(f"cannot create {path} in {self.uri}: connection reset")
        self.objects[path] = data

    lands = False

    async def stat(self, path):
        self._maybe_fail("stat")
        if path not in self.objects:
            raise NotFound(f"{path} does not exist in {self.uri}")
        return ObjectInfo(path, len(self.objects[path]))

    async def close(self):
        pass


def test_transient_failures_are_retried_until_they_pass():
    inner = Flaky()
    inner.objects = {f"o{i}": bytes(range(i, i + 95)) for i in range(5)}
    inner.objects |= {"p/1": b"", "p/2/x": b"", "q/y": b"", "r": b"r"}
    store = RetryingStore(inner, fast())

    async def main():
        inner.failures = {"stat": 3, "get-body": 2, "list": 2, "get_range": 1}
        assert (await store.stat("o1")).size == 95
        assert await read_all(store, "o3") == inner.objects["o3"]     # resumed, no duplicate bytes
        assert [o.path async for o in store.list()] == sorted(inner.objects)   # resumed listing
        inner.failures["list"] = 2
        assert [o async for o in store.list("", "/")] == [              # and one of folders
            *(ObjectInfo(f"o{i}", 95) for i in range(5)), PrefixInfo("p/"), PrefixInfo("q/"),
            ObjectInfo("r", 1)]
        assert await store.get_range("o2", 5, 5) == inner.objects["o2"][5:10]
    run(main())
    assert inner.calls["stat"] == 4 and store.policy.retries == 10


def test_a_request_that_keeps_failing_is_58030_after_bounded_attempts():
    inner = Flaky()
    inner.objects = {"o": b"x"}
    store = RetryingStore(inner, fast(attempts=3))
    inner.failures = {"stat": 100}
    with pytest.raises(StorageError) as e:
        run(store.stat("o"))
    assert type(e.value) is StorageError and e.value.sqlstate == "58030"
    assert inner.calls["stat"] == 3
    assert inner.uri in e.value.message and "gave up after 3 attempts" in e.value.message
    # NotFound is an answer, not a failure: never retried
    inner.calls.clear()
    inner.failures = {}
    with pytest.raises(NotFound):
        run(store.stat("missing"))
    assert inner.calls["stat"] == 1
    # and the time budget bounds it too
    store.policy = RetryPolicy(max_attempts=100, base_delay=1.0, max_elapsed=0.2)
    inner.failures = {"stat": 100}
    with pytest.raises(StorageError) as e:
        run(store.stat("o"))
    assert "gave up after 1 attempts" in e.value.message


def test_a_resent_create_that_finds_its_own_object_succeeds():
    """The ambiguous failure: the first attempt landed, its answer was lost, the retry finds the
    name taken. Identical bytes (callers make them unique) are this caller's own claim."""
    inner = Flaky()
    inner.lands = True
    store = RetryingStore(inner, fast())

    async def main():
        inner.failures = {"create": 1}
        await create(store, "lock", b"job 42 token 9f3c")
        assert inner.objects["lock"] == b"job 42 token 9f3c" and inner.calls["create"] == 2
        # someone else's object found after a resend stays AlreadyExists
        inner.objects["other"] = b"job 7 token 0000"
        inner.lands = False
        inner.failures = {"create": 1}
        with pytest.raises(AlreadyExists):
            await create(store, "other", b"job 42 token 9f3c")
        assert inner.objects["other"] == b"job 7 token 0000"
        # with no resend, even identical bytes are someone else's create: AlreadyExists
        with pytest.raises(AlreadyExists):
            await create(store, "lock", b"job 42 token 9f3c")
        # a create that keeps failing ends in 58030, never in a false success
        inner.failures = {"create": 100}
        with pytest.raises(StorageError) as e:
            await create(store, "never", b"x")
        assert type(e.value) is StorageError and "gave up" in e.value.message
    run(main())


def test_s3_create_survives_lost_answers(s3_server):
    """Real SeaweedFS behind the fault proxy: PutObject(If-None-Match: *) processed by the
    server, the connection cut before the answer; the resend gets 412 and must still succeed."""
    bucket = s3_server.new_bucket()
    with FaultHTTPProxy(s3_server.port, rate=0.5, seed=5, faults=("drop_after", "503")) as proxy:
        store = _s3_store(s3_server, proxy, bucket, fast(11))

        async def main():
            for i in range(12):
                await create(store, f"locks/{i}", f"claim {i}".encode())
            proxy.rate = 0.0
            with pytest.raises(AlreadyExists):
                await create(store, "locks/0", b"claim of another job")
            await store.close()
        run(main())
        assert proxy.counts["drop_after"] > 0, proxy.counts
    c = s3_server.client()
    for i in range(12):
        assert c.get_object(Bucket=bucket, Key=f"coll/locks/{i}")["Body"].read() == f"claim {i}".encode()


def test_backoff_grows_with_jitter_and_a_cap():
    p = RetryPolicy(base_delay=0.1, max_delay=1.0, rng=random.Random(3))
    for n, step in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)):
        delays = {round(p.delay(n), 6) for _ in range(20)}
        assert all(step / 2 <= d <= step for d in delays) and len(delays) > 1


def test_a_writer_that_fails_for_good_aborts():
    inner = Flaky()
    store = RetryingStore(inner, fast(attempts=2))

    async def main():
        w = await store.writer("x")
        await w.write(b"abc")
        inner.failures = {"commit": 5}
        with pytest.raises(StorageError) as e:
            await w.commit()
        assert type(e.value) is StorageError
        await w.abort()                     # the engine's own abort afterwards is harmless
    run(main())
    assert inner.aborted == 1 and inner.objects == {}


# -- S3 through the fault proxy --
def _s3_store(server, proxy, bucket, policy):
    store = open_store(server.collection_uri(bucket=bucket, endpoint=proxy.url), CTX)
    store.policy = policy
    store.inner.part_size = 5 << 20
    return store


async def _write(store, name, data, piece=256 << 10):
    w = await store.writer(name)
    for i in range(0, len(data), piece):
        await w.write(data[i:i + piece])
    await w.commit()


def test_random_faults_still_give_byte_identical_objects(s3_server):
    rnd = random.Random(42)
    objects = {f"obj/{i:02d}": rnd.randbytes(n) for i, n in
               enumerate([0, 1, 4096, 700_000, 6 << 20, 11 << 20])}
    bucket = s3_server.new_bucket()
    with FaultHTTPProxy(s3_server.port, rate=0.0, seed=1234) as proxy:
        store = _s3_store(s3_server, proxy, bucket, fast(7))

        async def round_trip(names, faults, rate):
            proxy.faults, proxy.rate = faults, rate
            for name in names:
                await _write(store, name, objects[name])
            for name in names:
                assert await read_all(store, name) == objects[name]
                data = objects[name]
                assert (await store.stat(name)).size == len(data)
                if data:
                    off = rnd.randrange(len(data))
                    assert await store.get_range(name, off, 1000) == data[off:off + 1000]

        async def main():
            big = ["obj/04", "obj/05"]
            # each kind of fault on its own first, so every one is certainly exercised ...
            for fault in ("503", "drop", "drop_after", "truncate"):
                await round_trip(big, (fault,), 0.3)
            # ... then all of them at random
            await round_trip(sorted(objects), ("503", "drop", "drop_after", "truncate"), 0.25)
            assert [o.path async for o in store.list()] == sorted(objects)
            await store.delete("obj/00")
            with pytest.raises(NotFound):
                await store.stat("obj/00")
            await store.close()
        run(main())
        for fault in ("503", "drop", "drop_after", "truncate"):
            assert proxy.counts[fault] > 0, proxy.counts
    assert store.policy.retries > 0
    # read back directly from SeaweedFS, not through the proxy nor the store
    c = s3_server.client()
    for name, data in objects.items():
        if name != "obj/00":
            assert c.get_object(Bucket=bucket, Key=f"coll/{name}")["Body"].read() == data
    assert sorted(s3_server.keys(bucket)) == [f"coll/{n}" for n in sorted(objects) if n != "obj/00"]


def test_a_permanently_failing_store_is_58030_and_nothing_is_visible(s3_server):
    bucket = s3_server.new_bucket()
    with FaultHTTPProxy(s3_server.port, rate=0.0, seed=9, faults=("503", "drop")) as proxy:
        store = _s3_store(s3_server, proxy, bucket, fast(attempts=4))
        part = os.urandom(6 << 20)

        async def main():
            w = await store.writer("big")
            await w.write(part)                      # the first part goes up ...
            await w.write(part)
            proxy.rate = 1.0                         # ... then the store breaks for good
            with pytest.raises(StorageError) as e:
                await w.write(part)
                await w.commit()
            errors = [e.value]
            with pytest.raises(StorageError) as e:
                await _write(store, "small", b"tiny")
            errors.append(e.value)
            with pytest.raises(StorageError) as e:
                await store.stat("small")
            errors.append(e.value)
            return errors
        errors = run(main())
        for err in errors:
            assert type(err) is StorageError and err.sqlstate == "58030"
            assert store.uri in err.message and "redacted" in err.message
            assert "gave up after" in err.message
            for secret in s3_server.secrets:
                assert secret not in err.message
        proxy.rate = 0.0
        run(store.close())
    assert s3_server.keys(bucket) == []              # nothing partial became visible


def test_a_read_that_keeps_failing_is_58030(s3_server):
    bucket = s3_server.new_bucket()
    data = os.urandom(3 << 20)
    with FaultHTTPProxy(s3_server.port, rate=0.0, seed=3, faults=("truncate",)) as proxy:
        store = _s3_store(s3_server, proxy, bucket, fast(attempts=3))

        async def main():
            await _write(store, "o", data)
            proxy.rate = 1.0
            with pytest.raises(StorageError) as e:
                await read_all(store, "o")
            assert e.value.sqlstate == "58030" and store.uri in e.value.message
            proxy.rate = 0.0
            assert await read_all(store, "o") == data
            await store.close()
        run(main())


def test_random_faults_on_azure_too(azure_server):
    """The same faults in front of Azurite: staged blocks, block-list commits, ranged reads."""
    rnd = random.Random(7)
    objects = {f"o{i}": rnd.randbytes(n) for i, n in enumerate([0, 10, 100_000, 5 << 20, 9 << 20])}
    bucket = azure_server.new_bucket()
    with FaultHTTPProxy(azure_server.port, rate=0.3, seed=99) as proxy:
        store = open_store(azure_server.collection_uri(
            bucket=bucket, endpoint=f"{proxy.url}/{azure_server.account}"), CTX)
        store.policy = fast(5)
        store.inner.part_size = 2 << 20

        async def main():
            for name, data in objects.items():
                await _write(store, name, data)
            for name, data in objects.items():
                assert await read_all(store, name) == data
                assert (await store.stat(name)).size == len(data)
            assert [o.path async for o in store.list()] == sorted(objects)
            await store.close()
        run(main())
        assert sum(proxy.counts[f] for f in ("503", "drop", "drop_after", "truncate")) > 3
    c = azure_server.client().get_container_client(bucket)
    for name, data in objects.items():
        assert c.get_blob_client(f"coll/{name}").download_blob().readall() == data


# -- GCS resumable uploads: the resume protocol itself --
class _Resp:
    def __init__(self, status, headers=None, body=None):
        self.status_code, self.headers, self._body = status, headers or {}, body
        self.text = ""

    def json(self):
        return self._body


class _ResumableSession:
    """GCS's documented resumable-upload semantics, in memory (strictly: each chunk must start
    where the persisted bytes end, else 400): chunks at offsets, a 308 telling
    how much is persisted, `bytes */N` status queries, 200 with the object's CRC32C when complete.
    (fake-gcs-server appends re-sent chunks and finalizes on a status query, so the resume path
    cannot be checked against it.) `cut_after` cuts the answer of those calls after the data was
    taken; `keep_half` persists only half of that call's chunk."""

    def __init__(self, cut_after=(), keep_half=()):
        self.data = bytearray()
        self.meta = None
        self.calls = 0
        self.cut_after, self.keep_half = set(cut_after), set(keep_half)

    def put(self, url, data, headers, timeout):
        import base64 as b64
        import google_crc32c
        import requests
        self.calls += 1
        rng, total = headers["Content-Range"].split(" ")[1].split("/")
        if self.meta is None and rng != "*":
            a, b = map(int, rng.split("-"))
            if a != len(self.data):             # strict: a chunk starts where the session ends
                return _Resp(400)
            chunk = bytes(data)[:len(data) // 2] if self.calls in self.keep_half else bytes(data)
            self.data[a:] = chunk
        if self.meta is None and total != "*" and len(self.data) == int(total):
            self.meta = {"crc32c": b64.b64encode(google_crc32c.Checksum(bytes(self.data)).digest()).decode()}
        if self.calls in self.cut_after:
            raise requests.ConnectionError("connection reset by peer")
        if self.meta is not None:
            return _Resp(200, body=self.meta)
        return _Resp(308, {"Range": f"bytes=0-{len(self.data) - 1}"} if self.data else {})


@pytest.mark.parametrize("cut_after, keep_half", [((), ()), ((2, 5), ()), ((), (3,)), ((1, 3, 8), (6,))])
def test_gcs_resumable_upload_resumes_exactly(cut_after, keep_half):
    from engine.storage.gcs import GCSStore, parse_gs
    store = GCSStore(parse_gs("gs://bkt/p?AUTH=implicit"))
    session = _ResumableSession(cut_after, keep_half)
    store._sdk = (None, session, "")
    store.emulated = False
    store.request_policy = fast()
    store.part_size = 256 << 10
    data = random.Random(1).randbytes(5 * (256 << 10) + 1234)

    async def main():
        from engine.storage.gcs import _GCSWriter
        w = _GCSWriter(store, "obj")
        w._url, w._pipe._start = "session", None
        for i in range(0, len(data), 100_000):
            await w.write(data[i:i + 100_000])
        await w.commit()
    run(main())
    assert bytes(session.data) == data

