"""The recursive-descent parser's core: a token cursor, and the small productions every
statement family shares (names, string-or-placeholder, URI lists, ids, AS OF SYSTEM TIME,
embedded queries).

Conventions: keywords are matched on IDENT tokens only (a "quoted" identifier is never a
keyword); every error goes through `error`/`value_error` so it carries CockroachDB's wording,
the position and the caret detail.
"""
from __future__ import annotations

from proxy.errors import PgError

from .errors import syntax_error, unsupported, value_error
from .lexer import BITSTRING, DECIMAL, EOF, IDENT, INT, OP, PARAM, QIDENT, STRING, Token
from .nodes import (BoolLit, Expr, FuncCall, NumLit, Placeholder, ScalarExpr, StrLit, TablePattern,
                    Targets)

__all__ = ["Parser", "RESERVED", "BOOL_WORDS"]

# PostgreSQL's reserved keywords: never a bare name or bare string (quote them instead).
RESERVED = frozenset("""
all analyse analyze and any array as asc asymmetric both case cast check collate column
constraint create current_catalog current_date current_role current_time current_timestamp
current_user default deferrable desc distinct do else end except false fetch for foreign from
grant group having in initially intersect into lateral leading limit localtime localtimestamp
not null offset on only or order placing primary references returning select session_user
some symmetric system_user table then to trailing true union unique user using variadic when
where window with
""".split())

BOOL_WORDS = {"true": True, "t": True, "on": True, "yes": True, "y": True, "1": True,
              "false": False, "f": False, "off": False, "no": False, "n": False, "0": False}

_AOST_FUNCTIONS = frozenset({"follower_read_timestamp", "experimental_follower_read_timestamp",
                             "with_min_timestamp", "with_max_staleness"})
_ROLE_STOP = frozenset({"to", "from", "with", "for", "on", "as", "in", "granted", "cascade",
                        "restrict"})
_QUERY_STARTS = frozenset({"select", "with", "values", "table"})


def _check_expression(sql: str, start: int, text: str) -> None:
    """A syntax error in an ID expression is the statement's 42601, at the token PostgreSQL
    names, not an error the upstream answers later."""
    import pglast
    prefix = "SELECT ("
    try:
        pglast.parser.parse_sql(f"{prefix}{text})")
    except pglast.parser.ParseError as e:
        message, at = e.args[0], e.args[1] if len(e.args) > 1 else 0
        position = start + max(0, min(len(text), at - len(prefix))) + 1
        near = message.removeprefix("syntax error ")      # pgkeep's wording: at or near "x": syntax error
        raise PgError(f"{near}: syntax error" if near.startswith("at or near") else message,
                      sqlstate="42601", position=position) from None


