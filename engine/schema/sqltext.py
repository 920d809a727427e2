"""SQL text helpers for the restore side: identifier and literal quoting, and ACLs.

ACLs travel as PostgreSQL's own `aclitem` text (`grantee=privs/grantor`, `*` after a privilege for
its grant option, an empty grantee for PUBLIC). `acl_statements` turns an object's ACL into GRANT
and REVOKE statements the way pg_dump does: relative to the ACL the object has right after its
creation (the captured `acldefault`, or `pg_init_privs` for objects that exist in a fresh database),
so the restored ACL equals the original whatever the target version's defaults are (e.g. MAINTAIN,
new in PostgreSQL 17, stays with the owner of a table backed up from 15). Roles are mapped through a
function returning None for a role that is not to appear (missing roles are dropped; the original
owner is mapped to the new one, as ALTER ... OWNER TO does). A privilege granted by another role
than the owner is granted by that role (a DO block that sets the role around the GRANT); when the
grantor is missing, by the owner.

Statement checks (`one_statement`): a backup's schema document is text anyone who can write the
collection may have changed. Every statement a restore runs is checked to be exactly one statement
(pglast, PostgreSQL's own parser) whose node type is one its object may have (`DDL_KINDS` for
statements taken whole from the backup, the template's own type for statements pgkeep renders
around names and expressions from it); anything else is SQLSTATE XX001 naming the object. Text
from the backup embedded in a DO block by pgkeep is checked the same way first, and a DO block
whose body would contain its own dollar-quote tag is refused (`dollar_quoted`).
"""
from __future__ import annotations

import re
from typing import Callable, Iterable

from pglast.parser import ParseError, parse_sql

from .errors import SchemaFormatError

__all__ = ["quote_ident", "quote_literal", "parse_aclitem", "acl_statements", "fdw_options", "PRIVILEGES",
           "one_statement", "dollar_quoted", "UnexpectedStatement", "DDL_KINDS", "OWNER", "GRANT",
           "COMMENT", "ALTER_TABLE"]


class UnexpectedStatement(SchemaFormatError):
    """A statement of the backup is not exactly one statement of its object's kind (XX001)."""


# Node types (pglast names) a captured object's own DDL statements may have, by object kind.
DDL_KINDS: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in {
    "schema": ["CreateSchemaStmt"], "extension": ["CreateExtensionStmt"],
    "collation": ["DefineStmt"], "enum": ["CreateEnumStmt"], "composite": ["CompositeTypeStmt"],
    "range": ["CreateRangeStmt"], "domain": ["CreateDomainStmt"],
    "function": ["CreateFunctionStmt"], "procedure": ["CreateFunctionStmt"],
    "aggregate": ["DefineStmt"], "sequence": ["CreateSeqStmt"], "view": ["ViewStmt"],
    "matview": ["CreateTableAsStmt"], "constraint": ["AlterTableStmt", "AlterDomainStmt"],
    "index": ["IndexStmt"], "trigger": ["CreateTrigStmt", "AlterTableStmt"],
    "rule": ["RuleStmt", "AlterTableStmt"], "statistics": ["CreateStatsStmt", "AlterStatsStmt"],
    "event_trigger": ["CreateEventTrigStmt", "AlterEventTrigStmt"], "tsdict": ["DefineStmt"],
    "tscfg": ["DefineStmt", "AlterTSConfigurationStmt"], "cast": ["CreateCastStmt"],
    "operator": ["DefineStmt"], "publication": ["CreatePublicationStmt", "AlterPublicationStmt"],
    "fdw": ["CreateFdwStmt"], "server": ["CreateForeignServerStmt"],
    "user_mapping": ["CreateUserMappingStmt"]}.items()}
OWNER = frozenset(("AlterOwnerStmt", "AlterTableStmt"))      # ALTER TABLE/SEQUENCE/VIEW ... OWNER TO
GRANT = frozenset(("GrantStmt", "AlterDefaultPrivilegesStmt", "DoStmt"))  # DO: as another grantor
COMMENT = frozenset(("CommentStmt",))
ALTER_TABLE = frozenset(("AlterTableStmt",))
_TAG = "$pgkeep$"


def one_statement(sql: str, kinds: frozenset[str], what: str) -> str:
    """`sql` when it is exactly one statement whose node type is in `kinds`; else XX001 naming
    `what` (never quoting the statement, which may hold a secret such as a user mapping's)."""
    try:
        stmts = parse_sql(sql)
    except ParseError:
        stmts = ()
    if len(stmts) != 1 or type(stmts[0].stmt).__name__ not in kinds:
        found = ("no statement PostgreSQL parses" if not stmts else
                 f"{len(stmts)} statements" if len(stmts) != 1 else
                 f"a {type(stmts[0].stmt).__name__}")
        raise UnexpectedStatement(
            f"the backup's SQL for {what[:200]} is not one statement of the expected kind "
            f"({found}, expected one {' or '.join(sorted(kinds))}): the backup was altered",
            hint="restore only backups whose collection nobody else can write")
    return sql


def dollar_quoted(body: str, what: str) -> str:
    """`body` between pgkeep's dollar-quote tags; refused when it would end the quote early."""
    if _TAG in body:
        raise UnexpectedStatement(f"the backup's SQL for {what[:200]} holds pgkeep's quoting tag {_TAG}",
                                  hint="restore only backups whose collection nobody else can write")
    return f"{_TAG}{body}{_TAG}"

