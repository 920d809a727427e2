"""CREATE / ALTER / DROP / SHOW [CREATE] EXTERNAL CONNECTION(S) and CHECK EXTERNAL CONNECTION.

CREATE and ALTER validate the URI by writing, reading, listing and deleting a probe object, as
CockroachDB does. SHOW shows URIs redacted; SHOW CREATE shows them whole. Both list only the
connections the user may use (authz.may_use_connection: owner, admin or USAGE) and answer a
connection the user may not use exactly as an unknown one (42704). CREATE needs SYSTEM
EXTERNALCONNECTION, ALTER UPDATE, DROP DROP on the connection (its owner holds all three). Only storage connections exist in pgkeep (no KMS,
no foreign data): others are 0A000.
"""
from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

import catalog
from catalog import Privilege
from catalog.settings import SETTINGS
from engine.asof import parse_duration
from engine.redact import redact_uri

from .. import errors, sql
from ..wire.messages import Column
from ..wire.values import OID
from . import authz
from .base import CommandContext, Result, literal_text

__all__ = ["COMMANDS"]

_STORAGE = {"nodelocal", "s3", "gs", "azure", "azure-blob", "azure-storage", "userfile"}
_LIST_COLUMNS = [Column("connection_name"), Column("connection_uri"), Column("connection_type")]
_CREATE_COLUMNS = [Column("connection_name"), Column("create_statement")]
_CHECK_COLUMNS = [Column("node", OID.INT8, 8), Column("locality"), Column("ok", OID.BOOL, 1),
                  Column("error"), Column("transferred"), Column("read_speed"),
                  Column("write_speed"), Column("can_delete", OID.BOOL, 1)]
_parse_bytes = SETTINGS["bulkio.backup.file_size"].parse


def _human(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return f"{int(n)} B"


def _kind(uri: str) -> str:
    u = urlsplit(uri)
    scheme = u.scheme.lower()
    if scheme in ("postgres", "postgresql"):
        return "FOREIGNDATA"
    if scheme in ("aws", "azure-kms", "aws-kms") or (scheme == "gs" and not u.netloc):
        return "KMS"
    if scheme in _STORAGE:
        return "STORAGE"
    raise errors.InvalidParameterValue(f"unsupported external connection URI scheme {scheme!r}")


def _storage_uri(uri: str) -> str:
    kind = _kind(uri)
    if kind != "STORAGE":
        raise errors.FeatureNotSupported(f"{kind} external connections are not supported by pgkeep",
                                         hint="pgkeep has storage connections only")
    return uri


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def _usable_list(ctx: CommandContext) -> list[catalog.ExternalConnection]:
    return [c for c in await ctx.app.catalog.connections.list()
            if await authz.may_use_connection(ctx, c)]


class _Create:
    statement_types: ClassVar = (sql.CreateExternalConnection, sql.AlterExternalConnection)

    def describe(self, stmt):
        return None

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        altering = isinstance(stmt, sql.AlterExternalConnection)
        verb = "ALTER" if altering else "CREATE"
        name = literal_text(stmt.name, "the connection name")
        if altering:
            await authz.require_connection(ctx, name, Privilege.UPDATE)
        else:
            await authz.require(ctx, Privilege.EXTERNALCONNECTION, catalog.Target.system(),
                                f"user {ctx.user} does not have EXTERNALCONNECTION system privilege",
                                hint="an admin may GRANT SYSTEM EXTERNALCONNECTION")
        uri = _storage_uri(literal_text(stmt.uri, "the connection URI"))
        # A connection lends its URI to whoever holds USAGE: wrapping pgkeep's disk or cloud
        # identity in one needs the right to use them directly.
        await authz.authorize_storage(ctx, uri, f"{verb} EXTERNAL CONNECTION on")
        if not altering and stmt.if_not_exists and name in {c.name for c in await ctx.app.catalog.connections.list()}:
            return Result(tag="CREATE EXTERNAL CONNECTION")
        try:
            await ctx.app.engine.probe(uri)
        except Exception as e:
            e = e if isinstance(e, errors.PgkeepError) else errors.foreign_error(e)
            if e.sqlstate in ("0A000", "22023"):
                raise e from None
            raise errors.PgError(f"failed to validate external connection {name} "
                                 f"({redact_uri(uri)}): {e.message}", sqlstate=e.sqlstate) from None
        if altering:
            await ctx.app.catalog.connections.alter(name, uri, "STORAGE")
            return Result(tag="ALTER EXTERNAL CONNECTION")
        await ctx.app.catalog.connections.create(
            catalog.ExternalConnection(name, uri, "STORAGE", ctx.user), if_not_exists=stmt.if_not_exists)
        return Result(tag="CREATE EXTERNAL CONNECTION")


class _Drop:
    statement_types: ClassVar = (sql.DropExternalConnection,)

    def describe(self, stmt):
        return None

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        name = literal_text(stmt.name, "the connection name")
        await authz.require_connection(ctx, name, Privilege.DROP)
        await ctx.app.catalog.connections.drop(name)
        return Result(tag="DROP EXTERNAL CONNECTION")


class _Show:
    statement_types: ClassVar = (sql.ShowExternalConnections,)

    def describe(self, stmt):
        return _LIST_COLUMNS

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        if stmt.name:
            conns = [await authz.require_connection(ctx, literal_text(stmt.name, "the connection name"),
                                                    Privilege.USAGE)]
        else:
            conns = await _usable_list(ctx)
        return Result(_LIST_COLUMNS, [(c.name, redact_uri(c.uri), c.connection_type) for c in conns])


class _ShowCreate:
    statement_types: ClassVar = (sql.ShowCreateExternalConnections,)

    def describe(self, stmt):
        return _CREATE_COLUMNS

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        if stmt.name is not None:
            conns = [await authz.require_connection(ctx, literal_text(stmt.name, "the connection name"),
                                                    Privilege.USAGE)]
        else:
            conns = await _usable_list(ctx)
        return Result(_CREATE_COLUMNS, [
            (c.name, f"CREATE EXTERNAL CONNECTION {_quote(c.name)} AS {_quote(c.uri)}") for c in conns])


class _Check:
    statement_types: ClassVar = (sql.CheckExternalConnection,)

    def describe(self, stmt):
        return _CHECK_COLUMNS

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        await ctx.require_admin("CHECK EXTERNAL CONNECTION")
        o = stmt.options
        uri = literal_text(stmt.uri, "the URI")
        if _kind(await ctx.app.engine.resolve(uri)) != "STORAGE":
            raise errors.FeatureNotSupported("pgkeep checks storage connections only")
        transfer = _parse_bytes(literal_text(o.transfer, "transfer")) if o.transfer else 32 << 20
        concurrently = int(literal_text(o.concurrently, "concurrently")) if o.concurrently else 1
        limit = parse_duration(literal_text(o.time, "time")) if o.time else None
        seconds = limit.total_seconds() if limit is not None else 30.0
        if concurrently < 1 or seconds <= 0 or transfer <= 0:
            raise errors.InvalidParameterValue("concurrently, time and transfer must be positive")
        r = await ctx.app.engine.check(uri, transfer, concurrently, seconds)

        def speed(seconds: float) -> str | None:
            return f"{_human(r.transferred / max(seconds, 1e-6))}/s" if r.ok else None
        return Result(_CHECK_COLUMNS, [(1, "", r.ok, r.error, _human(r.transferred),
                                        speed(r.read_seconds), speed(r.write_seconds), r.can_delete)])


COMMANDS = (_Create(), _Drop(), _Show(), _ShowCreate(), _Check())
