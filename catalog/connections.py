"""External connections: names for storage URIs, kept in pgkeep.external_connections."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import CatalogError

__all__ = ["ExternalConnection", "ConnectionStore", "DuplicateConnection", "UndefinedConnection"]


class DuplicateConnection(CatalogError):
    sqlstate = "42710"


class UndefinedConnection(CatalogError):
    sqlstate = "42704"


@dataclass(frozen=True)
class ExternalConnection:
    name: str
    uri: str            # unredacted: never log it
    connection_type: str
    owner: str


class ConnectionStore:
    def __init__(self, pool) -> None:
        self._pool = pool

    async def create(self, conn: ExternalConnection, *, if_not_exists: bool) -> bool:
        """False when it existed and IF NOT EXISTS was given."""
        done = await self._pool.fetchval(
            "INSERT INTO pgkeep.external_connections(name, uri, connection_type, owner) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING RETURNING true",
            conn.name, conn.uri, conn.connection_type, conn.owner)
        if not done and not if_not_exists:
            raise DuplicateConnection(f"external connection with name {conn.name} already exists")
        return bool(done)

    async def alter(self, name: str, uri: str, connection_type: str) -> None:
        done = await self._pool.fetchval(
            "UPDATE pgkeep.external_connections SET uri = $2, connection_type = $3, updated = now() "
            "WHERE name = $1 RETURNING true", name, uri, connection_type)
        if not done:
            raise UndefinedConnection(f"external connection with name {name} does not exist")

    async def drop(self, name: str) -> None:
        """Drop it and every grant on it, at once (a connection created again under the name
        starts with none)."""
        done = await self._pool.fetchval(
            "WITH g AS (DELETE FROM pgkeep.privileges WHERE kind = 'external connection' "
            "AND object = $1) "
            "DELETE FROM pgkeep.external_connections WHERE name = $1 RETURNING true", name)
        if not done:
            raise UndefinedConnection(f"external connection with name {name} does not exist")

    async def get(self, name: str) -> ExternalConnection:
        row = await self._pool.fetchrow(
            "SELECT name, uri, connection_type, owner FROM pgkeep.external_connections WHERE name = $1",
            name)
        if row is None:
            raise UndefinedConnection(f"external connection with name {name} does not exist",
                                      hint="CREATE EXTERNAL CONNECTION name AS 'uri' defines one")
        return ExternalConnection(*row)

    async def list(self) -> list[ExternalConnection]:
        rows = await self._pool.fetch(
            "SELECT name, uri, connection_type, owner FROM pgkeep.external_connections ORDER BY name")
        return [ExternalConnection(*r) for r in rows]