# pg_get_keywords() with catcode <> 'U' (PostgreSQL 18): these need quoting as identifiers.
_KEYWORDS = frozenset("""all analyse analyze and any array as asc asymmetric authorization between
bigint binary bit boolean both case cast char character check coalesce collate collation column
concurrently constraint create cross current_catalog current_date current_role current_schema
current_time current_timestamp current_user dec decimal default deferrable desc distinct do else end
except exists extract false fetch float for foreign freeze from full grant greatest group grouping
having ilike in initially inner inout int integer intersect interval into is isnull join json
json_array json_arrayagg json_exists json_object json_objectagg json_query json_scalar
json_serialize json_table json_value lateral leading least left like limit localtime localtimestamp
merge_action national natural nchar none normalize not notnull null nullif numeric offset on only or
order out outer overlaps overlay placing position precision primary real references returning right
row select session_user setof similar smallint some substring symmetric system_user table
tablesample then time timestamp to trailing treat trim true union unique user using values varchar
variadic verbose when where window with xmlattributes xmlconcat xmlelement xmlexists xmlforest
xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable""".split())
_SIMPLE = re.compile(r"^[a-z_][a-z0-9_$]*$")

PRIVILEGES = {"r": "SELECT", "w": "UPDATE", "a": "INSERT", "d": "DELETE", "D": "TRUNCATE",
              "x": "REFERENCES", "t": "TRIGGER", "m": "MAINTAIN", "X": "EXECUTE", "U": "USAGE",
              "C": "CREATE", "c": "CONNECT", "T": "TEMPORARY", "s": "SET", "A": "ALTER SYSTEM"}


def fdw_options(options: list[str]) -> str:
    """Foreign-data options as stored ('name=value') to the body of OPTIONS (...)."""
    pairs = (o.split("=", 1) for o in options)
    return ", ".join(f"{quote_ident(k)} {quote_literal(v)}" for k, v in pairs)


def quote_ident(name: str) -> str:
    if _SIMPLE.match(name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    if "\\" in value:
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    return "'" + value.replace("'", "''") + "'"


def _parse_role(s: str, i: int, stop: str) -> tuple[str, int]:
    if i < len(s) and s[i] == '"':
        out, i = [], i + 1
        while i < len(s):
            if s[i] == '"':
                if i + 1 < len(s) and s[i + 1] == '"':
                    out.append('"')
                    i += 2
                    continue
                return "".join(out), i + 1
            out.append(s[i])
            i += 1
        raise ValueError(f"bad aclitem {s!r}")
    j = s.find(stop, i) if stop else len(s)
    j = len(s) if j < 0 else j
    return s[i:j], j


def parse_aclitem(item: str) -> tuple[str, str, str]:
    """`"a b"=r*w/postgres` -> ('a b', 'r*w', 'postgres'); PUBLIC is the empty grantee."""
    grantee, i = _parse_role(item, 0, "=")
    if item[i] != "=":
        raise ValueError(f"bad aclitem {item!r}")
    j = item.index("/", i + 1)
    privs = item[i + 1:j]
    grantor, _ = _parse_role(item, j + 1, "")
    return grantee, privs, grantor


def _split_privs(privs: str) -> tuple[list[str], list[str]]:
    plain, granted = [], []
    for i, ch in enumerate(privs):
        if ch == "*":
            continue
        (granted if i + 1 < len(privs) and privs[i + 1] == "*" else plain).append(PRIVILEGES[ch])
    return plain, granted


def _role_sql(role: str) -> str:
    return "PUBLIC" if role == "" else quote_ident(role)


def acl_statements(keyword: str, ident: str, acl: Iterable[str] | None, base: Iterable[str] | None,
                   owner: str, map_role: Callable[[str], str | None], *,
                   columns: str = "", prefix: str = "") -> list[str]:
    """GRANT/REVOKE statements that turn an object whose ACL is `base` into one whose ACL is `acl`.

    `keyword ident` names the object (`TABLE public.t`); `owner` is the restored object's owner;
    `columns` is a column list for column privileges (`(c1)`); `prefix` precedes each statement
    (`ALTER DEFAULT PRIVILEGES FOR ROLE r IN SCHEMA s`). An ACL of None means the default: nothing
    to do."""
    if acl is None:
        return []

    def mapped(items: Iterable[str] | None) -> list[tuple[str, str, str]]:
        out = []
        for raw in items or []:
            grantee, privs, grantor = parse_aclitem(raw)
            g = grantee if grantee == "" else map_role(grantee)
            gr = map_role(grantor)
            if g is None:
                continue
            out.append((g, privs, gr if gr is not None else owner))
        return out

    want, have = mapped(acl), mapped(base)
    stmts = []
    target = " ".join(x for x in (keyword, ident) if x)
    for item in have:
        if item not in want:
            stmts.append(f"{prefix}REVOKE ALL{columns} ON {target} FROM {_role_sql(item[0])}")
    for grantee, privs, grantor in want:
        if (grantee, privs, grantor) in have:
            continue
        plain, granted = _split_privs(privs)
        for names, opt in ((plain, ""), (granted, " WITH GRANT OPTION")):
            if names:
                plist = ",".join(f"{n}{columns}" for n in names)
                sql = f"{prefix}GRANT {plist} ON {target} TO {_role_sql(grantee)}{opt}"
                if grantor != owner and not prefix:
                    # GRANTED BY only accepts the current user: grant as the grantor, as
                    # pg_dump does with SET SESSION AUTHORIZATION, in one statement
                    one_statement(sql, GRANT - {"DoStmt"}, f"the privileges on {target}")
                    sql = "DO " + dollar_quoted(f"BEGIN\n  SET ROLE {quote_ident(grantor)};\n  {sql};\n"
                                                f"  RESET ROLE;\nEND", f"the privileges on {target}")
                stmts.append(sql)
    return stmts
