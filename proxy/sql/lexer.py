"""The SQL lexer: PostgreSQL's lexical rules, with character offsets.

Owns tokenisation for the whole statement language and for `split_statements`. It knows
'...' (doubled quotes), E'...' (backslash escapes), U&'...', B'...'/X'...', $tag$...$tag$,
"quoted idents", -- and nested /* */ comments, numbers, $n placeholders and operators.
Offsets are Python string indices, i.e. characters (not UTF-8 bytes), which is what the
ErrorResponse position field counts.

The lexer never raises: a malformed token (an unterminated string, say) becomes a token with
`error` set and runs to the end of the input, so splitting a broken Query still yields one
piece that PostgreSQL can reject in its own words. The parser turns `error` into a 42601.

The compiled patterns below match single token classes at a known position; they are the
lexer's character classes, never a heuristic over the statement.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Token", "Lexer", "tokenize", "IDENT", "QIDENT", "STRING", "BITSTRING", "INT",
           "DECIMAL", "PARAM", "OP", "EOF"]

IDENT = "ident"        # unquoted identifier or keyword; value is ASCII-lowercased
QIDENT = "qident"      # "quoted identifier"; value is exact
STRING = "string"      # any string constant; value is the decoded text
BITSTRING = "bitstring"  # B'...' / X'...'; value is the raw body
INT = "int"
DECIMAL = "decimal"
PARAM = "param"        # $n; value is the text of n
OP = "op"              # punctuation and operators; value is the text
EOF = "eof"

_WS = " \t\n\r\f\v"
_IDENT_START = re.compile(r"[A-Za-z_\x80-\U0010ffff]")
_IDENT_REST = re.compile(r"[A-Za-z0-9_$\x80-\U0010ffff]*")
_NUMBER = re.compile(
    r"0[xX][0-9A-Fa-f_]+|0[oO][0-7_]+|0[bB][01_]+"
    r"|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?")
_DIGITS = re.compile(r"[0-9]+")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
_OP_CHARS = frozenset("+-*/<>=~!@#%^&|`?")
_SINGLE = frozenset("()[],;:.{}")
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


@dataclass(frozen=True, slots=True)
class Token:
    """One token: `start`/`end` are character offsets into the lexed text (end exclusive)."""

    kind: str
    value: str
    start: int
    end: int
    error: str | None = None

    def is_kw(self, word: str) -> bool:
        return self.kind == IDENT and self.value == word


def _lower_ascii(text: str) -> str:
    # PostgreSQL folds only ASCII letters in unquoted identifiers.
    return text.lower() if text.isascii() else "".join(
        c.lower() if "A" <= c <= "Z" else c for c in text)


class Lexer:
    """Produces tokens on demand, so a caller that only needs the leading keywords pays
    only for those."""

    __slots__ = ("text", "pos", "n")

    def __init__(self, text: str, pos: int = 0) -> None:
        self.text = text
        self.pos = pos
        self.n = len(text)

    def skip_space(self) -> None:
        """Skips whitespace and comments (an unterminated /* runs to the end)."""
        text, n, pos = self.text, self.n, self.pos
        while pos < n:
            c = text[pos]
            if c in _WS:
                pos += 1
            elif c == "-" and text.startswith("--", pos):
                nl = text.find("\n", pos)
                pos = n if nl < 0 else nl + 1
            elif c == "/" and text.startswith("/*", pos):
                pos = self._block_comment_end(pos)
            else:
                break
        self.pos = pos

    def _block_comment_end(self, pos: int) -> int:
        text, depth, pos = self.text, 1, pos + 2
        while depth:
            close = text.find("*/", pos)
            if close < 0:
                return self.n
            opened = text.find("/*", pos, close)
            if opened >= 0:
                depth, pos = depth + 1, opened + 2
            else:
                depth, pos = depth - 1, close + 2
        return pos

    def next(self) -> Token:
        self.skip_space()
        text, pos = self.text, self.pos
        if pos >= self.n:
            return Token(EOF, "", self.n, self.n)
        c = text[pos]
        if c == "'":
            return self._quoted(pos, pos, backslash=False)
        if c in "eE" and text.startswith("'", pos + 1):
            return self._quoted(pos, pos + 1, backslash=True)
        if c in "nN" and text.startswith("'", pos + 1):
            return self._quoted(pos, pos + 1, backslash=False)
        if c in "bBxX" and text.startswith("'", pos + 1):
            tok = self._quoted(pos, pos + 1, backslash=False)
            return Token(BITSTRING, tok.value, tok.start, tok.end, tok.error)
        if c in "uU" and text.startswith("&'", pos + 1):
            return self._unicode_string(pos)
        if c == '"' or (c in "uU" and text.startswith('&"', pos + 1)):
            return self._quoted_ident(pos)
        if c == "$":
            return self._dollar(pos)
        if "0" <= c <= "9" or (c == "." and pos + 1 < self.n and "0" <= text[pos + 1] <= "9"):
            m = _NUMBER.match(text, pos)
            end = m.end()
            # "1..2" and "1.x": a trailing '.' followed by '.' belongs to the next token.
            if text.startswith("..", end - 1) and m.group().endswith("."):
                end -= 1
            body = text[pos:end]
            self.pos = end
            is_dec = any(ch in body for ch in ".eE") and not body[:2].lower() in ("0x", "0o", "0b")
            return Token(DECIMAL if is_dec else INT, body, pos, end)
        if _IDENT_START.match(c):
            end = _IDENT_REST.match(text, pos + 1).end()
            self.pos = end
            return Token(IDENT, _lower_ascii(text[pos:end]), pos, end)
        if c in _SINGLE:
            if c == ":" and text.startswith(("::", ":="), pos):
                self.pos = pos + 2
                return Token(OP, text[pos:pos + 2], pos, pos + 2)
            if c == "." and text.startswith("..", pos):
                self.pos = pos + 2
                return Token(OP, "..", pos, pos + 2)
            self.pos = pos + 1
            return Token(OP, c, pos, pos + 1)
        if c in _OP_CHARS:
            end = pos + 1
            while end < self.n and text[end] in _OP_CHARS:
                if text.startswith(("--", "/*"), end):
                    break
                end += 1
            self.pos = end
            return Token(OP, text[pos:end], pos, end)
        self.pos = pos + 1
        return Token(OP, c, pos, pos + 1, error=f"invalid character {c!r}")

    def _quoted(self, start: int, quote: int, backslash: bool) -> Token:
        text, n, pos = self.text, self.n, quote + 1
        parts: list[str] = []
        while True:
            if backslash:
                q, b = text.find("'", pos), text.find("\\", pos)
                if b >= 0 and (q < 0 or b < q):
                    parts.append(text[pos:b])
                    pos = self._escape(b, parts)
                    continue
            else:
                q = text.find("'", pos)
            if q < 0:
                self.pos = n
                return Token(STRING, "".join(parts) + text[pos:], start, n,
                             error="unterminated string")
            parts.append(text[pos:q])
            if text.startswith("''", q):
                parts.append("'")
                pos = q + 2
                continue
            end = q + 1
            # Adjacent literals separated by a newline concatenate (SQL standard).
            probe = end
            while probe < n and text[probe] in " \t\r\f\v":
                probe += 1
            if probe < n and text[probe] == "\n":
                probe += 1
                while probe < n and text[probe] in _WS:
                    probe += 1
                if probe < n and text[probe] == "'":
                    pos = probe + 1
                    continue
            self.pos = end
            return Token(STRING, "".join(parts), start, end)

    def _escape(self, b: int, parts: list[str]) -> int:
        text = self.text
        if b + 1 >= self.n:
            return b + 1
        c = text[b + 1]
        if c in _ESCAPES:
            parts.append(_ESCAPES[c])
            return b + 2
        if c in "01234567":
            j = b + 1
            while j < min(b + 4, self.n) and text[j] in "01234567":
                j += 1
            parts.append(chr(int(text[b + 1:j], 8)))
            return j
        for prefix, width in (("x", 2), ("u", 4), ("U", 8)):
            if c == prefix:
                j = b + 2
                limit = b + 2 + width
                while j < min(limit, self.n) and text[j] in "0123456789abcdefABCDEF":
                    j += 1
                if j > b + 2:
                    parts.append(chr(int(text[b + 2:j], 16)))
                    return j
        parts.append(c)
        return b + 2

    def _unicode_string(self, start: int) -> Token:
        tok = self._quoted(start, start + 2, backslash=False)
        value = tok.value
        out, i = [], 0
        while i < len(value):
            if value[i] == "\\" and value.startswith("\\\\", i):
                out.append("\\")
                i += 2
            elif value[i] == "\\" and value.startswith("\\+", i) and len(value) >= i + 8:
                out.append(chr(int(value[i + 2:i + 8], 16)))
                i += 8
            elif value[i] == "\\" and len(value) >= i + 5:
                out.append(chr(int(value[i + 1:i + 5], 16)))
                i += 5
            else:
                out.append(value[i])
                i += 1
        return Token(STRING, "".join(out), tok.start, tok.end, tok.error)

    def _quoted_ident(self, start: int) -> Token:
        text, n = self.text, self.n
        pos = start + (3 if text[start] in "uU" else 1)
        parts: list[str] = []
        while True:
            q = text.find('"', pos)
            if q < 0:
                self.pos = n
                return Token(QIDENT, "".join(parts) + text[pos:], start, n,
                             error="unterminated quoted identifier")
            parts.append(text[pos:q])
            if text.startswith('""', q):
                parts.append('"')
                pos = q + 2
                continue
            self.pos = q + 1
            value = "".join(parts)
            err = "zero-length delimited identifier" if not value else None
            return Token(QIDENT, value, start, q + 1, error=err)

    def _dollar(self, start: int) -> Token:
        text = self.text
        m = _DIGITS.match(text, start + 1)
        if m:
            self.pos = m.end()
            return Token(PARAM, m.group(), start, m.end())
        m = _DOLLAR_TAG.match(text, start)
        if m is None:
            self.pos = start + 1
            return Token(OP, "$", start, start + 1, error="invalid character '$'")
        tag = m.group()
        close = text.find(tag, m.end())
        if close < 0:
            self.pos = self.n
            return Token(STRING, text[m.end():], start, self.n,
                         error="unterminated dollar-quoted string")
        self.pos = close + len(tag)
        return Token(STRING, text[m.end():close], start, self.pos)


def tokenize(text: str) -> list[Token]:
    """All tokens of `text`, ending with one EOF token."""
    lexer = Lexer(text)
    out = []
    while True:
        tok = lexer.next()
        out.append(tok)
        if tok.kind == EOF:
            return out
