"""Support for the schema capture/replay tests: sample databases loaded into the session clusters,
a small restore driver (pre-data, COPY, post-data stages run in parallel, database_post), and
pg_dump comparison helpers."""
from __future__ import annotations

import asyncio
import io
import re
import subprocess
from pathlib import Path

import asyncpg
import pytest

from engine.schema import Schema, capture, plan_restore

DATA = Path(__file__).resolve().parents[1] / "data"   # vendored, with licences
CHINOOK = DATA / "chinook" / "Chinook_PostgreSql.sql"
PAGILA = DATA / "pagila" / "pagila-schema.sql"


# -- loading sample databases --
def create_db(cluster, name: str) -> None:
    cluster.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    cluster.psql(f'CREATE DATABASE "{name}"')


def load_file(cluster, db: str, path: Path, *, strip_create: bool = False) -> None:
    sql = path.read_text()
    if strip_create:        # Chinook drops, creates and connects to `chinook` itself
        sql = re.sub(r"^(DROP DATABASE|CREATE DATABASE|\\c ).*$", "", sql, flags=re.M)
    create_db(cluster, db)
    subprocess.run([cluster.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", cluster.dsn(db)],
                   input=sql, check=True, capture_output=True, text=True)


def load_sql(cluster, db: str, sql: str) -> None:
    create_db(cluster, db)
    subprocess.run([cluster.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", cluster.dsn(db)],
                   input=sql, check=True, capture_output=True, text=True)


# -- capture and restore --
async def capture_db(cluster, db: str) -> Schema:
    conn = await asyncpg.connect(cluster.dsn(db))
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            schema = await capture(conn)
    finally:
        await conn.close()
    return schema


async def roles(cluster) -> set[str]:
    conn = await asyncpg.connect(cluster.dsn())
    try:
        return {r[0] for r in await conn.fetch("SELECT rolname FROM pg_roles")}
    finally:
        await conn.close()


async def run_plan(plan, target, db: str, *, source=None, source_db: str | None = None,
                   workers: int = 3) -> None:
    """Run a RestorePlan as the engine would: pre_data on one connection, table data by COPY
    from the source database, each post_data stage spread over `workers` connections."""
    conn = await asyncpg.connect(target.dsn(db))
    try:
        for sql in plan.pre_data:
            await conn.execute(sql)
        if source is not None:
            src = await asyncpg.connect(source.dsn(source_db))
            try:
                for t in plan.tables:
                    fmt = "binary" if t.binary_ok else "text"
                    buf = io.BytesIO()
                    await src.copy_from_table(t.name, schema_name=t.schema, columns=t.columns,
                                              output=buf, format=fmt)
                    buf.seek(0)
                    await conn.copy_to_table(t.name, schema_name=t.schema, columns=t.columns,
                                             source=buf, format=fmt)
            finally:
                await src.close()
        pool = [conn] + [await asyncpg.connect(target.dsn(db)) for _ in range(workers - 1)]
        try:
            for c in pool[1:]:
                for sql in plan.session_setup:
                    await c.execute(sql)
            for stage in plan.post_data:
                async def run(c, stmts):
                    for sql in stmts:
                        await c.execute(sql)
                await asyncio.gather(*(run(c, stage[i::len(pool)]) for i, c in enumerate(pool)))
        finally:
            for c in pool[1:]:
                await c.close()
    finally:
        await conn.close()
    if plan.database_post:
        admin = await asyncpg.connect(target.dsn())
        try:
            for sql in plan.database_post:
                await admin.execute(sql)
        finally:
            await admin.close()


async def restore_db(schema: Schema, source, source_db: str, target, target_db: str, *,
                     data: bool = True, **options) -> None:
    """Whole-database restore into a fresh database created from the schema's DatabaseInfo."""
    admin = await asyncpg.connect(target.dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{target_db}" WITH (FORCE)')
        await admin.execute(schema.database.create_statement(target_db))
    finally:
        await admin.close()
    options.setdefault("existing_roles", await roles(target))
    plan = plan_restore(schema, target_database=target_db, **options)
    await run_plan(plan, target, target_db, source=source if data else None, source_db=source_db)


# -- comparing --
def pg_dump(dumper, cluster, db: str, *extra: str) -> str:
    out = subprocess.run([dumper.bin("pg_dump"), "--schema-only", *extra, cluster.dsn(db)],
                         check=True, capture_output=True, text=True).stdout
    out = re.sub(r"^\\(un)?restrict .*$", "", out, flags=re.M)            # random per dump
    out = re.sub(r"^-- Dumped from database version .*$", "", out, flags=re.M)
    return out


def normalize_db_name(dump: str, name: str) -> str:
    return re.sub(rf'(?<![\w"]){re.escape(name)}(?![\w"])|"{re.escape(name)}"', "DBNAME", dump)


async def table_hashes(cluster, db: str) -> dict[str, str]:
    """md5 of every table's rows in a stable order (by the text of the whole row)."""
    conn = await asyncpg.connect(cluster.dsn(db))
    try:
        rels = await conn.fetch(
            "SELECT format('%I.%I', n.nspname, c.relname) AS q FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE (c.relkind = 'r' OR c.relkind = 'm' AND c.relispopulated) "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgkeep') "
            "AND n.nspname !~ '^pg_toast'")
        out = {}
        for r in rels:
            out[r["q"]] = await conn.fetchval(
                f"SELECT md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) FROM {r['q']} x")
        return out
    finally:
        await conn.close()


# -- sample databases, loaded once per session --
PAGILA_ROWS = """
INSERT INTO language (name) VALUES ('English'), ('Deutsch');
INSERT INTO actor (first_name, last_name) SELECT 'First' || g, 'Last' || g FROM generate_series(1, 20) g;
INSERT INTO category (name) VALUES ('Action'), ('Drama'), ('Comedy');
INSERT INTO film (title, description, language_id, rating, special_features, fulltext, length)
SELECT 'Film ' || g, 'About ' || g, 1 + g % 2, 'PG-13', ARRAY['Trailers'], '', 90 + g
  FROM generate_series(1, 10) g;
INSERT INTO film_actor (actor_id, film_id) SELECT g, 1 + g % 10 FROM generate_series(1, 20) g;
INSERT INTO film_category (film_id, category_id) SELECT g, 1 + g % 3 FROM generate_series(1, 10) g;
INSERT INTO country (country) VALUES ('Utopia');
INSERT INTO city (city, country_id) VALUES ('Capital', 1);
"""


@pytest.fixture(scope="session")
def chinook18(pg18):
    load_file(pg18, "sch_chinook", CHINOOK, strip_create=True)
    return "sch_chinook"


@pytest.fixture(scope="session")
def chinook15(pg15):
    load_file(pg15, "sch_chinook15", CHINOOK, strip_create=True)
    return "sch_chinook15"


@pytest.fixture(scope="session")
def pagila18(pg18):
    load_file(pg18, "sch_pagila", PAGILA)
    subprocess.run([pg18.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", pg18.dsn("sch_pagila")],
                   input=PAGILA_ROWS, check=True, capture_output=True, text=True)
    return "sch_pagila"


@pytest.fixture(scope="session")
def torture18(pg18):
    from tests.engine.test_schema_torture import torture_sql
    load_sql(pg18, "sch_torture", torture_sql(18, "sch_torture"))
    return "sch_torture"


@pytest.fixture(scope="session")
def torture15(pg15):
    from tests.engine.test_schema_torture import torture_sql
    load_sql(pg15, "sch_torture15", torture_sql(15, "sch_torture15"))
    return "sch_torture15"
