"""Entry points: split a Query string, cheaply pre-filter it, and parse one statement.

`parse_statement` decides "ours or forward" from the leading keywords alone (lexing only as
many tokens as that takes), so ordinary SQL returns None quickly and PostgreSQL's own GRANT,
SHOW, SET, EXECUTE, DROP ... pass through untouched. Once the leading keywords say a statement
is ours, every error in it is raised with CockroachDB's wording.
"""
from __future__ import annotations

from typing import Callable

from .lexer import EOF, IDENT, OP, Lexer, Token, tokenize
from .parse_backup import (parse_alter_backup, parse_alter_backup_schedule, parse_backup, parse_create_schedule,
                           parse_restore, parse_show_backup, parse_show_backups)
from .parse_misc import (parse_alter_external_connection, parse_check_external_connection,
                         parse_alter_job_owner, parse_control_jobs, parse_control_schedules,
                         parse_show_changefeed_jobs,
                         parse_create_external_connection, parse_drop_external_connection,
                         parse_execute_schedule, parse_grant, parse_reset_cluster_setting,
                         parse_set_cluster_setting, parse_show_cluster_setting,
                         parse_show_create, parse_show_external_connections, parse_show_grants,
                         parse_show_jobs, parse_show_schedules)
from .parser_base import Parser
from ..errors import FeatureNotSupported, PgError
from .show_sources import find_show_sources, has_show_source
from .statements import SelectFromShow, Statement
from .wrappers import find_wrapped

__all__ = ["parse_statement", "split_statements", "may_intercept", "INTERCEPT_WORDS"]

# Every statement parse_statement claims contains one of these (lowercased); see may_intercept.
INTERCEPT_WORDS = ("backup", "restore", "schedule", "job", "cluster", "external", "system",
                   "grants", "[")

Handler = Callable[[Parser], Statement]


_INTERCEPT_BYTES = tuple(w.encode() for w in INTERCEPT_WORDS)


def may_intercept(sql: str) -> bool:
    """A cheap necessary condition for parse_statement to claim any statement in `sql`:
    False means every statement in it is forwarded. O(len(sql)), no lexing."""
    s = sql.lower()
    for word in INTERCEPT_WORDS:
        if word in s:
            return True
    return False


def may_intercept_bytes(data: bytes) -> bool:
    """may_intercept on raw protocol bytes (UTF-8): the intercept words are ASCII, so bytes
    lowercasing finds exactly what str lowercasing would. Saves decoding on the hot path."""
    s = data.lower()
    for word in _INTERCEPT_BYTES:
        if word in s:
            return True
    return False


def _words(lexer: Lexer, n: int) -> list[str | None]:
    """The next `n` tokens as lowercase keywords (None for anything that is not a word)."""
    out: list[str | None] = []
    for _ in range(n):
        tok = lexer.next()
        out.append(tok.value if tok.kind == IDENT else None)
        if tok.kind == EOF:
            out.extend([None] * (n - len(out)))
            break
    return out


def _show_handler(w: list[str | None]) -> Handler | None:
    w1, w2, w3 = w[1], w[2], w[3]
    if w1 == "backups":
        return parse_show_backups
    if w1 == "backup":
        return parse_show_backup
    if w1 == "cluster" or (w1 in ("all", "public") and w2 == "cluster"):
        return parse_show_cluster_setting
    if w1 in ("schedules", "schedule") or (w1 in ("running", "paused") and w2 == "schedules"):
        return parse_show_schedules
    if w1 == "create" and (w2 in ("schedule", "external")
                           or (w2 == "all" and w3 in ("schedules", "external"))):
        return parse_show_create
    if w1 in ("jobs", "job") or (w1 == "automatic" and w2 == "jobs"):
        return parse_show_jobs
    if w1 == "changefeed" and w2 in ("jobs", "job"):
        return parse_show_changefeed_jobs
    if w1 == "grants" or (w1 == "system" and w2 == "grants"):
        return parse_show_grants
    if w1 == "external":
        return parse_show_external_connections
    return None


def _grant_is_ours(sql: str) -> bool:
    """GRANT/REVOKE is ours for SYSTEM privileges, for CockroachDB's BACKUP and RESTORE
    privileges, and for external connections; PostgreSQL keeps every other form."""
    lexer = Lexer(sql)
    lexer.next()
    tok = lexer.next()
    if tok.is_kw("grant"):  # REVOKE GRANT OPTION FOR ...
        lexer.next()
        lexer.next()
        tok = lexer.next()
    if tok.is_kw("system"):
        return True
    ours = False
    while tok.kind != EOF:
        if tok.kind == IDENT:
            if tok.value == "on":
                return ours or (lexer.next().is_kw("external") and lexer.next().is_kw("connection"))
            if tok.value in ("to", "from"):
                return False
            if tok.value in ("backup", "restore"):
                ours = True
        tok = lexer.next()
    return False


