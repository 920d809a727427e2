"""SHOW CLUSTER SETTING(S), SET CLUSTER SETTING and RESET CLUSTER SETTING for pgkeep's settings."""
from __future__ import annotations

from typing import ClassVar

import catalog
from .. import errors, sql
from ..wire.messages import Column
from .base import CommandContext, Result, literal_text

__all__ = ["COMMANDS"]

_SETTINGS_COLUMNS = [Column("variable"), Column("value"), Column("setting_type"),
                     Column("description"), Column("default_value"), Column("origin")]


class _ShowSetting:
    statement_types: ClassVar = (sql.ShowClusterSetting,)

    def describe(self, stmt):
        return [Column(catalog.lookup(stmt.name).name)]

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        setting = catalog.lookup(stmt.name)
        value = await ctx.app.catalog.settings.get(setting.name)
        return Result([Column(setting.name)], [(catalog.format_value(setting, value),)])


class _ShowSettings:
    statement_types: ClassVar = (sql.ShowClusterSettings,)

    def describe(self, stmt):
        return _SETTINGS_COLUMNS

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        rows = [(s.name, catalog.format_value(s, v), s.type_code, s.description,
                 catalog.format_value(s, s.default), "default" if is_default else "override")
                for s, v, is_default in await ctx.app.catalog.settings.all()]
        return Result(_SETTINGS_COLUMNS, rows)


class _SetSetting:
    statement_types: ClassVar = (sql.SetClusterSetting,)

    def describe(self, stmt):
        return None

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        if ctx.txn_status != b"I":
            raise errors.ActiveSqlTransaction(
                "SET CLUSTER SETTING cannot be used inside a multi-statement transaction",
                hint="pgkeep writes settings outside your transaction, so a ROLLBACK could not undo it")
        await ctx.require_admin("SET CLUSTER SETTING")
        text = None if stmt.value is None else literal_text(stmt.value, "a cluster setting value")
        await ctx.app.catalog.settings.set(stmt.name, text)
        return Result(tag="SET CLUSTER SETTING")


COMMANDS = (_ShowSetting(), _ShowSettings(), _SetSetting())
