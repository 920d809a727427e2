"""Turn a captured schema into the ordered statements of a restore.

Contract of the `RestorePlan`:
  session_setup  statements every connection that runs any part of the plan runs first
                 (search_path '' so that names resolve as at capture, check_function_bodies off,
                 as pg_dump does); `pre_data` starts with them too.
  pre_data       run in order on one connection, before any data: schemas, extensions,
                 collations, types, functions, sequences, tables (columns, defaults, identity and
                 generated columns, NOT NULL and validated CHECK constraints, INHERITS, partition
                 key), partitions attached, OWNED BY, views, materialized views WITH NO DATA.
  tables         the tables whose rows are to be loaded.
  post_data      stages run one after another; statements within a stage are independent and may
                 run in parallel on separate connections: they never need each other, never touch
                 the same object's catalog row twice (GRANTs on one object are spread over stages)
                 and foreign keys of one stage share no table (so they cannot deadlock). Roughly:
                 [indexes, PRIMARY KEY/UNIQUE/EXCLUDE] [index partitions attached] [FOREIGN KEYs,
                 NOT VALID constraints] [sequence values, triggers, policies, RLS, rules,
                 statistics, CLUSTER, REPLICA IDENTITY, comments, owners] [GRANTs, default
                 privileges, large objects' owners, GRANTs and comments] [REFRESH MATERIALIZED
                 VIEW, in dependency order] [event triggers, last so that they do not fire on
                 the restore's own DDL]. A view that needs a primary key (GROUP BY on it) moves
                 into the stages, after the key.
  event_stages   how many of the last post_data stages create event triggers: a restore runs no
                 DDL of its own after it has started them.
  stage_kinds    one per post_data stage, what it holds: "indexes", "attach", "constraints",
                 "final", "grants", "refresh", "event" (a job's running_status names it).
  database_post  statements naming the database `target_database` (owner, COMMENT, GRANT,
                 CONNECTION LIMIT, ALTER DATABASE/ROLE ... SET), whole-database restores only.
                 They follow the database's OID through a rename: a restore runs them on its
                 temporary database before renaming it, so the rename is its last step.

Every statement of the plan has been checked by `sqltext.one_statement`: exactly one statement,
of a node type its object may have (XX001 otherwise, naming the object); numbers spliced into
statements (sequence values, large object OIDs) are integers.

A whole-database restore expects a database created by `DatabaseInfo.create_statement` (from
template0), i.e. holding only the `public` schema. A table restore creates nothing that exists
outside its tables except types, collations and extensions, which it reuses when present (types
only when compatible: SQLSTATE 42710 otherwise) and requires every schema to exist (SQLSTATE 3F000:
`a schema named "s" needs to exist to restore table "t"`); both checks run inside the target
database as the first pre_data statements (DO blocks). Dependency errors are raised here
(see `select`).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from .model import Schema, SchemaObject, TableInfo
from .queries import type_signature
from .render import Renderer
from .select import Selection, select
from .sqltext import (ALTER_TABLE, COMMENT, DDL_KINDS, GRANT, OWNER, acl_statements, dollar_quoted,
                      one_statement, quote_ident, quote_literal)

__all__ = ["RestorePlan", "plan_restore", "check_statements", "SESSION_SETUP"]

SESSION_SETUP = ["SELECT pg_catalog.set_config('search_path', '', false)",
                 "SET check_function_bodies = false", "SET client_min_messages = warning",
                 "SET xmloption = content"]
PRE, INDEX, ATTACH, FKEY, FINAL, GRANTS, REFRESH, EVENT = -1, 0, 1, 2, 3, 4, 5, 6
_KINDS = ("indexes", "attach", "constraints", "final", "grants", "refresh", "event")
_PRIO = {"schema": 0, "extension": 1, "collation": 2, "enum": 3, "range": 3, "composite": 4,
         "domain": 4, "function": 5, "procedure": 5, "aggregate": 6, "sequence": 7, "table": 8,
         "view": 10, "matview": 11, "tsdict": 5, "tscfg": 6, "cast": 3, "operator": 6, "fdw": 5,
         "server": 6, "user_mapping": 7, "foreign_table": 8}
_LIST_GUCS = {"search_path", "temp_tablespaces", "session_preload_libraries",
              "shared_preload_libraries", "local_preload_libraries", "unix_socket_directories"}


@dataclass
class RestorePlan:
    pre_data: list[str]
    tables: list[TableInfo]
    post_data: list[list[str]]
    database_post: list[str]
    event_stages: int = 0
    stage_kinds: list[str] = field(default_factory=list)
    session_setup: list[str] = field(default_factory=lambda: list(SESSION_SETUP))


@dataclass
class _Step:
    id: str
    sql: str
    base: int
    deps: list[str]
    prio: tuple
    locks: tuple = ()


_NONE: frozenset[str] = frozenset()
_SELECT = frozenset(("SelectStmt",))
_DO = frozenset(("DoStmt",))


def plan_restore(schema: Schema, *, target_database: str, tables: set[int] | None = None,
                 skip_missing_foreign_keys: bool = False, skip_missing_sequences: bool = False,
                 skip_missing_sequence_owners: bool = False, skip_missing_views: bool = False,
                 skip_missing_udfs: bool = False, existing_roles: set[str] | frozenset = frozenset(),
                 restoring_user: str = "postgres", grants: bool = True) -> RestorePlan:
    """`existing_roles=None` keeps every role (SHOW BACKUP VALIDATE checks such a plan)."""
    sel = select(schema, tables, skip_missing_foreign_keys=skip_missing_foreign_keys,
                 skip_missing_sequences=skip_missing_sequences,
                 skip_missing_sequence_owners=skip_missing_sequence_owners,
                 skip_missing_views=skip_missing_views, skip_missing_udfs=skip_missing_udfs)
    r = Renderer(schema, existing_roles=None if existing_roles is None else set(existing_roles),
                 restoring_user=restoring_user, grants=grants)
    p = _Planner(schema, sel, r, target_database)
    p.build()
    if sel.whole and schema.large_objects:
        for i, sql in enumerate(_large_object_creates(schema.large_objects)):
            p.add(f"lo-create#{i}", sql, PRE, prio=(1, i), expect=_SELECT)
        for i, sql in enumerate(_large_object_decorations(schema.large_objects, r)):
            p.add(f"lo-acl#{i}", sql, GRANTS, prio=(40, i), expect=_DO)  # each batch: its own objects
    pre, post, events, kinds = p.schedule()
    restored = {o.oid for o in schema.objects if o.key in sel.keys and o.kind == "table"}
    return RestorePlan(pre_data=list(SESSION_SETUP) + pre,
                       tables=[t for t in schema.tables if t.oid in restored], post_data=post,
                       event_stages=events, stage_kinds=kinds,
                       database_post=_database_post(schema, target_database, r) if sel.whole else [])


def check_statements(schema: Schema, tables: set[int] | None = None) -> None:
    """Raise XX001 (`UnexpectedStatement`) when any statement a restore of this schema could run
    is not one statement of its object's kind; other planning errors are a restore's business."""
    from .errors import MissingDependency
    try:
        plan_restore(schema, target_database=schema.database.name, tables=tables,
                     existing_roles=None, skip_missing_foreign_keys=True, skip_missing_sequences=True,
                     skip_missing_sequence_owners=True, skip_missing_views=True, skip_missing_udfs=True)
    except MissingDependency:
        pass


_LO_BATCH = 1000     # large objects per creating statement
_LO_DECORATED = 100  # large objects per batch of owner/GRANT/COMMENT statements (one transaction:
                     # each ALTER or GRANT locks its object until the batch commits)


def _large_object_creates(los: list[list]) -> list[str]:
    """Empty large objects with their original OIDs (owned by the restoring user), before the data
    phase loads their pages into pg_largeobject."""
    return [f"SELECT pg_catalog.count(pg_catalog.lo_create(o)) FROM pg_catalog.unnest("
            f"'{{{','.join(str(int(lo[0])) for lo in los[i:i + _LO_BATCH])}}}'::pg_catalog.oid[]) o"
            for i in range(0, len(los), _LO_BATCH)]


def _large_object_decorations(los: list[list], r: Renderer) -> list[str]:
    """Owners, privileges and comments, in batches that never split one object's statements
    (batches run in parallel: two of them must not touch the same object); each batch is one DO
    block, so that it stays one statement."""
    per_object: list[list[str]] = []
    for raw_oid, owner, acl, acl_default, comment in los:
        oid = int(raw_oid)
        stmts = []
        new_owner = r.owner(owner)
        if new_owner != r.restoring_user:
            stmts.append(f"ALTER LARGE OBJECT {oid} OWNER TO {quote_ident(new_owner)}")
        if r.with_grants:
            stmts += acl_statements("LARGE OBJECT", str(oid), acl, acl_default, new_owner, r.role_mapper(owner))
        if comment is not None:
            stmts.append(f"COMMENT ON LARGE OBJECT {oid} IS {quote_literal(comment)}")
        what = f"large object {oid}"
        kinds = {"ALTER": OWNER, "GRANT": GRANT, "REVOKE": GRANT, "COMMENT": COMMENT, "DO": GRANT}
        stmts = [one_statement(s, kinds[s.split(None, 1)[0]], what) for s in stmts]
        if stmts:
            per_object.append(stmts)
    return ["DO " + dollar_quoted("BEGIN\n" + "".join(f"  {s};\n" for obj in per_object[i:i + _LO_DECORATED]
                                                    for s in obj) + "END", "large objects")
            for i in range(0, len(per_object), _LO_DECORATED)]


class _Planner:
    def __init__(self, schema: Schema, sel: Selection, r: Renderer, target: str) -> None:
        self.schema, self.sel, self.r, self.target = schema, sel, r, target
        self.objs = schema.by_key()
        self.steps: dict[str, _Step] = {}
        self.main: dict[str, str] = {}
        self.n = 0

    def add(self, sid: str, sql: str, base: int, deps=(), prio=(99, 0), locks=(), *,
            expect: frozenset[str]) -> str:
        """A step; `expect` are the node types its statement may have (checked here)."""
        one_statement(sql, expect, self._what(sid))
        self.n += 1
        self.steps[sid] = _Step(sid, sql, base, list(deps), (*prio, self.n), tuple(locks))
        return sid

    def _what(self, sid: str) -> str:
        o = self.objs.get(sid.split("#", 1)[0])
        if o is None:
            return sid.split("#", 1)[0]
        return f"{o.kind.replace('_', ' ')} " + (f"{o.schema}.{o.name}" if o.schema else o.name)

    def chain(self, o: SchemaObject, stmts: list[str], base: int, deps=(), locks=(), *,
              expect: frozenset[str] | None = None) -> str | None:
        """Steps that run one after another; returns the last one's id. `expect` defaults to
        the node types of the object's own DDL."""
        last = None
        kinds = DDL_KINDS.get(o.kind, _NONE) if expect is None else expect
        for i, sql in enumerate(stmts):
            last = self.add(f"{o.key}#{base}.{i}.{len(self.steps)}", sql, base,
                            [*deps, *([last] if last else [])], (_PRIO.get(o.kind, 20), o.oid), locks,
                            expect=kinds)
        return last

    # -- building --
    def build(self) -> None:
        objs = [o for o in self.schema.objects if o.key in self.sel.keys]
        if self.sel.whole and not any(o.kind == "schema" and o.details["builtin"] for o in objs):
            self.add("drop-public", "DROP SCHEMA IF EXISTS public", PRE, prio=(0, 0),
                     expect=frozenset(("DropStmt",)))
        if not self.sel.whole:
            self._schema_checks(objs)
        for o in objs:
            created = getattr(self, f"_{o.kind}", self._plain)(o)
            if created is not False and (o.kind != "schema" or self.sel.whole):
                self._decorations(o)
        for s in self.steps.values():
            s.deps = [d for d in (self._resolve(d) for d in s.deps) if d and d != s.id]

    def _resolve(self, dep: str) -> str | None:
        if dep in self.steps:
            return dep
        if dep in self.main:
            return self.main[dep]
        o = self.objs.get(dep)
        if o is not None and o.kind == "sequence" and o.details.get("identity"):
            return self.main.get(f"rel:{o.details['owned_by'][0]}")
        if o is not None and o.kind == "index" and o.details.get("constraint"):
            return self.main.get(f"con:{o.details['constraint']}")
        return None

    def _decorations(self, o: SchemaObject) -> None:
        if not self.sel.whole and o.kind in ("enum", "composite", "range", "domain"):
            return                  # inside the type's DO block
        deps = [o.key]
        final = EVENT if o.kind == "event_trigger" else FINAL
        owner = self.r.owner_statements(o)
        if owner:
            deps = [self.chain(o, owner, final, deps, locks=(o.key,), expect=OWNER)]
        self.chain(o, self.r.comments(o), final, [o.key], locks=(f"comment:{o.key}",), expect=COMMENT)
        for sql in self.r.grants(o):
            self.add(f"{o.key}#grant{len(self.steps)}", sql, GRANTS, deps, locks=(f"acl:{o.key}",),
                     expect=GRANT)

    def _plain(self, o: SchemaObject) -> None:
        if o.ddl:
            self.main[o.key] = self.chain(o, o.ddl, PRE, o.deps)

    def _schema(self, o: SchemaObject) -> None:
        if self.sel.whole and o.ddl:
            deps = ["drop-public"] if o.name == "public" and "drop-public" in self.steps else []
            self.main[o.key] = self.chain(o, o.ddl, PRE, deps)

    def _user_mapping(self, o: SchemaObject) -> bool | None:
        role = o.details["role"]
        if role is not None and not self.r.role_exists(role):
            return False            # roles are cluster-wide: a mapping for a missing one cannot be made
        self._plain(o)

    def _publication(self, o: SchemaObject) -> None:
        self.main[o.key] = self.chain(o, o.ddl, FINAL, o.deps)

    def _collation(self, o: SchemaObject) -> None:
        ddl = o.ddl if self.sel.whole else \
            [o.ddl[0].replace("CREATE COLLATION ", "CREATE COLLATION IF NOT EXISTS ", 1)]
        self.main[o.key] = self.chain(o, ddl, PRE, o.deps)

    def _type(self, o: SchemaObject) -> None:
        if self.sel.whole:
            return self._plain(o)
        what = self._what(o.key)
        stmts = [one_statement(s, DDL_KINDS[o.kind], what) for s in o.ddl]
        stmts += [one_statement(s, OWNER, what) for s in self.r.owner_statements(o)]
        stmts += [one_statement(s, COMMENT, what) for s in self.r.comments(o)]
        stmts += [one_statement(s, GRANT, what) for s in self.r.grants(o)]
        self.main[o.key] = self.add(o.key, _reuse_type(o, stmts, self.target, what), PRE, o.deps,
                                    (_PRIO[o.kind], o.oid), expect=_DO)
    _enum = _composite = _range = _domain = _type

    def _sequence(self, o: SchemaObject) -> None:
        d = o.details
        owner = d.get("owned_by")
        standalone = d.get("identity") and o.key in self.sel.drop_owned_by
        if o.ddl or standalone:
            self.main[o.key] = self.chain(o, o.ddl or d["standalone_ddl"], PRE, o.deps)
        if owner and not d.get("identity") and o.key not in self.sel.drop_owned_by:
            table = self.objs[f"rel:{owner[0]}"]
            self.add(f"{o.key}#ownedby", f"ALTER SEQUENCE {o.ident} OWNED BY "
                     f"{table.ident}.{quote_ident(owner[1])}", PRE, [o.key, table.key], (12, o.oid),
                     expect=frozenset(("AlterSeqStmt",)))
        if d["last_value"] is not None:
            self.add(f"{o.key}#setval", f"SELECT pg_catalog.setval({quote_literal(o.ident)}, "
                     f"{int(d['last_value'])}, {'true' if d['is_called'] else 'false'})", FINAL, [o.key],
                     expect=_SELECT)

    def _table(self, o: SchemaObject) -> None:
        d = o.details
        standalone = o.oid in self.sel.standalone
        stmt, after = self.r.table(o, drop_defaults=self.sel.drop_defaults.get(o.oid, set()),
                                   standalone=standalone)
        parents = [] if standalone else [f"rel:{p}" for p in d["parents"]]
        main = self.add(o.key, stmt, PRE, [*o.deps, *parents], (8, o.oid),
                        expect=frozenset(("CreateStmt", "CreateForeignTableStmt")))
        self.main[o.key] = main
        self.chain(o, after, PRE, [main], expect=ALTER_TABLE)
        if d["partbound"] is not None and not standalone:
            parent = self.objs[f"rel:{d['parents'][0]}"]
            self.add(f"{o.key}#attach", f"ALTER TABLE ONLY {parent.ident} ATTACH PARTITION "
                     f"{o.ident} {d['partbound']}", PRE, [main, parent.key], (9, o.oid),
                     expect=ALTER_TABLE)
        tail = []
        if d["rls"]:
            tail.append(f"ALTER TABLE {o.ident} ENABLE ROW LEVEL SECURITY")
        if d["force_rls"]:
            tail.append(f"ALTER TABLE {o.ident} FORCE ROW LEVEL SECURITY")
        if d["replident"] in ("n", "f") and o.kind == "table":   # foreign tables have none
            tail.append(f"ALTER TABLE ONLY {o.ident} REPLICA IDENTITY "
                        + ("NOTHING" if d["replident"] == "n" else "FULL"))
        self.chain(o, tail, FINAL, [main], locks=(o.key,), expect=ALTER_TABLE)

    _foreign_table = _table

    def _view(self, o: SchemaObject) -> None:
        defaults = [f"ALTER VIEW {o.ident} ALTER COLUMN {c['q']} SET DEFAULT {c['default']}"
                    for c in o.details["columns"] if c["default"] is not None]
        self.main[o.key] = self.chain(o, o.ddl, PRE, o.deps)
        if defaults:
            self.main[o.key] = self.chain(o, defaults, PRE, [self.main[o.key]],
                                          expect=ALTER_TABLE)

    def _matview(self, o: SchemaObject) -> None:
        self._plain(o)
        if o.details["populated"]:
            deps = [o.key] + [f"{k}#refresh" for k in o.deps
                              if k in self.objs and self.objs[k].kind == "matview"]
            self.add(f"{o.key}#refresh", f"REFRESH MATERIALIZED VIEW {o.ident}", REFRESH, deps,
                     expect=frozenset(("RefreshMatViewStmt",)))

    def _constraint(self, o: SchemaObject) -> None:
        d = o.details
        if not o.ddl:
            return
        table = f"rel:{o.table}" if o.table else f"type:{d['domain']}"
        ct = d["contype"]
        if ct in ("p", "u", "x"):
            base, locks = INDEX, ()
        elif ct == "f":
            base, locks = FKEY, (f"fk:{o.table}", f"fk:{d['confrelid']}")
        else:
            base, locks = FKEY, (f"fk:{o.table}",)
        self.main[o.key] = self.add(o.key, o.ddl[0], base, [table, *o.deps], (30, o.oid), locks,
                                    expect=DDL_KINDS["constraint"])

    def _index(self, o: SchemaObject) -> None:
        d = o.details
        table = self.objs[f"rel:{o.table}"]
        if o.ddl:
            self.main[o.key] = self.add(o.key, o.ddl[0], INDEX, [table.key, *o.deps], (31, o.oid),
                                        expect=DDL_KINDS["index"])
        me = o.key
        parent = f"idx:{d['parent']}" if d.get("parent") else None
        if parent and parent in self.sel.keys:
            # Each attach validates its parent index, and recursively the parents above it,
            # against what its own transaction sees: two attaches in one index tree running at
            # once can each miss the other's and leave the root invalid (then a foreign key on
            # it fails). So the attaches of one tree never share a stage.
            self.add(f"{o.key}#attach", f"ALTER INDEX {self.objs[parent].ident} ATTACH PARTITION "
                     f"{o.ident}", ATTACH, [parent, me], locks=(f"attach:{self._index_root(parent)}",),
                     expect=ALTER_TABLE)
        tail = list(d["stats"])
        if d["clustered"]:
            tail.append(f"ALTER TABLE {table.ident} CLUSTER ON {quote_ident(o.name)}")
        if d["replident"]:
            tail.append(f"ALTER TABLE ONLY {table.ident} REPLICA IDENTITY USING INDEX "
                        f"{quote_ident(o.name)}")
        self.chain(o, tail, FINAL, [me], locks=(table.key,), expect=ALTER_TABLE)

    def _index_root(self, key: str) -> str:
        seen = set()
        while key not in seen:
            seen.add(key)
            parent = self.objs[key].details.get("parent") if key in self.objs else None
            if not parent or f"idx:{parent}" not in self.objs:
                break
            key = f"idx:{parent}"
        return key

    def _trigger(self, o: SchemaObject) -> None:
        deps = [f"rel:{o.table}", *o.deps]
        if o.details.get("clone"):
            parent = f"trg:{o.details['parent']}"
            if parent not in self.sel.keys:
                return False
            deps.append(parent)
        self.main[o.key] = self.chain(o, o.ddl, FINAL, deps, locks=(f"rel:{o.table}",))

    def _policy(self, o: SchemaObject) -> bool:
        ddl = self.r.policy(o)
        self.main[o.key] = self.chain(o, ddl, FINAL, [f"rel:{o.table}", *o.deps],
                                      locks=(f"rel:{o.table}",), expect=frozenset(("CreatePolicyStmt",)))
        return bool(ddl)

    def _rule(self, o: SchemaObject) -> None:
        self.main[o.key] = self.chain(o, o.ddl, FINAL, [f"rel:{o.table}", *o.deps],
                                      locks=(f"rel:{o.table}",))

    def _statistics(self, o: SchemaObject) -> None:
        self.main[o.key] = self.chain(o, o.ddl, FINAL, [f"rel:{o.table}", *o.deps])

    def _event_trigger(self, o: SchemaObject) -> None:
        # last of all, so that it does not fire on the restore's own DDL
        self.main[o.key] = self.chain(o, o.ddl, EVENT, o.deps)

    def _default_acl(self, o: SchemaObject) -> None:
        pass                        # its statements are its grants (_decorations)

    def _schema_checks(self, objs: list[SchemaObject]) -> None:
        first: dict[str, SchemaObject] = {}
        rels = ("table", "foreign_table", "view", "matview", "sequence")
        for o in sorted(objs, key=lambda o: (o.kind not in rels, o.oid)):
            if o.schema is not None and o.kind in (*rels, "enum", "composite", "range", "domain"):
                first.setdefault(o.schema, o)
        for schema, o in sorted(first.items()):
            what = "table" if o.kind in rels else "type"
            msg = f'a schema named "{schema}" needs to exist to restore {what} "{o.name}"'
            self.add(f"check-schema:{schema}", "DO " + dollar_quoted(
                "BEGIN\n  IF NOT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = "
                f"{quote_literal(schema)}) THEN\n    RAISE EXCEPTION USING ERRCODE = '3F000', MESSAGE = "
                f"{quote_literal(msg)},\n      HINT = 'Create the schema first.';\n  END IF;\nEND",
                f"schema {schema}"), PRE, prio=(0, 0), expect=_DO)

    # -- ordering --
    def schedule(self) -> tuple[list[str], list[list[str]], int, list[str]]:
        steps = self.steps
        waiting = {sid: set(s.deps) & steps.keys() for sid, s in steps.items()}
        users: dict[str, list[str]] = {}
        for sid, deps in waiting.items():
            for d in deps:
                users.setdefault(d, []).append(sid)
        ready = [(steps[s].prio, s) for s, deps in waiting.items() if not deps]
        heapq.heapify(ready)
        # A stage is (phase, n): phases (INDEX, ATTACH, FKEY ...) never interleave, so that, say,
        # a foreign key delayed by another on the same table still runs before RLS is enabled
        # and owners change; n orders steps within a phase by their dependencies and locks.
        stage: dict[str, tuple[int, int]] = {}
        used: dict[tuple[int, int], set] = {}
        pre, post = [], {}
        while len(stage) < len(steps):
            if not ready:           # a cycle: take the first step left, ignoring what it waits for
                sid = min((s for s in steps if s not in stage), key=lambda s: steps[s].prio)
                waiting[sid] = set()
                heapq.heappush(ready, (steps[sid].prio, sid))
            _, sid = heapq.heappop(ready)
            if sid in stage:
                continue
            s = steps[sid]
            after = [stage[d] for d in s.deps if d in stage and stage[d][0] >= 0]
            phase = max([s.base] + [p for p, _ in after])
            n = max([0] + [k + 1 for p, k in after if p == phase])
            while phase >= 0 and any(lk in used.get((phase, n), ()) for lk in s.locks):
                n += 1
            stage[sid] = (phase, n)
            if phase < 0:
                pre.append(s.sql)
            else:
                used.setdefault((phase, n), set()).update(s.locks)
                post.setdefault((phase, n), []).append(s.sql)
            for u in users.get(sid, []):
                waiting[u].discard(sid)
                if not waiting[u] and u not in stage:
                    heapq.heappush(ready, (steps[u].prio, u))
        return (pre, [post[k] for k in sorted(post)], sum(1 for phase, _ in post if phase == EVENT),
                [_KINDS[phase] for phase, _ in sorted(post)])


