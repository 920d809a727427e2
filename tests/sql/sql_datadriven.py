"""A reader/writer for CockroachDB-style testdata files of the statement language.

A file is a series of blocks separated by blank lines (lines starting with '#' between blocks
are comments):

    parse
    <one statement, possibly on several lines>
    ----
    <expected output>

The expected output is what `render` prints for the statement: `forward`, or kind /
normalized / redacted lines, or the error's SQLSTATE, message, position and hint. Running the
tests with PGKEEP_REWRITE=1 rewrites every expected output in place.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from proxy.errors import PgError
from proxy.sql import format_statement, parse_statement

__all__ = ["Block", "read_blocks", "render", "rewrite_file", "REWRITE", "TESTDATA"]

TESTDATA = Path(__file__).parent / "testdata"
REWRITE = os.environ.get("PGKEEP_REWRITE") == "1"


@dataclass
class Block:
    path: Path
    line: int          # 1-based line of the directive
    directive: str
    sql: str
    expected: str
    comments: list[str]

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i, comments = 0, []
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("#"):
            comments.append(line)
            i += 1
            continue
        directive, start = line.strip(), i + 1
        i += 1
        sql_lines = []
        while i < len(lines) and lines[i] != "----":
            sql_lines.append(lines[i])
            i += 1
        if i >= len(lines):
            raise ValueError(f"{path}:{start}: block without ----")
        i += 1
        expected = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        blocks.append(Block(path, start, directive, "\n".join(sql_lines), "\n".join(expected),
                            comments))
        comments = []
    return blocks


def render(sql: str) -> str:
    try:
        stmt = parse_statement(sql)
    except PgError as exc:
        out = [f"error: {exc.sqlstate}: {exc.message}", f"position: {exc.position}"]
        if exc.hint:
            out.append(f"hint: {exc.hint}")
        return "\n".join(out)
    if stmt is None:
        return "forward"
    return "\n".join([f"kind: {stmt.family}",
                      f"normalized: {format_statement(stmt)}",
                      f"redacted: {format_statement(stmt, redact=True)}"])


def rewrite_file(path: Path) -> None:
    out: list[str] = []
    for block in read_blocks(path):
        out.extend(block.comments)
        out.append(block.directive)
        out.append(block.sql)
        out.append("----")
        out.append(render(block.sql))
        out.append("")
    path.write_text("\n".join(out))
