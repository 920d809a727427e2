"""Retries around any ObjectStore: exponential backoff with jitter, bounded attempts and time.

What is retried: TransientStorageError only (throttling 503/SlowDown/429, other 5xx, connection
resets, timeouts, truncated bodies; the backends decide, uri.TransientStorageError). NotFound,
InvalidURI and plain StorageError (denied, no such bucket, ...) pass through at once.

Where: at two levels, both owned here, never inside a backend.
- Each SDK request of a backend that has the request seam (`request_policy`, see uri.Requests):
  one part upload, one list page, one stat. This is what lets a streaming writer survive a failed
  part upload without buffering the whole object: the part is still in memory and is sent again.
- Whole protocol calls of a store without the seam (nodelocal, or any other), and the body of a
  `get` stream: a stream cut mid-way is reopened at the offset already delivered (ranged GET),
  so the caller sees every byte exactly once, in order.

A `create` (create-if-absent) that was sent more than once and then finds an object at its path
may be looking at its own first attempt, which landed although its answer was lost: the wrapper
reads the object back and counts identical bytes as success (base.py: callers make `data`
unique to them); anything else stays AlreadyExists.

When a request keeps failing (max_attempts, or max_elapsed seconds since its first attempt),
it raises StorageError (58030) whose message is the backend's (naming the store by its redacted
URI) plus how long it tried. A writer that fails for good aborts its upload before raising, so
nothing partial ever becomes visible and no multipart upload is left behind.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

from ..errors import AlreadyExists, NotFound, StorageError
from .base import Listed, ObjectInfo, ObjectStore, read_all
from .uri import TransientStorageError, Unreachable

__all__ = ["RetryPolicy", "RetryingStore"]

log = logging.getLogger("pgkeep.storage")


class _Sent:
    """How many times requests of the current protocol call were sent again."""
    again = 0


_sent: contextvars.ContextVar[_Sent | None] = contextvars.ContextVar("pgkeep_storage_sent",
                                                                     default=None)


@dataclass
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 0.2      # seconds before the 2nd attempt (before jitter)
    max_delay: float = 8.0
    max_elapsed: float = 90.0    # no new attempt starts later than this after the first
    rng: random.Random = field(default_factory=random.Random, repr=False)
    retries: int = 0             # attempts that failed transiently and were tried again

    def delay(self, failures: int) -> float:
        """Equal jitter: half the exponential step, plus up to as much again at random."""
        step = min(self.max_delay, self.base_delay * (2 ** (failures - 1)))
        return step / 2 + self.rng.uniform(0, step / 2)

    def give_up(self, e: TransientStorageError, failures: int, started: float) -> StorageError | None:
        """None to try again, else the final error."""
        elapsed = time.monotonic() - started
        if failures < self.max_attempts and elapsed + self.delay(failures) <= self.max_elapsed:
            return None
        # How many attempts fit in the time budget, and how long they took, would tell a
        # filtered port (connect timeouts) from a closed one: not said of an unreachable store.
        tried = ("retrying" if isinstance(e, Unreachable)
                 else f"{failures} attempts in {elapsed:.1f} s")
        return StorageError(f"{e.message} (gave up after {tried})",
                            hint=e.hint or "the storage service kept failing; try again later",
                            detail=e.detail)

    async def run(self, attempt: Callable[[], Awaitable[Any]], *, store: Any = None,
                  op: str = "", path: str = "") -> Any:
        started = time.monotonic()
        failures = 0
        while True:
            try:
                return await attempt()
            except TransientStorageError as e:
                failures += 1
                final = self.give_up(e, failures, started)
                if final is not None:
                    raise final from None
                wait = self.delay(failures)
                self.retries += 1
                sent = _sent.get()
                if sent is not None:
                    sent.again += 1
                log.debug("retrying %s of %s in %.2fs: %s", op, path, wait, e.message)
                await asyncio.sleep(wait)


def _final(e: TransientStorageError) -> StorageError:
    return StorageError(e.message, hint=e.hint, detail=e.detail)


class _RetryingWriter:
    """Passes writes through; on any failure aborts the inner upload, then raises."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._done = False

    async def _guard(self, coro: Awaitable[None]) -> None:
        try:
            await coro
        except Exception as e:
            await self._abort_quietly()
            if isinstance(e, TransientStorageError):
                raise _final(e) from None
            raise

    async def write(self, data: bytes) -> None:
        if self._done:
            raise StorageError("write after commit or abort")
        await self._guard(self._inner.write(data))

    async def commit(self) -> None:
        if self._done:
            raise StorageError("commit after commit or abort")
        await self._guard(self._inner.commit())
        self._done = True

    async def abort(self) -> None:
        if not self._done:
            self._done = True
            await self._inner.abort()

    async def _abort_quietly(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            await asyncio.shield(self._inner.abort())
        except Exception as e:  # noqa: BLE001 - the original failure is the one to report
            log.debug("abort after a failed upload also failed: %s", e)


class RetryingStore:
    """An ObjectStore that retries transient failures of `inner` (see the module docstring)."""

    def __init__(self, inner: ObjectStore, policy: RetryPolicy | None = None) -> None:
        self.inner = inner
        self.uri = inner.uri
        self._seam = hasattr(inner, "request_policy")
        self.policy = policy or RetryPolicy()

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: RetryPolicy) -> None:
        self._policy = policy
        if self._seam:
            self.inner.request_policy = policy

    async def _whole(self, op: str, path: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        if self._seam:      # the inner store already retried each request
            try:
                return await fn()
            except TransientStorageError as e:
                raise _final(e) from None
        return await self._policy.run(fn, store=self, op=op, path=path)

    async def writer(self, path: str) -> _RetryingWriter:
        return _RetryingWriter(await self._whole("write", path, lambda: self.inner.writer(path)))

    async def get(self, path: str) -> AsyncIterator[bytes]:
        delivered = 0
        failures = 0
        started = time.monotonic()
        resumable = getattr(self.inner, "supports_get_offset", False)
        while True:
            if resumable:
                stream, skip = self.inner.get(path, offset=delivered), 0
            else:
                stream, skip = self.inner.get(path), delivered
            try:
                async for chunk in stream:
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk, skip = chunk[skip:], 0
                    delivered += len(chunk)
                    yield chunk
                return
            except TransientStorageError as e:
                failures += 1
                final = self._policy.give_up(e, failures, started)
                if final is not None:
                    raise final from None
                self._policy.retries += 1
                log.debug("resuming the read of %s at byte %d: %s", path, delivered, e.message)
                await asyncio.sleep(self._policy.delay(failures))
            finally:
                await stream.aclose()

    async def get_range(self, path: str, offset: int, length: int) -> bytes:
        return await self._whole("read", path, lambda: self.inner.get_range(path, offset, length))

    async def list(self, prefix: str = "", delimiter: str | None = None) -> AsyncIterator[Listed]:
        """A listing cut mid-way is listed again and resumes after the last path delivered
        (objects and folders alike: one sequence sorted by path)."""
        last: str | None = None
        failures = 0
        started = time.monotonic()
        while True:
            stream = self.inner.list(prefix, delimiter)
            try:
                async for info in stream:
                    if last is not None and info.path <= last:
                        continue            # already delivered before the listing was cut
                    last = info.path
                    yield info
                return
            except TransientStorageError as e:
                failures += 1
                final = None if not self._seam else _final(e)
                final = final or self._policy.give_up(e, failures, started)
                if final is not None:
                    raise final from None
                self._policy.retries += 1
                await asyncio.sleep(self._policy.delay(failures))
            finally:
                await stream.aclose()

    async def create(self, path: str, data: bytes) -> None:
        sent = _Sent()
        token = _sent.set(sent)     # RetryPolicy.run counts resends of this call's requests
        try:
            await self._whole("create", path, lambda: self.inner.create(path, data))
        except AlreadyExists:
            if not sent.again or not await self._holds(path, data):
                raise
            log.debug("create of %s was sent again and found its own object", path)
        finally:
            _sent.reset(token)

    async def _holds(self, path: str, data: bytes) -> bool:
        """Is `data` what is stored at `path`?"""
        try:
            if (await self.stat(path)).size != len(data):
                return False
            return await read_all(self, path) == data
        except NotFound:
            return False

    async def delete(self, path: str) -> None:
        await self._whole("delete", path, lambda: self.inner.delete(path))

    async def discard_incomplete(self, prefix: str) -> int:
        """Retried whole when the backend has no seam: removing debris twice is harmless."""
        return await self._whole("discard incomplete writes under", prefix,
                                 lambda: self.inner.discard_incomplete(prefix))

    async def stat(self, path: str) -> ObjectInfo:
        return await self._whole("stat", path, lambda: self.inner.stat(path))

    async def close(self) -> None:
        await self.inner.close()

    def __repr__(self) -> str:
        return f"RetryingStore({self.uri})"
