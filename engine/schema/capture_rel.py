"""Relations and what hangs off them: tables (with their columns, CHECK and NOT NULL constraints
kept as parts, rendered at restore), partitions, views, materialized views, sequences (with their
values), indexes, constraints, triggers, policies, rules and extended statistics.

Every constraint becomes an object (`con:<oid>`), even the CHECK and NOT NULL constraints that the
table's CREATE statement carries inline (`details['inline']`), so comments and dependencies attach
to it uniformly. Inherited copies (conislocal false) and partition clones (foreign keys and
triggers with a parent) are left out: restoring the parent recreates them, as pg_dump does.
"""
from __future__ import annotations

from .model import SchemaObject, TableInfo
from .sqltext import quote_literal

__all__ = ["RelationBuilder", "render_options"]

_KIND = {"r": "table", "p": "table", "v": "view", "m": "matview", "S": "sequence",
         "f": "foreign_table"}
_SQL_KIND = {"table": "TABLE", "view": "VIEW", "matview": "MATERIALIZED VIEW",
             "sequence": "SEQUENCE", "foreign_table": "FOREIGN TABLE"}


def render_options(options: list[str] | None, prefix: str = "") -> str:
    """reloptions ['fillfactor=70'] -> "fillfactor='70'" (pg_dump's spelling)."""
    out = []
    for opt in options or []:
        k, _, val = opt.partition("=")
        out.append(f"{prefix}{k}={quote_literal(val)}")
    return ", ".join(out)


# A char(n) column whose statistics say at least this fraction of its values are all blanks has
# them COPY'd as '' (TableInfo.blank_as_empty): the test costs the server ~170 ns a row, an
# 84-blank value costs more to send, compress, store and parse back (pgbench_accounts.filler:
# 488 MB of COPY text became 68 MB, its restore 20% faster). Not a char(n) column's trailing
# blanks in general: in UTF-8, rtrim costs ~1.4 us a row, more than sending them.
BLANK_AS_EMPTY_FRACTION = 0.5
# Built-in types whose text form is no longer than their binary form: integers, bool and strings.
# A table of only these is copied as text: no per-field length word, and about half the size once
# compressed on redundant rows (blank-padded char(n), counters), for 15-20% more server CPU.
TEXT_COMPACT_TYPES = frozenset((16, 18, 19, 20, 21, 23, 25, 26, 1042, 1043))


