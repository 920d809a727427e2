"""Who may run what: every privilege check of pgkeep's statements, one function per statement
family (CockroachDB's checkPrivilegesForBackup and its kin), over catalog.privileges.

The rules (docs/SQL.md, "Privileges"), either grant sufficing as in CockroachDB:
- cluster BACKUP: admin or SYSTEM BACKUP; database BACKUP: BACKUP on each database or SYSTEM
  BACKUP; table BACKUP: SELECT (upstream, has_table_privilege) or BACKUP on each table (on a
  partition, its root's count too) or SYSTEM BACKUP.
- cluster and database RESTORE: admin or SYSTEM RESTORE; table RESTORE: RESTORE on each
  database it writes into, or SYSTEM RESTORE.
- storage: pgkeep's disk, its cloud identity and custom endpoints (each scheme says which, in
  engine.storage.registry.implicit_access) need admin or SYSTEM EXTERNALIOIMPLICITACCESS;
  explicit credentials need nothing; external://name needs USAGE on the connection (its owner
  holds every privilege on it).
- jobs: a user sees and controls its own; VIEWJOB sees, CONTROLJOB sees and controls others',
  never an admin's unless the user is an admin too.
- external connections: SYSTEM EXTERNALCONNECTION creates, USAGE uses, UPDATE alters, DROP drops.

Every check fails closed: a catalog or upstream error while checking propagates as the
statement's error (catalog/privileges.py), and nothing is created before the checks pass.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from catalog import Privilege as P
from catalog import Target
from engine.spec import BackupSpec, RestoreSpec

from .. import errors
from .base import CommandContext

__all__ = ["authorize_backup", "authorize_restore", "authorize_storage", "require", "JobRights",
           "job_rights", "may_use_connection", "require_connection", "database_targets",
           "table_targets", "table_acl_rows"]


def _denied(message: str, hint: str | None = None) -> errors.InsufficientPrivilege:
    return errors.InsufficientPrivilege(message, hint=hint)


async def require(ctx: CommandContext, privilege: P, target: Target, message: str,
                  hint: str | None = None) -> None:
    """Admin or `privilege` on `target`, else 42501 `message`."""
    if not await ctx.app.catalog.privileges.allowed(ctx.user, privilege, target):
        raise _denied(message, hint)


async def _system(ctx: CommandContext, privilege: P) -> bool:
    priv = ctx.app.catalog.privileges
    return await priv.is_admin(ctx.user) or await priv.holds(ctx.user, privilege, Target.system())


async def authorize_storage(ctx: CommandContext, uri: str, what: str) -> None:
    """The storage rule, on the URI's text before it is opened: a refused user causes no I/O."""
    from urllib.parse import urlsplit
    from engine.storage.registry import implicit_access
    if urlsplit(uri).scheme.lower() == "external":
        from engine.external import parse_external
        name, _ = parse_external(uri)  # a malformed URI is 22023 before any lookup
        await require_connection(ctx, name, P.USAGE)
        return
    reason = implicit_access(uri)
    if reason is not None and not await _system(ctx, P.EXTERNALIOIMPLICITACCESS):
        raise _denied(
            f"only users with the admin role or the EXTERNALIOIMPLICITACCESS system privilege are "
            f"allowed to {what} storage with implicit access: {reason}",
            hint="give credentials in the URI, use an external connection you hold USAGE on, or "
                 "ask an admin for GRANT SYSTEM EXTERNALIOIMPLICITACCESS")


async def database_targets(ctx: CommandContext, names) -> dict[str, Target]:
    """Targets of the databases among `names` that exist (by OID, the grants' key)."""
    rows = await ctx.app.catalog.pool.fetch(
        "SELECT datname, oid FROM pg_catalog.pg_database WHERE datname = ANY($1::text[])", list(names))
    return {name: Target.database(oid, name) for name, oid in rows}


async def _require_databases(ctx: CommandContext, names, privilege: P) -> None:
    found = await database_targets(ctx, names)
    priv = ctx.app.catalog.privileges
    for name in dict.fromkeys(names):
        target = found.get(name)
        if target is None:
            continue        # unknown: the engine's check names it (3D000)
        if not await priv.holds(ctx.user, privilege, target):
            raise _denied(f"user {ctx.user} does not have {privilege.value} privilege on database {name}",
                          hint=f"an admin may GRANT {privilege.value} ON DATABASE {name} TO {ctx.user}, "
                               f"or GRANT SYSTEM {privilege.value}")


# Per relation: may the user SELECT it (or its partition root), its root, names, database OID.
_TABLES = """
SELECT c.oid, COALESCE(pg_catalog.pg_partition_root(c.oid), c.oid) AS root,
       pg_catalog.has_table_privilege($1::name, c.oid, 'SELECT')
       OR pg_catalog.has_table_privilege($1::name, COALESCE(pg_catalog.pg_partition_root(c.oid), c.oid),
                                         'SELECT') AS can_select,
       n.nspname, c.relname,
       (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) AS db
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = ANY($2::oid[]) ORDER BY n.nspname, c.relname
"""


async def _relations(ctx: CommandContext, spec: BackupSpec):
    """(database, rows of _TABLES) per database of a table-scope spec's targets."""
    from engine.targets import resolve_backup_tables
    connector = ctx.app.engine.connector
    out = []
    for db, oids in await resolve_backup_tables(spec, connector):
        conn = await connector.connect(db)
        try:
            out.append((db, await conn.fetch(_TABLES, ctx.user, list(oids or ()))))
        finally:
            await conn.close()
    return out


def _table(db: str, row) -> Target:
    oid, _, _, schema, name, db_oid = row
    return Target.table(db_oid, oid, json.dumps([db, schema, name]))


