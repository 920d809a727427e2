"""The canonical formatter: AST -> SQL that parses back to an equal AST.

`format_statement(stmt)` writes upper-case keywords, quoted strings, names quoted only when
they must be, and BACKUP/RESTORE options in CockroachDB's job-description form
`WITH OPTIONS (...)`. `redact=True` is the only form that may reach logs, job descriptions
and errors: URI secrets become `redacted` (engine.redact), a KMS URI also loses its key path,
and passphrases become '*****'.
"""
from __future__ import annotations

from dataclasses import fields

from engine.redact import redact_kms_uri, redact_uri

from .errors import quote_string
from .nodes import (BackupOptions, BoolLit, FuncCall, NumLit, Placeholder, ScalarExpr, StrLit, TablePattern,
                    Targets)
from .parser_base import RESERVED
from .statements import (AlterBackup, AlterBackupSchedule, AlterJobOwner, AlterExternalConnection, Backup, CancelJobs,
                         CheckExternalConnection, CreateExternalConnection, CreateSchedule,
                         DropExternalConnection, DropSchedules, ExecuteImmediately,
                         ExecuteSchedule, GrantOn, GrantSystem, PauseJobs, PauseSchedules,
                         Restore, ResumeJobs, ResumeSchedules, RevokeOn, RevokeSystem,
                         SelectFromShow, SetClusterSetting, SetFullBackup, SetInto, SetLabel,
                         SetRecurring, SetScheduleOption, SetWith, ShowBackup, ShowBackups,
                         ShowClusterSetting, ShowClusterSettings, ShowCreateAllSchedules,
                         ShowCreateExternalConnections, ShowCreateSchedule,
                         ShowExternalConnections, ShowGrants, ShowJob, ShowJobs, ShowSchedule,
                         ShowSchedules, ShowSystemGrants, Statement)

__all__ = ["format_statement", "format_expr", "format_name", "PASSWORD_SUBSTITUTE"]

PASSWORD_SUBSTITUTE = "'*****'"

# Option fields whose value is a secret, and fields whose values are URIs.
_SECRET_FIELDS = frozenset({"encryption_passphrase"})
_URI_FIELDS = frozenset({"encryption_info_dir"})
_KMS_FIELDS = frozenset({"kms"})
_DISPLAY = {"execution_locality": "execution locality",
            "experimental_deferred_copy": "experimental deferred copy",
            "experimental_copy": "experimental copy", "skip_size": "skip size"}


def format_name(name: str) -> str:
    """An identifier: bare when it lexes back to itself, else double-quoted."""
    if (name and name.isascii() and (name[0].isalpha() or name[0] == "_")
            and not any(c.isupper() for c in name)
            and all(c.isalnum() or c in "_$" for c in name) and name not in RESERVED):
        return name
    return '"' + name.replace('"', '""') + '"'


def _dotted(name: str) -> str:
    return ".".join(format_name(part) for part in name.split("."))


def format_expr(expr, redact: bool = False, uri: str = "") -> str:
    """An expression; `uri` is "uri" or "kms" when the value is a URI to redact."""
    if isinstance(expr, StrLit):
        value = expr.value
        if redact and uri == "uri":
            value = redact_uri(value)
        elif redact and uri == "kms":
            value = redact_kms_uri(value)
        return quote_string(value)
    if isinstance(expr, Placeholder):
        return f"${expr.index}"
    if isinstance(expr, NumLit):
        return expr.text
    if isinstance(expr, BoolLit):
        return "true" if expr.value else "false"
    if isinstance(expr, FuncCall):
        return f"{expr.name}({', '.join(format_expr(a) for a in expr.args)})"
    if isinstance(expr, ScalarExpr):
        return expr.sql
    raise TypeError(f"not an expression: {expr!r}")


def _uris(uris, redact: bool, kind: str = "uri") -> str:
    text = ", ".join(format_expr(u, redact, kind) for u in uris)
    return f"({text})" if len(uris) > 1 else text


def _pattern(p: TablePattern) -> str:
    if not p.parts:
        return "*"
    text = ".".join(format_name(x) for x in p.parts)
    return text + ".*" if p.star else text


def _targets(t: Targets) -> str:
    if t.kind == "DATABASE":
        return "DATABASE " + ", ".join(format_name(n) for n in t.names)
    return "TABLE " + ", ".join(_pattern(n) for n in t.names)


