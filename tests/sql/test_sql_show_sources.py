"""[SHOW ...] table sources: offsets and the sqlglot-checked rewrite."""
from __future__ import annotations

import pytest

from proxy.errors import PgError
from proxy.sql import (SelectFromShow, ShowJobs, ShowSchedules, parse_statement,
                       rewrite_show_sources)


def relation(stmt) -> str:
    if isinstance(stmt, ShowJobs):
        return "SELECT job_id, job_type, status FROM pgkeep.jobs"
    if isinstance(stmt, ShowSchedules):
        return "SELECT id, label FROM pgkeep.schedules"
    raise AssertionError(stmt)


def test_sources_and_offsets():
    sql = "SELECT * FROM [SHOW JOBS] j JOIN [SHOW SCHEDULES] ON true"
    node = parse_statement(sql)
    assert isinstance(node, SelectFromShow) and node.sql == sql
    assert [sql[s.start:s.end] for s in node.sources] == ["[SHOW JOBS]", "[SHOW SCHEDULES]"]
    assert node.sources[0].statement == ShowJobs()


def test_offsets_are_relative_to_the_trimmed_query_text():
    node = parse_statement("  -- hi\n SELECT 'é', * FROM [SHOW JOBS] ;")
    assert node.sql == "SELECT 'é', * FROM [SHOW JOBS]"
    src = node.sources[0]
    assert node.sql[src.start:src.end] == "[SHOW JOBS]"


def test_rewrite_adds_an_alias_only_when_missing():
    node = parse_statement("SELECT * FROM [SHOW JOBS] WHERE job_type = 'BACKUP'")
    assert rewrite_show_sources(node, relation) == (
        "SELECT * FROM (SELECT job_id, job_type, status FROM pgkeep.jobs) AS _show1 "
        "WHERE job_type = 'BACKUP'")
    node = parse_statement("SELECT j.status FROM [SHOW JOBS] AS j, [SHOW SCHEDULES] s")
    assert rewrite_show_sources(node, relation) == (
        "SELECT j.status FROM (SELECT job_id, job_type, status FROM pgkeep.jobs) AS j, "
        "(SELECT id, label FROM pgkeep.schedules) s")


def test_rewrite_of_an_embedded_query():
    stmt = parse_statement("PAUSE JOBS SELECT job_id FROM [SHOW JOBS] WHERE status = 'running'")
    assert rewrite_show_sources(stmt.query, relation).startswith(
        "SELECT job_id FROM (SELECT job_id")


def test_rewrite_rejects_what_sqlglot_cannot_parse():
    node = parse_statement("SELECT * FROM [SHOW JOBS] WHERE")
    with pytest.raises(PgError) as err:
        rewrite_show_sources(node, relation)
    assert err.value.sqlstate == "42601"


def test_inner_errors_point_into_the_outer_text():
    sql = "SELECT * FROM [SHOW JOBS bogus]"
    with pytest.raises(PgError) as err:
        parse_statement(sql)
    assert err.value.position == sql.index("bogus") + 1
