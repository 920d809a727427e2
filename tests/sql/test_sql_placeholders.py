"""Placeholders: counting and binding, with the bound statement validated like a literal."""
from __future__ import annotations

import pytest

from proxy.errors import PgError
from proxy.sql import (Backup, BoolLit, NumLit, Placeholder, StrLit, bind_placeholders,
                       count_placeholders, format_statement, parse_statement)


def test_count():
    assert count_placeholders(parse_statement("SHOW JOBS")) == 0
    stmt = parse_statement("BACKUP INTO $1 IN $2 AS OF SYSTEM TIME $5 "
                           "WITH encryption_passphrase = $3")
    assert count_placeholders(stmt) == 5
    assert count_placeholders(parse_statement(
        "SELECT * FROM [SHOW JOBS] WHERE job_id = $4")) == 4
    assert count_placeholders(parse_statement(
        "PAUSE JOBS SELECT job_id FROM [SHOW JOBS] WHERE user_name = $2")) == 2


def test_placeholder_nodes_where_crdb_allows_strings():
    stmt = parse_statement("BACKUP INTO $1 IN $2 AS OF SYSTEM TIME $3 "
                           "WITH encryption_passphrase = $4, kms = ($5, $6)")
    assert isinstance(stmt, Backup)
    assert stmt.subdir == Placeholder(1) and stmt.collection == (Placeholder(2),)
    assert stmt.as_of == Placeholder(3)
    assert stmt.options.kms == (Placeholder(5), Placeholder(6))


def test_bind_replaces_with_string_literals():
    stmt = parse_statement("BACKUP INTO $1 IN $2 AS OF SYSTEM TIME $3 "
                           "WITH encryption_passphrase = $4")
    bound = bind_placeholders(stmt, ["2024/01/01-000000.00", "s3://b", "-10s", "pw"])
    assert bound == Backup(None, (StrLit("s3://b"),), StrLit("2024/01/01-000000.00"), False,
                           StrLit("-10s"), bound.options)
    assert bound.options.encryption_passphrase == StrLit("pw")
    assert count_placeholders(bound) == 0


def test_bind_normalizes_like_literals():
    latest = bind_placeholders(parse_statement("RESTORE FROM $1 IN 'x'"), ["LATEST"])
    assert latest.latest and latest.subdir is None
    job = bind_placeholders(parse_statement("SHOW JOB $1"), ["42"])
    assert job.job_id == NumLit("42")
    hist = bind_placeholders(parse_statement("BACKUP INTO 'x' WITH revision_history = $1"),
                             ["true"])
    assert hist.options.revision_history == BoolLit(True)


def test_bind_validates_values():
    with pytest.raises(PgError) as err:
        bind_placeholders(parse_statement("SHOW JOB $1"), ["abc"])
    assert err.value.sqlstate == "22P02" and err.value.position is None
    with pytest.raises(PgError) as err:
        bind_placeholders(parse_statement(
            "CREATE SCHEDULE FOR BACKUP INTO 'x' RECURRING '@daily' "
            "WITH SCHEDULE OPTIONS on_execution_failure = $1"), ["explode"])
    assert err.value.sqlstate == "22023"


def test_bind_null_and_missing_values():
    stmt = parse_statement("BACKUP INTO $1")
    with pytest.raises(PgError) as err:
        bind_placeholders(stmt, [None])
    assert err.value.sqlstate == "22004"
    with pytest.raises(PgError) as err:
        bind_placeholders(stmt, [])
    assert err.value.sqlstate == "08P01"


def test_bind_inside_queries():
    stmt = parse_statement("SELECT * FROM [SHOW JOB $1] WHERE status = $2")
    bound = bind_placeholders(stmt, ["7", "it's"])
    assert format_statement(bound) == "SELECT * FROM [SHOW JOB 7] WHERE status = 'it''s'"
    assert bound.sources[0].statement.job_id == NumLit("7")
