"""Error construction for the statement language: CockroachDB's wording, PostgreSQL's fields.

A syntax error reads `at or near "tok": syntax error` (or `at or near EOF: ...`), carries the
1-based character position of the offending token, and a detail with the source SQL and a
caret line, as CockroachDB prints it. The source shown in the detail is redacted first (URIs
through engine.redact, passphrases as '*****'), because errors reach logs and clients.
"""
from __future__ import annotations

from engine.redact import redact_kms_uri, redact_uri

from proxy.errors import FeatureNotSupported, InvalidParameterValue, PgError, SyntaxError_

from .lexer import EOF, IDENT, OP, STRING, Token, tokenize

__all__ = ["syntax_error", "value_error", "unsupported", "source_detail", "token_text",
           "relocate", "quote_string"]

_PASSPHRASE_WORDS = frozenset({"encryption_passphrase", "passphrase", "password"})
# Options whose values are KMS URIs: their key path is hidden too (RedactKMSURI).
_KMS_WORDS = frozenset({"kms", "new_kms", "old_kms"})


def _kms_strings(tokens: list[Token]) -> set[int]:
    """Indexes of the string tokens that are the value of a KMS option (`kms = 'u'` or
    `kms = ('u', ...)`)."""
    found: set[int] = set()
    for i, tok in enumerate(tokens):
        if not (tok.kind == IDENT and tok.value in _KMS_WORDS and i + 1 < len(tokens)
                and tokens[i + 1].kind == OP and tokens[i + 1].value == "="):
            continue
        j = i + 2
        while j < len(tokens) and (tokens[j].kind == STRING
                                   or (tokens[j].kind == OP and tokens[j].value in "(,")):
            if tokens[j].kind == STRING:
                found.add(j)
            j += 1
    return found


def quote_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def token_text(sql: str, tok: Token) -> str:
    """The token as shown in `at or near "..."` (identifiers lowercased, secrets redacted)."""
    if tok.kind == EOF:
        return "EOF"
    if tok.kind == IDENT:
        return tok.value
    if tok.kind == STRING and "://" in tok.value:
        return quote_string(redact_uri(tok.value))
    return sql[tok.start:tok.end]


def _redacted_source(sql: str) -> tuple[str, list[tuple[int, int, int]]]:
    """`sql` with secret string constants replaced, and the (start, end, delta) of each
    replacement so positions can be mapped into the new text."""
    tokens = tokenize(sql)
    kms = _kms_strings(tokens)
    pieces: list[str] = []
    shifts: list[tuple[int, int, int]] = []
    last = 0
    for i, tok in enumerate(tokens):
        if tok.kind != STRING:
            continue
        replacement = None
        before = [t for t in tokens[max(0, i - 2):i]]
        if (len(before) == 2 and before[1].kind == OP and before[1].value == "="
                and before[0].kind == IDENT and before[0].value in _PASSPHRASE_WORDS):
            replacement = "'*****'"
        elif i in kms:
            redacted = redact_kms_uri(tok.value)
            if redacted != tok.value:
                replacement = quote_string(redacted)
        elif "://" in tok.value or "@" in tok.value:
            redacted = redact_uri(tok.value)
            if redacted != tok.value:
                replacement = quote_string(redacted)
        if replacement is None:
            continue
        pieces.append(sql[last:tok.start])
        pieces.append(replacement)
        shifts.append((tok.start, tok.end, len(replacement) - (tok.end - tok.start)))
        last = tok.end
    pieces.append(sql[last:])
    return "".join(pieces), shifts


def source_detail(sql: str, pos: int) -> str:
    """CockroachDB's `source SQL:` detail: the statement up to the error line, then a caret
    under the 0-based character offset `pos`."""
    text, shifts = _redacted_source(sql)
    mapped = pos
    for start, end, delta in shifts:
        if end <= pos:
            mapped += delta
        elif start <= pos:
            mapped = mapped - (pos - start)
    line_start = text.rfind("\n", 0, mapped) + 1
    line_end = text.find("\n", mapped)
    if line_end < 0:
        line_end = len(text)
    column = mapped - line_start
    return "source SQL:\n" + text[:line_end] + "\n" + " " * column + "^"


def syntax_error(sql: str, tok: Token, message: str | None = None,
                 hint: str | None = None) -> SyntaxError_:
    """42601 at `tok`. Without `message`, the plain `at or near "tok": syntax error`."""
    near = token_text(sql, tok)
    near = "EOF" if near == "EOF" else f'"{near}"'
    if message is None:
        message = f"at or near {near}: syntax error"
    return SyntaxError_(message, position=tok.start + 1, hint=hint,
                        detail=source_detail(sql, tok.start))


def value_error(sql: str, tok: Token, message: str, hint: str | None = None) -> PgError:
    """22023: the syntax is fine but a value is of the wrong type or out of range."""
    return InvalidParameterValue(message, position=tok.start + 1, hint=hint,
                                 detail=source_detail(sql, tok.start))


def unsupported(sql: str, tok: Token, message: str, hint: str | None = None) -> PgError:
    return FeatureNotSupported(message, position=tok.start + 1, hint=hint,
                               detail=source_detail(sql, tok.start))


def relocate(exc: PgError, outer_sql: str, offset: int) -> PgError:
    """Re-points an error raised while parsing a piece of `outer_sql` that starts at
    character `offset`, so position and caret refer to the outer text."""
    if exc.position is not None:
        exc.position += offset
        if exc.detail is None or exc.detail.startswith("source SQL:"):
            exc.detail = source_detail(outer_sql, exc.position - 1)
    return exc
