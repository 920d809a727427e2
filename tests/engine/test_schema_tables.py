"""Table restores (`tables={oid, ...}`) into existing databases: dependency errors in
CockroachDB's words, the effect of each skip option, type reuse and incompatible types, missing
schemas, owners and grants for existing and missing roles."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from engine.schema import MissingDependency, plan_restore
from tests.engine.conftest import capture_db, create_db, load_sql, run_plan

SOURCE = """
CREATE SCHEMA s2;
CREATE TYPE mood AS ENUM ('a', 'b');
CREATE TYPE s2.pair AS (x int, y text);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE SEQUENCE shared_seq;
SELECT setval('shared_seq', 41);
CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
CREATE TABLE parent (id int PRIMARY KEY, name text);
CREATE TABLE t_fk (id int PRIMARY KEY, parent_id int REFERENCES parent);
CREATE TABLE t_seq (id int, s bigint DEFAULT nextval('shared_seq'));
CREATE TABLE t_udf (id int, g int DEFAULT f());
CREATE TABLE t_types (id serial PRIMARY KEY, m mood, p s2.pair, q posint);
CREATE INDEX t_types_m ON t_types (m);
CREATE TRIGGER t_types_trg BEFORE INSERT ON t_types FOR EACH ROW EXECUTE FUNCTION trg();
CREATE TABLE s2.t2 (id int);
CREATE VIEW v_parent AS SELECT id, name FROM parent;
CREATE VIEW v_udf AS SELECT f() AS x;
ALTER TABLE t_types OWNER TO md5user;
GRANT SELECT ON t_types TO scramuser;
INSERT INTO parent VALUES (1, 'one');
INSERT INTO t_fk VALUES (1, 1);
INSERT INTO t_types (m, p, q) VALUES ('a', ROW(1, 'x'), 5), ('b', ROW(2, 'y'), 6);
"""


@pytest.fixture(scope="module")
def source(pg18):
    load_sql(pg18, "sch_tbl_src", SOURCE)
    schema = asyncio.run(capture_db(pg18, "sch_tbl_src"))
    oids = {o.name: o.oid for o in schema.objects if o.key.startswith(("rel:", "proc:"))}
    return schema, oids


def _plan(source, *names, **kw):
    schema, oids = source
    kw.setdefault("existing_roles", {"postgres", "md5user", "scramuser"})
    return plan_restore(schema, target_database="sch_tbl_dst", tables={oids[n] for n in names}, **kw)


def _target(pg18, setup: str = "") -> str:
    create_db(pg18, "sch_tbl_dst")
    if setup:
        pg18.psql(setup, "sch_tbl_dst")
    return "sch_tbl_dst"


def _run(pg18, plan):
    asyncio.run(run_plan(plan, pg18, "sch_tbl_dst", source=pg18, source_db="sch_tbl_src"))


def _q(pg18, sql: str) -> str:
    return pg18.psql(sql, "sch_tbl_dst").strip()


def _error(fn) -> MissingDependency:
    with pytest.raises(MissingDependency) as info:
        fn()
    assert info.value.sqlstate == "42P01"
    return info.value


def test_foreign_key_needs_its_table(pg18, source):
    _, oids = source
    msg = (f'cannot restore table "t_fk" without referenced table {oids["parent"]} '
           '(or "skip_missing_foreign_keys" option)')
    assert _error(lambda: _plan(source, "t_fk")).message == msg
    # the target having a table of that name changes nothing (as in CockroachDB)
    _target(pg18, "CREATE TABLE parent (id int PRIMARY KEY)")
    assert _error(lambda: _plan(source, "t_fk")).message == msg
    _run(pg18, _plan(source, "t_fk", skip_missing_foreign_keys=True))
    assert _q(pg18, "SELECT count(*) FROM pg_constraint WHERE conrelid = 't_fk'::regclass AND contype = 'f'") == "0"
    assert _q(pg18, "SELECT count(*) FROM t_fk") == "1"
    _target(pg18)
    _run(pg18, _plan(source, "t_fk", "parent"))
    assert _q(pg18, "SELECT confrelid::regclass FROM pg_constraint WHERE conrelid = 't_fk'::regclass "
                    "AND contype = 'f'") == "parent"


def test_default_needs_its_sequence(pg18, source):
    _, oids = source
    assert _error(lambda: _plan(source, "t_seq")).message == (
        f'cannot restore table "t_seq" without referenced sequence {oids["shared_seq"]} '
        '(or "skip_missing_sequences" option)')
    _target(pg18)
    _run(pg18, _plan(source, "t_seq", skip_missing_sequences=True))
    assert _q(pg18, "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 't_seq'::regclass") == ""
    _target(pg18)
    _run(pg18, _plan(source, "t_seq", "shared_seq"))
    assert _q(pg18, "SELECT nextval('shared_seq')") == "42"
    assert "shared_seq" in _q(pg18, "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef "
                                    "WHERE adrelid = 't_seq'::regclass")


def test_default_needs_its_function(pg18, source):
    _, oids = source
    assert _error(lambda: _plan(source, "t_udf")).message == (
        f'cannot restore table "t_udf" without referenced function {oids["f"]} '
        '(or "skip_missing_udfs" option)')
    _target(pg18)
    _run(pg18, _plan(source, "t_udf", skip_missing_udfs=True))
    assert _q(pg18, "SELECT count(*) FROM pg_attrdef WHERE adrelid = 't_udf'::regclass") == "0"


def test_owned_sequence_needs_its_table(pg18, source):
    _, oids = source
    assert _error(lambda: _plan(source, "t_types_id_seq")).message == (
        f'cannot restore sequence "t_types_id_seq" without referenced owner table {oids["t_types"]} '
        '(or "skip_missing_sequence_owners" option)')
    _target(pg18)
    _run(pg18, _plan(source, "t_types_id_seq", skip_missing_sequence_owners=True))
    assert _q(pg18, "SELECT count(*) FROM pg_depend WHERE objid = 't_types_id_seq'::regclass "
                    "AND deptype = 'a'") == "0"
    assert _q(pg18, "SELECT last_value FROM t_types_id_seq") == "2"


def test_view_needs_its_tables(pg18, source):
    _, oids = source
    assert _error(lambda: _plan(source, "v_parent")).message == (
        f'cannot restore view "v_parent" without restoring referenced table {oids["parent"]} '
        '(or "skip_missing_views" option)')
    assert _error(lambda: _plan(source, "v_udf")).message == (
        f'cannot restore view "v_udf" without restoring referenced function {oids["f"]} '
        '(or "skip_missing_views" option)')
    plan = _plan(source, "v_parent", "v_udf", skip_missing_views=True)
    assert not [s for s in plan.pre_data if "VIEW" in s] and plan.post_data == []
    _target(pg18)
    _run(pg18, _plan(source, "v_parent", "parent"))
    assert _q(pg18, "SELECT name FROM v_parent") == "one"


def test_types_created_with_owned_sequence_index_trigger_and_grants(pg18, source):
    _target(pg18, "CREATE SCHEMA s2; CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql "
                  "AS 'BEGIN RETURN NEW; END'")
    _run(pg18, _plan(source, "t_types"))
    assert _q(pg18, "SELECT string_agg(format('%s|%s|%s', m, p, q), ',' ORDER BY id) FROM t_types") == \
        "a|(1,x)|5,b|(2,y)|6"
    assert _q(pg18, "SELECT enum_range(NULL::mood)") == "{a,b}"
    assert _q(pg18, "SELECT nextval('t_types_id_seq')") == "3"
    assert _q(pg18, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 't_types'") == "md5user"
    assert _q(pg18, "SELECT relacl FROM pg_class WHERE relname = 't_types'") == \
        "{md5user=arwdDxtm/md5user,scramuser=r/md5user}"
    assert _q(pg18, "SELECT count(*) FROM pg_indexes WHERE tablename = 't_types'") == "2"
    assert _q(pg18, "SELECT tgname FROM pg_trigger WHERE tgrelid = 't_types'::regclass") == "t_types_trg"
    # with skip_missing_udfs, triggers calling user functions stay out too
    _target(pg18, "CREATE SCHEMA s2")
    _run(pg18, _plan(source, "t_types", skip_missing_udfs=True))
    assert _q(pg18, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 't_types'::regclass") == "0"


def test_missing_roles_and_no_grants(pg18, source):
    _target(pg18, "CREATE SCHEMA s2")
    _run(pg18, _plan(source, "t_types", skip_missing_udfs=True, existing_roles={"postgres"},
                     restoring_user="pwuser"))
    assert _q(pg18, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 't_types'") == "pwuser"
    assert _q(pg18, "SELECT pg_get_userbyid(typowner) FROM pg_type WHERE typname = 'mood'") == "postgres"
    assert _q(pg18, "SELECT relacl FROM pg_class WHERE relname = 't_types'") == ""
    _target(pg18, "CREATE SCHEMA s2")
    _run(pg18, _plan(source, "t_types", skip_missing_udfs=True, grants=False, restoring_user="pwuser"))
    assert _q(pg18, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 't_types'") == "pwuser"
    assert _q(pg18, "SELECT pg_get_userbyid(typowner) FROM pg_type WHERE typname = 'mood'") == "pwuser"
    assert _q(pg18, "SELECT relacl FROM pg_class WHERE relname = 't_types'") == ""


def test_existing_compatible_types_are_reused(pg18, source):
    _target(pg18, "CREATE SCHEMA s2; CREATE TYPE mood AS ENUM ('a', 'b'); "
                  "CREATE TYPE s2.pair AS (x int, y text); "
                  "CREATE DOMAIN posint AS int CHECK (VALUE > 0); "
                  "ALTER TYPE mood OWNER TO scramuser")
    _run(pg18, _plan(source, "t_types", skip_missing_udfs=True))
    assert _q(pg18, "SELECT count(*) FROM t_types") == "2"
    # reused as found: its owner is not changed
    assert _q(pg18, "SELECT pg_get_userbyid(typowner) FROM pg_type WHERE typname = 'mood'") == "scramuser"


@pytest.mark.parametrize("setup", [
    "CREATE TYPE mood AS ENUM ('a', 'b', 'c')",
    "CREATE TYPE mood AS ENUM ('b', 'a')",
    "CREATE TYPE mood AS (a int)",
])
def test_incompatible_type_is_an_error(pg18, source, setup):
    _target(pg18, "CREATE SCHEMA s2; " + setup)
    with pytest.raises(asyncpg.PostgresError) as info:
        _run(pg18, _plan(source, "t_types", skip_missing_udfs=True))
    assert info.value.sqlstate == "42710"
    assert info.value.args[0] == \
        'type "public.mood" already exists in database "sch_tbl_dst" with a different definition'
    assert _q(pg18, "SELECT count(*) FROM pg_class WHERE relname = 't_types'") == "0"


def test_missing_schema_is_an_error(pg18, source):
    _target(pg18)
    with pytest.raises(asyncpg.PostgresError) as info:
        _run(pg18, _plan(source, "t2"))
    assert info.value.sqlstate == "3F000"
    assert info.value.args[0] == 'a schema named "s2" needs to exist to restore table "t2"'
    with pytest.raises(asyncpg.PostgresError) as info:
        _run(pg18, _plan(source, "t_types", skip_missing_udfs=True))
    assert info.value.args[0] == 'a schema named "s2" needs to exist to restore type "pair"'


def test_server_internal_column_options_are_not_replayed():
    """Debian's PostgreSQL 15.20 keeps a pg_attver key in every column's attoptions, which no
    ALTER COLUMN ... SET accepts: a 15.20 -> 18 restore failed on it. Only the options SET takes
    are replayed."""
    from engine.schema.render import settable_column_options
    assert settable_column_options(["pg_attver=1", "n_distinct=100", "N_DISTINCT_INHERITED=-0.5"]) \
        == ["n_distinct=100", "N_DISTINCT_INHERITED=-0.5"]
    assert settable_column_options(["pg_attver=150020"]) == []
    assert settable_column_options(None) == []
