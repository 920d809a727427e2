"""Expression and shared AST nodes: literals, placeholders, names, targets and option sets.

Every node is a frozen dataclass, so statements compare by value (the round-trip property
`parse(format(stmt)) == stmt` relies on it) and can be hashed and shared freely. Names are
stored normalized: unquoted identifiers lowercased, quoted ones exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

__all__ = [
    "Node", "StrLit", "NumLit", "BoolLit", "Placeholder", "FuncCall", "ScalarExpr", "Expr",
    "TablePattern", "Targets", "BackupOptions", "RestoreOptions", "ShowBackupOptions",
    "ScheduleOptions", "CheckConnectionOptions", "ShowSource",
]


class Node:
    """Base of every AST node (expressions, clauses and statements)."""

    __slots__ = ()


@dataclass(frozen=True)
class StrLit(Node):
    """A string constant ('...', E'...', $$...$$, or a bare word where CockroachDB's
    grammar reads one as a string, e.g. a schedule label or an external connection name)."""

    value: str


@dataclass(frozen=True)
class NumLit(Node):
    """A numeric constant, kept as its source text so decimals such as AS OF SYSTEM TIME
    1700000000.0000000001 keep every digit."""

    text: str


@dataclass(frozen=True)
class BoolLit(Node):
    value: bool


@dataclass(frozen=True)
class Placeholder(Node):
    """$index (1-based), bound from the extended protocol's Bind."""

    index: int


@dataclass(frozen=True)
class FuncCall(Node):
    """A function call allowed in AS OF SYSTEM TIME, e.g. follower_read_timestamp()."""

    name: str
    args: tuple["Expr", ...] = ()


@dataclass(frozen=True)
class ScalarExpr(Node):
    """A job or schedule ID written as an expression (`1 + 2`, `(SELECT max(id) FROM t)`, as
    CockroachDB's a_expr): kept as its text and evaluated by the upstream, on the client's own
    connection, when the statement runs."""

    sql: str


Expr = Union[StrLit, NumLit, BoolLit, Placeholder, FuncCall, ScalarExpr]


@dataclass(frozen=True)
class TablePattern(Node):
    """A table name or pattern: t, db.t, db.schema.t, db.*, schema.*, db.schema.*, *."""

    parts: tuple[str, ...]
    star: bool = False


@dataclass(frozen=True)
class Targets(Node):
    """BACKUP/RESTORE/GRANT targets. `kind` is "DATABASE" (names are database names) or
    "TABLE" (names are TablePatterns)."""

    kind: str
    names: tuple[Union[str, TablePattern], ...]


@dataclass(frozen=True)
class BackupOptions(Node):
    """WITH options of BACKUP, CREATE SCHEDULE FOR BACKUP and ALTER BACKUP SCHEDULE SET WITH.

    Boolean options hold a BoolLit or a Placeholder (a bare flag is BoolLit(True)); `detached`
    is a plain bool because the grammar only takes DETACHED [= TRUE | FALSE]."""

    revision_history: Expr | None = None
    encryption_passphrase: Expr | None = None
    detached: bool | None = None
    kms: tuple[Expr, ...] | None = None
    incremental_location: tuple[Expr, ...] | None = None
    execution_locality: Expr | None = None
    include_all_virtual_clusters: Expr | None = None
    updates_cluster_monitoring_metrics: Expr | None = None
    strict: Expr | None = None


@dataclass(frozen=True)
class RestoreOptions(Node):
    encryption_passphrase: Expr | None = None
    kms: tuple[Expr, ...] | None = None
    into_db: Expr | None = None
    skip_missing_foreign_keys: bool = False
    skip_missing_sequence_owners: bool = False
    skip_missing_sequences: bool = False
    skip_missing_views: bool = False
    skip_missing_udfs: bool = False
    detached: bool = False
    skip_localities_check: bool = False
    new_db_name: Expr | None = None
    incremental_location: tuple[Expr, ...] | None = None
    virtual_cluster_name: Expr | None = None
    virtual_cluster: Expr | None = None
    schema_only: bool = False
    verify_backup_table_data: bool = False
    unsafe_restore_incompatible_version: bool = False
    execution_locality: Expr | None = None
    experimental_deferred_copy: bool = False
    experimental_copy: bool = False
    remove_regions: bool = False
    grants: bool = False
    debug_pause_on: Expr | None = None


@dataclass(frozen=True)
class ShowBackupOptions(Node):
    as_json: bool = False
    check_files: bool = False
    skip_size: bool = False
    debug_ids: bool = False
    incremental_location: tuple[Expr, ...] | None = None
    kms: tuple[Expr, ...] | None = None
    encryption_passphrase: Expr | None = None
    privileges: bool = False
    encryption_info_dir: Expr | None = None


@dataclass(frozen=True)
class ScheduleOptions(Node):
    """WITH SCHEDULE OPTIONS. The two enumerations are stored lowercased when given as
    literals (retry|reschedule|pause, start|skip|wait)."""

    first_run: Expr | None = None
    on_execution_failure: Expr | None = None
    on_previous_running: Expr | None = None
    ignore_existing_backups: bool = False
    updates_cluster_last_backup_time_metric: Expr | None = None
    # Keys CockroachDB's grammar takes (any kv_option) that no schedule knows: (key, value or
    # None), refused with CockroachDB's error when the statement runs.
    unknown: tuple[tuple[str, Expr | None], ...] = ()


@dataclass(frozen=True)
class CheckConnectionOptions(Node):
    """CHECK EXTERNAL CONNECTION ... WITH concurrently = n, time = '..', transfer = '..'."""

    concurrently: Expr | None = None
    time: Expr | None = None
    transfer: Expr | None = None


@dataclass(frozen=True)
class ShowSource(Node):
    """One `[SHOW ...]` table source inside a query: `sql[start:end]` is the bracketed text
    (brackets included) in the enclosing SelectFromShow, `statement` the parsed SHOW."""

    start: int
    end: int
    statement: Node
