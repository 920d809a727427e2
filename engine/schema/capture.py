"""Capture a database's schema from pg_catalog, inside the caller's snapshot.

Contract: `capture(conn)` runs on a connection already inside the backup's transaction (REPEATABLE
READ READ ONLY, on the database being backed up); it only reads, runs one query per catalog (about
thirty round trips whatever the number of objects, plus one per 500 sequences before PostgreSQL
18) and leaves the session as it found it (`search_path` is '' and `jit` off for the duration,
transaction-locally, then put back). DDL texts are the source server's own deparse where it has
one; event triggers, text search objects, casts, operators, publications and foreign-data
objects are put together from their catalogs, as pg_dump does. Sequence values are read in the same transaction (`last_value`, `is_called`); like
pg_dump's, they are not MVCC-protected (sequences are not transactional): they are the values at
capture time, at least those of the snapshot. Reading them needs SELECT on every sequence.
"""
from __future__ import annotations

import json

import asyncpg

from . import queries as Q
from .capture_rel import RelationBuilder
from .deps import link
from .model import SCHEMA_VERSION, DatabaseInfo, Schema, SchemaObject
from .sqltext import fdw_options, parse_aclitem, quote_ident, quote_literal

__all__ = ["capture"]

_PROVIDERS = {"c": "libc", "i": "icu", "b": "builtin", "d": "libc"}
_MODIFY = {"r": "READ_ONLY", "s": "SHAREABLE", "w": "READ_WRITE"}


async def capture(conn: asyncpg.Connection) -> Schema:
    v = int(await conn.fetchval("SELECT pg_catalog.current_setting('server_version_num')"))
    prev = await conn.fetch("SELECT name, setting FROM pg_catalog.pg_settings "
                            "WHERE name IN ('search_path', 'jit')")
    # Qualified names in every deparse; no JIT (catalog queries are small but look costly to
    # the planner, and JIT compilation would take longer than the queries).
    await conn.execute("SELECT pg_catalog.set_config('search_path', '', true), "
                       "pg_catalog.set_config('jit', 'off', true)")
    try:
        rows = {}
        for name in ("database", "namespaces", "extensions", "collations", "types", "functions",
                     "relations", "columns", "constraints", "indexes", "triggers", "policies",
                     "rules", "statistics", "default_acls", "sequences", "depends", "comments",
                     "binary_types", "type_aliases", "event_triggers", "ts_dicts", "ts_configs",
                     "casts", "operators", "publications", "large_objects", "fdws", "servers",
                     "user_mappings", "uncaptured"):
            rows[name] = await conn.fetch(getattr(Q, name)(v))
        if v < 180000 and rows["sequences"]:
            rel_q = {r["oid"]: r["q"] for r in rows["relations"]}
            pairs = [(s["seqrelid"], rel_q[s["seqrelid"]]) for s in rows["sequences"]]
            values = {}
            for i in range(0, len(pairs), 500):
                for r in await conn.fetch(Q.sequence_values(pairs[i:i + 500])):
                    values[r["seqrelid"]] = (r["last_value"], r["is_called"])
            rows["sequence_values"] = values
    finally:
        if not conn.is_closed():
            try:
                for r in prev:
                    await conn.execute("SELECT pg_catalog.set_config($1, $2, true)",
                                       r["name"], r["setting"])
            except asyncpg.InFailedSQLTransactionError:
                pass                # the original error propagates; the transaction is dead anyway
    return _assemble(v, rows)


def _database(r) -> DatabaseInfo:
    return DatabaseInfo(
        name=r["datname"], encoding=r["encoding"], datcollate=r["datcollate"],
        datctype=r["datctype"], locale_provider=_PROVIDERS.get(r["provider"], "libc"),
        locale=r["locale"], icu_rules=r["icu_rules"], owner=r["owner"], comment=r["comment"],
        acl=r["acl"], acl_default=list(r["acl_default"] or []), settings=list(r["settings"] or []),
        role_settings=json.loads(r["role_settings"]) if r["role_settings"] else {},
        connection_limit=r["datconnlimit"])


