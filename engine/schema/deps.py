"""Tie the captured objects together: dependencies from pg_depend, comments from pg_description,
sequence ownership (OWNED BY and identity), the sequences and functions each column default uses,
and the inline parts of tables and domains.

Dependencies are normalized to the objects a restore creates: a column or a column default stands
for its table, an array type for its element type, a row type for its relation, a multirange for
its range, a view's _RETURN rule for the view, an index that backs a constraint for the constraint,
an inline CHECK/NOT NULL for its table or domain, and any member of an extension for the extension.
Only normal (`n`) dependencies order objects; auto and internal ones describe ownership instead.
"""
from __future__ import annotations

from .model import Schema, SchemaObject

__all__ = ["link"]

_DIRECT = {"pg_type": "type", "pg_proc": "proc", "pg_namespace": "nsp", "pg_extension": "ext",
           "pg_collation": "coll", "pg_constraint": "con", "pg_trigger": "trg",
           "pg_policy": "pol", "pg_rewrite": "rule", "pg_statistic_ext": "stx",
           "pg_event_trigger": "evt", "pg_ts_dict": "tsdict", "pg_ts_config": "tscfg",
           "pg_cast": "cast", "pg_operator": "opr", "pg_publication": "pub",
           "pg_foreign_data_wrapper": "fdw", "pg_foreign_server": "srv", "pg_user_mapping": "um"}


class _Keys:
    def __init__(self, schema: Schema, rows: dict) -> None:
        self.objs = schema.by_key()
        self.member = {(d["cls"], d["objid"]): f"ext:{d['refobjid']}"
                       for d in rows["depends"] if d["deptype"] == "e"}
        self.alias = {a["alias"]: (a["cls"], a["target"]) for a in rows["type_aliases"]}
        self.composite = {o.details["typrelid"]: o.key for o in schema.objects
                          if o.kind == "composite"}
        self.attrdef: dict[int, tuple[SchemaObject, dict]] = {}
        for o in schema.objects:
            for col in o.details.get("columns", []) if o.key.startswith("rel:") else []:
                if col.get("attrdef"):
                    self.attrdef[col["attrdef"]] = (o, col)
        self.view_rule = {r["oid"]: r["ev_class"] for r in rows["rules"] if r["def"] is None}
        self.index_con = {o.oid: o.details["constraint"] for o in schema.objects
                          if o.kind == "index" and o.details.get("constraint")}

    def key(self, cls: str, oid: int) -> str | None:
        if (cls, oid) in self.member:
            return self.member[(cls, oid)]
        if cls == "pg_class":
            if oid in self.index_con:
                return self._con(self.index_con[oid])
            for k in (f"rel:{oid}", f"idx:{oid}"):
                if k in self.objs:
                    return k
            return self.composite.get(oid)
        if cls == "pg_type" and f"type:{oid}" not in self.objs and oid in self.alias:
            return self.key(*self.alias[oid])
        if cls == "pg_attrdef":
            hit = self.attrdef.get(oid)
            return hit[0].key if hit else None
        if cls == "pg_rewrite" and oid in self.view_rule:
            return self.key("pg_class", self.view_rule[oid])
        if cls == "pg_constraint":
            return self._con(oid)
        prefix = _DIRECT.get(cls)
        k = f"{prefix}:{oid}" if prefix else None
        return k if k in self.objs else None

    def _con(self, oid: int) -> str | None:
        con = self.objs.get(f"con:{oid}")
        if con is None:
            return None
        if con.details.get("inline"):
            owner = con.details.get("domain")
            return f"type:{owner}" if owner else f"rel:{con.table}"
        return con.key


