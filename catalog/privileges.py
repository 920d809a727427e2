"""pgkeep's privileges: who may back up, restore, see and control jobs, and use storage.

pgkeep runs every backup through its own upstream connection, so this module is the only thing
between an ordinary user and every row of the server. It fails closed: `allowed` answers True only
when a catalog query said so; any error while asking (the catalog unreadable, its table missing,
a role that vanished) propagates to the caller, which refuses the statement with it.

Grants are rows of `pgkeep.privileges` (migration 0005), keyed by OIDs: the database's, the
table's (with its database's) and the grantee role's, so grants follow renames and die with
their object's identity. Membership is PostgreSQL's own: a grant to a role reaches every role
that `pg_has_role(member, role, 'USAGE')` says may use its privileges (INHERIT honoured).

Admin is an upstream superuser or a member of the `admin_role` (pgkeep's --admin-role,
CockroachDB's `admin` by default); admins hold every privilege and may grant any.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

from .errors import CatalogError

__all__ = ["Privilege", "Target", "Grant", "PrivilegeStore", "UndefinedRole", "APPLICABLE",
           "PUBLIC", "PrivilegeCheckFailed"]

PUBLIC = 0  # the grantee OID that stands for PUBLIC
_log = logging.getLogger("pgkeep.privileges")


class UndefinedRole(CatalogError):
    sqlstate = "42704"


class PrivilegeCheckFailed(CatalogError):
    """The catalog could not answer a privilege question: a denial (fail closed)."""
    sqlstate = "42501"


def _fail_closed(func):
    """Any error while asking becomes a 42501 denial that says why (logged in full)."""
    import functools

    @functools.wraps(func)
    async def check(self, *args, **kwargs):
        try:
            return await func(self, *args, **kwargs)
        except CatalogError:
            raise
        except Exception as e:  # noqa: BLE001 - fail closed, whatever went wrong
            state = getattr(e, "sqlstate", None)
            _log.warning("privilege check failed, denying: %s: %s", type(e).__name__, e)
            raise PrivilegeCheckFailed(
                "permission denied: could not check privileges in pgkeep's catalog"
                + (f" (SQLSTATE {state})" if state else ""),
                hint="an admin should look at pgkeep's log and the pgkeep schema upstream") from None
    return check


class Privilege(str, enum.Enum):
    BACKUP = "BACKUP"
    RESTORE = "RESTORE"
    EXTERNALCONNECTION = "EXTERNALCONNECTION"
    EXTERNALIOIMPLICITACCESS = "EXTERNALIOIMPLICITACCESS"
    VIEWJOB = "VIEWJOB"
    CONTROLJOB = "CONTROLJOB"
    USAGE = "USAGE"
    UPDATE = "UPDATE"
    DROP = "DROP"
    ALL = "ALL"


P = Privilege
# The privileges pgkeep keeps per kind of object; ALL means all of them. Anything else a
# statement names on a database or table is PostgreSQL's own and goes upstream.
APPLICABLE: dict[str, tuple[Privilege, ...]] = {
    "system": (P.BACKUP, P.RESTORE, P.EXTERNALCONNECTION, P.EXTERNALIOIMPLICITACCESS, P.VIEWJOB,
               P.CONTROLJOB),
    "database": (P.BACKUP, P.RESTORE),
    "table": (P.BACKUP,),
    "external connection": (P.USAGE, P.UPDATE, P.DROP),
}


@dataclass(frozen=True)
class Target:
    """An object privileges are held on. `object` is its key (module docstring); `display` its
    name for messages and SHOW GRANTS."""
    kind: str
    object: str = ""
    display: str = ""

    @staticmethod
    def system() -> "Target":
        return Target("system")

    @staticmethod
    def database(oid: int, name: str) -> "Target":
        return Target("database", str(oid), name)

    @staticmethod
    def table(db_oid: int, rel_oid: int, name: str) -> "Target":
        return Target("table", f"{db_oid}/{rel_oid}", name)

    @staticmethod
    def connection(name: str) -> "Target":
        return Target("external connection", name, name)


@dataclass(frozen=True)
class Grant:
    kind: str
    object: str
    display: str
    grantee: str        # role name ('public' for PUBLIC)
    privilege: str
    grantable: bool


_HOLDS = """
SELECT EXISTS (
    SELECT 1 FROM pgkeep.privileges p
    WHERE p.kind = $2 AND p.object = $3 AND p.privilege = ANY($4::text[])
      AND (p.grantable OR NOT $5)
      AND (p.grantee = 0 OR EXISTS (
          SELECT 1 FROM pg_catalog.pg_roles r
          WHERE r.oid = p.grantee AND pg_catalog.pg_has_role($1::name, r.oid, 'USAGE'))))
"""

_ADMIN = """
SELECT r.rolsuper OR COALESCE((SELECT pg_catalog.pg_has_role(r.oid, a.oid, 'MEMBER')
                               FROM pg_catalog.pg_roles a WHERE a.rolname = $2), false)
