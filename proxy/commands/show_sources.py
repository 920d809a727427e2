"""`SELECT ... FROM [SHOW ...]`: each bracketed SHOW runs as pgkeep's command, its rows become
a typed VALUES relation, and the rewritten query goes to the upstream on the client's own
connection, so WHERE, ORDER BY and joins work and run with the client's privileges only."""
from __future__ import annotations

import json
from typing import Any

from .. import sql
from ..wire.values import OID
from .base import CommandContext

__all__ = ["rewrite_query"]

_TYPE_NAMES = {OID.TEXT: "text", OID.VARCHAR: "text", OID.INT8: "int8", OID.INT4: "int4",
               OID.INT2: "int2", OID.BOOL: "bool", OID.FLOAT8: "float8", OID.NUMERIC: "numeric",
               OID.TIMESTAMPTZ: "timestamptz", OID.TIMESTAMP: "timestamp", OID.INTERVAL: "interval",
               OID.JSONB: "jsonb", OID.BYTEA: "bytea", OID.TEXT_ARRAY: "text[]"}


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: Any, oid: int) -> str:
    from ..wire.values import encode_value
    type_name = _TYPE_NAMES.get(oid, "text")
    if value is None:
        return f"NULL::{type_name}"
    if isinstance(value, (dict, list)) and oid == OID.JSONB:
        text = json.dumps(value)
    else:
        text = encode_value(value, oid, binary=False).decode()
    return "'" + text.replace("'", "''") + f"'::{type_name}"


def relation(columns, rows) -> str:
    names = ", ".join(_quote_ident(c.name) for c in columns)
    if not rows:
        nulls = ", ".join(f"NULL::{_TYPE_NAMES.get(c.type_oid, 'text')} AS {_quote_ident(c.name)}"
                          for c in columns)
        return f"SELECT {nulls} WHERE false"
    values = ", ".join("(" + ", ".join(_literal(v, c.type_oid) for v, c in zip(row, columns)) + ")"
                       for row in rows)
    return f"SELECT * FROM (VALUES {values}) AS _v({names})"


async def rewrite_query(ctx: CommandContext, node: sql.SelectFromShow) -> str:
    """The query text with every [SHOW ...] replaced by the rows it returns now."""
    from . import execute_statement
    relations: dict[int, str] = {}
    for src in node.sources:
        result = await execute_statement(ctx, src.statement)
        if not result.columns:
            from ..errors import SyntaxError_
            raise SyntaxError_(f"{src.statement.family} returns no rows and cannot be a table source")
        relations[id(src.statement)] = relation(result.columns, result.rows)
    return sql.rewrite_show_sources(node, lambda stmt: relations[id(stmt)])
