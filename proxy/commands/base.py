"""The command contract shared by every statement family."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol, Sequence

from .. import errors, sql
from ..wire.messages import Column

__all__ = ["Command", "CommandContext", "Result", "literal_text"]


@dataclass(frozen=True)
class Result:
    columns: list[Column] | None = None     # None: the statement returns no rows
    rows: Sequence[tuple[Any, ...]] = ()
    tag: str = ""                           # CommandComplete tag; default "SELECT n" or "OK"


@dataclass
class CommandContext:
    app: Any                     # the composition root (proxy.app.App): catalog, config, engine
    user: str
    database: str
    txn_status: bytes
    notify: Callable[..., None] = field(default=lambda message, **kw: None)
    client_query: Callable[[str], Any] | None = None  # rows of SQL run as the client, upstream
    connected: Callable[[], bool] = field(default=lambda: True)  # is the client still there?

    async def is_admin(self) -> bool:
        """CockroachDB's `admin` is an upstream superuser here."""
        return bool(await self.app.catalog.pool.fetchval(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1", self.user))

    async def require_storage_access(self, uri: str, what: str) -> None:
        """CockroachDB's rule: pgkeep's own disk (nodelocal://), implicit credentials and custom
        endpoints (engine.storage.registry.ENDPOINT_PARAMS: any parameter that points a store at
        a host of the user's choosing) need admin (EXTERNALIOIMPLICITACCESS); an external
        connection needs its owner or admin (USAGE, until grants exist). Explicit credentials in
        the URI need nothing. Checked on the URI's text, before it is opened: no network access
        happens for a refused user. Parameter names are compared case-insensitively and even
        when empty, so no spelling slips past the check that the store's parser would accept."""
        from urllib.parse import parse_qsl, urlsplit
        from engine.storage.registry import ENDPOINT_PARAMS
        u = urlsplit(uri)
        scheme = u.scheme.lower()
        pairs = parse_qsl(u.query, keep_blank_values=True)
        params = {k.upper(): v for k, v in pairs}
        if scheme == "external":
            from engine.external import parse_external
            name, _ = parse_external(uri)  # a malformed URI is 22023 before any lookup
            conn = await self.app.catalog.connections.get(name)
            if conn.owner != self.user and not await self.is_admin():
                raise errors.InsufficientPrivilege(
                    f"user {self.user} does not have USAGE privilege on external connection {name}")
            return
        endpoints = sorted(ENDPOINT_PARAMS & params.keys())
        if endpoints:
            if not await self.is_admin():
                raise errors.InsufficientPrivilege(
                    f"only users with the admin role are allowed to {what} {scheme}:// storage "
                    f"with a custom endpoint ({', '.join(endpoints)})",
                    hint="EXTERNALIOIMPLICITACCESS is granted to admins only in pgkeep")
        elif (scheme in ("nodelocal", "userfile")
                or any(k.upper() == "AUTH" and v.lower() == "implicit" for k, v in pairs)):
            if not await self.is_admin():
                raise errors.InsufficientPrivilege(
                    f"only users with the admin role are allowed to {what} {scheme}:// storage "
                    "with implicit access", hint="EXTERNALIOIMPLICITACCESS is granted to admins only in pgkeep")

    async def require_admin(self, what: str) -> None:
        if not await self.is_admin():
            raise errors.InsufficientPrivilege(f"only users with the admin role are allowed to {what}",
                                               hint="admin means an upstream superuser")


class Command(Protocol):
    statement_types: ClassVar[tuple[type, ...]]

    def describe(self, stmt: sql.Statement) -> list[Column] | None: ...

    async def execute(self, ctx: CommandContext, stmt: sql.Statement) -> Result: ...


def literal_text(expr: Any, what: str) -> str:
    """The text of a bound literal (placeholders are bound before execution)."""
    if isinstance(expr, sql.StrLit):
        return expr.value
    if isinstance(expr, sql.NumLit):
        return expr.text
    if isinstance(expr, sql.BoolLit):
        return "true" if expr.value else "false"
    raise errors.InvalidParameterValue(f"{what} must be a constant")
