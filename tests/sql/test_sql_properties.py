"""Property tests: generated ASTs format to SQL that parses back equal, and redaction
never lets a generated secret through."""
from __future__ import annotations

from hypothesis import given, settings

from proxy.sql import format_statement, parse_statement

from sql_strategies import MARK, statements


@settings(max_examples=200, deadline=None)
@given(statements)
def test_format_parse_round_trip(stmt):
    sql = format_statement(stmt)
    assert parse_statement(sql) == stmt, sql


@settings(max_examples=200, deadline=None)
@given(statements)
def test_redacted_form_has_no_secret_and_still_parses(stmt):
    redacted = format_statement(stmt, redact=True)
    assert MARK not in redacted, redacted
    assert parse_statement(redacted) is not None