def link(schema: Schema, rows: dict) -> None:
    keys = _Keys(schema, rows)
    objs = keys.objs
    _ownership(schema, rows, objs)
    for d in rows["depends"]:
        if d["deptype"] != "n":
            continue
        src, dst = keys.key(d["cls"], d["objid"]), keys.key(d["refcls"], d["refobjid"])
        if src is None or dst is None or src == dst:
            continue
        obj = objs[src]
        if dst not in obj.deps:
            obj.deps.append(dst)
        if d["cls"] == "pg_attrdef" and d["objid"] in keys.attrdef:
            _, col = keys.attrdef[d["objid"]]
            target = objs[dst]
            if target.kind == "sequence" and d["refobjid"] not in col["default_seqs"]:
                col["default_seqs"].append(d["refobjid"])
            elif target.kind in ("function", "procedure", "aggregate") \
                    and d["refobjid"] not in col["default_funcs"]:
                col["default_funcs"].append(d["refobjid"])
    _cast_users(schema)
    _comments(schema, rows, keys)
    _inline_parts(schema)


def _cast_users(schema: Schema) -> None:
    """An expression using a cast records a dependency on the cast's function, not on the cast;
    but its deparsed text (`x::integer`) needs the cast to parse again. Whatever depends on a
    cast's function depends on the cast too."""
    cast_of = {f"proc:{o.details['funcoid']}": o.key for o in schema.objects
               if o.kind == "cast" and o.details.get("funcoid")}
    if not cast_of:
        return
    for o in schema.objects:
        for dep in list(o.deps):
            cast = cast_of.get(dep)
            if cast is not None and cast != o.key and cast not in o.deps:
                o.deps.append(cast)


def _ownership(schema: Schema, rows: dict, objs: dict) -> None:
    names = {(c["attrelid"], c["attnum"]): c["attname"] for c in rows["columns"]}
    for d in rows["depends"]:
        if d["cls"] != "pg_class" or d["refcls"] != "pg_class" or d["deptype"] not in "ai":
            continue
        seq, table = objs.get(f"rel:{d['objid']}"), objs.get(f"rel:{d['refobjid']}")
        if seq is None or table is None or seq.kind != "sequence" or d["refobjsubid"] <= 0:
            continue
        column = names.get((d["refobjid"], d["refobjsubid"]))
        seq.details["owned_by"] = [table.oid, column]
        if d["deptype"] == "i":
            seq.details["identity"] = True
            seq.details["standalone_ddl"] = seq.ddl
            seq.ddl = []
            for col in table.details.get("columns", []):
                if col["name"] == column:
                    col["identity_seq"] = seq.oid


def _comments(schema: Schema, rows: dict, keys: _Keys) -> None:
    objs = keys.objs
    names = {(c["attrelid"], c["attnum"]): c["attname"] for c in rows["columns"]}
    for c in rows["comments"]:
        cls, oid, sub = c["cls"], c["objoid"], c["objsubid"]
        if cls == "pg_class":
            k = next((k for k in (f"rel:{oid}", f"idx:{oid}") if k in objs), None) \
                or keys.composite.get(oid)
        elif cls in _DIRECT:
            k = f"{_DIRECT[cls]}:{oid}"
        else:
            continue
        obj = objs.get(k)
        if obj is None:
            continue
        if sub == 0:
            obj.comment = c["description"]
            continue
        name = names.get((oid, sub))
        for col in obj.details.get("columns", []):
            if col["name"] == name:
                col["comment"] = c["description"]
        if obj.kind == "composite" and name:
            obj.details.setdefault("column_comments", {})[name] = c["description"]


def _inline_parts(schema: Schema) -> None:
    by_owner: dict[str, list[SchemaObject]] = {}
    for o in sorted(schema.objects, key=lambda o: o.oid):
        if o.kind == "constraint" and o.details.get("inline"):
            owner = f"type:{o.details['domain']}" if o.details.get("domain") else f"rel:{o.table}"
            by_owner.setdefault(owner, []).append(o)
    for o in schema.objects:
        parts = by_owner.get(o.key, [])
        if o.kind == "domain":
            ddl = o.details["base_ddl"]
            has_nn = any(p.details["contype"] == "n" for p in parts)
            if o.details.get("notnull") and not has_nn:
                ddl += " NOT NULL"
            for p in parts:
                body = "NOT NULL" if p.details["contype"] == "n" else p.details["definition"]
                ddl += f"\n    CONSTRAINT {p.details['q']} {body}"
            o.ddl = [ddl]
        elif o.kind in ("table", "foreign_table"):
            o.details["inline"] = [p.key for p in parts]