def _reuse_type(o: SchemaObject, stmts: list[str], target: str, what: str) -> str:
    """One DO block creating the type unless an identical one exists; `stmts` are checked."""
    body = "\n".join(f"    EXECUTE {quote_literal(s)};" for s in stmts)
    expected = quote_literal(o.details["signature"])
    msg = quote_literal(f'type "{o.schema}.{o.name}" already exists in database "{target}" '
                        "with a different definition")
    return "DO " + dollar_quoted(
           (f"\nDECLARE\n  toid oid;\n  sig text;\nBEGIN\n"
            f"  SELECT t.oid INTO toid FROM pg_catalog.pg_type t\n"
            f"    JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace\n"
            f"   WHERE n.nspname = {quote_literal(o.schema)} AND t.typname = {quote_literal(o.name)};\n"
            f"  IF toid IS NULL THEN\n{body}\n  ELSE\n    sig := {type_signature('toid')};\n"
            f"    IF sig IS DISTINCT FROM {expected} THEN\n"
            f"      RAISE EXCEPTION USING ERRCODE = '42710', MESSAGE = {msg},\n"
            f"        DETAIL = 'existing: ' || COALESCE(sig, '?') || '; backup: ' || {expected};\n"
            f"    END IF;\n  END IF;\nEND\n"), what)


