"""Which objects a restore creates, and the dependency errors of a table restore.

A whole-database restore takes everything. A table restore (a set of relation OIDs: tables, views,
materialized views, sequences) takes those relations, the partitions of a partitioned table, each
table's constraints, indexes, triggers, policies, rules and statistics objects, the sequences the
tables own (OWNED BY and identity), and the types, collations and extensions they need (created when
missing, reused when compatible). It never takes functions or schemas: the schema must exist in the
target, and a column default calling a user function is an error unless `skip_missing_udfs`.

Errors (MissingDependency, SQLSTATE 42P01), in CockroachDB's words, N being the OID in the backup:
  cannot restore table "t" without referenced table N (or "skip_missing_foreign_keys" option)
  cannot restore table "t" without referenced sequence N (or "skip_missing_sequences" option)
  cannot restore table "t" without referenced function N (or "skip_missing_udfs" option)
  cannot restore sequence "s" without referenced owner table N (or "skip_missing_sequence_owners" option)
  cannot restore view "v" without restoring referenced table N (or "skip_missing_views" option)
  cannot restore view "v" without restoring referenced function N (or "skip_missing_views" option)
With the option: the foreign key is left out; the default is left out; the sequence is restored
without OWNED BY; the view (and any view built on it) is left out. With `skip_missing_udfs`, triggers
calling user functions are left out too (without it they are kept and need the function in the
target database, as CHECK constraints and index expressions always do).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import MissingDependency
from .model import Schema, SchemaObject

__all__ = ["Selection", "select"]

_SUBOBJECTS = {"constraint", "index", "trigger", "policy", "rule", "statistics"}
_ROUTINES = ("function", "procedure", "aggregate")
_TABLES = ("table", "foreign_table")


@dataclass
class Selection:
    whole: bool
    keys: set[str]
    drop_defaults: dict[int, set[str]] = field(default_factory=dict)
    drop_owned_by: set[str] = field(default_factory=set)
    standalone: set[int] = field(default_factory=set)


def _err(what: str, name: str, dep: str, oid: int, option: str) -> MissingDependency:
    return MissingDependency(f'cannot restore {what} "{name}" without {dep} {oid} (or "{option}" option)')


def select(schema: Schema, tables: set[int] | None, *, skip_missing_foreign_keys: bool,
           skip_missing_sequences: bool, skip_missing_sequence_owners: bool,
           skip_missing_views: bool, skip_missing_udfs: bool) -> Selection:
    objs = schema.by_key()
    if tables is None:
        return Selection(whole=True, keys=set(objs))
    sel = Selection(whole=False, keys=set())
    children: dict[int, list[SchemaObject]] = {}
    for o in schema.objects:
        if o.kind in _TABLES and o.details["partbound"] is not None:
            for p in o.details["parents"]:
                children.setdefault(p, []).append(o)
    rels: set[int] = set()

    def add(o: SchemaObject) -> None:
        rels.add(o.oid)
        for child in children.get(o.oid, []):
            add(child)

    named = [objs[f"rel:{oid}"] for oid in sorted(tables) if f"rel:{oid}" in objs]
    for o in named:
        add(o)
    keys = sel.keys
    keys |= {f"rel:{oid}" for oid in rels}
    for o in schema.objects:
        if o.kind == "sequence" and o.details.get("owned_by"):
            owner = o.details["owned_by"][0]
            if owner in rels:
                keys.add(o.key)
            elif o.oid in rels:
                if not skip_missing_sequence_owners:
                    raise _err("sequence", o.name, "referenced owner table", owner,
                               "skip_missing_sequence_owners")
                sel.drop_owned_by.add(o.key)
        elif o.table in rels and o.kind in _SUBOBJECTS:
            keys.add(o.key)
    for o in schema.objects:
        if o.kind in _TABLES and o.oid in rels:
            if any(p not in rels for p in o.details["parents"]):
                sel.standalone.add(o.oid)
            _check_defaults(o, keys, sel, skip_missing_sequences, skip_missing_udfs)
        elif o.key in keys and o.kind == "constraint" and o.details.get("confrelid") \
                and o.details["confrelid"] not in rels:
            if not skip_missing_foreign_keys:
                raise _err("table", objs[f"rel:{o.table}"].name, "referenced table",
                           o.details["confrelid"], "skip_missing_foreign_keys")
            keys.discard(o.key)
        elif o.key in keys and o.kind == "trigger" and skip_missing_udfs \
                and objs.get(f"proc:{o.details['function']}") is not None:
            keys.discard(o.key)
    _check_views(named, keys, objs, skip_missing_views)
    _needed_types(keys, objs)
    return sel


def _check_defaults(t: SchemaObject, keys: set[str], sel: Selection, skip_seq: bool,
                    skip_udf: bool) -> None:
    for col in t.details["columns"]:
        for seq in col["default_seqs"]:
            if f"rel:{seq}" not in keys:
                if not skip_seq:
                    raise _err("table", t.name, "referenced sequence", seq, "skip_missing_sequences")
                sel.drop_defaults.setdefault(t.oid, set()).add(col["name"])
        for fn in col["default_funcs"]:
            if col["name"] not in sel.drop_defaults.get(t.oid, ()):
                if not skip_udf:
                    raise _err("table", t.name, "referenced function", fn, "skip_missing_udfs")
                sel.drop_defaults.setdefault(t.oid, set()).add(col["name"])


def _check_views(named: list[SchemaObject], keys: set[str], objs: dict, skip: bool) -> None:
    views = [o for o in named if o.kind in ("view", "matview")]
    changed = True
    while changed:
        changed = False
        for v in views:
            if v.key not in keys:
                continue
            for dep in v.deps:
                target = objs.get(dep)
                missing_rel = dep.startswith("rel:") and dep not in keys
                missing_fn = target is not None and target.kind in _ROUTINES
                if not (missing_rel or missing_fn):
                    continue
                if not skip:
                    what = "referenced function" if missing_fn else "referenced table"
                    raise _err("view", v.name, f"restoring {what}", target.oid if target else 0,
                               "skip_missing_views")
                keys.discard(v.key)
                changed = True
                break


def _needed_types(keys: set[str], objs: dict) -> None:
    todo = [k for k in keys]
    seen = set(keys)
    while todo:
        o = objs.get(todo.pop())
        if o is None:
            continue
        for dep in o.deps:
            if dep in seen or not dep.startswith(("type:", "coll:", "ext:")):
                continue
            seen.add(dep)
            keys.add(dep)
            todo.append(dep)