def _assemble(v: int, rows: dict) -> Schema:
    objs: list[SchemaObject] = []
    for r in rows["namespaces"]:
        base = r["acl_default"]
        initprivs = r["initprivs"]
        if initprivs is not None:
            # Created by initdb (public): a fresh database has it with these privileges, held by
            # the initial owner; ALTER SCHEMA OWNER renames that owner in the ACL, as we will.
            init_owner = initprivs[0].rsplit("/", 1)[1] if initprivs else r["owner"]
            base = [_rename_role(item, init_owner, r["owner"]) for item in initprivs]
        objs.append(SchemaObject(
            key=f"nsp:{r['oid']}", kind="schema", oid=r["oid"], schema=None, name=r["nspname"],
            ident=r["q"], sql_kind="SCHEMA", owner=r["owner"],
            ddl=[] if initprivs is not None else [f"CREATE SCHEMA {r['q']}"],
            acl=r["acl"], acl_base=list(base or []),
            details={"builtin": initprivs is not None}))
    for r in rows["extensions"]:
        objs.append(SchemaObject(
            key=f"ext:{r['oid']}", kind="extension", oid=r["oid"], schema=r["nspname"],
            name=r["extname"], ident=r["q"], sql_kind="EXTENSION",
            ddl=[f"CREATE EXTENSION IF NOT EXISTS {r['q']} WITH SCHEMA {r['qnsp']}"],
            details={"version": r["extversion"]}))
    for r in rows["collations"]:
        objs.append(_collation(r))
    for r in rows["types"]:
        objs.append(_type(r))
    for r in rows["functions"]:
        objs.append(_function(r))
    relations = RelationBuilder(v, rows)
    objs.extend(relations.build())
    for r in rows["default_acls"]:
        objs.append(SchemaObject(
            key=f"defacl:{r['oid']}", kind="default_acl", oid=r["oid"], schema=r["nspname"],
            name=f"{r['role']}/{r['objtype']}", ident="", sql_kind="DEFAULT PRIVILEGES",
            owner=r["role"], acl=r["acl"], acl_base=list(r["acl_default"] or []),
            details={"objtype": r["objtype"]}))
    for r in rows["event_triggers"]:
        objs.append(_event_trigger(r))
    objs += [_ts_dict(r) for r in rows["ts_dicts"]] + [_ts_config(r) for r in rows["ts_configs"]]
    objs += [_cast(r) for r in rows["casts"]] + [_operator(r) for r in rows["operators"]]
    objs += [_publication(r) for r in rows["publications"]]
    objs += [_fdw(r) for r in rows["fdws"]] + [_server(r) for r in rows["servers"]]
    uncaptured = [f"{r['kind']} {r['name']}" for r in rows["uncaptured"]]
    for r in rows["user_mappings"]:
        um, secret = _user_mapping(r)
        objs.append(um)
        uncaptured += [f"user mapping option {name} {um.name}" for name in secret]
    schema = Schema(schema_version=SCHEMA_VERSION if rows["large_objects"] else 1, server_version_num=v,
                    database=_database(rows["database"][0]), tables=relations.tables,
                    objects=objs, uncaptured=uncaptured,
                    large_objects=[[r["oid"], r["owner"], r["acl"], r["acl_default"], r["comment"]]
                                   for r in rows["large_objects"]])
    link(schema, rows)
    return schema


def _rename_role(item: str, old: str, new: str) -> str:
    grantee, privs, grantor = parse_aclitem(item)
    grantee = new if grantee == old else grantee
    grantor = new if grantor == old else grantor
    g = quote_ident(grantee) if grantee else ""
    return f"{g}={privs}/{quote_ident(grantor)}"


def _collation(r) -> SchemaObject:
    provider = _PROVIDERS.get(r["provider"], "libc")
    opts = [f"provider = {provider}"]
    if provider == "libc":
        if r["collcollate"] == r["collctype"]:
            opts.append(f"locale = {quote_literal(r['collcollate'])}")
        else:
            opts.append(f"lc_collate = {quote_literal(r['collcollate'])}")
            opts.append(f"lc_ctype = {quote_literal(r['collctype'])}")
    elif r["locale"] is not None:
        opts.append(f"locale = {quote_literal(r['locale'])}")
    if not r["deterministic"]:
        opts.append("deterministic = false")
    if r["rules"]:
        opts.append(f"rules = {quote_literal(r['rules'])}")
    return SchemaObject(
        key=f"coll:{r['oid']}", kind="collation", oid=r["oid"], schema=r["nspname"],
        name=r["collname"], ident=r["q"], sql_kind="COLLATION", owner=r["owner"],
        ddl=[f"CREATE COLLATION {r['q']} ({', '.join(opts)})"])


