"""The catalog's connection to the upstream PostgreSQL: one asyncpg pool, migrated on open.

The catalog's statements carry secrets as bind parameters (a job's spec holds its storage URI,
an external connection its URI). An upstream with log_statement = all would log those parameters
in its DETAIL lines, so pgkeep's own sessions turn parameter logging off (log_parameter_max_length
and its _on_error twin, PostgreSQL 13+). Both are superuser settings: an upstream user without
superuser cannot, and pgkeep says so once at startup.
"""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

import asyncpg

from .connections import ConnectionStore
from .jobs import JobStore
from .migrate import migrate
from .privileges import PrivilegeStore
from .schedules import ScheduleStore
from .settings import SettingsStore

__all__ = ["Catalog", "QUIET_PARAMETERS"]

_log = logging.getLogger("pgkeep.catalog")
QUIET_PARAMETERS = {"log_parameter_max_length": "0", "log_parameter_max_length_on_error": "0"}


class Catalog:
    """pgkeep's durable state, stored in the upstream database named by the upstream DSN."""

    def __init__(self, pool: asyncpg.Pool, admin_role: str = "admin") -> None:
        self.pool = pool
        self.privileges = PrivilegeStore(pool, admin_role)
        self.settings = SettingsStore(pool)
        self.connections = ConnectionStore(pool)
        self.jobs = JobStore(pool)
        self.schedules = ScheduleStore(pool)

    @classmethod
    async def open(cls, dsn: str, *, min_size: int = 1, max_size: int = 4,
                   connect: Callable[..., Awaitable[asyncpg.Connection]] | None = None,
                   admin_role: str = "admin") -> "Catalog":
        """`connect` replaces asyncpg.connect for the pool (the composition root's, which applies
        the upstream DSN's TLS settings as libpq would)."""
        settings = {"application_name": "pgkeep-catalog", **QUIET_PARAMETERS}
        try:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                             connect=connect, server_settings=settings)
        except asyncpg.InsufficientPrivilegeError:
            _log.warning("pgkeep's upstream user is not a superuser, so pgkeep cannot turn off the "
                         "logging of its statements' parameters: with log_statement = all the "
                         "upstream's log will show storage URIs (secrets included) that pgkeep stores")
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, connect=connect,
                                             server_settings={"application_name": "pgkeep-catalog"})
        async with pool.acquire() as conn:
            await migrate(conn)
        return cls(pool, admin_role)

    async def close(self) -> None:
        await self.pool.close()
