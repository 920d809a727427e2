"""Render the restore-time text of captured objects: tables (whose parts a restore may drop),
ownership, GRANTs, comments, policies and default privileges.

Roles: with `existing_roles=None` every role is kept (SHOW BACKUP's view). Otherwise a role outside
`existing_roles` (built-in `pg_*` roles and `restoring_user` always exist) is dropped from ACLs and
policies, and an object whose owner is missing is owned by `restoring_user`, as CockroachDB does
(except event triggers, which must stay with the superuser restoring them); `grants=False` drops
every GRANT and gives every object to `restoring_user`. A policy whose roles are all missing is
left out rather than widened to PUBLIC.
"""
from __future__ import annotations

from .capture_rel import render_options
from .model import Schema, SchemaObject
from .sqltext import acl_statements, fdw_options, quote_ident, quote_literal

__all__ = ["Renderer", "ACL_KEYWORD", "settable_column_options"]

ACL_KEYWORD = {"table": "TABLE", "view": "TABLE", "matview": "TABLE", "sequence": "SEQUENCE",
               "function": "FUNCTION", "aggregate": "FUNCTION", "procedure": "PROCEDURE",
               "schema": "SCHEMA", "enum": "TYPE", "composite": "TYPE", "range": "TYPE",
               "domain": "DOMAIN", "foreign_table": "TABLE", "fdw": "FOREIGN DATA WRAPPER",
               "server": "FOREIGN SERVER"}
_DEFACL = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS",
           "L": "LARGE OBJECTS"}
_STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "m": "MAIN", "x": "EXTENDED"}
_COMPRESSION = {"p": "pglz", "l": "lz4"}
_CMD = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}
_OWNED_KINDS = {"schema", "collation", "enum", "composite", "range", "domain", "function",
                "procedure", "aggregate", "sequence", "table", "view", "matview", "statistics",
                "event_trigger", "tsdict", "tscfg", "operator", "publication", "foreign_table",
                "fdw", "server"}


