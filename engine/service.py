"""The engine's entry points, wired once by the composition root: where the upstream is, where
nodelocal lands, and how to read the settings. Commands call these with plain specs."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import asyncpg

from . import collection, external
from .backup import run_backup
from .errors import NotFound, StorageError
from .restore import run_restore
from .spec import (BackupResult, BackupSpec, EngineSettings, RestoreResult, RestoreSpec,
                   backup_spec_from_dict, restore_spec_from_dict)
from .storage import StoreContext, open_store

__all__ = ["Engine", "UpstreamConnector", "ADOPTION_WAIT"]

_log = logging.getLogger("pgkeep.jobs")

# Seconds in all an adopted job waits for its store to answer at its first access.
ADOPTION_WAIT = 60.0


class UpstreamConnector:
    """asyncpg connections to any database of the upstream, as pgkeep's own user. `connect`
    replaces asyncpg.connect (the composition root's applies the DSN's TLS settings as libpq)."""

    def __init__(self, dsn: str, connect: Callable[..., Awaitable] | None = None) -> None:
        self.dsn = dsn
        self._connect = connect

    async def connect(self, database: str):
        settings = {"application_name": "pgkeep"}
        if self._connect is not None:
            return await self._connect(database=database, server_settings=settings)
        return await asyncpg.connect(self.dsn, database=database, server_settings=settings)


class Engine:
    def __init__(self, connector: UpstreamConnector, nodelocal_root: Path,
                 settings: Callable[[], Awaitable[EngineSettings]],
                 external_uri: Callable[[str], Awaitable[str]]) -> None:
        self.connector = connector
        self.store_context = StoreContext(nodelocal_root)
        self._settings = settings
        self._external_uri = external_uri  # connection name -> its stored URI

    async def resolve(self, uri: str) -> str:
        """The storage URI behind `uri` (external:// names are looked up in the catalog)."""
        ext = external.parse_external(uri)
        if ext is None:
            return uri
        return external.compose(await self._external_uri(ext[0]), ext[1])

    async def store(self, uri: str):
        return open_store(await self.resolve(uri), self.store_context)

    async def probe(self, uri: str) -> None:
        store = await self.store(uri)
        try:
            await external.probe(store)
        finally:
            await store.close()

    async def check(self, uri: str, transfer: int, concurrently: int, time_limit: float):
        store = await self.store(uri)
        try:
            return await external.check(store, transfer, concurrently, time_limit)
        finally:
            await store.close()

    async def job_store(self, uri: str, job=None):
        """The store of a job's collection: an adopted job's (jobs.JobContext.adopted) waits
        for its store at its first access (see _AdoptedStore)."""
        store = await self.store(uri)
        if job is not None and getattr(job, "adopted", False):
            return _AdoptedStore(store, job.job_id, ADOPTION_WAIT)
        return store

    async def backup(self, spec: BackupSpec, job=None) -> BackupResult:
        store = await self.job_store(spec.collection, job)
        try:
            return await run_backup(spec, self.connector, store, await self._settings(), job)
        finally:
            await store.close()

    async def restore(self, spec: RestoreSpec, job=None) -> RestoreResult:
        store = await self.job_store(spec.collection, job)
        try:
            return await run_restore(spec, self.connector, store, await self._settings(), job)
        finally:
            await store.close()

    def job_runners(self) -> dict:
        """job_type -> runner, for the JobRegistry: each rebuilds its spec from the stored form.
        A runner raises only pgkeep's own errors (and the registry's JobStopped): a foreign
        exception becomes catalog.errors.foreign_error's sanitised error, so the job's stored
        error (SHOW JOBS' `error`, the attached client's ErrorResponse) never carries an
        asyncpg error's text, detail or hint."""
        async def backup(job) -> dict:
            r = await self.backup(backup_spec_from_dict(job.spec), job)
            return {"rows": r.rows, "index_entries": r.index_entries, "bytes": r.bytes,
                    "end_time": r.end_time.isoformat() if r.end_time else None, "subdir": r.subdir,
                    "uncaptured": r.uncaptured}

        async def restore(job) -> dict:
            r = await self.restore(restore_spec_from_dict(job.spec), job)
            return {"rows": r.rows, "index_entries": r.index_entries, "bytes": r.bytes,
                    "uncaptured": r.uncaptured}
        return {"BACKUP": _sanitised(backup), "RESTORE": _sanitised(restore)}

    async def list_backups(self, uri: str) -> list[str]:
        store = await self.store(uri)
        try:
            return await collection.list_backups(store)
        finally:
            await store.close()

    async def open_backup(self, uri: str, subdir: str | None, latest: bool):
        """(handle, {layer dir: {ordinal: schema}}) of one backup chain, every layer's schemas
        (SHOW BACKUP lists each layer's objects); the caller closes handle.store."""
        store = await self.store(uri)
        try:
            handle = await collection.open_backup(store, subdir, latest)
            schemas = {path: {d.ordinal: await collection.read_schema(store, d.schema_file)
                              for d in m.databases} for path, m in handle.layers}
        except BaseException:
            await store.close()
            raise
        return handle, schemas


# ---- adoption: wait for the store ------------------------------------------------------------

def _transient(e: BaseException) -> bool:
    """Did the store fail for a reason a later attempt may cure? The retrying store
    (storage/wrappers.py) raises its final StorageError while handling the backend's
    TransientStorageError (refused, reset, timeout, 5xx, throttling), which stays its context."""
    from .storage.uri import TransientStorageError
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, TransientStorageError):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


