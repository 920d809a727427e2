"""Placeholders: counting the $n a statement uses, and binding values from a Bind message.

Binding substitutes each Placeholder with a string literal holding the parameter's text-format
value and then re-parses the canonical text, so a bound statement is validated exactly like a
literal one (a bound 'true' becomes a boolean option, a bound '123' a job id, a bound 'pause'
an on_execution_failure value, and a bad value fails with the same SQLSTATE).
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from typing import Sequence

from proxy.errors import PgError

from .errors import quote_string
from .lexer import PARAM, tokenize
from .nodes import Placeholder, ScalarExpr, StrLit
from .statements import SelectFromShow, Statement

__all__ = ["count_placeholders", "bind_placeholders"]


def _query_params(sql: str) -> int:
    return max((int(t.value) for t in tokenize(sql) if t.kind == PARAM), default=0)


def count_placeholders(node) -> int:
    """The highest $n used anywhere in `node` (0 when it has none)."""
    if isinstance(node, Placeholder):
        return node.index
    if isinstance(node, (SelectFromShow, ScalarExpr)):
        return _query_params(node.sql)
    if isinstance(node, tuple):
        return max((count_placeholders(x) for x in node), default=0)
    if is_dataclass(node) and not isinstance(node, type):
        return max((count_placeholders(getattr(node, f.name)) for f in fields(node)), default=0)
    return 0


def _value(index: int, values: Sequence[str | None]) -> str:
    value = values[index - 1]
    if value is None:
        raise PgError(f"placeholder ${index}: NULL is not allowed here", sqlstate="22004")
    return value


def _substitute_query(sql: str, values: Sequence[str | None]) -> str:
    out, last = [], 0
    for tok in tokenize(sql):
        if tok.kind == PARAM:
            out.append(sql[last:tok.start])
            out.append(quote_string(_value(int(tok.value), values)))
            last = tok.end
    out.append(sql[last:])
    return "".join(out)


def _substitute(node, values: Sequence[str | None]):
    if isinstance(node, Placeholder):
        return StrLit(_value(node.index, values))
    if isinstance(node, SelectFromShow):
        # Offsets move with the new text; the re-parse in bind_placeholders finds them again.
        return SelectFromShow(_substitute_query(node.sql, values), ())
    if isinstance(node, ScalarExpr):
        return ScalarExpr(_substitute_query(node.sql, values))
    if isinstance(node, tuple):
        return tuple(_substitute(x, values) for x in node)
    if is_dataclass(node) and not isinstance(node, type):
        changes = {}
        for f in fields(node):
            old = getattr(node, f.name)
            new = _substitute(old, values)
            if new is not old:
                changes[f.name] = new
        return replace(node, **changes) if changes else node
    return node


def bind_placeholders(stmt: Statement, values: Sequence[str | None]) -> Statement:
    """`stmt` with $n replaced by values[n-1] (text format) and validated. A NULL value is
    22004; too few values 08P01; an invalid value the same error as the literal would give
    (without a position, since the client's text had only a placeholder there)."""
    from .format import format_statement
    from .parser import parse_statement

    needed = count_placeholders(stmt)
    if len(values) < needed:
        raise PgError(f"bind message supplies {len(values)} parameters, but prepared statement "
                      f"requires {needed}", sqlstate="08P01")
    if needed == 0:
        return stmt
    bound = _substitute(stmt, values)
    try:
        result = parse_statement(format_statement(bound))
    except PgError as exc:
        exc.position = None
        exc.detail = None
        raise
    assert result is not None
    return result