def _type(r) -> SchemaObject:
    t, q = r["typtype"], r["q"]
    details = {"signature": r["signature"], "typrelid": r["typrelid"]}
    if t == "e":
        kind = "enum"
        ddl = f"CREATE TYPE {q} AS ENUM ({', '.join(quote_literal(x) for x in r['labels'])})"
        details["labels"] = list(r["labels"])
    elif t == "c":
        kind = "composite"
        body = ",\n".join(f"    {a}" for a in r["attrs"])
        ddl = f"CREATE TYPE {q} AS (\n{body}\n)" if body else f"CREATE TYPE {q} AS ()"
    elif t == "r":
        kind = "range"
        opts = [f"subtype = {r['subtype']}"]
        for col, opt in (("subtype_opclass", "subtype_opclass"), ("range_collation", "collation"),
                         ("canonical", "canonical"), ("subdiff", "subtype_diff"),
                         ("multirange", "multirange_type_name")):
            if r[col]:
                opts.append(f"{opt} = {r[col]}")
        ddl = f"CREATE TYPE {q} AS RANGE (\n    " + ",\n    ".join(opts) + "\n)"
    else:
        kind = "domain"
        ddl = f"CREATE DOMAIN {q} AS {r['basetype']}"
        if r["collation"]:
            ddl += f" COLLATE {r['collation']}"
        if r["typdefault"] is not None:
            ddl += f" DEFAULT {r['typdefault']}"
        details.update(notnull=r["typnotnull"], base_ddl=ddl)
    return SchemaObject(
        key=f"type:{r['oid']}", kind=kind, oid=r["oid"], schema=r["nspname"], name=r["typname"],
        ident=q, sql_kind="DOMAIN" if kind == "domain" else "TYPE", owner=r["owner"],
        ddl=[ddl], acl=r["acl"], acl_base=list(r["acl_default"] or []), details=details)


def _aggregate_ddl(r) -> str:
    opts = [f"SFUNC = {r['sfunc']}", f"STYPE = {r['stype']}"]
    if r["sspace"]:
        opts.append(f"SSPACE = {r['sspace']}")
    if r["finalfunc"]:
        opts.append(f"FINALFUNC = {r['finalfunc']}")
        if r["finalfunc_extra"]:
            opts.append("FINALFUNC_EXTRA")
        opts.append(f"FINALFUNC_MODIFY = {_MODIFY[r['finalfunc_modify']]}")
    for col, opt in (("combinefunc", "COMBINEFUNC"), ("serialfunc", "SERIALFUNC"),
                     ("deserialfunc", "DESERIALFUNC")):
        if r[col]:
            opts.append(f"{opt} = {r[col]}")
    if r["initcond"] is not None:
        opts.append(f"INITCOND = {quote_literal(r['initcond'])}")
    if r["msfunc"]:
        opts += [f"MSFUNC = {r['msfunc']}", f"MINVFUNC = {r['minvfunc']}", f"MSTYPE = {r['mstype']}"]
        if r["msspace"]:
            opts.append(f"MSSPACE = {r['msspace']}")
        if r["mfinalfunc"]:
            opts.append(f"MFINALFUNC = {r['mfinalfunc']}")
            if r["mfinalfunc_extra"]:
                opts.append("MFINALFUNC_EXTRA")
            opts.append(f"MFINALFUNC_MODIFY = {_MODIFY[r['mfinalfunc_modify']]}")
        if r["minitcond"] is not None:
            opts.append(f"MINITCOND = {quote_literal(r['minitcond'])}")
    if r["sortop"]:
        opts.append(f"SORTOP = {r['sortop']}")
    if r["parallel"] != "u":
        opts.append("PARALLEL = " + {"s": "SAFE", "r": "RESTRICTED"}[r["parallel"]])
    if r["aggkind"] == "h":
        opts.append("HYPOTHETICAL")
    return f"CREATE AGGREGATE {r['qname']}({r['args'] or '*'}) (\n    " + ",\n    ".join(opts) + "\n)"