class Renderer:
    def __init__(self, schema: Schema, *, existing_roles: set[str] | frozenset | None,
                 restoring_user: str, grants: bool = True) -> None:
        self.schema = schema
        self.objs = schema.by_key()
        self.existing = existing_roles
        self.restoring_user = restoring_user
        self.with_grants = grants

    # -- roles --
    def role_exists(self, role: str) -> bool:
        return (self.existing is None or role in self.existing or role == self.restoring_user
                or role.startswith("pg_"))

    def owner(self, obj_owner: str | None) -> str:
        if obj_owner == "pg_database_owner":
            return obj_owner    # whoever owns the database: the restoring user without grants
        if not self.with_grants or obj_owner is None or not self.role_exists(obj_owner):
            return self.restoring_user
        return obj_owner

    def role_mapper(self, old_owner: str | None):
        new = self.owner(old_owner)

        def map_role(role: str) -> str | None:
            if role == old_owner:
                return new
            return role if self.role_exists(role) else None
        return map_role

    # -- ownership, grants, comments --
    def owner_statements(self, o: SchemaObject) -> list[str]:
        if o.kind not in _OWNED_KINDS or o.owner is None or o.details.get("owned_by"):
            return []
        if o.kind in ("event_trigger", "fdw") and self.owner(o.owner) != o.owner:
            return []               # must stay with a superuser: the one restoring
        return [f"ALTER {o.sql_kind} {o.ident} OWNER TO {quote_ident(self.owner(o.owner))}"]

    def grants(self, o: SchemaObject) -> list[str]:
        if not self.with_grants:
            return []
        if o.kind == "default_acl":
            return self._default_acl(o)
        kw = ACL_KEYWORD.get(o.kind)
        if kw is None:
            return []
        owner, map_role = self.owner(o.owner), self.role_mapper(o.owner)
        out = acl_statements(kw, o.ident, o.acl, o.acl_base, owner, map_role)
        for col in o.details.get("columns", []) if o.kind in ("table", "foreign_table", "view", "matview") else []:
            if col.get("acl"):
                out += acl_statements("TABLE", o.ident, col["acl"], [], owner, map_role,
                                      columns=f" ({col['q']})")
        return out

    def _default_acl(self, o: SchemaObject) -> list[str]:
        if not self.role_exists(o.owner):
            return []
        prefix = f"ALTER DEFAULT PRIVILEGES FOR ROLE {quote_ident(o.owner)} "
        if o.schema is not None:
            prefix += f"IN SCHEMA {quote_ident(o.schema)} "
        return acl_statements(_DEFACL[o.details["objtype"]], "", o.acl, o.acl_base, o.owner,
                              lambda r: r if self.role_exists(r) else None, prefix=prefix)

    def comments(self, o: SchemaObject) -> list[str]:
        out = []
        if o.comment is not None:
            out.append(f"COMMENT ON {o.sql_kind} {o.ident} IS {quote_literal(o.comment)}")
        for col in o.details.get("columns", []) if o.key.startswith("rel:") else []:
            if col.get("comment") is not None:
                out.append(f"COMMENT ON COLUMN {o.ident}.{col['q']} IS {quote_literal(col['comment'])}")
        for name, text in (o.details.get("column_comments") or {}).items():
            out.append(f"COMMENT ON COLUMN {o.ident}.{quote_ident(name)} IS {quote_literal(text)}")
        return out

    # -- tables --
    def table(self, t: SchemaObject, *, drop_defaults: frozenset | set = frozenset(),
              standalone: bool = False) -> tuple[str, list[str]]:
        """(CREATE TABLE statement, the ALTER statements that complete it before data).
        `standalone`: the parents are not restored, so print every column and no INHERITS."""
        d = t.details
        partition = d["partbound"] is not None
        parents = [] if standalone or partition else d["parents"]
        v18 = self.schema.server_version_num >= 180000
        notnulls: dict[str, SchemaObject] = {}
        items, after = [], []
        for key in d.get("inline", []):
            con = self.objs[key]
            if con.details["contype"] == "n":
                notnulls[con.details["column"]] = con
        # a NOT VALID NOT NULL (18+) is added after the data; the column must not get another
        later_nn = {o.details["column"] for o in self._parts(t.oid)
                    if o.kind == "constraint" and o.details["contype"] == "n" and not o.details["inline"]}
        printed = {c["name"] for c in d["columns"] if c["local"] or not parents}
        typed = bool(d.get("of_type")) and not standalone       # CREATE TABLE t OF type
        # Columns whose NOT NULL the parents bring (18+: every inherited column, the rest coming
        # from captured constraints; before 18, attnotnull is all there is).
        parent_nn = set()
        if parents:
            parent_nn = ({c["name"] for c in d["columns"] if c["inherited"]} if v18
                         else self._parent_notnull(d["parents"]))
        for c in d["columns"]:
            if c["name"] not in printed:
                con = notnulls.get(c["name"])
                if con is not None:
                    after.append(f"ALTER TABLE ONLY {t.ident} ADD CONSTRAINT {con.details['q']} "
                                 f"NOT NULL {c['q']}" + (" NO INHERIT" if con.details["noinherit"] else ""))
                elif c["notnull"] and c["name"] not in parent_nn:
                    after.append(f"ALTER TABLE ONLY {t.ident} ALTER COLUMN {c['q']} SET NOT NULL")
                continue
            col = self._column(c, notnulls.get(c["name"]), c["name"] in parent_nn | later_nn,
                               c["name"] in drop_defaults, typed)
            if col:
                items.append(col)
        for key in d.get("inline", []):
            con = self.objs[key]
            if con.details["contype"] == "c":
                items.append(f"CONSTRAINT {con.details['q']} {con.details['definition']}")
        unlogged = "UNLOGGED " if d["persistence"] == "u" else ""
        if t.kind == "foreign_table":
            unlogged = "FOREIGN "
        body = ",\n    ".join(items)
        if typed:
            stmt = f"CREATE {unlogged}TABLE {t.ident} OF {d['of_type']}"
            stmt += f" (\n    {body}\n)" if items else ""
        else:
            stmt = f"CREATE {unlogged}TABLE {t.ident} (\n    {body}\n)" if items else \
                f"CREATE {unlogged}TABLE {t.ident} (\n)"
        if parents:
            stmt += "\nINHERITS (" + ", ".join(self.objs[f"rel:{p}"].ident for p in parents) + ")"
        if d["partkey"]:
            stmt += f"\nPARTITION BY {d['partkey']}"
        if d["am"]:
            stmt += f"\nUSING {quote_ident(d['am'])}"
        opts = ", ".join(x for x in (render_options(d["reloptions"]),
                                     render_options(d["toast_options"], "toast.")) if x)
        if opts:
            stmt += f"\nWITH ({opts})"
        if t.kind == "foreign_table":
            stmt += f"\nSERVER {d['server']}"
            if d["ftoptions"]:
                stmt += f"\nOPTIONS ({fdw_options(d['ftoptions'])})"
        for c in d["columns"]:
            col = f"ALTER TABLE ONLY {t.ident} ALTER COLUMN {c['q']}"
            if c.get("fdw_options"):
                after.append(f"{col} OPTIONS ({fdw_options(c['fdw_options'])})")
            if c["storage"]:
                after.append(f"{col} SET STORAGE {_STORAGE[c['storage']]}")
            if c["compression"] in _COMPRESSION:
                after.append(f"{col} SET COMPRESSION {_COMPRESSION[c['compression']]}")
            if c["stattarget"] is not None:
                after.append(f"{col} SET STATISTICS {c['stattarget']}")
            options = settable_column_options(c["options"])
            if options:
                after.append(f"{col} SET ({', '.join(options)})")
        return stmt, after

    def _parts(self, table: int) -> list[SchemaObject]:
        if not hasattr(self, "_by_table"):
            self._by_table: dict[int, list[SchemaObject]] = {}
            for o in self.schema.objects:
                if o.table is not None:
                    self._by_table.setdefault(o.table, []).append(o)
        return self._by_table.get(table, [])

    def _parent_notnull(self, parents: list[int]) -> set[str]:
        out = set()
        for p in parents:
            po = self.objs.get(f"rel:{p}")
            if po is not None:
                out |= {c["name"] for c in po.details["columns"] if c["notnull"]}
                out |= self._parent_notnull(po.details["parents"])
        return out

    def _column(self, c: dict, nn: SchemaObject | None, named_nn: bool, drop_default: bool,
                typed: bool = False) -> str | None:
        """`nn`: the column's captured NOT NULL constraint (18+); `named_nn`: a parent brings it;
        `typed`: a typed table's column (its type is the composite's): only its options, or None."""
        parts = [c["q"]] if typed else [c["q"], c["type"]]
        if c["collation"] and not typed:
            parts.append(f"COLLATE {c['collation']}")
        if c["generated"]:
            kind = "STORED" if c["generated"] == "s" else "VIRTUAL"
            parts.append(f"GENERATED ALWAYS AS ({c['default']}) {kind}")
        elif c["identity"]:
            seq = self.objs[f"rel:{c['identity_seq']}"]
            how = "ALWAYS" if c["identity"] == "a" else "BY DEFAULT"
            parts.append(f"GENERATED {how} AS IDENTITY (SEQUENCE NAME {seq.ident} "
                         f"{seq.details['options']})")
        elif c["default"] is not None and not drop_default:
            parts.append(f"DEFAULT {c['default']}")
        if nn is not None:
            parts.append(f"CONSTRAINT {nn.details['q']} NOT NULL"
                         + (" NO INHERIT" if nn.details["noinherit"] else ""))
        elif not named_nn and c["notnull"]:
            parts.append("NOT NULL")
        if typed:
            return f"{c['q']} WITH OPTIONS {' '.join(parts[1:])}" if len(parts) > 1 else None
        return " ".join(parts)

    # -- policies --
    def policy(self, p: SchemaObject) -> list[str]:
        d = p.details
        roles = [r for r in d["roles"] if r == "" or self.role_exists(r)]
        if d["roles"] and not roles:
            return []           # every role it applied to is missing: keep it out rather than widen it
        table = self.objs[f"rel:{p.table}"]
        sql = (f"CREATE POLICY {d['q']} ON {table.ident} AS "
               f"{'PERMISSIVE' if d['permissive'] else 'RESTRICTIVE'} FOR {_CMD[d['cmd']]}")
        if roles:
            sql += " TO " + ", ".join("PUBLIC" if r == "" else quote_ident(r) for r in roles)
        if d["qual"] is not None:
            sql += f" USING ({d['qual']})"
        if d["withcheck"] is not None:
            sql += f" WITH CHECK ({d['withcheck']})"
        return [sql]

    # -- SHOW BACKUP --
    def summary_ddl(self, o: SchemaObject) -> list[str]:
        if o.kind in ("table", "foreign_table"):
            stmt, after = self.table(o)
            out = [stmt, *after]
            for x in self._parts(o.oid):
                if x.kind in ("constraint", "index", "trigger", "rule", "statistics"):
                    out += x.ddl
                elif x.kind == "policy":
                    out += self.policy(x)
            return out
        if o.kind == "schema":
            return o.ddl or [f"CREATE SCHEMA IF NOT EXISTS {o.ident}"]
        return list(o.ddl)


# The attribute options ALTER TABLE ... ALTER COLUMN ... SET accepts. A server may keep others in
# pg_attribute.attoptions that no SET can write (Debian's PostgreSQL 15.20 stores a pg_attver
# key on every column): replaying them fails the restore, and they are the server's own business.
COLUMN_OPTIONS = frozenset({"n_distinct", "n_distinct_inherited"})


def settable_column_options(options: list[str]) -> list[str]:
    return [o for o in options or [] if o.partition("=")[0].strip().lower() in COLUMN_OPTIONS]