FROM pg_catalog.pg_roles r WHERE r.rolname = $1
"""


class PrivilegeStore:
    def __init__(self, pool, admin_role: str = "admin") -> None:
        self._pool = pool
        self.admin_role = admin_role

    @_fail_closed
    async def is_admin(self, user: str) -> bool:
        """An upstream superuser or a member of the admin role. A user the upstream does not
        know is not an admin."""
        return bool(await self._pool.fetchval(_ADMIN, user, self.admin_role))

    @_fail_closed
    async def holds(self, user: str, privilege: Privilege, target: Target, *,
                    grantable: bool = False) -> bool:
        """Does `user` hold `privilege` (or ALL) on `target` through a grant to itself, to a role
        whose privileges it may use, or to PUBLIC? `grantable`: WITH GRANT OPTION too. Admin
        status is not considered here (`allowed` does)."""
        return bool(await self._pool.fetchval(
            _HOLDS, user, target.kind, target.object, [privilege.value, P.ALL.value], grantable))

    async def allowed(self, user: str, privilege: Privilege, target: Target) -> bool:
        """Admin, or holds the privilege. Errors propagate: the caller denies."""
        return await self.is_admin(user) or await self.holds(user, privilege, target)

    async def role_oids(self, names: Sequence[str]) -> list[int]:
        """The OIDs of `names`, in order; 'public' is PUBLIC. An unknown role is 42704."""
        rows = await self._pool.fetch(
            "SELECT u.n, r.oid FROM unnest($1::text[]) WITH ORDINALITY AS u(n, i) "
            "LEFT JOIN pg_catalog.pg_roles r ON r.rolname = u.n ORDER BY u.i", list(names))
        out = []
        for name, oid in rows:
            if name == "public":
                out.append(PUBLIC)
            elif oid is None:
                raise UndefinedRole(f'role/user "{name}" does not exist')
            else:
                out.append(oid)
        return out

    async def grant(self, grantor: str, target: Target, privileges: Iterable[Privilege],
                    grantees: Sequence[str], with_grant_option: bool) -> None:
        oids = await self.role_oids(grantees)
        privs = [p.value for p in privileges]
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO pgkeep.privileges(kind, object, grantee, privilege, grantable, grantor, "
                "display) SELECT $1, $2, g, p, $5, $6, $7 FROM unnest($3::oid[]) g, unnest($4::text[]) p "
                "ON CONFLICT (kind, object, grantee, privilege) DO UPDATE "
                "SET grantable = pgkeep.privileges.grantable OR excluded.grantable, display = excluded.display",
                target.kind, target.object, oids, privs, with_grant_option, grantor, target.display)

    async def revoke(self, target: Target, privileges: Iterable[Privilege], grantees: Sequence[str],
                     grant_option_for: bool) -> None:
        """Revoke; revoking one privilege from a holder of ALL leaves it the others (CockroachDB).
        GRANT OPTION FOR keeps the privileges and takes only the right to grant them."""
        oids = await self.role_oids(grantees)
        privs = set(privileges)
        named = set(APPLICABLE[target.kind]) | {P.ALL} if P.ALL in privs else privs
        async with self._pool.acquire() as conn, conn.transaction():
            if P.ALL not in privs:
                # A partial revoke from a holder of ALL: ALL becomes its parts first, so the
                # holder keeps the others (with the grant option it had).
                await conn.execute(
                    "INSERT INTO pgkeep.privileges(kind, object, grantee, privilege, grantable, "
                    "grantor, display) SELECT a.kind, a.object, a.grantee, p, a.grantable, a.grantor, "
                    "a.display FROM pgkeep.privileges a, unnest($4::text[]) p WHERE a.kind = $1 "
                    "AND a.object = $2 AND a.grantee = ANY($3::oid[]) AND a.privilege = 'ALL' "
                    "ON CONFLICT DO NOTHING", target.kind, target.object, oids,
                    [p.value for p in APPLICABLE[target.kind]])
                await conn.execute(
                    "DELETE FROM pgkeep.privileges WHERE kind = $1 AND object = $2 "
                    "AND grantee = ANY($3::oid[]) AND privilege = 'ALL'", target.kind, target.object, oids)
            verb = ("UPDATE pgkeep.privileges SET grantable = false" if grant_option_for
                    else "DELETE FROM pgkeep.privileges")
            await conn.execute(
                f"{verb} WHERE kind = $1 AND object = $2 AND grantee = ANY($3::oid[]) "
                "AND privilege = ANY($4::text[])", target.kind, target.object, oids,
                [p.value for p in named])

    async def list(self, kinds: Sequence[str], objects: Sequence[str] | None = None,
                   grantees: Sequence[str] | None = None) -> list[Grant]:
        """Grants of `kinds` (on `objects` when given; to `grantees` when given, by name),
        ordered by kind, object, grantee, privilege. Grantees that no longer exist are left out."""
        rows = await self._pool.fetch(
            "SELECT p.kind, p.object, p.display, CASE WHEN p.grantee = 0 THEN 'public' "
            "ELSE r.rolname END AS name, p.privilege, p.grantable FROM pgkeep.privileges p "
            "LEFT JOIN pg_catalog.pg_roles r ON r.oid = p.grantee "
            "WHERE p.kind = ANY($1::text[]) AND ($2::text[] IS NULL OR p.object = ANY($2::text[])) "
            "AND (p.grantee = 0 OR r.oid IS NOT NULL) "
            "AND ($3::text[] IS NULL OR (CASE WHEN p.grantee = 0 THEN 'public' ELSE r.rolname END) "
            "    = ANY($3::text[])) "
            "ORDER BY p.kind, p.display, name, p.privilege",
            list(kinds), None if objects is None else list(objects),
            None if grantees is None else list(grantees))
        return [Grant(*r) for r in rows]