def _function(r) -> SchemaObject:
    kind = {"f": "function", "w": "function", "p": "procedure", "a": "aggregate"}[r["prokind"]]
    ddl = _aggregate_ddl(r) if kind == "aggregate" else r["def"].rstrip()
    return SchemaObject(
        key=f"proc:{r['oid']}", kind=kind, oid=r["oid"], schema=r["nspname"], name=r["proname"],
        ident=r["q"], sql_kind=kind.upper(), owner=r["owner"], ddl=[ddl], acl=r["acl"],
        acl_base=list(r["acl_default"] or []))


def _event_trigger(r) -> SchemaObject:
    ddl = f"CREATE EVENT TRIGGER {r['q']} ON {r['evtevent']}"
    if r["evttags"]:
        ddl += "\n    WHEN TAG IN (" + ", ".join(quote_literal(t) for t in r["evttags"]) + ")"
    ddl += f"\n    EXECUTE FUNCTION {r['function']}()"
    stmts = [ddl]
    if r["enabled"] != "O":
        verb = {"D": "DISABLE", "A": "ENABLE ALWAYS", "R": "ENABLE REPLICA"}[r["enabled"]]
        stmts.append(f"ALTER EVENT TRIGGER {r['q']} {verb}")
    return SchemaObject(
        key=f"evt:{r['oid']}", kind="event_trigger", oid=r["oid"], schema=None,
        name=r["evtname"], ident=r["q"], sql_kind="EVENT TRIGGER", owner=r["owner"], ddl=stmts)


# The kinds below have no deparser in the server: their DDL is put together here, as pg_dump does.

def _ts_dict(r) -> SchemaObject:
    options = f", {r['dictinitoption']}" if r["dictinitoption"] else ""
    return SchemaObject(
        key=f"tsdict:{r['oid']}", kind="tsdict", oid=r["oid"], schema=r["nspname"], name=r["dictname"],
        ident=r["q"], sql_kind="TEXT SEARCH DICTIONARY", owner=r["owner"],
        ddl=[f"CREATE TEXT SEARCH DICTIONARY {r['q']} (TEMPLATE = {r['template']}{options})"])


def _ts_config(r) -> SchemaObject:
    ddl = [f"CREATE TEXT SEARCH CONFIGURATION {r['q']} (PARSER = {r['parser']})"]
    ddl += [f"ALTER TEXT SEARCH CONFIGURATION {r['q']} ADD MAPPING FOR {m}" for m in r["mappings"]]
    return SchemaObject(
        key=f"tscfg:{r['oid']}", kind="tscfg", oid=r["oid"], schema=r["nspname"], name=r["cfgname"],
        ident=r["q"], sql_kind="TEXT SEARCH CONFIGURATION", owner=r["owner"], ddl=ddl)


def _cast(r) -> SchemaObject:
    ident = f"({r['source']} AS {r['target']})"
    how = {"f": f"WITH FUNCTION {r['func']}", "i": "WITH INOUT", "b": "WITHOUT FUNCTION"}[r["method"]]
    context = {"a": " AS ASSIGNMENT", "i": " AS IMPLICIT", "e": ""}[r["context"]]
    return SchemaObject(
        key=f"cast:{r['oid']}", kind="cast", oid=r["oid"], schema=None, name=ident, ident=ident,
        sql_kind="CAST", ddl=[f"CREATE CAST {ident} {how}{context}"], details={"funcoid": r["funcoid"]})


def _operator(r) -> SchemaObject:
    args = [f"FUNCTION = {r['func']}"]
    if r["lefttype"] is not None:
        args.append(f"LEFTARG = {r['lefttype']}")
    args.append(f"RIGHTARG = {r['righttype']}")
    for name, col in (("COMMUTATOR", "commutator"), ("NEGATOR", "negator"),
                      ("RESTRICT", "restrict"), ("JOIN", "join")):
        if r[col]:
            args.append(f"{name} = {r[col]}")
    args += [flag for flag, on in (("HASHES", r["oprcanhash"]), ("MERGES", r["oprcanmerge"])) if on]
    sig = f"{r['qname']} ({r['lefttype'] or 'NONE'}, {r['righttype']})"
    return SchemaObject(
        key=f"opr:{r['oid']}", kind="operator", oid=r["oid"], schema=r["nspname"], name=r["oprname"],
        ident=sig, sql_kind="OPERATOR", owner=r["owner"],
        ddl=[f"CREATE OPERATOR {r['qname']} ({', '.join(args)})"])


