"""`pgkeep parse [--json]`: check a SQL script the way pgkeep will see it.

Reads SQL from stdin, splits it into statements, and prints for each its kind (the statement
family, "forward" for SQL that goes to PostgreSQL unchanged, or "error"), the AST, and the
normalized and redacted forms, or the error's SQLSTATE, message and position (1-based, in
the statement). With --json: one JSON object per statement per line. Exit status 0 when every
statement parsed, 1 when any failed, 2 on a usage error.
"""
from __future__ import annotations

import json
from typing import TextIO

from proxy.errors import PgError

from .astjson import to_json
from .format import format_statement
from .parser import parse_statement, split_statements

__all__ = ["main", "describe"]

_USAGE = "usage: pgkeep parse [--json] < script.sql\n"


def describe(sql: str) -> dict:
    """The report for one statement (the JSON object `--json` prints)."""
    try:
        stmt = parse_statement(sql)
    except PgError as exc:
        error = {"sqlstate": exc.sqlstate, "message": exc.message, "position": exc.position}
        if exc.hint:
            error["hint"] = exc.hint
        if exc.detail:
            error["detail"] = exc.detail
        return {"kind": "error", "error": error}
    if stmt is None:
        return {"kind": "forward", "ast": None, "normalized": None, "redacted": None}
    return {"kind": stmt.family, "ast": to_json(stmt),
            "normalized": format_statement(stmt),
            "redacted": format_statement(stmt, redact=True)}


def _line_of(sql: str, offset: int) -> int:
    return sql.count("\n", 0, offset) + 1


def main(argv: list[str], stdin: TextIO, stdout: TextIO) -> int:
    args = list(argv)
    if args and args[0] == "parse":
        args = args[1:]
    as_json = "--json" in args
    if any(a not in ("--json",) for a in args):
        stdout.write(_USAGE)
        return 2
    sql = stdin.read()
    failed = False
    for n, (start, end) in enumerate(split_statements(sql), 1):
        report = describe(sql[start:end])
        failed = failed or report["kind"] == "error"
        if as_json:
            stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
            continue
        stdout.write(f"-- statement {n} (line {_line_of(sql, start)})\n")
        stdout.write(f"kind: {report['kind']}\n")
        if report["kind"] == "error":
            err = report["error"]
            stdout.write(f"error: {err['sqlstate']}: {err['message']}\n")
            stdout.write(f"position: {err['position']}\n")
            for key in ("detail", "hint"):
                if key in err:
                    stdout.write(f"{key}: {err[key]}\n")
        elif report["kind"] != "forward":
            stdout.write(f"ast: {json.dumps(report['ast'], ensure_ascii=False)}\n")
            stdout.write(f"normalized: {report['normalized']}\n")
            stdout.write(f"redacted: {report['redacted']}\n")
        stdout.write("\n")
    return 1 if failed else 0
