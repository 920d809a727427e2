"""Whole-database round trips of the sample databases (chinook with its data, the pagila schema
with generated rows), the capture's speed and read-only contract, the JSON document, the plan's
stage contract, ownership without the original roles, and SHOW BACKUP's object summary."""
from __future__ import annotations

import asyncio
import json
import time

import asyncpg

from engine.schema import Schema, SchemaFormatError, capture, plan_restore
from tests.engine.conftest import (capture_db, load_sql, normalize_db_name, pg_dump, restore_db,
                                   table_hashes)
from tests.engine.test_schema_torture import _version_noise


def _same_dump(dumper, a_cluster, a_db, b_cluster, b_db, *extra, normalize=lambda s: s):
    a = normalize(normalize_db_name(pg_dump(dumper, a_cluster, a_db, *extra), a_db))
    b = normalize(normalize_db_name(pg_dump(dumper, b_cluster, b_db, *extra), b_db))
    assert a.splitlines() == b.splitlines()


def test_chinook_round_trip(pg18, chinook18):
    schema = asyncio.run(capture_db(pg18, chinook18))
    assert len(schema.tables) == 11 and all(t.binary_ok for t in schema.tables)
    asyncio.run(restore_db(Schema.from_json(json.loads(json.dumps(schema.to_json()))),
                           pg18, chinook18, pg18, "sch_chinook_r"))
    _same_dump(pg18, pg18, chinook18, pg18, "sch_chinook_r")
    hashes = asyncio.run(table_hashes(pg18, chinook18))
    assert len(hashes) == 11
    assert hashes == asyncio.run(table_hashes(pg18, "sch_chinook_r"))


def test_chinook_pg15_to_pg18(pg15, pg18, chinook15):
    schema = asyncio.run(capture_db(pg15, chinook15))
    asyncio.run(restore_db(schema, pg15, chinook15, pg18, "sch_chinook15_r"))
    _same_dump(pg18, pg15, chinook15, pg18, "sch_chinook15_r", normalize=_version_noise)
    assert asyncio.run(table_hashes(pg15, chinook15)) == asyncio.run(table_hashes(pg18, "sch_chinook15_r"))


def test_pagila_round_trip(pg18, pagila18):
    schema = asyncio.run(capture_db(pg18, pagila18))
    kinds = {o.kind for o in schema.objects}
    assert {"aggregate", "domain", "enum", "matview", "extension", "trigger"} <= kinds
    asyncio.run(restore_db(schema, pg18, pagila18, pg18, "sch_pagila_r"))
    _same_dump(pg18, pg18, pagila18, pg18, "sch_pagila_r")
    _same_dump(pg18, pg18, pagila18, pg18, "sch_pagila_r", "--create")
    hashes = asyncio.run(table_hashes(pg18, pagila18))
    assert hashes["public.film"] != hashes["public.payment_p2022_01"]     # rows were generated
    assert hashes == asyncio.run(table_hashes(pg18, "sch_pagila_r"))


async def _timed_capture(cluster, db):
    conn = await asyncpg.connect(cluster.dsn(db))
    try:
        await conn.execute("SET search_path = public")
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await capture(conn)                                # warm the caches
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            start = time.monotonic()
            schema = await capture(conn)
            elapsed = time.monotonic() - start
            # the session is left as found, and nothing was written (a read-only transaction)
            assert await conn.fetchval("SHOW search_path") == "public"
        return schema, elapsed
    finally:
        await conn.close()


def test_capture_is_fast_and_leaves_the_session_alone(pg18, pg15, chinook18, pagila18, chinook15):
    for cluster, db in ((pg18, chinook18), (pg18, pagila18), (pg15, chinook15)):
        _, elapsed = asyncio.run(_timed_capture(cluster, db))
        assert elapsed < 0.5, (db, elapsed)


def test_json_is_lossless_and_versioned(pg18, torture18):
    schema = asyncio.run(capture_db(pg18, torture18))
    doc = json.loads(json.dumps(schema.to_json()))
    again = Schema.from_json(doc)
    assert again == schema
    assert again.to_json() == doc
    try:
        Schema.from_json({**doc, "schema_version": 99})
    except SchemaFormatError as e:
        assert e.sqlstate == "XX001"
    else:
        raise AssertionError("an unknown schema_version was accepted")


def test_stages_are_independent(pg18, torture18):
    """Within one post-data stage, no statement needs another and no two foreign keys share a
    table; every GRANT on an object comes after its OWNER TO."""
    schema = asyncio.run(capture_db(pg18, torture18))
    plan = plan_restore(schema, target_database="x", existing_roles={"postgres", "md5user", "scramuser"})
    assert plan.pre_data[0] == "SELECT pg_catalog.set_config('search_path', '', false)"
    for stage in plan.post_data:
        fk_tables = []
        for sql in stage:
            if " FOREIGN KEY " in sql:
                table = sql.split()[3] if sql.startswith("ALTER TABLE ONLY") else sql.split()[2]
                ref = sql.split(" REFERENCES ")[1].split("(")[0]
                fk_tables += list({table, ref})
        assert len(fk_tables) == len(set(fk_tables)), fk_tables
    flat = [sql for stage in plan.post_data for sql in stage]
    stage_of = {sql: i for i, stage in enumerate(plan.post_data) for sql in stage}
    owner = next(s for s in flat if s.startswith("ALTER TABLE app.items OWNER TO"))
    grant = next(s for s in flat if s.startswith("GRANT INSERT,SELECT ON TABLE app.items TO md5user"))
    assert stage_of[owner] < stage_of[grant]
    # the view grouping by kinds' primary key can only exist after the key
    view = next(s for s in flat if s.startswith("CREATE VIEW app.v_grouped"))
    pk = next(s for s in flat if "ADD CONSTRAINT kinds_pkey" in s)
    assert stage_of[pk] < stage_of[view]
    refresh = [s for s in flat if s.startswith("REFRESH")]
    assert refresh == ["REFRESH MATERIALIZED VIEW app.mv", "REFRESH MATERIALIZED VIEW app.mv2"]
    assert stage_of[refresh[0]] < stage_of[refresh[1]]