_PROBE = "LATEST"    # any name: its metadata, or NotFound, is an answer from the store


async def _reachable(store, job_id: int, wait: float) -> None:
    """Returns once `store` answers (one stat at the collection's root, NotFound included: the
    job's own accesses then meet any missing object or bucket); retries while it fails
    transiently, for `wait` seconds in all; any other failure (access denied, a bad URI)
    raises at once, as does the last transient one."""
    deadline = time.monotonic() + wait
    delay = 0.5
    while True:
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await store.stat(_PROBE)
            return
        except NotFound:
            return
        except TimeoutError:
            # the words of an unreachable store's error (storage/uri.py): no time, no cause
            raise StorageError(f"could not reach {store.uri} to stat {_PROBE} (gave up after "
                               "retrying)", hint="check the storage URI and that the storage "
                               "service is up") from None
        except StorageError as e:
            if not _transient(e) or time.monotonic() + delay >= deadline:
                raise
            _log.warning("job %d: its store is unreachable, waiting for it (%s)", job_id, e.message)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 4.0)


class _AdoptedStore:
    """An adopted job's store. The job moved because its process died, often with the network
    or the storage service in trouble: before the job's first access, it waits (_reachable) for
    the store to answer, so a store down for less than `wait` seconds does not fail the job,
    while a permanent failure (no such bucket, denied, not found) still fails it at once. The
    first access happens inside the job's own code, so a failure takes the job's own cleanup
    path (a restore drops its temporary databases). Later accesses go straight through."""

    def __init__(self, store, job_id: int, wait: float) -> None:
        self._store = store
        self._job_id = job_id
        self._wait = wait
        self._gate: asyncio.Future | None = None
        self.uri = store.uri

    async def _ready(self) -> None:
        if self._gate is None:
            self._gate = asyncio.ensure_future(_reachable(self._store, self._job_id, self._wait))
            try:
                await asyncio.shield(self._gate)
            finally:
                self._gate.cancel()     # a cancelled first caller does not leave it running
        elif not self._gate.done():
            await asyncio.shield(self._gate)

    async def writer(self, path: str):
        await self._ready()
        return await self._store.writer(path)

    async def get(self, path: str) -> AsyncIterator[bytes]:
        await self._ready()
        async with contextlib.aclosing(self._store.get(path)) as stream:
            async for chunk in stream:
                yield chunk

    async def get_range(self, path: str, offset: int, length: int) -> bytes:
        await self._ready()
        return await self._store.get_range(path, offset, length)

    async def list(self, prefix: str = "", delimiter: str | None = None) -> AsyncIterator[Any]:
        await self._ready()
        async with contextlib.aclosing(self._store.list(prefix, delimiter)) as listing:
            async for info in listing:
                yield info

    async def create(self, path: str, data: bytes) -> None:
        await self._ready()
        await self._store.create(path, data)

    async def delete(self, path: str) -> None:
        await self._ready()
        await self._store.delete(path)

    async def stat(self, path: str):
        await self._ready()
        return await self._store.stat(path)

    async def close(self) -> None:
        await self._store.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def __repr__(self) -> str:
        return f"_AdoptedStore({self.uri})"


# ---- job_runners' boundary: what a job may record as its error ----------------------------

def _own_error(exc: Exception) -> Exception:
    """`exc` if it is pgkeep's own (a PgkeepError, the registry's JobStopped, or an exception
    RAISEd directly in one of the engine's own DO blocks, engine/schema/plan.py: 3F000 missing
    schema, 42710 incompatible type, in pgkeep's words); otherwise the sanitised foreign error.
    The engine runs no other anonymous DO block that RAISEs."""
    import re

    from catalog.errors import PgkeepError, foreign_error

    from .errors import EngineError
    from .jobs import JobStopped
    if isinstance(exc, (PgkeepError, JobStopped)):
        return exc
    context = getattr(exc, "context", None)
    if (isinstance(exc, asyncpg.PostgresError) and isinstance(context, str)
            and re.fullmatch(r"PL/pgSQL function inline_code_block line \d+ at RAISE", context)):
        own = EngineError(exc.message, hint=exc.hint, detail=exc.detail)
        own.sqlstate = exc.sqlstate
        return own
    return foreign_error(exc, "engine")


def _sanitised(runner: Callable[..., Awaitable[dict]]) -> Callable[..., Awaitable[dict]]:
    async def run(job) -> dict:
        try:
            return await runner(job)
        except Exception as e:  # noqa: BLE001 - every failure leaves as pgkeep's own error
            own = _own_error(e)
            if own is e:
                raise
            raise own from None
    return run