def _guc(cfg: str) -> str:
    name, _, value = cfg.partition("=")
    if name.lower() not in _LIST_GUCS:
        return f"SET {name} TO {quote_literal(value)}"
    items, cur, quoted = [], "", False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
    items.append(cur.strip())
    return f"SET {name} TO " + ", ".join(quote_literal(i) for i in items)


def _database_post(schema: Schema, target: str, r: Renderer) -> list[str]:
    db, q = schema.database, quote_ident(target)
    owner = r.owner(db.owner)
    out = [f"ALTER DATABASE {q} OWNER TO {quote_ident(owner)}"]
    if db.comment is not None:
        out.append(f"COMMENT ON DATABASE {q} IS {quote_literal(db.comment)}")
    if r.with_grants:
        out += acl_statements("DATABASE", q, db.acl, db.acl_default, owner, r.role_mapper(db.owner))
    if db.connection_limit != -1:
        out.append(f"ALTER DATABASE {q} CONNECTION LIMIT = {db.connection_limit}")
    out += [f"ALTER DATABASE {q} {_guc(c)}" for c in db.settings]
    for role, cfgs in sorted(db.role_settings.items()):
        if r.role_exists(role):
            out += [f"ALTER ROLE {quote_ident(role)} IN DATABASE {q} {_guc(c)}" for c in cfgs]
    return [one_statement(s, _DATABASE_KINDS, f"database {db.name}") for s in out]


_DATABASE_KINDS = frozenset(("AlterOwnerStmt", "CommentStmt", "AlterDatabaseStmt",
                             "AlterDatabaseSetStmt", "AlterRoleSetStmt")) | GRANT
