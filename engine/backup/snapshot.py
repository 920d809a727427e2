"""One database's snapshot, with the tables it reads locked and unchanged since it was taken
(docs/FORMAT.md section 4.2 (a)), its schema captured under it."""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from .. import schema as schema_mod
from ..errors import EngineError
from ..parallel import close_quietly
from ..spec import Connector
from .sink import begin_snapshot
from .walsum import WalStart, confirm_start, wal_start

__all__ = ["Snapshot", "take_snapshot", "LockNotAvailable"]

_log = logging.getLogger("pgkeep.backup")


class LockNotAvailable(EngineError):
    sqlstate = "55P03"


# Every relation a whole-database backup reads: locked right after the snapshot is taken.
_LOCKABLE_SQL = """
SELECT c.oid, pg_catalog.format('%I.%I', n.nspname, c.relname)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema'
  AND n.nspname NOT LIKE 'pg\\_%'"""

# What must not change for a chunk read under one snapshot to be kept under another: the
# relation's name, its relfilenode (its pages), its pg_class row version (xmin: a drop and
# re-create, an ATTACH/DETACH or any ALTER gives a new one), access method and columns, and
# what turns its unchanged tuples into COPY output: the types its columns use, through arrays,
# domains, ranges and composites (each one's pg_type row version, an enum's labels, which ALTER
# TYPE ... RENAME VALUE changes, a composite's attributes, which ALTER TYPE ... ADD/DROP ATTRIBUTE
# changes; neither touches the table), as a digest. The types are walked once for all tables.
_IDENTITY_SQL = """
WITH RECURSIVE ty(root, oid) AS (
     SELECT DISTINCT x.atttypid, x.atttypid FROM pg_catalog.pg_attribute x
     WHERE x.attrelid = ANY($1::pg_catalog.oid[]) AND x.attnum > 0
     UNION
     SELECT ty.root, s.sub FROM ty JOIN pg_catalog.pg_type t ON t.oid = ty.oid CROSS JOIN LATERAL (
         SELECT t.typelem UNION ALL SELECT t.typbasetype
         UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid
         UNION ALL SELECT r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid = t.oid
         UNION ALL SELECT y.atttypid FROM pg_catalog.pg_attribute y
                   WHERE y.attrelid = t.typrelid AND y.attnum > 0) s(sub)
     WHERE s.sub <> 0),
sig(root, digest) AS MATERIALIZED (
     SELECT ty.root, pg_catalog.string_agg(pg_catalog.concat_ws(':', t.oid, t.xmin,
              (SELECT pg_catalog.string_agg(pg_catalog.format('%s=%L', e.oid, e.enumlabel), ';' ORDER BY e.oid)
               FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid),
              (SELECT pg_catalog.string_agg(pg_catalog.concat_ws('=', y.attnum, y.atttypid, y.atttypmod,
                                                                y.attisdropped), ';' ORDER BY y.attnum)
               FROM pg_catalog.pg_attribute y WHERE y.attrelid = t.typrelid AND y.attnum > 0)), ',' ORDER BY t.oid)
     FROM ty JOIN pg_catalog.pg_type t ON t.oid = ty.oid GROUP BY ty.root)
SELECT c.oid, pg_catalog.concat_ws('|', n.nspname, c.relname, c.relkind, c.relfilenode, c.xmin,
         a.amname, (SELECT pg_catalog.string_agg(pg_catalog.concat_ws(':', x.attnum, x.attname,
                        x.atttypid, x.atttypmod, x.attcollation, x.attisdropped), ',' ORDER BY x.attnum)
                    FROM pg_catalog.pg_attribute x WHERE x.attrelid = c.oid AND x.attnum > 0),
         (SELECT pg_catalog.md5(pg_catalog.string_agg(g.digest, ',' ORDER BY x.attnum))
          FROM pg_catalog.pg_attribute x JOIN sig g ON g.root = x.atttypid
          WHERE x.attrelid = c.oid AND x.attnum > 0)),
       a.amname = 'heap'
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am a ON a.oid = c.relam
WHERE c.oid = ANY($1::pg_catalog.oid[])"""

_SNAPSHOT_TRIES = 5


