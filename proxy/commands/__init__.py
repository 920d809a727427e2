"""One command per statement family: `describe(stmt)` gives the result columns (known before
execution, for the extended protocol's Describe), `execute(ctx, stmt)` runs it and returns a
`Result`. The session layer renders results for both protocols.

A family whose command is not built yet answers 0A000 naming the statement in its own words
(PAUSE SCHEDULE, GRANT SYSTEM privileges, ...), so a statement that parses is never mistaken
for a syntax error.
"""
from __future__ import annotations

import asyncio

from .. import errors, sql
from .base import Command, CommandContext, Result
from . import alter_schedule as _alter_schedule
from . import backup as _backup
from . import connections as _connections
from . import grants as _grants
from . import jobs as _jobs
from . import schedules as _schedules
from . import settings as _settings
from . import show_backup as _show_backup

__all__ = ["Command", "CommandContext", "Result", "describe_statement", "execute_statement",
           "command_for"]

_REGISTRY: dict[type, Command] = {}


def _register(*commands: Command) -> None:
    for c in commands:
        for t in c.statement_types:
            _REGISTRY[t] = c


_register(*_settings.COMMANDS, *_backup.COMMANDS, *_show_backup.COMMANDS, *_connections.COMMANDS, *_jobs.COMMANDS,
          *_grants.COMMANDS, *_schedules.COMMANDS,
          *_alter_schedule.COMMANDS)


def command_for(stmt: sql.Statement) -> Command:
    cmd = _REGISTRY.get(type(stmt))
    if cmd is None:
        raise errors.FeatureNotSupported(
            sql.not_supported_message(stmt),
            hint="see the README for the statements pgkeep implements today")
    return cmd


def describe_statement(stmt: sql.Statement):
    """Result columns, or None when the statement returns no rows. Unknown families describe as
    no rows; their Execute then raises 0A000."""
    cmd = _REGISTRY.get(type(stmt))
    return cmd.describe(stmt) if cmd else None


def _sqlstate(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    if isinstance(exc, errors.PgkeepError):
        return exc.sqlstate
    if isinstance(exc, asyncio.CancelledError):
        return "57014"
    return getattr(exc, "sqlstate", None) or "XX000"


async def execute_statement(ctx: CommandContext, stmt: sql.Statement) -> Result:
    """Run `stmt` as the upstream's current user; audited statements (proxy.audit) leave one
    line whatever the outcome."""
    failure: BaseException | None = None
    try:
        command = command_for(stmt)
        if ctx.identity is not None:     # the upstream's current_user (proxy.intercept)
            ctx.user = await ctx.identity()
        return await command.execute(ctx, stmt)
    except BaseException as e:
        failure = e
        raise
    finally:
        audit = getattr(ctx.app, "audit", None)
        if audit is not None and audit.enabled:
            await asyncio.shield(audit.record(stmt, user=ctx.user, client=ctx.client_addr,
                                              error=failure, sqlstate=_sqlstate(failure)))