def _handler(sql: str) -> Handler | None:
    lexer = Lexer(sql)
    w = _words(lexer, 4)
    w0, w1, w2 = w[0], w[1], w[2]
    if w0 == "backup":
        return parse_backup
    if w0 == "restore":
        return parse_restore
    if w0 == "show":
        return _show_handler(w)
    if w0 == "create":
        if w1 == "schedule":
            return parse_create_schedule
        if w1 == "external" and w2 == "connection":
            return parse_create_external_connection
        return None
    if w0 == "alter":
        if w1 == "backup" and w2 == "schedule":
            return parse_alter_backup_schedule
        if w1 == "backup":
            return parse_alter_backup
        if w1 == "external" and w2 == "connection":
            return parse_alter_external_connection
        if w1 == "job":
            return parse_alter_job_owner
        return None
    if w0 == "drop":
        if w1 in ("schedule", "schedules"):
            return parse_control_schedules
        if w1 == "external" and w2 == "connection":
            return parse_drop_external_connection
        return None
    if w0 in ("pause", "resume", "cancel"):
        if w1 in ("job", "jobs") or (w1 == "all" and w[3] == "jobs"):
            return parse_control_jobs
        if w0 != "cancel" and w1 in ("schedule", "schedules"):
            return parse_control_schedules
        return None
    if w0 in ("grant", "revoke"):
        return parse_grant if _grant_is_ours(sql) else None
    if w0 == "set" and w1 == "cluster" and w2 == "setting":
        return parse_set_cluster_setting
    if w0 == "reset" and w1 == "cluster" and w2 == "setting":
        return parse_reset_cluster_setting
    if w0 == "check" and w1 == "external" and w2 == "connection":
        return parse_check_external_connection
    if w0 == "execute" and w1 == "schedule":
        third = Lexer(sql)
        for _ in range(2):
            third.next()
        tok = third.next()
        if tok.kind != EOF and not (tok.kind == OP and tok.value == "("):
            return parse_execute_schedule
    return None


def _query_with_sources(sql: str) -> SelectFromShow | None:
    if "[" not in sql or "show" not in sql.lower():
        return None
    tokens = tokenize(sql)
    if not has_show_source(tokens):
        return None
    if any(t.error for t in tokens):
        Parser(sql, tokens)  # raises the lexical error
    real = [t for t in tokens if t.kind != EOF]
    if real[-1].kind == OP and real[-1].value == ";":
        real.pop()
    start, end = real[0].start, real[-1].end
    text = sql[start:end]
    shifted = [Token(t.kind, t.value, t.start - start, t.end - start, t.error)
               for t in real] + [Token(EOF, "", len(text), len(text))]
    return SelectFromShow(text, find_show_sources(text, shifted, sql, start))


def _parse_own(handler: Handler, sql: str) -> Statement:
    tokens = tokenize(sql)
    if len(tokens) >= 2 and tokens[-2].kind == OP and tokens[-2].value == ";":
        del tokens[-2]
    return handler(Parser(sql, tokens))


def _family(sql: str, malformed: bool) -> str | None:
    """The family of the pgkeep statement `sql` starts with (by its leading keywords); None when
    it is not one of pgkeep's. A malformed one gives its first keyword when `malformed`, else
    None."""
    handler = _handler(sql)
    if handler is None:
        return None
    try:
        return _parse_own(handler, sql).family
    except PgError:
        return Lexer(sql).next().value.upper() if malformed else None


def _claims(sql: str) -> str | None:
    """Any statement that starts as one of pgkeep's, even malformed."""
    return _family(sql, malformed=True)


def _parses(sql: str) -> str | None:
    """Only when all of `sql` is one valid pgkeep statement."""
    return _family(sql, malformed=False)


def _refuse_wrapped(sql: str) -> None:
    """0A000 for a statement that wraps one of pgkeep's (wrappers.py): forwarding it would
    put pgkeep's statement, secrets included, in the upstream's log. The message names the
    wrapper and the family only, never the statement's text."""
    found = find_wrapped(sql, _claims, _parses)
    if found is None:
        return
    wrapper, family, offset = found
    raise FeatureNotSupported(
        f"{family} inside {wrapper} is not supported by pgkeep", position=offset + 1,
        hint=f"pgkeep runs {family} itself and never sends it to PostgreSQL: run it as a "
             "statement of its own (a driver's prepared statement works)")


def parse_statement(sql: str) -> Statement | None:
    """Parses one statement. None: not one of pgkeep's statements (forward it unchanged).
    Raises PgError (42601, 22023, 0A000, ...) for an invalid statement that is ours, and 0A000
    for a PostgreSQL statement that wraps one of pgkeep's (EXPLAIN BACKUP ..., wrappers.py)."""
    handler = _handler(sql)
    if handler is None:
        _refuse_wrapped(sql)
        return _query_with_sources(sql)
    return _parse_own(handler, sql)


_BODY_OPENERS = frozenset({"function", "procedure"})


def split_statements(sql: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of each non-empty statement in a simple-protocol Query
    string; end is exclusive and excludes the ';'. Like psql, a ';' inside parentheses or
    inside a CREATE FUNCTION/PROCEDURE ... BEGIN ATOMIC ... END body does not split."""
    lexer = Lexer(sql)
    out: list[tuple[int, int]] = []
    start = end = -1
    parens = begin_depth = 0
    leading: list[str] = []   # the first few words, to spot CREATE [OR REPLACE] FUNCTION
    body = False
    while True:
        tok = lexer.next()
        if tok.kind == EOF:
            break
        if tok.kind == OP and tok.value == ";" and parens == 0 and begin_depth == 0:
            if start >= 0:
                out.append((start, end))
            start = end = -1
            leading, body = [], False
            continue
        if start < 0:
            start = tok.start
        end = tok.end
        if tok.kind == OP:
            if tok.value == "(":
                parens += 1
            elif tok.value == ")" and parens > 0:
                parens -= 1
        elif tok.kind == IDENT:
            if len(leading) < 4:
                leading.append(tok.value)
                if leading[0] == "create" and tok.value in _BODY_OPENERS:
                    body = True
            if body:
                if tok.value == "begin":
                    begin_depth += 1
                elif tok.value == "case" and begin_depth > 0:
                    begin_depth += 1
                elif tok.value == "end" and begin_depth > 0:
                    begin_depth -= 1
    if start >= 0:
        out.append((start, end))
    return out
