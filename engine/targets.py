"""Resolution of BACKUP/RESTORE targets against the upstream's catalogs.

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


async def _database_exists(conn, name: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM pg_database WHERE datname = $1 AND datallowconn",
                                    name))


async def _schema_exists(conn, schema: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM pg_namespace WHERE nspname = $1", schema))


async def _relations(conn, schema: str | None, name: str | None) -> list[int]:
    """OIDs of the named relation (with its partitions), or of every relation in a schema."""
    if name is None:  # every relation of one schema, or (schema None) of every user schema
        rows = await conn.fetch(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE ($1::text IS NULL AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgkeep') "
            "       AND n.nspname NOT LIKE 'pg\\_%' OR n.nspname = $1) "
            "AND c.relkind = ANY($2::\"char\"[]) AND NOT c.relispartition "
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') "
            "ORDER BY c.oid", schema, list(_RELKINDS))
        roots = [r[0] for r in rows]
    else:
        if schema is None:
            oid = await conn.fetchval("SELECT to_regclass(quote_ident($1))::oid", name)
        else:
            oid = await conn.fetchval("SELECT to_regclass(quote_ident($1) || '.' || quote_ident($2))::oid",
                                      schema, name)
        if oid is None:
            return []
        roots = [oid]
    out: list[int] = []
    for oid in roots:
        out.extend(r[0] for r in await conn.fetch(
            "SELECT relid::oid FROM pg_partition_tree($1::oid::regclass) UNION SELECT $1::oid", oid))
    return sorted(set(out))


async def resolve_backup_tables(spec: BackupSpec, connector: Connector) -> list[tuple[str, set[int] | None]]:
    """[(database, relation OIDs or None for the whole database)], in target order."""
    conn = await connector.connect(spec.session_database or "postgres")
    try:
        if spec.scope == "database":
            for db in spec.databases:
                if not await _database_exists(conn, db):
                    raise UndefinedDatabase(f'database "{db}" does not exist')
            return [(db, None) for db in dict.fromkeys(spec.databases)]
        groups: dict[str, set[int]] = {}
        for ref in spec.tables:
            db, oids = await _resolve_ref(conn, connector, spec.session_database, ref)
            if not oids:
                raise InvalidTarget(f'table "{table_name(ref)}" does not exist')
            groups.setdefault(db, set()).update(oids)
        return list(groups.items())
    finally:
        await conn.close()


async def _resolve_ref(conn, connector, session_db: str, ref: TableRef) -> tuple[str, list[int]]:
    parts = ref.parts
    if ref.star:
        if not parts:
            return session_db, await _relations(conn, "public", None)
        if len(parts) == 1:
            if await _schema_exists(conn, parts[0]):
                return session_db, await _relations(conn, parts[0], None)
            return await _in_database(connector, conn, parts[0], None, None)
        return await _in_database(connector, conn, parts[0], parts[1], None)
    if len(parts) == 1:
        return session_db, await _relations(conn, None, parts[0])
    if len(parts) == 2:
        if await _schema_exists(conn, parts[0]):
            return session_db, await _relations(conn, parts[0], parts[1])
        return await _in_database(connector, conn, parts[0], "public", parts[1])
    return await _in_database(connector, conn, parts[0], parts[1], parts[2])


async def _in_database(connector, conn, db: str, schema: str | None, name: str | None):
    if not await _database_exists(conn, db):
        raise UndefinedDatabase(f'database "{db}" does not exist')
    other = await connector.connect(db)
    try:
        return db, await _relations(other, schema, name)
    finally:
        await other.close()