async def _owners_and_acls(cluster, db):
    conn = await asyncpg.connect(cluster.dsn(db))
    try:
        owners = {r[0] for r in await conn.fetch(
            "SELECT pg_get_userbyid(relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = relnamespace "
            "WHERE nspname IN ('app', 'Mixed Case') UNION SELECT pg_get_userbyid(nspowner) "
            "FROM pg_namespace WHERE nspname IN ('app', 'Mixed Case') UNION SELECT pg_get_userbyid(proowner) "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = pronamespace WHERE nspname = 'app' "
            "AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'i') "
            "UNION SELECT pg_get_userbyid(typowner) FROM pg_type t JOIN pg_namespace n "
            "ON n.oid = typnamespace WHERE nspname = 'app'")}
        acls = " ".join(str(r[0]) for r in await conn.fetch(
            "SELECT relacl FROM pg_class WHERE relacl IS NOT NULL UNION ALL "
            "SELECT attacl FROM pg_attribute WHERE attacl IS NOT NULL UNION ALL "
            "SELECT nspacl FROM pg_namespace WHERE nspacl IS NOT NULL UNION ALL "
            "SELECT defaclacl FROM pg_default_acl"))
        return owners, acls
    finally:
        await conn.close()


def test_missing_roles_give_objects_to_the_restoring_user(pg18, torture18):
    schema = asyncio.run(capture_db(pg18, torture18))
    asyncio.run(restore_db(schema, pg18, torture18, pg18, "sch_torture_roles",
                           existing_roles={"postgres", "scramuser"}, restoring_user="pwuser"))
    owners, acls = asyncio.run(_owners_and_acls(pg18, "sch_torture_roles"))
    assert "md5user" not in owners and "md5user" not in acls      # missing: dropped everywhere
    assert {"postgres", "scramuser", "pwuser"} <= owners           # md5user's objects -> pwuser
    assert "scramuser" in acls

    asyncio.run(restore_db(schema, pg18, torture18, pg18, "sch_torture_nogrants",
                           grants=False, restoring_user="pwuser"))
    owners, acls = asyncio.run(_owners_and_acls(pg18, "sch_torture_nogrants"))
    assert owners == {"pwuser"}
    assert "md5user" not in acls and "scramuser" not in acls


def test_objects_summary(pg18, torture18):
    schema = asyncio.run(capture_db(pg18, torture18))
    rows = {(r.schema_name, r.object_name, r.object_type): r for r in schema.objects_summary()}
    assert {t for _, _, t in rows} == {"schema", "table", "view", "sequence", "type", "function"}
    items = rows[("app", "items", "table")]
    assert items.create_statement.startswith("CREATE TABLE app.items (")
    assert "CREATE INDEX items_hash ON app.items USING hash (code)" in items.create_statement
    assert "GRANT INSERT,SELECT ON TABLE app.items TO md5user WITH GRANT OPTION;" in items.privileges
    assert "GRANT UPDATE (price) ON TABLE app.items TO scramuser;" in items.privileges
    assert items.owner == "postgres"
    assert rows[(None, "app", "schema")].privileges
    assert rows[("app", "mv", "view")].create_statement.startswith("CREATE MATERIALIZED VIEW app.mv")
    assert rows[("app", "sum2", "function")].create_statement.startswith("CREATE AGGREGATE app.sum2(integer)")
    assert ("app", "items_id_seq", "sequence") not in rows           # identity: part of its table


def test_public_schema_recreated_or_dropped(pg18):
    """A database whose `public` is not initdb's (recreated, or dropped) comes back that way."""
    cases = {"sch_public_re": "DROP SCHEMA public; CREATE SCHEMA public AUTHORIZATION md5user; "
                              "CREATE TABLE public.t (id int);",
             "sch_public_gone": "DROP SCHEMA public; CREATE SCHEMA other; CREATE TABLE other.t (id int);"}
    for db, sql in cases.items():
        load_sql(pg18, db, sql)
        schema = asyncio.run(capture_db(pg18, db))
        asyncio.run(restore_db(schema, pg18, db, pg18, db + "_r"))
        _same_dump(pg18, pg18, db, pg18, db + "_r")


def test_builtin_locale_database(pg18):
    """A database with the builtin locale provider (17+) is recreated with it."""
    pg18.psql('DROP DATABASE IF EXISTS sch_builtin WITH (FORCE)')
    pg18.psql("CREATE DATABASE sch_builtin TEMPLATE template0 ENCODING 'UTF8' "
              "LOCALE_PROVIDER builtin BUILTIN_LOCALE 'C.UTF-8' LOCALE 'C'")
    schema = asyncio.run(capture_db(pg18, "sch_builtin"))
    db = schema.database
    assert (db.locale_provider, db.locale, db.encoding) == ("builtin", "C.UTF-8", "UTF8")
    assert "LOCALE_PROVIDER = builtin" in db.create_statement("x")
    asyncio.run(restore_db(schema, pg18, "sch_builtin", pg18, "sch_builtin_r"))
    _same_dump(pg18, pg18, "sch_builtin", pg18, "sch_builtin_r", "--create")