def _options(opts, redact: bool) -> list[str]:
    """Each set option as `name`, `name = value`; unset options are skipped."""
    out = []
    for f in fields(opts):
        value = getattr(opts, f.name)
        name = _DISPLAY.get(f.name, f.name)
        if value is None:
            continue
        if f.name == "unknown":     # ScheduleOptions' keys no schedule knows, as written
            out += [k if v is None else f"{k} = {format_expr(v, redact)}" for k, v in value]
            continue
        if f.name == "detached" and isinstance(opts, BackupOptions):
            out.append("detached" if value else "detached = FALSE")
        elif value is False:
            continue
        elif value is True:
            out.append(name)
        elif f.name in _SECRET_FIELDS and redact:
            out.append(f"{name} = {PASSWORD_SUBSTITUTE}")
        elif isinstance(value, tuple):
            kind = "kms" if f.name in _KMS_FIELDS else "uri"
            out.append(f"{name} = {_uris(value, redact, kind)}")
        elif f.name in _URI_FIELDS:
            out.append(f"{name} = {format_expr(value, redact, 'uri')}")
        else:
            out.append(f"{name} = {format_expr(value, redact)}")
    return out


def _with_options(opts, redact: bool) -> str:
    items = _options(opts, redact)
    return f" WITH OPTIONS ({', '.join(items)})" if items else ""


def _with_plain(opts, redact: bool) -> str:
    items = _options(opts, redact)
    return f" WITH {', '.join(items)}" if items else ""


def _as_of(expr) -> str:
    return f" AS OF SYSTEM TIME {format_expr(expr)}" if expr is not None else ""


def _from(subdir, latest: bool) -> str:
    if latest:
        return "LATEST IN "
    if subdir is not None:
        return f"{format_expr(subdir)} IN "
    return ""


def _roles(roles) -> str:
    return ", ".join(r if r in ("current_user", "session_user", "public") else format_name(r)
                     for r in roles)


def _names(on: str, names) -> str:
    if on == "TABLE":
        return "TABLE " + ", ".join(_pattern(n) for n in names)
    if on == "EXTERNAL CONNECTION":
        return "EXTERNAL CONNECTION " + ", ".join(format_expr(n) for n in names)
    if on == "ROLE":
        return "ROLE" + (" " + _roles(names) if names else "")
    if on in ("SCHEMA", "TYPE"):
        return on + " " + ", ".join(_dotted(n) for n in names)
    return on + " " + ", ".join(format_name(n) for n in names)


def _query(q: SelectFromShow, redact: bool) -> str:
    sql = q.sql
    for src in reversed(q.sources):
        sql = sql[:src.start] + "[" + format_statement(src.statement, redact=redact) + "]" \
            + sql[src.end:]
    return sql


def _control_jobs(stmt, verb: str, redact: bool) -> str:
    if stmt.job_id is not None:
        text = f"{verb} JOB {format_expr(stmt.job_id)}"
    elif stmt.query is not None:
        text = f"{verb} JOBS {_query(stmt.query, redact)}"
    elif stmt.schedule_id is not None:
        text = f"{verb} JOBS FOR SCHEDULE {format_expr(stmt.schedule_id)}"
    elif stmt.schedules_query is not None:
        text = f"{verb} JOBS FOR SCHEDULES {_query(stmt.schedules_query, redact)}"
    else:
        text = f"{verb} ALL {stmt.all_type} JOBS"
    if getattr(stmt, "reason", None) is not None:
        text += f" WITH REASON = {format_expr(stmt.reason)}"
    return text


def _control_schedules(stmt, verb: str, redact: bool) -> str:
    if stmt.schedule_id is not None:
        return f"{verb} SCHEDULE {format_expr(stmt.schedule_id)}"
    return f"{verb} SCHEDULES {_query(stmt.query, redact)}"


def _alter_cmd(cmd, redact: bool) -> str:
    if isinstance(cmd, SetLabel):
        return f"SET LABEL {format_expr(cmd.label)}"
    if isinstance(cmd, SetInto):
        return f"SET INTO {_uris(cmd.collection, redact)}"
    if isinstance(cmd, SetWith):
        return f"SET WITH {_options(cmd.options, redact)[0]}"
    if isinstance(cmd, SetRecurring):
        return f"SET RECURRING {format_expr(cmd.recurring)}"
    if isinstance(cmd, SetFullBackup):
        return "SET FULL BACKUP " + ("ALWAYS" if cmd.always else format_expr(cmd.recurring))
    if isinstance(cmd, SetScheduleOption):
        return f"SET SCHEDULE OPTION {_options(cmd.options, redact)[0]}"
    if isinstance(cmd, ExecuteImmediately):
        return "EXECUTE FULL IMMEDIATELY" if cmd.full else "EXECUTE IMMEDIATELY"
    raise TypeError(cmd)


