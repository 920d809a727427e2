"""PostgreSQL statements that wrap another statement, and pgkeep's statements inside them.

Contract: `find_wrapped(sql, ...)` names the wrapper and the wrapped pgkeep statement when a
statement pgkeep forwards would carry one of pgkeep's own statements (and so its URIs and
secrets) to PostgreSQL, which would reject it and log it (log_statement, and the STATEMENT line
of log_min_error_statement = error, the default). The parser then refuses the whole statement
with 0A000 and forwards nothing.

Statement positions, where PostgreSQL's grammar reads a whole statement, so one of pgkeep's
leading keyword sequences there is never valid PostgreSQL ("strong": the leading keywords
suffice, a malformed inner statement is refused too):
    EXPLAIN [ANALYZE] [VERBOSE] | EXPLAIN (options)   <stmt>
    PREPARE name [(types)] AS <stmt>                  DECLARE name ... CURSOR ... FOR <stmt>
    CREATE [OR REPLACE] RULE ... DO [ALSO|INSTEAD] {<stmt> | (<stmt>; ...)}
    CREATE FUNCTION|PROCEDURE ... BEGIN ATOMIC <stmt>; ... END
    CREATE SCHEMA ... <schema element>                COPY (<stmt>) TO ...
    WITH [RECURSIVE] name AS [[NOT] MATERIALIZED] (<stmt>), ... <stmt>
    (<stmt>)
and one "weak" position, where valid PostgreSQL may hold one of pgkeep's leading words (a type
named `backup`), so only a complete pgkeep statement there counts:
    CREATE TABLE|VIEW|MATERIALIZED VIEW|... AS <stmt>
Wrappers nest (EXPLAIN WITH ... (BACKUP ...)). Text elsewhere (a string literal, a DO body, a
subquery in an arbitrary position) is the client's own SQL for PostgreSQL: pgkeep cannot tell a
secret in it from data, and does not try.
"""
from __future__ import annotations

from typing import Callable

from .lexer import EOF, IDENT, OP, QIDENT, Lexer, Token, tokenize

__all__ = ["WRAPPER_WORDS", "find_wrapped", "starts_wrapper"]

# The first word of every wrapper above ("(" for a parenthesized statement).
WRAPPER_WORDS = frozenset({"explain", "prepare", "declare", "create", "with", "copy", "("})

Claims = Callable[[str], "str | None"]   # text -> family of the pgkeep statement it starts
Parses = Callable[[str], "str | None"]   # text -> family if all of it parses as one


def _op(tok: Token, value: str) -> bool:
    return tok.kind == OP and tok.value == value


def _close(toks: list[Token], i: int) -> int:
    """Index just after the ')' matching the '(' at i (len(toks) if unbalanced)."""
    depth = 0
    for j in range(i, len(toks)):
        if _op(toks[j], "("):
            depth += 1
        elif _op(toks[j], ")"):
            depth -= 1
            if depth == 0:
                return j + 1
    return len(toks)


def _top(toks: list[Token], start: int, word: str) -> int:
    """Index of the first `word` at parenthesis depth 0 from start (-1 if none)."""
    depth = 0
    for j in range(start, len(toks)):
        t = toks[j]
        if _op(t, "("):
            depth += 1
        elif _op(t, ")"):
            depth -= 1
        elif depth == 0 and t.is_kw(word):
            return j
    return -1


def _explain(toks: list[Token]) -> tuple[list[int], list[int]]:
    i = 1
    if i < len(toks) and _op(toks[i], "("):
        i = _close(toks, i)
    else:
        while i < len(toks) and toks[i].kind == IDENT and toks[i].value in ("analyze", "analyse", "verbose"):
            i += 1
    return [i], []


def _after(toks: list[Token], start: int, word: str) -> list[int]:
    j = _top(toks, start, word)
    return [j + 1] if j >= 0 else []


def _declare(toks: list[Token]) -> tuple[list[int], list[int]]:
    cursor = _top(toks, 1, "cursor")
    return (_after(toks, cursor, "for") if cursor >= 0 else []), []


def _rule(toks: list[Token]) -> list[int]:
    do = _top(toks, 1, "do")
    if do < 0:
        return []
    i = do + 1
    if i < len(toks) and toks[i].kind == IDENT and toks[i].value in ("also", "instead"):
        i += 1
    if i < len(toks) and _op(toks[i], "("):
        end = _close(toks, i)
        return [i + 1] + [j + 1 for j in range(i + 1, end) if _op(toks[j], ";")]
    return [i]


def _atomic(toks: list[Token]) -> list[int]:
    for j in range(1, len(toks) - 1):
        if toks[j].is_kw("begin") and toks[j + 1].is_kw("atomic"):
            return [j + 2] + [k + 1 for k in range(j + 2, len(toks)) if _op(toks[k], ";")]
    return []


