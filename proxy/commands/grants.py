"""GRANT / REVOKE of pgkeep's privileges, SHOW GRANTS and SHOW SYSTEM GRANTS.

pgkeep keeps CockroachDB's BACKUP/RESTORE privileges (catalog.privileges); PostgreSQL keeps its
own. A statement that names both (`GRANT BACKUP, CONNECT ON DATABASE d TO u`) sends PostgreSQL's
part upstream on the client's own connection (so PostgreSQL checks the client's right to grant
it) and then records pgkeep's part; a failure of either leaves pgkeep's part unrecorded.

Who may grant: an admin, the holder of the privilege WITH GRANT OPTION, and for an external
connection its owner. Revoking needs the same. Revoking does not cascade to what the revoked
role granted onwards (CockroachDB's rule; PostgreSQL's CASCADE has no equivalent here).
"""
from __future__ import annotations

import json
from typing import ClassVar

import catalog
from catalog import APPLICABLE_PRIVILEGES, Privilege, Target

from .. import errors, sql
from ..wire.messages import Column
from ..wire.values import OID
from . import authz
from .base import CommandContext, Result, literal_text

__all__ = ["COMMANDS"]

_KIND = {"DATABASE": "database", "TABLE": "table", "EXTERNAL CONNECTION": "external connection"}
_B = dict(type_oid=OID.BOOL, type_size=1)
_TAIL = [Column("grantee"), Column("privilege_type"), Column("is_grantable", **_B)]
_COLUMNS = {
    "system": _TAIL,
    "database": [Column("database_name"), *_TAIL],
    "table": [Column("database_name"), Column("schema_name"), Column("table_name"), *_TAIL],
    "external connection": [Column("connection_name"), *_TAIL],
    None: [Column("database_name"), Column("schema_name"), Column("object_name"),
           Column("object_type"), *_TAIL],
    "SCHEMA": [Column("database_name"), Column("schema_name"), *_TAIL],
    "TYPE": [Column("database_name"), Column("schema_name"), Column("type_name"), *_TAIL],
    "ROLE": [Column("role_name"), Column("member"), Column("is_admin", **_B)],
}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _role(name: str) -> str:
    return "PUBLIC" if name == "public" else _ident(name)


def _split(stmt, kind: str) -> tuple[list[Privilege], list[str]]:
    """(pgkeep's privileges, PostgreSQL's) of a GRANT/REVOKE ... ON; ALL belongs to both on a
    database or table. SYSTEM privileges pgkeep does not keep are 0A000."""
    ours, theirs = [], []
    keeps = set(APPLICABLE_PRIVILEGES[kind])
    for p in stmt.privileges:
        if p == "ALL":
            ours.append(Privilege.ALL)
            if kind in ("database", "table"):
                theirs.append(p)
        elif p in Privilege.__members__ and Privilege[p] in keeps:
            ours.append(Privilege[p])
        elif kind == "system":
            raise errors.FeatureNotSupported(
                f"pgkeep has no {p} system privilege",
                hint="pgkeep keeps " + ", ".join(x.value for x in APPLICABLE_PRIVILEGES["system"]))
        else:
            theirs.append(p)
    return ours, theirs


async def _targets(ctx: CommandContext, kind: str, names) -> list[Target]:
    if kind == "system":
        return [Target.system()]
    if kind == "database":
        found = await authz.database_targets(ctx, names)
        for n in names:
            if n not in found:
                raise errors.PgError(f'database "{n}" does not exist', sqlstate="3D000")
        return [found[n] for n in dict.fromkeys(names)]
    if kind == "table":
        return await authz.table_targets(ctx, names)
    out = []
    for expr in names:
        name = literal_text(expr, "the connection name")
        await authz.require_connection(ctx, name, Privilege.USAGE)   # unknown / invisible: 42704
        out.append(Target.connection(name))
    return out


async def _require_grant_option(ctx: CommandContext, targets: list[Target],
                                privileges: list[Privilege]) -> None:
    priv = ctx.app.catalog.privileges
    if await priv.is_admin(ctx.user):
        return
    for t in targets:
        if t.kind == "external connection":
            conn = await ctx.app.catalog.connections.get(t.object)
            if conn.owner == ctx.user:
                continue
        for p in privileges:
            if not await priv.holds(ctx.user, p, t, grantable=True):
                where = "system" if t.kind == "system" else f"{t.kind} {_shown_name(t)}"
                raise errors.InsufficientPrivilege(
                    f"user {ctx.user} missing WITH GRANT OPTION privilege on {p.value} ({where})",
                    hint="an admin, or a holder of the privilege WITH GRANT OPTION, may grant it")


def _shown_name(t: Target) -> str:
    if t.kind == "table":
        return ".".join(json.loads(t.display))
    return t.display


