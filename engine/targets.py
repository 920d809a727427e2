"""Resolution of BACKUP targets against the upstream's catalogs (engine.backup.check_backup uses
it to refuse a BACKUP before its job is created).

Names follow CockroachDB's rules mapped onto PostgreSQL: `t` is a table of the session's
database (search_path), `a.b` is schema a's table b in the session's database if schema a
exists there, else database a's public.b; `a.b.c` is database a, schema b, table c; `x.*` is
every table of schema x in the session's database if it exists, else of database x. A
partitioned table brings its partitions.
"""
from __future__ import annotations

from .errors import InvalidTarget, UndefinedObject
from .spec import BackupSpec, Connector, TableRef

__all__ = ["resolve_backup_tables", "table_name"]

_RELKINDS = ("r", "p", "v", "m", "S", "f")


def table_name(ref: TableRef) -> str:
    return ".".join(ref.parts) + (".*" if ref.star else "")


class UndefinedDatabase(UndefinedObject):
    sqlstate = "3D000"


def _place(ref: TableRef, session_db: str, schemas: set[str]) -> tuple[str, str | None, str | None]:
    """(database, schema, name) a name designates; None schema: the search_path's (with a name)
    or every user schema (without); None name: every relation of the schema."""
    parts = ref.parts
    if ref.star:
        if not parts:
            return session_db, "public", None
        if len(parts) == 1:
            return (session_db, parts[0], None) if parts[0] in schemas else (parts[0], None, None)
        return parts[0], parts[1], None
    if len(parts) == 1:
        return session_db, None, parts[0]
    if len(parts) == 2:
        return (session_db, parts[0], parts[1]) if parts[0] in schemas else (parts[0], "public", parts[1])
    return parts[0], parts[1], parts[2]


# OIDs of each (i, schema, name) lookup, partitions included, in one query.
_LOOKUP = """
WITH u AS (SELECT * FROM unnest($1::int[], $2::text[], $3::text[]) AS u(i, s, r)),
roots AS (
    SELECT u.i, (CASE WHEN u.s IS NULL THEN to_regclass(quote_ident(u.r))
                 ELSE to_regclass(quote_ident(u.s) || '.' || quote_ident(u.r)) END)::oid AS oid
    FROM u WHERE u.r IS NOT NULL
    UNION ALL
    SELECT u.i, c.oid FROM u
    JOIN pg_namespace n ON u.s IS NULL AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgkeep')
                           AND n.nspname NOT LIKE 'pg\\_%' OR n.nspname = u.s
    JOIN pg_class c ON c.relnamespace = n.oid
    WHERE u.r IS NULL AND c.relkind::text = ANY($4::text[]) AND NOT c.relispartition
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                    AND d.objid = c.oid AND d.deptype = 'e'))
SELECT i, oid FROM roots WHERE oid IS NOT NULL
UNION
SELECT roots.i, t.relid::oid FROM roots, LATERAL pg_partition_tree(roots.oid::regclass) t
WHERE roots.oid IS NOT NULL
"""


async def _lookup(conn, items: list[tuple[int, str | None, str | None]]) -> dict[int, set[int]]:
    rows = await conn.fetch(_LOOKUP, [i for i, _, _ in items], [s for _, s, _ in items],
                            [r for _, _, r in items], list(_RELKINDS))
    out: dict[int, set[int]] = {}
    for i, oid in rows:
        out.setdefault(i, set()).add(oid)
    return out


async def resolve_backup_tables(spec: BackupSpec, connector: Connector) -> list[tuple[str, set[int] | None]]:
    """[(database, relation OIDs or None for the whole database)], in target order. The first
    target that does not resolve raises (3D000 for a database, 42P01 for a table). A constant
    number of queries whatever the number of names: one per database named, and two more."""
    session_db = spec.session_database or "postgres"
    conn = await connector.connect(session_db)
    try:
        if spec.scope == "database":
            await _require_databases(conn, spec.databases)
            return [(db, None) for db in dict.fromkeys(spec.databases)]
        firsts = [r.parts[0] for r in spec.tables if len(r.parts) == (1 if r.star else 2)]
        schemas = {r[0] for r in await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[])", firsts)}
        places = [_place(ref, session_db, schemas) for ref in spec.tables]
        by_db: dict[str, list] = {}
        for i, (db, schema, name) in enumerate(places):
            by_db.setdefault(db, []).append((i, schema, name))
        present = await _databases(conn, list(by_db))
        found: dict[int, set[int]] = {}
        for db, items in by_db.items():
            if db == session_db:
                found.update(await _lookup(conn, items))
            elif db in present:
                other = await connector.connect(db)
                try:
                    found.update(await _lookup(other, items))
                finally:
                    await other.close()
    finally:
        await conn.close()
    groups: dict[str, set[int]] = {}
    for i, (ref, (db, _, _)) in enumerate(zip(spec.tables, places)):
        if db != session_db and db not in present:
            raise UndefinedDatabase(f'database "{db}" does not exist')
        if not found.get(i):
            raise InvalidTarget(f'table "{table_name(ref)}" does not exist')
        groups.setdefault(db, set()).update(found[i])
    return list(groups.items())


async def _databases(conn, names: list[str]) -> set[str]:
    """Those of `names` that exist and accept connections."""
    return {r[0] for r in await conn.fetch(
        "SELECT datname FROM pg_database WHERE datname = ANY($1::text[]) AND datallowconn", names)}


async def _require_databases(conn, names) -> None:
    present = await _databases(conn, list(names))
    for db in names:
        if db not in present:
            raise UndefinedDatabase(f'database "{db}" does not exist')