def _with(toks: list[Token]) -> list[int]:
    """Each CTE body and the main statement of WITH [RECURSIVE] name [(cols)] AS [[NOT]
    MATERIALIZED] (body) [SEARCH ... SET col] [CYCLE ... USING col], ... main."""
    out: list[int] = []
    i = 2 if len(toks) > 1 and toks[1].is_kw("recursive") else 1
    while i < len(toks):
        i += 1  # the CTE's name
        if i < len(toks) and _op(toks[i], "("):
            i = _close(toks, i)
        if i >= len(toks) or not toks[i].is_kw("as"):
            return out
        i += 1
        while i < len(toks) and toks[i].kind == IDENT and toks[i].value in ("not", "materialized"):
            i += 1
        if i >= len(toks) or not _op(toks[i], "("):
            return out
        out.append(i + 1)
        i = _close(toks, i)
        for clause, last in (("search", "set"), ("cycle", "using")):
            if i < len(toks) and toks[i].is_kw(clause):
                j = _top(toks, i, last)
                i = j + 2 if j >= 0 else len(toks)
        if i < len(toks) and _op(toks[i], ","):
            i += 1
            continue
        out.append(i)
        return out
    return out


def _positions(toks: list[Token]) -> tuple[str, list[int], list[int]]:
    """(wrapper name, strong positions, weak positions) of a statement's tokens."""
    first = toks[0]
    word = first.value if first.kind == IDENT else ("(" if _op(first, "(") else "")
    if word == "(":
        return "a parenthesized statement", [1], []
    if word == "explain":
        return ("EXPLAIN", *_explain(toks))
    if word == "prepare":
        return "PREPARE", _after(toks, 1, "as"), []
    if word == "declare":
        return ("DECLARE CURSOR", *_declare(toks))
    if word == "copy":
        return "COPY", ([2] if len(toks) > 1 and _op(toks[1], "(") else []), []
    if word == "with":
        return "WITH", _with(toks), []
    if word != "create":
        return "", [], []
    head = [t.value for t in toks[1:4] if t.kind == IDENT]
    if "rule" in head:
        return "CREATE RULE", _rule(toks), []
    if head[:1] == ["schema"]:
        return "CREATE SCHEMA", [j for j in range(3, len(toks)) if toks[j].kind == IDENT
                                 and toks[j].value in ("create", "grant") and not _op(toks[j - 1], "(")], []
    atomic = _atomic(toks)
    if atomic:
        return "BEGIN ATOMIC", atomic, []
    return "CREATE ... AS", [], _after(toks, 1, "as")


def _extent(toks: list[Token], i: int) -> int:
    """Index of the token ending the statement that starts at i: the ')' closing its group,
    a ';' at its depth, or EOF."""
    depth = 0
    for j in range(i, len(toks)):
        t = toks[j]
        if _op(t, "("):
            depth += 1
        elif _op(t, ")"):
            if depth == 0:
                return j
            depth -= 1
        elif _op(t, ";") and depth == 0:
            return j
    return len(toks)


_MAX_NESTING = 16  # wrappers in wrappers deeper than this are left to PostgreSQL


def starts_wrapper(sql: str) -> bool:
    """Does `sql` start with a wrapper's first word (one token lexed)?"""
    first = Lexer(sql).next()
    return (first.kind == IDENT and first.value in WRAPPER_WORDS) or _op(first, "(")


def find_wrapped(sql: str, claims: Claims, parses: Parses) -> tuple[str, str, int] | None:
    """(wrapper, family, 0-based offset of the wrapped statement) for the first pgkeep
    statement `sql` wraps, or None. `claims(text)` gives the family of the pgkeep statement
    `text` starts with by its leading keywords (or None); `parses(text)` the family if all of
    `text` parses as one (or None). One tokenisation, linear in the statement's length."""
    if not starts_wrapper(sql):
        return None
    return _find(sql, [t for t in tokenize(sql) if t.kind != EOF], claims, parses, 0)


def _find(sql: str, toks: list[Token], claims: Claims, parses: Parses, nesting: int
          ) -> tuple[str, str, int] | None:
    if not toks or nesting > _MAX_NESTING:
        return None
    wrapper, strong, weak = _positions(toks)
    for i, need_parse in [(i, False) for i in strong] + [(i, True) for i in weak]:
        if i >= len(toks) or toks[i].kind not in (IDENT, OP, QIDENT):
            continue
        end = _extent(toks, i)
        inner = sql[toks[i].start:toks[end].start if end < len(toks) else len(sql)]
        family = parses(inner) if need_parse else claims(inner)
        if family is not None:
            return wrapper, family, toks[i].start
        if not need_parse:
            nested = _find(sql, toks[i:end], claims, parses, nesting + 1)
            if nested is not None:
                return nested
    return None