class RelationBuilder:
    def __init__(self, v: int, rows: dict) -> None:
        self.v = v
        self.rows = rows
        self.rels = {r["oid"]: r for r in rows["relations"]}
        self.objs: list[SchemaObject] = []
        self.tables: list[TableInfo] = []

    def build(self) -> list[SchemaObject]:
        cols: dict[int, list] = {}
        for c in self.rows["columns"]:
            cols.setdefault(c["attrelid"], []).append(c)
        self.cols = cols
        binary = {r["root"]: r["ok"] for r in self.rows["binary_types"]}
        seqs = {s["seqrelid"]: s for s in self.rows["sequences"]}
        for oid, r in self.rels.items():
            kind = _KIND[r["relkind"]]
            obj = SchemaObject(
                key=f"rel:{oid}", kind=kind, oid=oid, schema=r["nspname"], name=r["relname"],
                ident=r["q"], sql_kind=_SQL_KIND[kind], owner=r["owner"], acl=r["acl"],
                acl_base=list(r["acl_default"] or []))
            if kind == "table":
                obj.details = self._table(r)
            elif kind == "foreign_table":        # a table without rows here: a server's
                obj.details = {**self._table(r), "server": r["ftserver"],
                               "ftoptions": list(r["ftoptions"] or [])}
            elif kind in ("view", "matview"):
                obj.ddl = [self._view(r)]
                obj.details = {"populated": r["relispopulated"],
                               "columns": [self._column(c) for c in cols.get(oid, [])]}
            else:
                obj.ddl, obj.details = self._sequence(r, seqs.get(oid))
            self.objs.append(obj)
            if r["relkind"] == "r":
                self.tables.append(TableInfo(
                    oid=oid, schema=r["nspname"], name=r["relname"], kind="r",
                    columns=[c["attname"] for c in cols.get(oid, []) if not c["generated"]],
                    binary_ok=all(binary.get(c["atttypid"], False) for c in cols.get(oid, [])),
                    text_compact=all(c["atttypid"] in TEXT_COMPACT_TYPES for c in cols.get(oid, [])),
                    relpages=r["relpages"], reltuples=float(r["reltuples"]),
                    unlogged=r["persistence"] == "u",
                    blank_as_empty=[c["attname"] for c in cols.get(oid, [])
                                    if (c["blank_frac"] or 0) >= BLANK_AS_EMPTY_FRACTION
                                    and not c["generated"]]))
        self._constraints()
        self._indexes()
        self._triggers()
        self._policies()
        self._rules()
        self._statistics()
        return self.objs

    # -- relations --
    def _column(self, c) -> dict:
        storage = c["storage"] if c["storage"] != c["typstorage"] else None
        return {"name": c["attname"], "q": c["q"], "type": c["type"], "typid": c["atttypid"],
                "notnull": c["attnotnull"], "identity": c["identity"], "generated": c["generated"],
                "local": c["attislocal"], "inherited": c["attinhcount"] > 0,
                "collation": c["collation"], "default": c["default"], "attrdef": c["attrdef"],
                "storage": storage, "compression": c["compression"] or None,
                "stattarget": c["stattarget"], "options": list(c["attoptions"] or []),
                "acl": c["acl"], "comment": None, "default_seqs": [], "default_funcs": [],
                "fdw_options": list(c["attfdwoptions"] or [])}

    def _table(self, r) -> dict:
        return {"relkind": r["relkind"], "persistence": r["persistence"],
                "columns": [self._column(c) for c in self.cols.get(r["oid"], [])],
                "parents": list(r["parents"] or []), "partbound": r["partbound"],
                "partkey": r["partkey"], "reloptions": list(r["reloptions"] or []),
                "toast_options": list(r["toast_options"] or []),
                "am": r["amname"] if r["amname"] not in (None, "heap") else None,
                "replident": r["replident"], "rls": r["relrowsecurity"],
                "force_rls": r["relforcerowsecurity"], "of_type": r["of_type"]}

    def _view(self, r) -> str:
        body = r["viewdef"].rstrip().rstrip(";")
        opts = [o for o in (r["reloptions"] or []) if not o.startswith("check_option=")]
        check = [o.split("=", 1)[1] for o in (r["reloptions"] or []) if o.startswith("check_option=")]
        with_ = f" WITH ({render_options(opts)})" if opts else ""
        if r["relkind"] == "m":
            using = f" USING {r['amname']}" if r["amname"] not in (None, "heap") else ""
            return f"CREATE MATERIALIZED VIEW {r['q']}{using}{with_} AS\n{body}\n  WITH NO DATA"
        tail = f"\n  WITH {check[0].upper()} CHECK OPTION" if check else ""
        return f"CREATE VIEW {r['q']}{with_} AS\n{body}{tail}"

    def _sequence(self, r, s) -> tuple[list[str], dict]:
        opts = (f"START WITH {s['seqstart']} INCREMENT BY {s['seqincrement']} "
                f"MINVALUE {s['seqmin']} MAXVALUE {s['seqmax']} CACHE {s['seqcache']}"
                + (" CYCLE" if s["seqcycle"] else ""))
        if self.v >= 180000:
            last, called = s["last_value"], s["is_called"]
        else:
            last, called = self.rows["sequence_values"].get(r["oid"], (None, None))
        unlogged = "UNLOGGED " if r["persistence"] == "u" else ""
        ddl = f"CREATE {unlogged}SEQUENCE {r['q']} AS {s['type']} {opts}"
        return [ddl], {"options": opts, "last_value": last, "is_called": called,
                       "identity": False, "owned_by": None, "unlogged": bool(unlogged)}

    def _sub(self, key: str, kind: str, oid: int, table: int, name: str, q: str, sql_kind: str,
             ddl: list[str], **details) -> SchemaObject:
        rel = self.rels[table]
        obj = SchemaObject(key=key, kind=kind, oid=oid, schema=rel["nspname"], name=name,
                           ident=f"{q} ON {rel['q']}", sql_kind=sql_kind, table=table, ddl=ddl,
                           details={"q": q, **details})
        self.objs.append(obj)
        return obj

    # -- parts --
    def _constraints(self) -> None:
        types = {r["oid"]: r for r in self.rows["types"]}
        for c in self.rows["constraints"]:
            ct = c["contype"]
            if c["contypid"]:
                t = types.get(c["contypid"])
                if t is None:
                    continue
                inline = c["convalidated"]
                ddl = [] if inline else [f"ALTER DOMAIN {t['q']} ADD CONSTRAINT {c['q']} {c['def']}"]
                self.objs.append(SchemaObject(
                    key=f"con:{c['oid']}", kind="constraint", oid=c["oid"], schema=t["nspname"],
                    name=c["conname"], ident=f"{c['q']} ON DOMAIN {t['q']}", sql_kind="CONSTRAINT",
                    ddl=ddl, details={"contype": ct, "domain": c["contypid"], "inline": inline,
                                      "definition": c["def"], "q": c["q"]}))
                continue
            rel = self.rels.get(c["conrelid"])
            if rel is None or rel["relkind"] not in ("r", "p", "f"):
                continue
            if not c["conislocal"] and not (ct in ("n", "c") and rel["relispartition"]) \
                    and ct not in ("p", "u", "x"):
                continue            # inherited: the parent brings it. A partition's CHECK and
                                    # NOT NULL constraints are printed, as pg_dump does (ATTACH
                                    # wants them); its index-backed ones are created, then
                                    # attached to the parent's
            if ct == "f" and c["conparentid"]:
                continue            # clone of a partitioned table's foreign key
            # ONLY for index-backed and foreign keys of plain tables (pg_dump's choice); a CHECK
            # or NOT NULL added later (NOT VALID) recurses to inheritors, which need it too.
            only = "ONLY " if (ct in ("p", "u", "x") or (ct == "f" and rel["relkind"] == "r")) else ""
            alter = f"ALTER TABLE {only}{rel['q']} ADD CONSTRAINT {c['q']} {c['def']}"
            inline = ct in ("c", "n") and (c["convalidated"] or not c["enforced"])
            col = None
            if ct == "n":
                cols = {x["attnum"]: x["attname"] for x in self.cols.get(c["conrelid"], [])}
                col = cols.get(c["conkey"][0])
            self._sub(f"con:{c['oid']}", "constraint", c["oid"], c["conrelid"], c["conname"],
                      c["q"], "CONSTRAINT", [] if inline else [alter], contype=ct, inline=inline,
                      definition=c["def"], confrelid=c["confrelid"] or None,
                      noinherit=c["connoinherit"], column=col, index=c["conindid"] or None,
                      parent=c["conparentid"] or None)

    def _indexes(self) -> None:
        for i in self.rows["indexes"]:
            rel = self.rels.get(i["indrelid"])
            if rel is None:
                continue
            ddl = [] if i["conoid"] else [i["def"]]
            stats = [f"ALTER INDEX {i['q']} ALTER COLUMN {s.split()[0]} SET STATISTICS {s.split()[1]}"
                     for s in i["stats"] or []]
            self.objs.append(SchemaObject(
                key=f"idx:{i['indexrelid']}", kind="index", oid=i["indexrelid"],
                schema=i["nspname"], name=i["relname"], ident=i["q"], sql_kind="INDEX",
                table=i["indrelid"], ddl=ddl,
                details={"constraint": i["conoid"], "parent": i["parent"],
                         "clustered": i["indisclustered"], "replident": i["indisreplident"],
                         "stats": stats}))

    def _triggers(self) -> None:
        parent_of = {t["oid"]: t["tgparentid"] for t in self.rows["triggers"]}
        for t in self.rows["triggers"]:
            if t["tgrelid"] not in self.rels:
                continue
            rel = self.rels[t["tgrelid"]]
            if t["tgparentid"]:
                if t["enabled"] == t["parent_enabled"]:
                    continue        # a partition's clone: the parent's trigger recreates it
                self._sub(f"trg:{t['oid']}", "trigger", t["oid"], t["tgrelid"], t["tgname"],
                          t["q"], "TRIGGER", [_trigger_state(rel["q"], t["q"], t["enabled"])],
                          clone=True, function=t["tgfoid"], parent=_root(parent_of, t["oid"]))
                continue
            ddl = [t["def"]]
            if t["enabled"] != "O":
                ddl.append(_trigger_state(rel["q"], t["q"], t["enabled"]))
            self._sub(f"trg:{t['oid']}", "trigger", t["oid"], t["tgrelid"], t["tgname"], t["q"],
                      "TRIGGER", ddl, clone=False, function=t["tgfoid"])

    def _policies(self) -> None:
        for p in self.rows["policies"]:
            if p["polrelid"] in self.rels:
                self._sub(f"pol:{p['oid']}", "policy", p["oid"], p["polrelid"], p["polname"],
                          p["q"], "POLICY", [], permissive=p["polpermissive"], cmd=p["cmd"],
                          roles=list(p["roles"]), qual=p["qual"], withcheck=p["withcheck"])

    def _rules(self) -> None:
        for r in self.rows["rules"]:
            if r["def"] is None or r["ev_class"] not in self.rels:
                continue
            rel = self.rels[r["ev_class"]]
            ddl = [r["def"].rstrip().rstrip(";")]
            if r["enabled"] != "O":
                verb = {"D": "DISABLE", "A": "ENABLE ALWAYS", "R": "ENABLE REPLICA"}[r["enabled"]]
                ddl.append(f"ALTER TABLE {rel['q']} {verb} RULE {r['q']}")
            self._sub(f"rule:{r['oid']}", "rule", r["oid"], r["ev_class"], r["rulename"], r["q"],
                      "RULE", ddl)

    def _statistics(self) -> None:
        for s in self.rows["statistics"]:
            if s["stxrelid"] not in self.rels:
                continue
            ddl = [s["def"]]
            if s["stattarget"] is not None:
                ddl.append(f"ALTER STATISTICS {s['q']} SET STATISTICS {s['stattarget']}")
            self.objs.append(SchemaObject(
                key=f"stx:{s['oid']}", kind="statistics", oid=s["oid"], schema=s["nspname"],
                name=s["stxname"], ident=s["q"], sql_kind="STATISTICS", owner=s["owner"],
                table=s["stxrelid"], ddl=ddl))


def _root(parent_of: dict[int, int], oid: int) -> int:
    while parent_of.get(oid):
        oid = parent_of[oid]
    return oid


def _trigger_state(rel_q: str, trg_q: str, enabled: str) -> str:
    verb = {"O": "ENABLE", "D": "DISABLE", "A": "ENABLE ALWAYS", "R": "ENABLE REPLICA"}[enabled]
    return f"ALTER TABLE {rel_q} {verb} TRIGGER {trg_q}"
