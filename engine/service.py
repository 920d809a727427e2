"""The engine's entry points, wired once by the composition root: where the upstream is, where
nodelocal lands, and how to read the settings. Commands call these with plain specs."""
from __future__ import annotations

from pathlib import Path
from typing import Awaitable, Callable

import asyncpg

from . import collection, external
from .backup import run_backup
from .restore import run_restore
from .spec import (BackupResult, BackupSpec, EngineSettings, RestoreResult, RestoreSpec,
                   backup_spec_from_dict, restore_spec_from_dict)
from .storage import StoreContext, open_store

__all__ = ["Engine", "UpstreamConnector"]


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

    async def backup(self, spec: BackupSpec, job=None) -> BackupResult:
        store = await self.store(spec.collection)
        try:
            return await run_backup(spec, self.connector, store, await self._settings(), job)
        finally:
            await store.close()

    async def restore(self, spec: RestoreSpec, job=None) -> RestoreResult:
        store = await self.store(spec.collection)
        try:
            return await run_restore(spec, self.connector, store, await self._settings(), job)
        finally:
            await store.close()

    def job_runners(self) -> dict:
        """job_type -> runner, for the JobRegistry: each rebuilds its spec from the stored form."""
        async def backup(job) -> dict:
            r = await self.backup(backup_spec_from_dict(job.spec), job)
            return {"rows": r.rows, "index_entries": r.index_entries, "bytes": r.bytes,
                    "end_time": r.end_time.isoformat() if r.end_time else None, "subdir": r.subdir,
                    "uncaptured": r.uncaptured}

        async def restore(job) -> dict:
            r = await self.restore(restore_spec_from_dict(job.spec), job)
            return {"rows": r.rows, "index_entries": r.index_entries, "bytes": r.bytes,
                    "uncaptured": r.uncaptured}
        return {"BACKUP": backup, "RESTORE": restore}

    async def list_backups(self, uri: str) -> list[str]:
        store = await self.store(uri)
        try:
            return await collection.list_backups(store)
        finally:
            await store.close()

    async def open_backup(self, uri: str, subdir: str | None, latest: bool):
        """(handle, {ordinal: schema}) of one backup; the caller closes handle.store."""
        store = await self.store(uri)
        handle = await collection.open_backup(store, subdir, latest)
        schemas = {d.ordinal: await collection.read_schema(store, d.schema_file)
                   for d in handle.manifest.databases}
        return handle, schemas
