"""The engine's entry points, wired once by the composition root: where the upstream is, where
nodelocal lands, and how to read the settings. Commands call these with plain specs."""
from __future__ import annotations

from pathlib import Path
from typing import Awaitable, Callable

import asyncpg

from . import collection
from .backup import run_backup
from .restore import run_restore
from .spec import BackupResult, BackupSpec, EngineSettings, Progress, RestoreResult, RestoreSpec
from .storage import StoreContext, open_store

__all__ = ["Engine", "UpstreamConnector"]


class UpstreamConnector:
    """asyncpg connections to any database of the upstream, as pgkeep's own user."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def connect(self, database: str):
        return await asyncpg.connect(self.dsn, database=database,
                                     server_settings={"application_name": "pgkeep"})


class Engine:
    def __init__(self, connector: UpstreamConnector, nodelocal_root: Path,
                 settings: Callable[[], Awaitable[EngineSettings]]) -> None:
        self.connector = connector
        self.store_context = StoreContext(nodelocal_root)
        self._settings = settings

    def store(self, uri: str):
        return open_store(uri, self.store_context)

    async def backup(self, spec: BackupSpec, progress: Progress | None = None) -> BackupResult:
        store = self.store(spec.collection)
        try:
            return await run_backup(spec, self.connector, store, await self._settings(), progress)
        finally:
            await store.close()

    async def restore(self, spec: RestoreSpec, progress: Progress | None = None) -> RestoreResult:
        store = self.store(spec.collection)
        try:
            return await run_restore(spec, self.connector, store, await self._settings(), progress)
        finally:
            await store.close()

    async def list_backups(self, uri: str) -> list[str]:
        store = self.store(uri)
        try:
            return await collection.list_backups(store)
        finally:
            await store.close()

    async def open_backup(self, uri: str, subdir: str | None, latest: bool):
        """(handle, {ordinal: schema}) of one backup; the caller closes handle.store."""
        store = self.store(uri)
        handle = await collection.open_backup(store, subdir, latest)
        schemas = {d.ordinal: await collection.read_schema(store, d.schema_file)
                   for d in handle.manifest.databases}
        return handle, schemas