def _alter_backup(s: AlterBackup, r: bool) -> str:
    # Without IN, the backup is named by its URI, which may hold secrets.
    text = f"ALTER BACKUP {format_expr(s.backup, r, 'uri' if s.collection is None else '')}"
    if s.collection is not None:
        text += f" IN {format_expr(s.collection, r, 'uri')}"
    for cmd in s.commands:
        text += (f" ADD NEW_KMS = {_uris(cmd.new_kms, r, 'kms')}"
                 f" WITH OLD_KMS = {_uris(cmd.old_kms, r, 'kms')}")
    return text


def _backup(s: Backup, r: bool) -> str:
    targets = _targets(s.targets) + " " if s.targets else ""
    return (f"BACKUP {targets}INTO {_from(s.subdir, s.latest)}{_uris(s.collection, r)}"
            f"{_as_of(s.as_of)}{_with_options(s.options, r)}")


def _restore(s: Restore, r: bool) -> str:
    what = "SYSTEM USERS " if s.system_users else (_targets(s.targets) + " " if s.targets else "")
    return (f"RESTORE {what}FROM {_from(s.subdir, s.latest)}{_uris(s.collection, r)}"
            f"{_as_of(s.as_of)}{_with_options(s.options, r)}")


def _show_backups(s: ShowBackups, r: bool) -> str:
    text = f"SHOW BACKUPS IN {_uris(s.collection, r)}"
    if s.newer_than is not None:
        text += f" NEWER THAN {format_expr(s.newer_than)}"
    if s.older_than is not None:
        text += f" OLDER THAN {format_expr(s.older_than)}"
    return text + (" WITH REVISION START TIME" if s.revision_start_time else "")


def _show_backup(s: ShowBackup, r: bool) -> str:
    details = f" {s.details}" if s.details else ""
    return (f"SHOW BACKUP{details} FROM {_from(s.subdir, s.latest)}{_uris(s.collection, r)}"
            f"{_with_plain(s.options, r)}")


def _create_schedule(s: CreateSchedule, r: bool) -> str:
    text = "CREATE SCHEDULE "
    if s.if_not_exists:
        text += "IF NOT EXISTS "
    if s.label is not None:
        text += format_expr(s.label) + " "
    text += "FOR BACKUP " + (_targets(s.targets) + " " if s.targets else "")
    text += f"INTO {_uris(s.collection, r)}{_with_options(s.backup_options, r)}"
    text += f" RECURRING {format_expr(s.recurring)}"
    if s.full_backup_always:
        text += " FULL BACKUP ALWAYS"
    elif s.full_backup is not None:
        text += f" FULL BACKUP {format_expr(s.full_backup)}"
    items = _options(s.schedule_options, r)
    if items:
        text += " WITH SCHEDULE OPTIONS " + ", ".join(items)
    return text


def _show_jobs(s: ShowJobs, r: bool) -> str:
    if s.automatic:
        return "SHOW AUTOMATIC JOBS"
    text = "SHOW JOBS"
    if s.block:
        text += " WHEN COMPLETE"
    if s.query is not None:
        text += " " + _query(s.query, r)
    elif s.schedule_id is not None:
        text += f" FOR SCHEDULE {format_expr(s.schedule_id)}"
    elif s.schedules_query is not None:
        text += f" FOR SCHEDULES {_query(s.schedules_query, r)}"
    return text + (" WITH EXECUTION DETAILS" if s.execution_details else "")


def _show_job(s: ShowJob, r: bool) -> str:
    return (f"SHOW JOB{' WHEN COMPLETE' if s.block else ''} {format_expr(s.job_id)}"
            f"{' WITH EXECUTION DETAILS' if s.execution_details else ''}")


def _grant_on(s, r: bool) -> str:
    privs = ", ".join(s.privileges)
    if isinstance(s, GrantOn):
        return (f"GRANT {privs} ON {_names(s.on, s.names)} TO {_roles(s.grantees)}"
                + (" WITH GRANT OPTION" if s.with_grant_option else ""))
    return (f"REVOKE {'GRANT OPTION FOR ' if s.grant_option_for else ''}{privs} ON "
            f"{_names(s.on, s.names)} FROM {_roles(s.grantees)}")


def _show_grants(s: ShowGrants, r: bool) -> str:
    text = "SHOW GRANTS"
    if s.on is not None:
        text += " ON " + _names(s.on, s.names)
    return text + (f" FOR {_roles(s.grantees)}" if s.grantees else "")