def _upstream_text(verb: str, stmt, theirs: list[str]) -> str:
    on = f"{stmt.on} " + ", ".join(
        _ident(n) if stmt.on == "DATABASE" else ".".join(_ident(p) for p in n.parts) + (".*" if n.star else "")
        for n in stmt.names)
    roles = ", ".join(_role(r) for r in stmt.grantees)
    if verb == "GRANT":
        return (f"GRANT {', '.join(theirs)} ON {on} TO {roles}"
                + (" WITH GRANT OPTION" if stmt.with_grant_option else ""))
    return (f"REVOKE {'GRANT OPTION FOR ' if stmt.grant_option_for else ''}{', '.join(theirs)} "
            f"ON {on} FROM {roles}")


class _Grant:
    statement_types: ClassVar = (sql.GrantSystem, sql.RevokeSystem, sql.GrantOn, sql.RevokeOn)

    def describe(self, stmt):
        return None

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        granting = isinstance(stmt, (sql.GrantSystem, sql.GrantOn))
        verb = "GRANT" if granting else "REVOKE"
        kind = "system" if isinstance(stmt, (sql.GrantSystem, sql.RevokeSystem)) else _KIND[stmt.on]
        if ctx.txn_status != b"I":
            raise errors.ActiveSqlTransaction(
                f"{verb} of pgkeep privileges cannot be used inside a multi-statement transaction",
                hint="pgkeep records them outside your transaction, so a ROLLBACK could not undo them")
        ours, theirs = _split(stmt, kind)
        targets = await _targets(ctx, kind, () if kind == "system" else stmt.names)
        await ctx.app.catalog.privileges.role_oids(stmt.grantees)        # 42704 before anything
        await _require_grant_option(ctx, targets, ours)
        if theirs:
            if kind == "table" and any(len(n.parts) > 2 for n in stmt.names):
                raise errors.FeatureNotSupported(
                    f"{verb} of PostgreSQL's privileges on a table of another database",
                    hint="grant them connected to that database")
            await ctx.client_query(_upstream_text(verb, stmt, theirs))
        store = ctx.app.catalog.privileges
        for t in targets:
            if granting:
                await store.grant(ctx.user, t, ours, stmt.grantees, stmt.with_grant_option)
            else:
                await store.revoke(t, ours, stmt.grantees, stmt.grant_option_for)
        return Result(tag=verb)


def _grant_row(g: catalog.Grant, kind: str | None, db_names: dict[str, str]) -> tuple:
    tail = (g.grantee, g.privilege, g.grantable)
    if g.kind == "table":
        db, schema, table = json.loads(g.display)
        db = db_names.get(g.object.split("/")[0], db)
        place = (db, schema, table)
    elif g.kind == "database":
        place = (db_names.get(g.object, g.display), None, None)
    else:
        place = (None, None, g.display)
    if kind is None:
        return (*place, g.kind.replace(" ", "_"), *tail)
    if kind == "table":
        return (*place, *tail)
    if kind == "database":
        return (place[0], *tail)
    return (g.display, *tail)


# PostgreSQL's own privileges beside pgkeep's (aclexplode of the ACLs, defaults included).
_DB_ACL = """
SELECT d.datname, NULL, NULL, 'database', COALESCE(r.rolname, 'public'), a.privilege_type, a.is_grantable
FROM pg_catalog.pg_database d,
     LATERAL pg_catalog.aclexplode(COALESCE(d.datacl, pg_catalog.acldefault('d', d.datdba))) a
LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
WHERE d.datname = ANY($1::text[]) ORDER BY 1, 5, 6
"""
_TABLE_ACL = """
SELECT current_database(), n.nspname, c.relname, 'table', COALESCE(r.rolname, 'public'),
       a.privilege_type, a.is_grantable
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
     LATERAL pg_catalog.aclexplode(COALESCE(c.relacl, pg_catalog.acldefault('r', c.relowner))) a
LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
WHERE c.oid = ANY($1::oid[]) ORDER BY 2, 3, 5, 6
"""