@dataclass
class Snapshot:
    coord: object                      # asyncpg connection inside the snapshot's transaction
    exported: str                      # pg_export_snapshot(), for the workers
    text: str                          # pg_current_snapshot()
    time: dt.datetime
    schema: "schema_mod.Schema"
    tables: list["schema_mod.TableInfo"]
    identities: dict[int, tuple[str, bool]]   # oid -> (identity, heap access method)
    pages: dict[int, int] = None              # oid -> heap pages, read after the snapshot was taken
    block: int = 8192
    wal_start: WalStart | None = None         # where its WAL starts, for the next layer (FORMAT.md 7.6)
    database_oid: int | None = None           # the database's OID (FORMAT.md 7.3)


async def _identities(conn, oids: list[int]) -> dict[int, tuple[str, bool]]:
    return {r[0]: (r[1], bool(r[2])) for r in await conn.fetch(_IDENTITY_SQL, oids)}


async def _lock_tables(coord, table_filter, large_objects: bool) -> None:
    """ACCESS SHARE on every relation read (as pg_dump): no TRUNCATE or rewrite until COMMIT."""
    names = [q for oid, q in await coord.fetch(_LOCKABLE_SQL)
             if table_filter is None or oid in table_filter]
    if large_objects and table_filter is None:
        names.append("pg_catalog.pg_largeobject")
    for i in range(0, len(names), 1000):
        await coord.execute(f"LOCK TABLE {', '.join(names[i:i + 1000])} IN ACCESS SHARE MODE")


async def take_snapshot(connector: Connector, dbname: str, table_filter) -> Snapshot:
    """A snapshot whose tables are locked and unchanged since it was taken: the identities
    read under the snapshot equal those a fresh transaction reads after the locks are granted
    (so nothing was truncated, rewritten, renamed or re-created in between). Retried when a
    table changed in that moment."""
    for attempt in range(_SNAPSHOT_TRIES):
        coord = await connector.connect(dbname)
        try:
            snap = await _snapshot_once(coord, connector, dbname, table_filter)
        except BaseException:
            await close_quietly(coord)
            raise
        if snap is not None:
            return snap
        await close_quietly(coord)
        _log.info("backup of %s: a table changed while its lock was taken; new snapshot", dbname)
    raise LockNotAvailable(f"the tables of database {dbname} kept changing while the backup "
                           f"took its snapshot ({_SNAPSHOT_TRIES} tries)",
                           hint="run the backup again when no DDL is running on them")


async def _snapshot_once(coord, connector: Connector, dbname: str, table_filter) -> Snapshot | None:
    start = await wal_start(coord)
    await begin_snapshot(coord)
    exported, text, when = await coord.fetchrow(
        "SELECT pg_export_snapshot(), pg_current_snapshot()::text, clock_timestamp()")
    start = confirm_start(start, text)
    has_lo = bool(await coord.fetchval("SELECT EXISTS (SELECT FROM pg_catalog.pg_largeobject_metadata)"))
    try:
        await _lock_tables(coord, table_filter, has_lo)
    except Exception as e:  # noqa: BLE001 - a table dropped or renamed since the snapshot
        if getattr(e, "sqlstate", None) in ("42P01", "3F000"):
            return None
        raise
    schema = await schema_mod.capture(coord)
    tables = [t for t in schema.tables if table_filter is None or t.oid in table_filter]
    if table_filter is None and schema.large_objects:   # their pages, as rows of the catalog
        tables.append(schema_mod.TableInfo(
            schema_mod.LARGEOBJECT_OID, "pg_catalog", "pg_largeobject", "L",
            ["loid", "pageno", "data"], binary_ok=True))
    oids = [t.oid for t in tables]
    seen = await _identities(coord, oids)
    check = await connector.connect(dbname)
    try:
        now = await _identities(check, oids)
    finally:
        await close_quietly(check)
    if seen != now:
        return None
    # Read after the snapshot was taken: every tuple the snapshot sees lies below (FORMAT.md 7.3).
    pages = {oid: int(n) for oid, n in await coord.fetch(
        "SELECT c.oid, pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::int "
        "FROM pg_catalog.pg_class c WHERE c.oid = ANY($1::pg_catalog.oid[])", oids)}
    block, dboid = await coord.fetchrow(
        "SELECT pg_catalog.current_setting('block_size')::int, oid::bigint FROM pg_catalog.pg_database "
        "WHERE datname = pg_catalog.current_database()")
    return Snapshot(coord, exported, text, when, schema, tables, seen, pages, int(block), start, int(dboid))