_FORMATTERS = {
    ShowClusterSetting: lambda s, r: f"SHOW CLUSTER SETTING {_dotted(s.name)}",
    ShowClusterSettings: lambda s, r: "SHOW ALL CLUSTER SETTINGS" if s.all
    else "SHOW CLUSTER SETTINGS",
    SetClusterSetting: lambda s, r: f"SET CLUSTER SETTING {_dotted(s.name)} = "
    + ("DEFAULT" if s.value is None else format_expr(s.value)),
    Backup: _backup,
    Restore: _restore,
    ShowBackups: _show_backups,
    ShowBackup: _show_backup,
    CreateSchedule: _create_schedule,
    AlterBackup: _alter_backup,
    AlterBackupSchedule: lambda s, r: f"ALTER BACKUP SCHEDULE {format_expr(s.schedule_id)} "
    + ", ".join(_alter_cmd(c, r) for c in s.commands),
    ShowSchedules: lambda s, r: "SHOW " + (s.state + " " if s.state else "") + "SCHEDULES"
    + (f" FOR {s.executor}" if s.executor else ""),
    ShowSchedule: lambda s, r: f"SHOW SCHEDULE {format_expr(s.schedule_id)}",
    ShowCreateSchedule: lambda s, r: f"SHOW CREATE SCHEDULE {format_expr(s.schedule_id)}",
    ShowCreateAllSchedules: lambda s, r: "SHOW CREATE ALL SCHEDULES",
    PauseSchedules: lambda s, r: _control_schedules(s, "PAUSE", r),
    ResumeSchedules: lambda s, r: _control_schedules(s, "RESUME", r),
    DropSchedules: lambda s, r: _control_schedules(s, "DROP", r),
    ExecuteSchedule: lambda s, r: f"EXECUTE SCHEDULE {format_expr(s.schedule_id)}",
    ShowJobs: _show_jobs,
    AlterJobOwner: lambda s, r: f"ALTER JOB {format_expr(s.job_id)} OWNER TO {_roles((s.owner,))}",
    ShowJob: _show_job,
    PauseJobs: lambda s, r: _control_jobs(s, "PAUSE", r),
    ResumeJobs: lambda s, r: _control_jobs(s, "RESUME", r),
    CancelJobs: lambda s, r: _control_jobs(s, "CANCEL", r),
    GrantSystem: lambda s, r: f"GRANT SYSTEM {', '.join(s.privileges)} TO {_roles(s.grantees)}"
    + (" WITH GRANT OPTION" if s.with_grant_option else ""),
    RevokeSystem: lambda s, r: "REVOKE " + ("GRANT OPTION FOR " if s.grant_option_for else "")
    + f"SYSTEM {', '.join(s.privileges)} FROM {_roles(s.grantees)}",
    GrantOn: _grant_on,
    RevokeOn: _grant_on,
    ShowGrants: _show_grants,
    ShowSystemGrants: lambda s, r: "SHOW SYSTEM GRANTS"
    + (f" FOR {_roles(s.grantees)}" if s.grantees else ""),
    CreateExternalConnection: lambda s, r: "CREATE EXTERNAL CONNECTION "
    + ("IF NOT EXISTS " if s.if_not_exists else "")
    + f"{format_expr(s.name)} AS {format_expr(s.uri, r, 'uri')}",
    AlterExternalConnection: lambda s, r: "ALTER EXTERNAL CONNECTION "
    + ("IF EXISTS " if s.if_exists else "") + f"{format_expr(s.name)} AS "
    + format_expr(s.uri, r, "uri"),
    DropExternalConnection: lambda s, r: f"DROP EXTERNAL CONNECTION {format_expr(s.name)}",
    ShowExternalConnections: lambda s, r: "SHOW EXTERNAL CONNECTIONS" if s.name is None
    else f"SHOW EXTERNAL CONNECTION {format_expr(s.name)}",
    ShowCreateExternalConnections: lambda s, r: "SHOW CREATE ALL EXTERNAL CONNECTIONS"
    if s.name is None else f"SHOW CREATE EXTERNAL CONNECTION {format_expr(s.name)}",
    CheckExternalConnection: lambda s, r: "CHECK EXTERNAL CONNECTION "
    + format_expr(s.uri, r, "uri") + _with_plain(s.options, r),
    SelectFromShow: lambda s, r: _query(s, r),
}


def format_statement(stmt: Statement, *, redact: bool = False) -> str:
    """Canonical SQL for `stmt`; with `redact`, the form safe for logs and job descriptions."""
    try:
        formatter = _FORMATTERS[type(stmt)]
    except KeyError:
        raise TypeError(f"not a pgkeep statement: {stmt!r}") from None
    return formatter(stmt, redact)