class _ShowGrants:
    statement_types: ClassVar = (sql.ShowGrants, sql.ShowSystemGrants)

    def describe(self, stmt):
        if isinstance(stmt, sql.ShowSystemGrants):
            return _COLUMNS["system"]
        if stmt.on in _UPSTREAM_ONLY:
            return _COLUMNS[stmt.on]
        return _COLUMNS.get(_KIND.get(stmt.on) if stmt.on else None, _COLUMNS[None])

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        store = ctx.app.catalog.privileges
        grantees = list(stmt.grantees) or None
        if isinstance(stmt, sql.ShowSystemGrants):
            grants = await store.list(["system"], grantees=grantees)
            return Result(_COLUMNS["system"], [(g.grantee, g.privilege, g.grantable) for g in grants])
        if stmt.on in _UPSTREAM_ONLY:
            return Result(_COLUMNS[stmt.on], await _upstream_only(ctx, stmt))
        kind = _KIND.get(stmt.on) if stmt.on else None
        db_names = {str(oid): name for name, oid in await ctx.app.catalog.pool.fetch(
            "SELECT datname, oid FROM pg_catalog.pg_database")}
        upstream: list[tuple] = []
        if kind is None:
            grants = await store.list(["database", "table", "external connection"], grantees=grantees)
            grants = [g for g in grants if g.kind != "external connection"
                      or await _usable(ctx, g.object)]
            upstream = [tuple(r) for r in await ctx.app.catalog.pool.fetch(_DB_ACL, [ctx.database])]
        else:
            targets = await _targets(ctx, kind, stmt.names)
            grants = await store.list([kind], objects=[t.object for t in targets], grantees=grantees)
            if kind == "database":
                upstream = [tuple(r) for r in await ctx.app.catalog.pool.fetch(
                    _DB_ACL, [t.display for t in targets])]
            elif kind == "table":
                upstream = await authz.table_acl_rows(ctx, targets, _TABLE_ACL)
        if grantees:
            upstream = [r for r in upstream if r[4] in grantees]
        rows = [_grant_row(g, kind, db_names) for g in grants]
        shaped = []
        for r in upstream:      # (db, schema, object, type, grantee, privilege, grantable)
            tail = r[4:]
            shaped.append(r if kind is None else (r[0], *tail) if kind == "database" else
                          (r[0], r[1], r[2], *tail))
        return Result(_COLUMNS[kind], shaped + rows)


# Kinds only PostgreSQL has privileges on: its ACLs (membership for ROLE), read in the session's
# database. $1: names (None: all), $2: grantees or members (None: all).
_UPSTREAM_ONLY = {
    "SCHEMA": """
SELECT current_database(), n.nspname, COALESCE(r.rolname, 'public'), a.privilege_type, a.is_grantable
FROM pg_catalog.pg_namespace n,
     LATERAL pg_catalog.aclexplode(COALESCE(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) a
LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
WHERE ($1::text[] IS NULL OR n.nspname = ANY($1::text[]))
  AND ($2::text[] IS NULL OR COALESCE(r.rolname, 'public') = ANY($2::text[]))
  AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT IN ('information_schema', 'pgkeep')
ORDER BY 2, 3, 4""",
    "TYPE": """
SELECT current_database(), n.nspname, t.typname, COALESCE(r.rolname, 'public'), a.privilege_type,
       a.is_grantable
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace,
     LATERAL pg_catalog.aclexplode(COALESCE(t.typacl, pg_catalog.acldefault('T', t.typowner))) a
LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
WHERE ($1::text[] IS NULL OR t.typname = ANY($1::text[]) OR pg_catalog.format('%s.%s', n.nspname, t.typname) = ANY($1::text[]))
  AND ($2::text[] IS NULL OR COALESCE(r.rolname, 'public') = ANY($2::text[]))
  AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT IN ('information_schema', 'pgkeep')
  AND t.typtype IN ('b', 'c', 'd', 'e', 'r', 'm') AND t.typrelid = 0 AND t.typelem = 0
ORDER BY 2, 3, 4, 5""",
    "ROLE": """
SELECT g.rolname, m.rolname, a.admin_option
FROM pg_catalog.pg_auth_members a JOIN pg_catalog.pg_roles g ON g.oid = a.roleid
JOIN pg_catalog.pg_roles m ON m.oid = a.member
WHERE ($1::text[] IS NULL OR g.rolname = ANY($1::text[]))
  AND ($2::text[] IS NULL OR m.rolname = ANY($2::text[]))
ORDER BY 1, 2""",
}


async def _upstream_only(ctx: CommandContext, stmt) -> list[tuple]:
    names = None
    if stmt.names:
        names = [n if isinstance(n, str) else ".".join(n) for n in stmt.names]
        if stmt.on == "SCHEMA":   # `db.schema` names a schema of the session's database only
            names = [n.rsplit(".", 1)[-1] for n in names]
    conn = await ctx.app.engine.connector.connect(ctx.database)
    try:
        rows = await conn.fetch(_UPSTREAM_ONLY[stmt.on], names, list(stmt.grantees) or None)
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


async def _usable(ctx: CommandContext, name: str) -> bool:
    try:
        await authz.require_connection(ctx, name, Privilege.USAGE)
        return True
    except catalog.UndefinedConnection:
        return False


COMMANDS = (_Grant(), _ShowGrants())
