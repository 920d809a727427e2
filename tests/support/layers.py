"""What the incremental-backup tests compare and inspect: the state a restore of a layer must
reproduce (rows of every table, sequences, large objects, pg_dump --schema-only), read straight
from PostgreSQL, and which chunks a layer copied rather than took from its parent, read from the
layer's manifest through pgkeep (SHOW BACKUP ... WITH as_json)."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import psycopg

from proxy.pgcluster import PgCluster
from tests.support.datasets import schema_dump

__all__ = ["State", "read_state", "collection", "through", "tip_manifest", "table_entry",
           "copied_chunks", "kept_chunks", "layer_end_times"]

_TABLES = """
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgkeep')
  AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1"""

_SEQUENCES = _TABLES.replace("c.relkind = 'r'", "c.relkind = 'S'")

_LARGE_OBJECTS = """
SELECT m.oid, coalesce(md5(string_agg(l.data, ''::bytea ORDER BY l.pageno)), '')
FROM pg_largeobject_metadata m LEFT JOIN pg_largeobject l ON l.loid = m.oid GROUP BY m.oid ORDER BY 1"""


@dataclass
class State:
    """What a restore of a database must reproduce."""
    rows: dict[str, tuple[int, str]]       # table -> (rows, md5 of its rows' text, sorted)
    sequences: dict[str, tuple]            # sequence -> (last_value, is_called)
    large_objects: dict[int, str]          # oid -> md5 of its bytes
    schema: str                            # pg_dump --schema-only, normalised

    def diff(self, other: "State") -> list[str]:
        """What differs, as readable lines (empty when equal)."""
        out = [f"rows of {t}: {self.rows.get(t)} != {other.rows.get(t)}"
               for t in sorted(set(self.rows) | set(other.rows)) if self.rows.get(t) != other.rows.get(t)]
        if self.sequences != other.sequences:
            out.append(f"sequences: {self.sequences} != {other.sequences}")
        if self.large_objects != other.large_objects:
            out.append(f"large objects: {self.large_objects} != {other.large_objects}")
        if self.schema != other.schema:
            out.append("schema (pg_dump --schema-only) differs")
        return out


def read_state(cluster: PgCluster, db: str, schema: bool = True) -> State:
    """The state of `db`, read straight from the upstream (one connection, one query per table)."""
    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:
        rows = {}
        for (table,) in conn.execute(_TABLES).fetchall():
            rows[table] = conn.execute(
                f"SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') "
                f"FROM {table} t").fetchone()
        seqs = {seq: conn.execute(f"SELECT last_value, is_called FROM {seq}").fetchone()
                for (seq,) in conn.execute(_SEQUENCES).fetchall()}
        los = dict(conn.execute(_LARGE_OBJECTS).fetchall())
    return State(rows, seqs, los, schema_dump(cluster, db) if schema else "")


def collection(name: str) -> str:
    return f"nodelocal://self/{name}-{uuid.uuid4().hex[:8]}"


def through(pgkeep, sql: str, db: str = "postgres", params=None):
    """Rows of `sql` run through pgkeep with psycopg (None for a statement without rows)."""
    with psycopg.connect(pgkeep.dsn(db), autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else None


def tip_manifest(pgkeep, coll: str) -> dict:
    """The manifest of the newest layer of the newest chain in `coll`, as JSON."""
    *_, (text,) = through(pgkeep, f"SHOW BACKUP FROM LATEST IN '{coll}' WITH as_json")  # the tip is last
    return json.loads(text) if isinstance(text, str) else text


def table_entry(manifest: dict, db: str, table: str) -> dict | None:
    """The manifest's entry of `schema.table` (unqualified: public) in database `db`."""
    schema, _, name = table.rpartition(".")
    for d in manifest["databases"]:
        if d["name"] == db:
            for t in d["tables"]:
                if (t["schema"], t["name"]) == (schema or "public", name):
                    return t
    return None


def _paths(entry: dict | None) -> set[str]:
    return {f["path"] for c in (entry or {}).get("chunks", []) for f in c["files"]}


def copied_chunks(parent: dict, layer: dict, db: str, table: str) -> list[tuple]:
    """The page ranges of `table` whose files `layer` wrote itself (it did not take them from
    `parent`, the manifest of the layer before it)."""
    old = _paths(table_entry(parent, db, table))
    entry = table_entry(layer, db, table)
    return [tuple(c["range"]) for c in entry["chunks"] if any(f["path"] not in old for f in c["files"])]


def kept_chunks(parent: dict, layer: dict, db: str, table: str, rows: bool = False) -> list[tuple]:
    """The page ranges of `table` for which `layer` names its parent's files (only those
    holding rows, with `rows`)."""
    old = _paths(table_entry(parent, db, table))
    entry = table_entry(layer, db, table)
    return [tuple(c["range"]) for c in entry["chunks"]
            if c["files"] and all(f["path"] in old for f in c["files"]) and (c["rows"] or not rows)]


def layer_end_times(pgkeep, coll: str, db: str = "postgres") -> list:
    """The end times of the layers of the newest chain in `coll`, oldest first."""
    return [r[0] for r in through(pgkeep, f"SELECT DISTINCT end_time FROM [SHOW BACKUP FROM LATEST IN '{coll}'] "
                                          f"ORDER BY end_time", db)]
