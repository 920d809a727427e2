"""`[SHOW ...]` table sources: finding them in a query, and rewriting them into relations.

CockroachDB lets a query read a SHOW statement's rows as a table: `SELECT * FROM [SHOW JOBS]
WHERE job_type = 'BACKUP'`. pgkeep keeps the query's text and records where each bracketed
SHOW sits; `rewrite_show_sources` later swaps each for a parenthesised relation over pgkeep's
catalog (supplied by the caller) so PostgreSQL runs the WHERE / ORDER BY / joins itself.

A `[` opens a source only where a table reference can start (after FROM, JOIN, LATERAL, a
comma or an opening parenthesis) and only when SHOW follows, so array subscripts and ARRAY[...]
are never mistaken for one.
"""
from __future__ import annotations

from typing import Callable

from proxy.errors import PgError, SyntaxError_

from .errors import relocate, source_detail, unsupported
from .lexer import EOF, IDENT, OP, Token, tokenize
from .nodes import ShowSource
from .parser_base import RESERVED
from .statements import SelectFromShow, Statement

__all__ = ["find_show_sources", "query_node", "build_query", "rewrite_show_sources",
           "has_show_source"]

_SOURCE_AFTER_WORDS = frozenset({"from", "join", "lateral"})
_NOT_AN_ALIAS = frozenset({"join", "inner", "left", "right", "full", "cross", "natural",
                           "tablesample", "returning"})


def _opens_source(tokens: list[Token], i: int) -> bool:
    tok = tokens[i]
    if tok.kind != OP or tok.value != "[":
        return False
    nxt = tokens[i + 1] if i + 1 < len(tokens) else None
    if nxt is None or nxt.kind != IDENT or nxt.value != "show":
        return False
    if i == 0:
        return False
    prev = tokens[i - 1]
    if prev.kind == IDENT:
        return prev.value in _SOURCE_AFTER_WORDS
    return prev.kind == OP and prev.value in (",", "(")


def has_show_source(tokens: list[Token]) -> bool:
    return any(_opens_source(tokens, i) for i in range(len(tokens) - 1))


def _closing_bracket(tokens: list[Token], i: int) -> int:
    depth = 0
    for j in range(i, len(tokens)):
        tok = tokens[j]
        if tok.kind == OP and tok.value == "[":
            depth += 1
        elif tok.kind == OP and tok.value == "]":
            depth -= 1
            if depth == 0:
                return j
    return -1


def find_show_sources(text: str, tokens: list[Token], outer_sql: str,
                      offset: int) -> tuple[ShowSource, ...]:
    """The sources in `text` (whose tokens are `tokens`). Errors point into `outer_sql`,
    where `text` starts at character `offset`."""
    from .parser import parse_statement  # the inner SHOW is parsed by the full dispatcher

    sources = []
    i = 0
    while i < len(tokens) - 1:
        if not _opens_source(tokens, i):
            i += 1
            continue
        j = _closing_bracket(tokens, i)
        if j < 0:
            eof = tokens[-1]
            raise SyntaxError_("at or near EOF: syntax error", position=offset + eof.start + 1,
                               detail=source_detail(outer_sql, offset + eof.start))
        inner_start, inner_end = tokens[i].end, tokens[j].start
        try:
            stmt = parse_statement(text[inner_start:inner_end])
        except PgError as exc:
            raise relocate(exc, outer_sql, offset + inner_start) from None
        if stmt is None:
            show = tokens[i + 1]
            at = Token(show.kind, show.value, offset + show.start, offset + show.end)
            raise unsupported(outer_sql, at, "this SHOW statement cannot be used as a table "
                                             "source in pgkeep",
                              hint="[SHOW ...] works for SHOW JOBS, SCHEDULES, BACKUPS, "
                                   "BACKUP, GRANTS, EXTERNAL CONNECTIONS and CLUSTER SETTINGS")
        sources.append(ShowSource(tokens[i].start, tokens[j].end, stmt))
        i = j + 1
    return tuple(sources)


def build_query(outer_sql: str, start: int, end: int) -> SelectFromShow:
    """A SelectFromShow for `outer_sql[start:end]`."""
    text = outer_sql[start:end]
    tokens = tokenize(text)
    return SelectFromShow(text, find_show_sources(text, tokens, outer_sql, start))


def query_node(p, start: int, end: int) -> SelectFromShow:
    """The <select> a statement embeds (SHOW JOBS <select>, PAUSE JOBS <select>, ...)."""
    return build_query(p.sql, start, end)


def _has_alias(sql: str, pos: int) -> bool:
    tokens = tokenize(sql[pos:])
    tok = tokens[0]
    if tok.kind == EOF:
        return False
    if tok.kind == IDENT:
        return tok.value == "as" or (tok.value not in RESERVED and tok.value not in _NOT_AN_ALIAS)
    return tok.kind == "qident"


def rewrite_show_sources(node: SelectFromShow,
                         relation_for: Callable[[Statement], str]) -> str:
    """`node.sql` with each `[SHOW ...]` replaced by `(<relation_for(show)>) AS _showN` (or
    just the parenthesised relation when the query already aliases it). The result is checked
    with sqlglot's PostgreSQL dialect; if it cannot be parsed, 42601."""
    import sqlglot  # imported on first use: it is large, and most sessions never need it
    from sqlglot.errors import SqlglotError

    sql = node.sql
    out: list[str] = []
    last = 0
    for n, src in enumerate(node.sources, 1):
        out.append(sql[last:src.start])
        relation = relation_for(src.statement)
        out.append(f"({relation})" if _has_alias(sql, src.end) else f"({relation}) AS _show{n}")
        last = src.end
    out.append(sql[last:])
    text = "".join(out)
    try:
        parsed = [e for e in sqlglot.parse(text, read="postgres") if e is not None]
    except SqlglotError as exc:
        raise SyntaxError_(f"could not parse the query over [SHOW ...]: {_first_line(exc)}",
                           detail="rewritten SQL:\n" + text) from None
    if len(parsed) != 1:
        raise SyntaxError_("the query over [SHOW ...] must be a single statement",
                           detail="rewritten SQL:\n" + text)
    return text


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
