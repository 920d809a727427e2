"""The command contract shared by every statement family."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar, Protocol, Sequence

from .. import errors, sql
from ..wire.messages import Column

if TYPE_CHECKING:
    from catalog import Catalog
    from engine.jobs import JobRegistry
    from engine.service import Engine

    from ..audit import AuditLog
    from ..config import Config

__all__ = ["Command", "CommandContext", "Result", "Services", "literal_text"]


@dataclass(frozen=True)
class Result:
    columns: list[Column] | None = None     # None: the statement returns no rows
    rows: Sequence[tuple[Any, ...]] = ()
    tag: str = ""                           # CommandComplete tag; default "SELECT n" or "OK"


class Services(Protocol):
    """What commands may reach (the composition root, proxy.app.App, provides it)."""
    config: "Config"
    catalog: "Catalog"
    engine: "Engine"
    jobs: "JobRegistry"
    audit: "AuditLog"


@dataclass
class CommandContext:
    app: Services
    user: str                    # the upstream's current_user for this statement (see execute_statement)
    database: str
    txn_status: bytes
    notify: Callable[..., None] = field(default=lambda message, **kw: None)
    client_query: Callable[[str], Any] | None = None  # rows of SQL run as the client, upstream
    connected: Callable[[], bool] = field(default=lambda: True)  # is the client still there?
    client_addr: str = ""        # for the audit log
    identity: Callable[[], Awaitable[str]] | None = None  # the user every check uses (intercept)

    async def is_admin(self) -> bool:
        """An upstream superuser or a member of --admin-role (catalog.privileges)."""
        return await self.app.catalog.privileges.is_admin(self.user)

    async def require_admin(self, what: str) -> None:
        if not await self.is_admin():
            raise errors.InsufficientPrivilege(
                f"only users with the admin role are allowed to {what}",
                hint=f"admins are upstream superusers and members of the role "
                     f"{self.app.catalog.privileges.admin_role}")


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
