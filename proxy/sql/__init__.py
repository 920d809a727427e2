"""pgkeep's statement language: CockroachDB's backup/restore SQL as a typed AST.

`parse_statement(sql)` returns a frozen Statement for the statements below and None for
everything else (forwarded to PostgreSQL untouched, including PostgreSQL's own GRANT, SHOW,
SET, EXECUTE and DROP). `format_statement(stmt, redact=...)` renders canonical SQL that parses
back to an equal AST; the redacted form is the only one for logs, job descriptions and errors.

Grammar summary (CockroachDB v26.2; [..] optional, {a|b} choice, str = 'string', $n or a bare
word where CockroachDB reads one as a string; uris = str | (str, ...) for locality URIs):

    targets   := DATABASE name, ... | [TABLE] pattern, ...     pattern := [db.][schema.]{t|*}
                 | VIRTUAL CLUSTER n | TENANT n   (parsed, then 0A000: no virtual clusters)
    BACKUP [targets] INTO {LATEST IN | 'subdir' IN} uris [AS OF SYSTEM TIME t] [WITH opts]
    RESTORE [targets | SYSTEM USERS] FROM {LATEST | str} IN uris [AS OF SYSTEM TIME t]
            [WITH opts]
    SHOW BACKUPS IN uris [NEWER THAN str] [OLDER THAN str] [WITH REVISION START TIME]
    SHOW BACKUP [SCHEMAS|FILES|RANGES|VALIDATE] FROM {LATEST | str} IN uris [WITH opts]
    CREATE SCHEDULE [IF NOT EXISTS] [label] FOR BACKUP [targets] INTO uris [WITH opts]
           (FOR CHANGEFEED ...: 0A000)
           RECURRING 'cron' [FULL BACKUP {ALWAYS | 'cron'}] [WITH SCHEDULE OPTIONS kv, ...]
    ALTER BACKUP {LATEST | str} [IN str] ADD NEW_KMS = uris WITH OLD_KMS = uris [ADD ...]
    ALTER BACKUP SCHEDULE id cmd, ...   cmd := SET LABEL str | SET INTO uris | SET WITH opt
           | SET RECURRING 'cron' | SET FULL BACKUP {ALWAYS|'cron'} | SET SCHEDULE OPTION kv
           | EXECUTE [FULL] IMMEDIATELY
    SHOW [RUNNING|PAUSED] SCHEDULES [FOR BACKUP] | SHOW SCHEDULE id | SHOW CREATE SCHEDULE id
    SHOW CREATE ALL SCHEDULES | {PAUSE|RESUME|DROP} {SCHEDULE id | SCHEDULES <select>}
    EXECUTE SCHEDULE id
    SHOW [AUTOMATIC] JOBS | SHOW JOBS {<select> | WHEN COMPLETE <select> | FOR SCHEDULE id
           | FOR SCHEDULES <select>} | SHOW JOB [WHEN COMPLETE] id   [WITH EXECUTION DETAILS]
    {PAUSE|RESUME|CANCEL} {JOB id | JOBS <select> | JOBS FOR SCHEDULE[S] .. | ALL type JOBS}
           PAUSE JOB ... [WITH REASON = str]
    {GRANT|REVOKE [GRANT OPTION FOR]} SYSTEM priv, ... {TO|FROM} role, ... [WITH GRANT OPTION]
    {GRANT|REVOKE} priv, ... ON {DATABASE|TABLE|EXTERNAL CONNECTION} ... {TO|FROM} roles
           (intercepted only for BACKUP/RESTORE privileges or external connections)
    SHOW GRANTS [ON ...] [FOR role, ...] | SHOW SYSTEM GRANTS [FOR role, ...]
    CREATE EXTERNAL CONNECTION [IF NOT EXISTS] name AS str
    ALTER EXTERNAL CONNECTION [IF EXISTS] name AS str | DROP EXTERNAL CONNECTION name
    SHOW EXTERNAL CONNECTIONS | SHOW EXTERNAL CONNECTION name
    SHOW CREATE ALL EXTERNAL CONNECTIONS | SHOW CREATE EXTERNAL CONNECTION name
    CHECK EXTERNAL CONNECTION str [WITH concurrently = n, time = str, transfer = str]
    SET CLUSTER SETTING a.b.c {= | TO} {value | DEFAULT} | RESET CLUSTER SETTING a.b.c
    SHOW CLUSTER SETTING a.b.c | SHOW [ALL | PUBLIC] CLUSTER SETTINGS
    <any query> with [SHOW ...] table sources, e.g. SELECT * FROM [SHOW JOBS] WHERE ...

A PostgreSQL statement wrapping one of these (EXPLAIN BACKUP ..., PREPARE p AS BACKUP ...,
WITH ... (BACKUP ...), see wrappers.py) raises 0A000: forwarded, its secrets would reach the
upstream's log.

Options (WITH opt, ... or WITH OPTIONS (opt, ...)) are typed per statement in options.py;
removed syntax (BACKUP ... TO, RESTORE/SHOW BACKUP from a bare URI) fails with a hint naming
the current form.
"""
from __future__ import annotations

from engine.redact import SECRET_QUERY_PARAMS, redact_uri

from .astjson import to_json
from .format import format_statement
from .nodes import (BackupOptions, BoolLit, CheckConnectionOptions, Expr, FuncCall, Node,
                    NumLit, Placeholder, RestoreOptions, ScalarExpr, ScheduleOptions, ShowBackupOptions,
                    ShowSource, StrLit, TablePattern, Targets)
from .parser import may_intercept, may_intercept_bytes, parse_statement, split_statements
from .placeholders import bind_placeholders, count_placeholders
from .show_sources import rewrite_show_sources
from .statements import *  # noqa: F403 - the statement classes are part of the API
from .statements import __all__ as _statement_names

__all__ = [
    "split_statements", "may_intercept", "may_intercept_bytes", "parse_statement", "format_statement",
    "count_placeholders", "bind_placeholders", "rewrite_show_sources", "to_json",
    "SECRET_QUERY_PARAMS", "redact_uri",
    "Node", "Expr", "StrLit", "NumLit", "BoolLit", "Placeholder", "FuncCall", "ScalarExpr",
    "TablePattern", "Targets", "BackupOptions", "RestoreOptions", "ShowBackupOptions",
    "ScheduleOptions", "CheckConnectionOptions", "ShowSource",
    *_statement_names,
]
