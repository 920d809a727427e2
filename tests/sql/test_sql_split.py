"""split_statements and the lexer: quotes, dollar quotes, comments, character offsets."""
from __future__ import annotations

from proxy.sql import split_statements
from proxy.sql.lexer import IDENT, PARAM, QIDENT, STRING, tokenize


def pieces(sql: str) -> list[str]:
    return [sql[s:e] for s, e in split_statements(sql)]


def test_simple_split():
    assert pieces("SELECT 1; SELECT 2") == ["SELECT 1", "SELECT 2"]
    assert pieces("SELECT 1;") == ["SELECT 1"]
    assert pieces("  BACKUP INTO 'x' ;  ;; SHOW JOBS  ") == ["BACKUP INTO 'x'", "SHOW JOBS"]


def test_empty_and_comment_only_pieces_are_dropped():
    assert pieces("") == []
    assert pieces(" ; ;\n") == []
    assert pieces("-- just a comment\n; /* another */ ;") == []
    assert pieces("/* a */ SELECT 1 /* b */; -- c") == ["SELECT 1"]


def test_semicolons_inside_literals_do_not_split():
    assert pieces("SELECT 'a;b'; SELECT 2") == ["SELECT 'a;b'", "SELECT 2"]
    assert pieces("SELECT 'it''s;'; SELECT 2") == ["SELECT 'it''s;'", "SELECT 2"]
    assert pieces(r"SELECT E'\';'; SELECT 2") == [r"SELECT E'\';'", "SELECT 2"]
    assert pieces('SELECT 1 AS "a;b"; SELECT 2') == ['SELECT 1 AS "a;b"', "SELECT 2"]
    assert pieces("SELECT $$a;b$$; SELECT $tag$ $$; $tag$; SELECT 3") == [
        "SELECT $$a;b$$", "SELECT $tag$ $$; $tag$", "SELECT 3"]


def test_semicolons_inside_comments_do_not_split():
    assert pieces("SELECT 1 -- x; y\n; SELECT 2") == ["SELECT 1", "SELECT 2"]
    assert pieces("SELECT /* a; /* nested; */ still; */ 1; SELECT 2") == [
        "SELECT /* a; /* nested; */ still; */ 1", "SELECT 2"]


def test_parentheses_and_function_bodies_like_psql():
    assert pieces("SELECT (1; 2); SELECT 3") == ["SELECT (1; 2)", "SELECT 3"]
    body = ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; "
            "SELECT CASE WHEN true THEN 1 END; END")
    assert pieces(body + "; SELECT 2") == [body, "SELECT 2"]
    proc = "CREATE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END"
    assert pieces(proc + ";SELECT 1") == [proc, "SELECT 1"]


def test_offsets_are_characters_not_bytes():
    sql = "SELECT 'héllo ☃'; BACKUP INTO 'ü'"
    spans = split_statements(sql)
    assert [sql[s:e] for s, e in spans] == ["SELECT 'héllo ☃'", "BACKUP INTO 'ü'"]
    assert spans[1][0] == sql.index("BACKUP")
    emoji = "/* 🎉🎉 */ SHOW JOBS; SHOW JOBS"
    assert split_statements(emoji)[0] == (emoji.index("SHOW"), emoji.index(";"))


def test_unterminated_literal_runs_to_the_end():
    assert pieces("SELECT 'abc; SELECT 2") == ["SELECT 'abc; SELECT 2"]
    assert pieces("SELECT 1; /* open comment ; SELECT 2") == ["SELECT 1"]


def test_lexer_tokens():
    toks = tokenize("Backup \"Q\"\"x\" E'a\\nb' $1 $t$x$t$ U&'\\0041' 1.5e3 ..")
    kinds = [(t.kind, t.value) for t in toks[:6]]
    assert kinds == [(IDENT, "backup"), (QIDENT, 'Q"x'), (STRING, "a\nb"), (PARAM, "1"),
                     (STRING, "x"), (STRING, "A")]
    assert toks[0].start == 0 and toks[1].start == 7


def test_lexer_string_continuation_across_newline():
    toks = tokenize("'a'\n  'b' 'c'")
    assert toks[0].kind == STRING and toks[0].value == "ab"
    assert toks[1].value == "c"