async def table_targets(ctx: CommandContext, patterns) -> list[Target]:
    """Targets of the tables GRANT/REVOKE/SHOW GRANTS ON TABLE names (BACKUP's name rules,
    partitions included); an unknown one is the engine's 42P01/3D000."""
    from engine.spec import TableRef
    spec = BackupSpec(job_id=0, user=ctx.user, session_database=ctx.database, scope="table",
                      collection="", tables=tuple(TableRef(tuple(p.parts), p.star) for p in patterns))
    return [_table(db, row) for db, rows in await _relations(ctx, spec) for row in rows]


async def table_acl_rows(ctx: CommandContext, targets: list[Target], query: str) -> list[tuple]:
    """Rows of `query` ($1: the relation OIDs) run in each target's database."""
    by_db: dict[str, list[int]] = {}
    for t in targets:
        by_db.setdefault(json.loads(t.display)[0], []).append(int(t.object.split("/")[1]))
    out = []
    for db, oids in by_db.items():
        conn = await ctx.app.engine.connector.connect(db)
        try:
            out += [tuple(r) for r in await conn.fetch(query, oids)]
        finally:
            await conn.close()
    return out


async def _require_tables(ctx: CommandContext, spec: BackupSpec) -> None:
    priv = ctx.app.catalog.privileges
    for db, rows in await _relations(ctx, spec):
        for row in rows:
            oid, root, can_select, schema, name, db_oid = row
            if can_select:
                continue
            if (await priv.holds(ctx.user, P.BACKUP, _table(db, row))
                    or await priv.holds(ctx.user, P.BACKUP, Target.table(db_oid, root, ""))):
                continue
            shown = f"{db}.{schema}.{name}"
            raise _denied(f"user {ctx.user} does not have SELECT or BACKUP privilege on relation {shown}",
                          hint=f"GRANT SELECT upstream, or GRANT BACKUP ON TABLE {shown} TO "
                               f"{ctx.user} through pgkeep")


async def authorize_backup(ctx: CommandContext, spec: BackupSpec) -> None:
    await authorize_storage(ctx, spec.collection, "BACKUP to")
    if await _system(ctx, P.BACKUP):
        return
    if spec.scope == "cluster":
        raise _denied(f"user {ctx.user} does not have BACKUP system privilege",
                      hint="a full cluster backup needs the admin role or GRANT SYSTEM BACKUP")
    if spec.scope == "database":
        await _require_databases(ctx, spec.databases, P.BACKUP)
    else:
        await _require_tables(ctx, spec)


async def authorize_restore(ctx: CommandContext, spec: RestoreSpec, store) -> None:
    """After authorize_storage. `store`: the collection, opened (a table restore without into_db
    reads which databases it writes into from the backup)."""
    if await _system(ctx, P.RESTORE):
        return
    if spec.scope != "table":
        what = "a full cluster" if spec.scope == "cluster" else "a database"
        raise _denied(f"user {ctx.user} does not have RESTORE system privilege",
                      hint=f"restoring {what} needs the admin role or GRANT SYSTEM RESTORE")
    from engine.restore import restore_target_databases
    names = await restore_target_databases(spec, store)
    await _require_databases(ctx, names, P.RESTORE)


# ---- jobs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobRights:
    """What ctx.user may do with jobs: its own always; others' with VIEWJOB (see) or CONTROLJOB
    (see and control), never an admin's unless it is an admin (`admins`: the admins among the
    owners of the jobs at hand)."""
    user: str
    admin: bool
    view: bool
    control: bool
    admins: frozenset[str]

    def may_see(self, job) -> bool:
        return job.user_name == self.user or self.admin or (self.view and job.user_name not in self.admins)

    def may_control(self, job) -> bool:
        return (job.user_name == self.user or self.admin
                or (self.control and job.user_name not in self.admins))


async def job_rights(ctx: CommandContext, jobs) -> JobRights:
    priv = ctx.app.catalog.privileges
    if await priv.is_admin(ctx.user):
        return JobRights(ctx.user, True, True, True, frozenset())
    control = await priv.holds(ctx.user, P.CONTROLJOB, Target.system())
    view = control or await priv.holds(ctx.user, P.VIEWJOB, Target.system())
    owners = {j.user_name for j in jobs if j.user_name != ctx.user} if view else set()
    return JobRights(ctx.user, False, view, control,
                     frozenset([u for u in owners if await priv.is_admin(u)]))


# ---- external connections -------------------------------------------------------------------

async def may_use_connection(ctx: CommandContext, conn, privilege: P = P.USAGE) -> bool:
    """Owner (holds every privilege on it), admin, or a grant of `privilege`."""
    if conn.owner == ctx.user:
        return True
    return await ctx.app.catalog.privileges.allowed(ctx.user, privilege, Target.connection(conn.name))


async def require_connection(ctx: CommandContext, name: str, privilege: P):
    """The connection `name` if ctx.user holds `privilege` on it. One the user holds nothing on
    is answered as an unknown name (its existence does not leak); one it may use but not
    `privilege` is 42501."""
    import catalog
    conn = await ctx.app.catalog.connections.get(name)
    if await may_use_connection(ctx, conn, privilege):
        return conn
    if privilege is not P.USAGE and await may_use_connection(ctx, conn, P.USAGE):
        raise _denied(f"user {ctx.user} does not have {privilege.value} privilege on external "
                      f"connection {name}")
    raise catalog.UndefinedConnection(f"external connection with name {name} does not exist",
                                      hint="CREATE EXTERNAL CONNECTION name AS 'uri' defines one")
