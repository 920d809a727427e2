"""The catalog's connection to the upstream PostgreSQL: one asyncpg pool, migrated on open."""
from __future__ import annotations

from typing import Awaitable, Callable

import asyncpg

from .connections import ConnectionStore
from .jobs import JobStore
from .migrate import migrate
from .settings import SettingsStore

__all__ = ["Catalog"]


class Catalog:
    """pgkeep's durable state, stored in the upstream database named by the upstream DSN."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.settings = SettingsStore(pool)
        self.connections = ConnectionStore(pool)
        self.jobs = JobStore(pool)

    @classmethod
    async def open(cls, dsn: str, *, min_size: int = 1, max_size: int = 4,
                   connect: Callable[..., Awaitable[asyncpg.Connection]] | None = None) -> "Catalog":
        """`connect` replaces asyncpg.connect for the pool (the composition root's, which applies
        the upstream DSN's TLS settings as libpq would)."""
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, connect=connect,
                                         server_settings={"application_name": "pgkeep-catalog"})
        async with pool.acquire() as conn:
            await migrate(conn)
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()
