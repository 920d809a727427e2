"""A database dropped and re-created from a template under its name between two layers (docs/FORMAT.md
7.3): its tables are the template's pages and catalog rows, so a table keeps its OID, relfilenode
and pg_class row version, its whole identity; only the database's OID is new. A chunk updated in
place in the old database (same row count, its new tuples' xmins older than the layer's
snapshot) looks unchanged to the scan: the layer must not take the parent's files for it."""
from __future__ import annotations

import psycopg

from tests.support.layers import collection, read_state, table_entry, through, tip_manifest


def _sql(cluster, db: str, *statements: str):
    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:
        for s in statements:
            cur = conn.execute(s)
        return cur.fetchall() if cur.description else None


def test_a_database_recreated_from_its_template_is_copied_again(pgkeep, pg18):
    for db in ("recr_src", "recr_tmpl", "recr_r"):
        pg18.psql(f"DROP DATABASE IF EXISTS {db}")
    pg18.psql("CREATE DATABASE recr_tmpl")
    _sql(pg18, "recr_tmpl",
         "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, pad text) WITH (fillfactor = 90, autovacuum_enabled = off)",
         "INSERT INTO t SELECT g, 0, repeat('p', 40) FROM generate_series(1, 2000) g",
         "VACUUM FREEZE t")
    pg18.psql("CREATE DATABASE recr_src TEMPLATE recr_tmpl")
    _sql(pg18, "recr_src", "UPDATE t SET v = 1 WHERE id = 10")        # in place: page 0, same count
    coll = collection("recreated")
    try:
        through(pgkeep, f"BACKUP DATABASE recr_src INTO '{coll}'")
        full = tip_manifest(pgkeep, coll)
        ident = _sql(pg18, "recr_src", "SELECT oid, relfilenode, xmin::text FROM pg_class WHERE relname = 't'")
        pg18.psql("DROP DATABASE recr_src")
        pg18.psql("CREATE DATABASE recr_src TEMPLATE recr_tmpl")
        assert _sql(pg18, "recr_src", "SELECT oid, relfilenode, xmin::text FROM pg_class WHERE relname = 't'") == ident
        through(pgkeep, f"BACKUP DATABASE recr_src INTO LATEST IN '{coll}'")
        layer = tip_manifest(pgkeep, coll)
        assert table_entry(layer, "recr_src", "t")["identity"] == table_entry(full, "recr_src", "t")["identity"]
        through(pgkeep, f"RESTORE DATABASE recr_src FROM LATEST IN '{coll}' WITH new_db_name = 'recr_r'")
        assert read_state(pg18, "recr_r").diff(read_state(pg18, "recr_src")) == []
        assert layer["databases"][0]["oid"] != full["databases"][0]["oid"]
    finally:
        for db in ("recr_src", "recr_tmpl", "recr_r"):
            pg18.psql(f"DROP DATABASE IF EXISTS {db}")