class Parser:
    """A cursor over the tokens of one statement."""

    def __init__(self, sql: str, tokens: list[Token]) -> None:
        self.sql = sql
        self.tokens = tokens
        self.i = 0
        # The token that named each option, so checks after parsing can point at it.
        self.option_tokens: dict[str, Token] = {}
        for tok in tokens:
            if tok.error is not None:
                raise syntax_error(sql, tok, f"lexical error: {tok.error}")

    # --- cursor ---------------------------------------------------------------------------

    def peek(self, k: int = 0) -> Token:
        j = self.i + k
        return self.tokens[j] if j < len(self.tokens) else self.tokens[-1]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != EOF:
            self.i += 1
        return tok

    def at_kw(self, *words: str, k: int = 0) -> bool:
        tok = self.peek(k)
        return tok.kind == IDENT and tok.value in words

    def at_seq(self, *words: str) -> bool:
        return all(self.at_kw(w, k=n) for n, w in enumerate(words))

    def accept_kw(self, word: str) -> bool:
        if self.at_kw(word):
            self.i += 1
            return True
        return False

    def accept_seq(self, *words: str) -> bool:
        if self.at_seq(*words):
            self.i += len(words)
            return True
        return False

    def expect_kw(self, *words: str) -> Token:
        for w in words:
            if not self.at_kw(w):
                raise self.error()
            self.i += 1
        return self.tokens[self.i - 1]

    def at_op(self, op: str, k: int = 0) -> bool:
        tok = self.peek(k)
        return tok.kind == OP and tok.value == op

    def accept_op(self, op: str) -> bool:
        if self.at_op(op):
            self.i += 1
            return True
        return False

    def expect_op(self, op: str) -> Token:
        if not self.at_op(op):
            raise self.error()
        return self.next()

    def at_end(self) -> bool:
        return self.peek().kind == EOF

    def expect_end(self) -> None:
        if not self.at_end():
            raise self.error()

    # --- errors ---------------------------------------------------------------------------

    def error(self, tok: Token | None = None, message: str | None = None,
              hint: str | None = None) -> PgError:
        return syntax_error(self.sql, tok or self.peek(), message, hint)

    def value_error(self, tok: Token, message: str, hint: str | None = None) -> PgError:
        return value_error(self.sql, tok, message, hint)

    def unsupported(self, tok: Token, message: str, hint: str | None = None) -> PgError:
        return unsupported(self.sql, tok, message, hint)

    # --- names ----------------------------------------------------------------------------

    def at_name(self, k: int = 0) -> bool:
        tok = self.peek(k)
        return tok.kind == QIDENT or (tok.kind == IDENT and tok.value not in RESERVED)

    def name(self) -> str:
        if not self.at_name():
            raise self.error()
        return self.next().value

    def name_list(self) -> tuple[str, ...]:
        names = [self.name()]
        while self.accept_op(","):
            names.append(self.name())
        return tuple(names)

    def dotted_name(self) -> str:
        """A dotted name whose later parts may be any word (bulkio.backup.file_size)."""
        first = self.peek()
        if first.kind == IDENT and self.at_op(".", k=1):
            self.i += 1  # before a '.', even a reserved word is unambiguous (some.ratio)
            parts = [first.value]
        else:
            parts = [self.name()]
        while self.at_op("."):
            self.i += 1
            tok = self.peek()
            if tok.kind not in (IDENT, QIDENT):
                raise self.error()
            parts.append(self.next().value)
        return ".".join(parts)

    def table_pattern(self) -> TablePattern:
        if self.accept_op("*"):
            return TablePattern((), star=True)
        parts = [self.name()]
        while self.accept_op("."):
            if self.accept_op("*"):
                if len(parts) > 2:
                    raise self.error(self.tokens[self.i - 1])
                return TablePattern(tuple(parts), star=True)
            tok = self.peek()
            if tok.kind not in (IDENT, QIDENT):
                raise self.error()
            parts.append(self.next().value)
            if len(parts) > 3:
                raise self.error(tok)
        return TablePattern(tuple(parts))

    def targets(self) -> Targets:
        """DATABASE name, ... | [TABLE] pattern, ..."""
        if self.accept_kw("database"):
            return Targets("DATABASE", self.name_list())
        self.accept_kw("table")
        patterns = [self.table_pattern()]
        while self.accept_op(","):
            patterns.append(self.table_pattern())
        return Targets("TABLE", tuple(patterns))

    def role(self) -> str:
        """A role name. Reserved words are accepted where they cannot be read otherwise, so
        the docs' `GRANT SYSTEM RESTORE TO user` works as it does in CockroachDB."""
        tok = self.peek()
        if tok.kind == IDENT and tok.value not in _ROLE_STOP:
            self.i += 1
            return tok.value
        return self.name()

    def role_list(self) -> tuple[str, ...]:
        roles = [self.role()]
        while self.accept_op(","):
            roles.append(self.role())
        return tuple(roles)

    # --- values ---------------------------------------------------------------------------

    def sconst_or_placeholder(self) -> Expr:
        tok = self.peek()
        if tok.kind == STRING:
            self.i += 1
            return StrLit(tok.value)
        if tok.kind == PARAM:
            return self.placeholder()
        raise self.error()

    def placeholder(self) -> Placeholder:
        tok = self.next()
        index = int(tok.value)
        if index < 1 or index > 65535:
            raise PgError(f"there is no parameter ${tok.value}", sqlstate="42P02",
                          position=tok.start + 1)
        return Placeholder(index)

    def string_or_placeholder(self, what: str | None = None) -> Expr:
        """A string constant, a placeholder, or a bare non-reserved word read as a string
        (CockroachDB's non_reserved_word_or_sconst). Numbers and booleans are 22023 when
        `what` names the option, a syntax error otherwise."""
        tok = self.peek()
        if tok.kind == STRING:
            self.i += 1
            return StrLit(tok.value)
        if tok.kind == PARAM:
            return self.placeholder()
        if self.at_name():
            self.i += 1
            return StrLit(tok.value)
        if what and (tok.kind in (INT, DECIMAL, BITSTRING) or self.at_kw("true", "false")):
            got = self.sql[tok.start:tok.end]
            raise self.value_error(tok, f"{what}: expected a string value, got {got}")
        raise self.error()

    def string_list(self, what: str | None = None) -> tuple[Expr, ...]:
        """string_or_placeholder, or a parenthesised list of them."""
        if self.accept_op("("):
            items = [self.string_or_placeholder(what)]
            while self.accept_op(","):
                items.append(self.string_or_placeholder(what))
            self.expect_op(")")
            return tuple(items)
        return (self.string_or_placeholder(what),)

    def bool_value(self, what: str) -> Expr:
        """A boolean option value: TRUE/FALSE/ON/OFF, a boolean string, or a placeholder."""
        tok = self.peek()
        if tok.kind == PARAM:
            return self.placeholder()
        text = None
        if tok.kind in (IDENT, STRING, INT):
            text = tok.value.lower()
        if text is not None and text in BOOL_WORDS:
            self.i += 1
            return BoolLit(BOOL_WORDS[text])
        if tok.kind in (IDENT, STRING, INT, DECIMAL, QIDENT):
            raise self.value_error(tok, f"{what}: expected a boolean value, got "
                                        f"{self.sql[tok.start:tok.end]}")
        raise self.error()

    def int_value(self, what: str) -> Expr:
        """An integer: a literal, a placeholder, or a string of digits (normalized to NumLit,
        so a bound '123' and a literal 123 give the same AST)."""
        tok = self.peek()
        if tok.kind == PARAM:
            return self.placeholder()
        if tok.kind == INT and tok.value.isdigit():
            self.i += 1
            return NumLit(str(int(tok.value)))
        if tok.kind == STRING:
            self.i += 1
            text = tok.value.strip()
            if text.isdigit() and text.isascii():
                return NumLit(str(int(text)))
            raise PgError(f'could not parse "{tok.value}" as type int: invalid syntax',
                          sqlstate="22P02", position=tok.start + 1)
        if tok.kind in (INT, DECIMAL) or (tok.kind == OP and tok.value == "-"):
            raise self.value_error(tok, f"{what}: expected a non-negative integer")
        raise self.error()

    def id_value(self, what: str) -> Expr:
        """A job or schedule ID: any scalar expression, as CockroachDB's grammar. A literal, a
        placeholder or a string of digits alone is int_value's; anything else, up to the end of
        the statement or a `WITH` at nesting depth 0, is kept as text (ScalarExpr)."""
        def ends(t: Token) -> bool:
            return t.kind == EOF or (t.kind == IDENT and t.value == "with")
        tok, nxt = self.peek(), self.peek(1)
        if (tok.kind in (INT, STRING, PARAM, DECIMAL) and ends(nxt)) or (
                tok.kind == OP and tok.value == "-" and nxt.kind in (INT, DECIMAL) and ends(self.peek(2))):
            return self.int_value(what)   # a lone literal: its own errors (negative, 1.5, 'abc')
        depth, last = 0, None
        while True:
            t = self.peek()
            if t.kind == EOF or (depth == 0 and last is not None and t.kind == IDENT and t.value == "with"):
                break
            if t.kind == OP and t.value in ("(", "["):
                depth += 1
            elif t.kind == OP and t.value in (")", "]"):
                depth -= 1
                if depth < 0:
                    raise self.error(t)
            last = self.next()
        if last is None or depth:
            raise self.error()
        text = self.sql[tok.start:last.end]
        _check_expression(self.sql, tok.start, text)
        return ScalarExpr(text)

    def as_of(self) -> Expr:
        """The expression after AS OF SYSTEM TIME: a string ('-10s', a timestamp), a decimal
        or integer, follower_read_timestamp() (or another call with constant arguments), or
        a placeholder."""
        tok = self.peek()
        if tok.kind == STRING:
            self.i += 1
            return StrLit(tok.value)
        if tok.kind == PARAM:
            return self.placeholder()
        if tok.kind in (INT, DECIMAL):
            self.i += 1
            return NumLit(tok.value)
        if tok.kind == OP and tok.value == "-" and self.peek(1).kind in (INT, DECIMAL):
            self.i += 2
            return NumLit("-" + self.tokens[self.i - 1].value)
        if tok.kind == IDENT and self.at_op("(", k=1) and tok.value in _AOST_FUNCTIONS:
            self.i += 2
            args: list[Expr] = []
            if not self.at_op(")"):
                while True:
                    arg = self.peek()
                    if arg.kind == STRING:
                        args.append(StrLit(arg.value))
                    elif arg.kind in (INT, DECIMAL):
                        args.append(NumLit(arg.value))
                    elif arg.kind == PARAM:
                        args.append(self.placeholder())
                        self.i -= 1
                    else:
                        raise self.value_error(arg, "AS OF SYSTEM TIME: only constant expressions, "
                                               "with_min_timestamp, with_max_staleness, or "
                                               "follower_read_timestamp are allowed")
                    self.i += 1
                    if not self.accept_op(","):
                        break
            self.expect_op(")")
            return FuncCall(tok.value, tuple(args))
        if tok.kind == EOF:
            raise self.error()
        raise self.value_error(tok, "AS OF SYSTEM TIME: only constant expressions, "
                               "with_min_timestamp, with_max_staleness, or "
                               "follower_read_timestamp are allowed")

    def opt_as_of(self) -> Expr | None:
        if self.accept_seq("as", "of", "system", "time"):
            return self.as_of()
        return None

    # --- embedded queries ----------------------------------------------------------------

    def query_span(self, stop: tuple[str, ...] = ()) -> tuple[int, int, Token]:
        """Consumes a <select> (SELECT/WITH/VALUES/TABLE or a parenthesised query) up to the
        end of the statement, or up to `WITH <stop word>` at nesting depth 0. Returns the
        character span and its first token."""
        first = self.peek()
        if not ((first.kind == IDENT and first.value in _QUERY_STARTS) or
                (first.kind == OP and first.value == "(")):
            raise self.error()
        depth = 0
        last = first
        while True:
            tok = self.peek()
            if tok.kind == EOF:
                break
            if tok.kind == OP and tok.value in ("(", "["):
                depth += 1
            elif tok.kind == OP and tok.value in (")", "]"):
                depth -= 1
                if depth < 0:
                    raise self.error(tok)
            elif (depth == 0 and tok is not first and tok.kind == IDENT and tok.value == "with"
                  and self.peek(1).kind == IDENT and self.peek(1).value in stop):
                break
            last = self.next()
        if depth != 0:
            raise self.error()
        return first.start, last.end, first
