"""may_intercept must never be False for a statement parse_statement claims."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from proxy.errors import PgError
from proxy.sql import may_intercept, parse_statement
from proxy.sql.parser import INTERCEPT_WORDS

from sql_datadriven import TESTDATA, read_blocks

CORPUS = [b.sql for path in sorted(TESTDATA.glob("*.txt")) for b in read_blocks(path)]


def claimed(sql: str) -> bool:
    try:
        return parse_statement(sql) is not None
    except PgError:
        return True


def test_no_false_negative_over_the_testdata_corpus():
    for sql in CORPUS:
        if claimed(sql):
            assert may_intercept(sql), sql


def test_ordinary_sql_is_filtered_out():
    for sql in ("SELECT 1", "INSERT INTO t VALUES (1, 'a')", "UPDATE accounts SET b = b - 1",
                "SHOW search_path", "BEGIN", "COMMIT", "SET application_name = 'x'"):
        assert not may_intercept(sql)


def test_case_insensitive():
    assert may_intercept("bAcKuP INTO 'x'")
    assert may_intercept("select * from [show jobs]")


_WORDS = ["backup", "restore", "show", "jobs", "job", "schedule", "schedules", "cluster",
          "setting", "settings", "set", "reset", "grant", "revoke", "system", "external",
          "connection", "pause", "resume", "cancel", "drop", "create", "alter", "check",
          "execute", "all", "public", "automatic", "running", "paused", "grants", "select",
          "from", "into", "latest", "in", "to", "on", "database", "table", "with", "for",
          "'x'", "1", "$1", "(", ")", "[", "]", ",", "=", ";", "t", "users", "connections"]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), min_size=1, max_size=7),
       st.sampled_from(["lower", "upper", "title"]))
def test_no_false_negative_on_generated_token_soup(words, case):
    sql = " ".join(getattr(w, case)() for w in words)
    if claimed(sql):
        assert may_intercept(sql), sql


def test_words_are_lowercase():
    assert all(w == w.lower() for w in INTERCEPT_WORDS)