def _publication(r) -> SchemaObject:
    """Created after the data and indexes (the tables it lists exist by then)."""
    publish = ", ".join(op for op, on in (("insert", r["pubinsert"]), ("update", r["pubupdate"]),
                                          ("delete", r["pubdelete"]), ("truncate", r["pubtruncate"])) if on)
    options = [f"publish = {quote_literal(publish)}",
               f"publish_via_partition_root = {'true' if r['pubviaroot'] else 'false'}"]
    if r["gencols"] is not None:
        options.append(f"publish_generated_columns = {'stored' if r['gencols'] == 's' else 'none'}")
    scope = " FOR ALL TABLES" if r["puballtables"] else ""
    ddl = [f"CREATE PUBLICATION {r['q']}{scope} WITH ({', '.join(options)})"]
    ddl += [f"ALTER PUBLICATION {r['q']} ADD TABLES IN SCHEMA {s}" for s in r["schemas"]]
    ddl += [f"ALTER PUBLICATION {r['q']} ADD TABLE ONLY {t}" for t in r["tables"]]
    return SchemaObject(
        key=f"pub:{r['oid']}", kind="publication", oid=r["oid"], schema=None, name=r["pubname"],
        ident=r["q"], sql_kind="PUBLICATION", owner=r["owner"], ddl=ddl)


def _fdw(r) -> SchemaObject:
    ddl = f"CREATE FOREIGN DATA WRAPPER {r['q']}"
    ddl += f" HANDLER {r['handler']}" if r["handler"] else ""
    ddl += f" VALIDATOR {r['validator']}" if r["validator"] else ""
    ddl += f" OPTIONS ({fdw_options(r['fdwoptions'])})" if r["fdwoptions"] else ""
    return SchemaObject(
        key=f"fdw:{r['oid']}", kind="fdw", oid=r["oid"], schema=None, name=r["fdwname"], ident=r["q"],
        sql_kind="FOREIGN DATA WRAPPER", owner=r["owner"], ddl=[ddl], acl=r["acl"],
        acl_base=list(r["acl_default"] or []))


def _server(r) -> SchemaObject:
    ddl = f"CREATE SERVER {r['q']}"
    ddl += f" TYPE {quote_literal(r['srvtype'])}" if r["srvtype"] is not None else ""
    ddl += f" VERSION {quote_literal(r['srvversion'])}" if r["srvversion"] is not None else ""
    ddl += f" FOREIGN DATA WRAPPER {r['fdw']}"
    ddl += f" OPTIONS ({fdw_options(r['srvoptions'])})" if r["srvoptions"] else ""
    return SchemaObject(
        key=f"srv:{r['oid']}", kind="server", oid=r["oid"], schema=None, name=r["srvname"], ident=r["q"],
        sql_kind="SERVER", owner=r["owner"], ddl=[ddl], deps=[f"fdw:{r['srvfdw']}"], acl=r["acl"],
        acl_base=list(r["acl_default"] or []))


# The options of a user mapping that are known to hold no credential. The others (password,
# sslpassword, any wrapper's keys and tokens) are never written into a backup.
_SAFE_MAPPING_OPTIONS = frozenset({"user", "username", "password_required", "sslcert", "sslkey",
                                   "sslrootcert", "sslmode", "sslcrl"})


def _user_mapping(r) -> tuple[SchemaObject, list[str]]:
    """(the mapping without its credentials, the names of the options left out)."""
    options = [o for o in (r["umoptions"] or []) if o.split("=", 1)[0] in _SAFE_MAPPING_OPTIONS]
    secret = [o.split("=", 1)[0] for o in (r["umoptions"] or []) if o not in options]
    role = "PUBLIC" if r["umuser"] == 0 else quote_ident(r["usename"])
    ddl = f"CREATE USER MAPPING FOR {role} SERVER {r['server']}"
    ddl += f" OPTIONS ({fdw_options(options)})" if options else ""
    return SchemaObject(
        key=f"um:{r['oid']}", kind="user_mapping", oid=r["oid"], schema=None,
        name=f"for {role} on server {r['server']}", ident=f"FOR {role} SERVER {r['server']}",
        sql_kind="USER MAPPING", ddl=[ddl], deps=[f"srv:{r['srvid']}"],
        details={"role": None if r["umuser"] == 0 else r["usename"]}), secret
