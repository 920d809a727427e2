"""The captured schema of one database: plain data, JSON-safe, round-tripping losslessly.

A `Schema` holds the database's own properties (`DatabaseInfo`), the relations whose rows a backup
copies (`TableInfo`), and every other object as a `SchemaObject`: its DDL as text produced by the
SOURCE server's own deparsers (pg_get_indexdef, pg_get_constraintdef, pg_get_viewdef,
pg_get_functiondef, pg_get_triggerdef, format_type, pg_get_expr ...) under `search_path = ''`, so
every name in it is schema-qualified; the objects it depends on (keys of other objects, from
pg_depend); its owner, ACL and comment. Tables keep their parts (columns, CHECK and NOT NULL
constraints, partition bound ...) in `details`, because a restore may leave some of them out
(a default using a sequence that is not restored, for instance).

Keys are `<class>:<oid>`: nsp, ext, coll, type, proc, rel, con, idx (an index's relation), trg, pol,
rule, stx, defacl. OIDs are the source database's.

`schema_version` versions this document (independently of the backup format); `from_json` refuses
versions it does not know (XX001).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import SchemaFormatError
from .sqltext import quote_ident, quote_literal

__all__ = ["SCHEMA_VERSION", "LARGEOBJECT_OID", "Schema", "DatabaseInfo", "TableInfo", "SchemaObject", "ObjectSummary"]

# 2 adds large_objects: a pgkeep that reads only 1 would load their pages without the objects, so
# a document holding large objects says 2 and such a pgkeep refuses it. Documents without large
# objects are still written as 1, which every pgkeep reads.
SCHEMA_VERSION = 2
LARGEOBJECT_OID = 2613      # pg_catalog.pg_largeobject, a bootstrap catalog: the same OID everywhere


@dataclass
class DatabaseInfo:
    name: str
    encoding: str
    datcollate: str
    datctype: str
    locale_provider: str = "libc"       # libc | icu | builtin
    locale: str | None = None           # ICU or builtin locale (daticulocale before 17, datlocale after)
    icu_rules: str | None = None
    owner: str = "postgres"
    comment: str | None = None
    acl: list[str] | None = None
    acl_default: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)       # ALTER DATABASE SET, as 'name=value'
    role_settings: dict[str, list[str]] = field(default_factory=dict)  # ALTER ROLE r IN DATABASE SET
    connection_limit: int = -1

    def create_statement(self, name: str) -> str:
        """CREATE DATABASE for a database with this encoding and locale (from template0; the
        owner is set by the plan's database_post)."""
        parts = [f"CREATE DATABASE {quote_ident(name)} WITH TEMPLATE = template0",
                 f"ENCODING = {quote_literal(self.encoding)}"]
        if self.locale_provider != "libc":
            parts.append(f"LOCALE_PROVIDER = {self.locale_provider}")
        parts.append(f"LC_COLLATE = {quote_literal(self.datcollate)}")
        parts.append(f"LC_CTYPE = {quote_literal(self.datctype)}")
        if self.locale_provider == "icu" and self.locale:
            parts.append(f"ICU_LOCALE = {quote_literal(self.locale)}")
            if self.icu_rules:
                parts.append(f"ICU_RULES = {quote_literal(self.icu_rules)}")
        elif self.locale_provider == "builtin" and self.locale:
            parts.append(f"BUILTIN_LOCALE = {quote_literal(self.locale)}")
        return " ".join(parts)


@dataclass
class TableInfo:
    """A relation whose rows the backup copies: an ordinary table or a leaf partition."""
    oid: int
    schema: str
    name: str
    kind: str                       # 'r'; 'L' for the pages of the large objects (pg_largeobject)
    columns: list[str]              # the columns to COPY, in order (generated columns left out)
    binary_ok: bool                 # COPY (FORMAT binary) round-trips every column into another database
    text_compact: bool = False      # every column's text form is no longer than its binary form
    relpages: int = 0
    reltuples: float = -1.0
    unlogged: bool = False
    # char(n) columns whose all-blank values are COPY'd as '' (docs/FORMAT.md section 2): char(n)
    # input pads them back, so n blanks a row are neither sent, stored nor parsed again
    blank_as_empty: list[str] = field(default_factory=list)

    @property
    def qualified_name(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"


@dataclass
class SchemaObject:
    key: str                        # '<class>:<oid>'
    kind: str                       # schema, extension, collation, enum, composite, range, domain,
                                    # function, procedure, aggregate, sequence, table, foreign_table,
                                    # view, matview, index, constraint, trigger, policy, rule,
                                    # statistics, default_acl, event_trigger, tsdict, tscfg,
                                    # cast, operator, publication
    oid: int
    schema: str | None              # the namespace's name (None for schemas, extensions ...)
    name: str                       # the object's own name, unquoted
    ident: str                      # SQL name after `sql_kind` in ALTER/COMMENT/GRANT ('public.f(integer)',
                                    # 'c ON public.t' for constraints, triggers, policies and rules)
    sql_kind: str                   # TABLE, VIEW, MATERIALIZED VIEW, SEQUENCE, FUNCTION, TYPE, CONSTRAINT ...
    owner: str | None = None
    table: int | None = None        # the relation an index/constraint/trigger/policy/rule belongs to
    ddl: list[str] = field(default_factory=list)
    deps: list[str] = field(default_factory=list)
    comment: str | None = None
    acl: list[str] | None = None
    acl_base: list[str] | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectSummary:
    schema_name: str | None
    object_name: str
    object_type: str                # schema, table, view, sequence, type, function
    create_statement: str
    owner: str | None
    privileges: str                 # GRANT statements, one per line
    oid: int = 0                    # the object's OID in the backed-up database


_SUMMARY_TYPES = {"schema": "schema", "table": "table", "foreign_table": "table", "view": "view",
                  "matview": "view", "sequence": "sequence", "enum": "type", "composite": "type",
                  "range": "type", "domain": "type", "function": "function",
                  "procedure": "function", "aggregate": "function"}


@dataclass
class Schema:
    schema_version: int
    server_version_num: int
    database: DatabaseInfo
    tables: list[TableInfo]
    objects: list[SchemaObject]
    # What the capture found but cannot back up yet ("text search configuration public.x", ...):
    # BACKUP and RESTORE say so in a NOTICE. Absent in documents of older pgkeeps.
    uncaptured: list[str] = field(default_factory=list)
    # The database's large objects, [oid, owner, acl, acl_default, comment] each; their pages are
    # backed up as the rows of pg_catalog.pg_largeobject (a manifest table of kind 'L').
    large_objects: list[list] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Schema":
        version = d.get("schema_version")
        if version not in (1, SCHEMA_VERSION):
            raise SchemaFormatError(f"unsupported schema document version {version!r} "
                                    f"(this pgkeep reads versions 1 to {SCHEMA_VERSION})")
        return cls(schema_version=version, server_version_num=d["server_version_num"],
                   database=DatabaseInfo(**d["database"]),
                   tables=[TableInfo(**t) for t in d["tables"]],
                   objects=[SchemaObject(**o) for o in d["objects"]],
                   uncaptured=list(d.get("uncaptured", [])),
                   large_objects=list(d.get("large_objects", [])))

    def object(self, key: str) -> SchemaObject | None:
        return self.by_key().get(key)

    def by_key(self) -> dict[str, SchemaObject]:
        cache = self.__dict__.get("_by_key")
        if cache is None or len(cache) != len(self.objects):
            cache = {o.key: o for o in self.objects}
            self.__dict__["_by_key"] = cache
        return cache

    def objects_summary(self) -> list[ObjectSummary]:
        """One row per schema, table, view, sequence, type and function, for SHOW BACKUP: its
        CREATE statement(s) as a restore would run them, owner and GRANTs (all roles kept)."""
        from .render import Renderer
        r = Renderer(self, existing_roles=None, restoring_user=self.database.owner)
        out = []
        for o in self.objects:
            otype = _SUMMARY_TYPES.get(o.kind)
            if otype is None or o.details.get("identity"):
                continue
            schema = None if o.kind == "schema" else o.schema
            out.append(ObjectSummary(schema, o.name, otype, ";\n".join(r.summary_ddl(o)) + ";",
                                     o.owner, "\n".join(s + ";" for s in r.grants(o)), o.oid))
        return out
