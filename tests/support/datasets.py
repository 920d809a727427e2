"""Sample databases for the tests and benchmarks: chinook and pagila, vendored under tests/data/
with their licences (chinook: MIT; pagila: the PostgreSQL licence), and
comparisons that tell two databases apart the way the issue asks (pg_dump --schema-only and
per-table ordered row hashes)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from proxy.pgcluster import PgCluster
from proxy.sql import split_statements

__all__ = ["DATA", "load_chinook", "load_pagila", "schema_dump", "row_hashes"]

DATA = Path(__file__).resolve().parents[1] / "data"


def _psql_file(cluster: PgCluster, db: str, sql: str) -> None:
    subprocess.run([cluster.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", cluster.dsn(db)],
                   input=sql, text=True, check=True, capture_output=True)


def load_chinook(cluster: PgCluster, db: str = "chinook") -> str:
    sql = (DATA / "chinook" / "Chinook_PostgreSql.sql").read_text()
    sql = sql.replace("DROP DATABASE IF EXISTS chinook;", f'DROP DATABASE IF EXISTS "{db}";')
    sql = sql.replace("CREATE DATABASE chinook;", f'CREATE DATABASE "{db}";')
    sql = sql.replace("\\c chinook;", f"\\c {db}")
    _psql_file(cluster, "postgres", sql)
    return db


def load_pagila(cluster: PgCluster, db: str = "pagila", rows: bool = True) -> str:
    """The pagila schema without pgvector (not in this PostgreSQL build), plus generated rows."""
    text = (DATA / "pagila" / "pagila-schema.sql").read_text()
    pgvector = re.compile(r"\bvector\b|film_embedding")  # not tsvector
    keep = [text[a:b] for a, b in split_statements(text)
            if not pgvector.search(text[a:b]) and not text[a:b].lstrip().startswith("\\")]
    cluster.psql(f'DROP DATABASE IF EXISTS "{db}"')
    cluster.psql(f'CREATE DATABASE "{db}"')
    _psql_file(cluster, db, ";\n".join(keep) + ";\n")
    if rows:
        _psql_file(cluster, db, """
            INSERT INTO language(name) SELECT 'lang ' || g FROM generate_series(1, 6) g;
            INSERT INTO category(name) SELECT 'cat ' || g FROM generate_series(1, 16) g;
            INSERT INTO actor(first_name, last_name) SELECT 'first' || g, 'last' || g FROM generate_series(1, 200) g;
            INSERT INTO country(country) SELECT 'country ' || g FROM generate_series(1, 50) g;
            INSERT INTO city(city, country_id) SELECT 'city ' || g, 1 + g % 50 FROM generate_series(1, 300) g;
            INSERT INTO address(address, district, city_id, phone, postal_code)
                SELECT g || ' Main St', 'district', 1 + g % 300, '555-' || g, lpad(g::text, 5, '0')
                FROM generate_series(1, 500) g;
            INSERT INTO film(title, description, release_year, language_id, rental_duration, rental_rate,
                             length, replacement_cost, rating)
                SELECT 'film ' || g, 'a film about ' || g, 2000 + g % 20, 1 + g % 6, 3, 4.99, 90 + g % 60,
                       19.99, 'PG' FROM generate_series(1, 300) g;
            INSERT INTO film_actor(actor_id, film_id) SELECT 1 + g % 200, 1 + g % 300 FROM generate_series(1, 600) g
                ON CONFLICT DO NOTHING;
        """)
    return db


_RESTRICT = re.compile(r"^\\(un)?restrict .*$", re.M)


def schema_dump(cluster: PgCluster, db: str, pg_dump: str | None = None) -> str:
    """pg_dump --schema-only, with the session-random \\restrict lines and the database's own
    name removed, so two databases with equal schemas give equal text."""
    out = subprocess.run([pg_dump or cluster.bin("pg_dump"), "--schema-only", cluster.dsn(db)],
                         check=True, capture_output=True, text=True).stdout
    out = _RESTRICT.sub("", out)
    out = re.sub(r"^-- Dumped from database version .*$", "", out, flags=re.M)
    return re.sub(rf"\b{re.escape(db)}\b", "<DB>", out)


def row_hashes(cluster: PgCluster, db: str) -> dict[str, tuple[int, str]]:
    """{schema.table: (rows, md5 of the rows' text in order)} for every table holding rows."""
    out = cluster.psql("""
        SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgkeep')
          AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1""", db).split()
    hashes = {}
    for table in out:
        rows, digest = cluster.psql(
            f"SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') "
            f"FROM {table} t", db).strip().split("|")
        hashes[table] = (int(rows), digest)
    return hashes
