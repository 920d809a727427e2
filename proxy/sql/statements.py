"""Statement nodes: one frozen dataclass per statement form pgkeep intercepts.

Each concrete class names its family in the class-level `family`, the word used in messages
and command tags ("BACKUP", "PAUSE JOBS", ...). Clauses that CockroachDB lets users write in
several ways (RESET vs = DEFAULT, TO vs =, bare flag vs = true) have one representation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .nodes import (BackupOptions, CheckConnectionOptions, Expr, Node, RestoreOptions,
                    ScheduleOptions, ShowBackupOptions, ShowSource, Targets)

__all__ = [
    "Statement",
    "ShowClusterSetting", "ShowClusterSettings", "SetClusterSetting",
    "Backup", "Restore", "ShowBackups", "ShowBackup",
    "CreateSchedule", "AlterBackupSchedule", "SetLabel", "SetInto", "SetWith", "SetRecurring",
    "SetFullBackup", "SetScheduleOption", "ExecuteImmediately", "AlterScheduleCmd",
    "ShowSchedules", "ShowSchedule", "ShowCreateSchedule", "ShowCreateAllSchedules",
    "PauseSchedules", "ResumeSchedules", "DropSchedules", "ExecuteSchedule",
    "ShowJobs", "ShowJob", "PauseJobs", "ResumeJobs", "CancelJobs",
    "GrantSystem", "RevokeSystem", "GrantOn", "RevokeOn", "ShowGrants", "ShowSystemGrants",
    "CreateExternalConnection", "AlterExternalConnection", "DropExternalConnection",
    "ShowExternalConnections", "ShowCreateExternalConnections", "CheckExternalConnection",
    "SelectFromShow", "AlterBackup", "AddKms", "AlterJobOwner", "not_supported_message",
]


class Statement(Node):
    """Base of all statement nodes."""

    __slots__ = ()
    family: ClassVar[str] = ""

    def own_words(self) -> str:
        """The statement's form in the words it was written with, for messages that name it
        (PAUSE SCHEDULE, not the family's PAUSE SCHEDULES). Never holds a value of the
        statement, so it is safe in any error."""
        return self.family


def not_supported_message(stmt: Statement) -> str:
    """The 0A000 message for a statement whose family pgkeep does not run yet."""
    words = stmt.own_words()
    verb = "are" if words.endswith(" privileges") else "is"
    return f"{words} {verb} not supported by pgkeep yet"


# --- cluster settings -------------------------------------------------------------------

@dataclass(frozen=True)
class ShowClusterSetting(Statement):
    family: ClassVar[str] = "SHOW CLUSTER SETTING"
    name: str


@dataclass(frozen=True)
class ShowClusterSettings(Statement):
    """SHOW [ALL | PUBLIC] CLUSTER SETTINGS; `all` is set by ALL (and SHOW CLUSTER SETTING ALL)."""

    family: ClassVar[str] = "SHOW CLUSTER SETTINGS"
    all: bool = False


@dataclass(frozen=True)
class SetClusterSetting(Statement):
    """SET CLUSTER SETTING name = value; `value` None means DEFAULT (and RESET)."""

    family: ClassVar[str] = "SET CLUSTER SETTING"
    name: str
    value: Expr | None


# --- backup and restore -----------------------------------------------------------------

@dataclass(frozen=True)
class Backup(Statement):
    """BACKUP [targets] INTO [LATEST IN | 'subdir' IN] collection. `targets` None is the
    whole cluster; `collection` has one URI, or several for a locality-aware backup (the
    first is the default locality)."""

    family: ClassVar[str] = "BACKUP"
    targets: Targets | None
    collection: tuple[Expr, ...]
    subdir: Expr | None = None
    latest: bool = False
    as_of: Expr | None = None
    options: BackupOptions = BackupOptions()


@dataclass(frozen=True)
class Restore(Statement):
    """RESTORE [targets | SYSTEM USERS] FROM LATEST | 'subdir' IN collection. `latest`
    is also set for FROM 'LATEST' (any case), as in CockroachDB."""

    family: ClassVar[str] = "RESTORE"
    targets: Targets | None
    collection: tuple[Expr, ...]
    subdir: Expr | None = None
    latest: bool = False
    system_users: bool = False
    as_of: Expr | None = None
    options: RestoreOptions = RestoreOptions()


@dataclass(frozen=True)
class ShowBackups(Statement):
    family: ClassVar[str] = "SHOW BACKUPS"
    collection: tuple[Expr, ...]
    newer_than: Expr | None = None
    older_than: Expr | None = None
    revision_start_time: bool = False


@dataclass(frozen=True)
class ShowBackup(Statement):
    """SHOW BACKUP [SCHEMAS | FILES | RANGES | VALIDATE] FROM LATEST | 'subdir' IN collection.
    `details` is "" for the default listing."""

    family: ClassVar[str] = "SHOW BACKUP"
    details: str
    collection: tuple[Expr, ...]
    subdir: Expr | None = None
    latest: bool = False
    options: ShowBackupOptions = ShowBackupOptions()


# --- schedules ----------------------------------------------------------------------------

@dataclass(frozen=True)
class CreateSchedule(Statement):
    """CREATE SCHEDULE [IF NOT EXISTS] [label] FOR BACKUP ... RECURRING cron [FULL BACKUP ..].
    `full_backup` None with `full_backup_always` False means no FULL BACKUP clause."""

    family: ClassVar[str] = "CREATE SCHEDULE"
    label: Expr | None
    targets: Targets | None
    collection: tuple[Expr, ...]
    recurring: Expr
    if_not_exists: bool = False
    backup_options: BackupOptions = BackupOptions()
    full_backup: Expr | None = None
    full_backup_always: bool = False
    schedule_options: ScheduleOptions = ScheduleOptions()


@dataclass(frozen=True)
class SetLabel(Node):
    label: Expr


@dataclass(frozen=True)
class SetInto(Node):
    collection: tuple[Expr, ...]


@dataclass(frozen=True)
class SetWith(Node):
    """SET WITH <one backup option>; the option is the one field set in `options`."""

    options: BackupOptions


@dataclass(frozen=True)
class SetRecurring(Node):
    recurring: Expr


@dataclass(frozen=True)
class SetFullBackup(Node):
    recurring: Expr | None
    always: bool = False


@dataclass(frozen=True)
class SetScheduleOption(Node):
    """SET SCHEDULE OPTION k = v; the option is the one field set in `options`."""

    options: ScheduleOptions


@dataclass(frozen=True)
class ExecuteImmediately(Node):
    full: bool = False


AlterScheduleCmd = (SetLabel | SetInto | SetWith | SetRecurring | SetFullBackup
                    | SetScheduleOption | ExecuteImmediately)


@dataclass(frozen=True)
class AlterBackupSchedule(Statement):
    family: ClassVar[str] = "ALTER BACKUP SCHEDULE"
    schedule_id: Expr
    commands: tuple[AlterScheduleCmd, ...]


@dataclass(frozen=True)
class AddKms(Node):
    """ADD NEW_KMS = uris WITH OLD_KMS = uris."""

    new_kms: tuple[Expr, ...]
    old_kms: tuple[Expr, ...]


@dataclass(frozen=True)
class AlterBackup(Statement):
    """ALTER BACKUP {LATEST | 'subdir'} [IN collection] ADD NEW_KMS = .. WITH OLD_KMS = ..
    (one or more ADD commands). `collection` None is the older form naming the backup's URI."""

    family: ClassVar[str] = "ALTER BACKUP"
    backup: Expr
    collection: Expr | None
    commands: tuple[AddKms, ...]

    def own_words(self) -> str:
        return "ALTER BACKUP ... ADD NEW_KMS"


@dataclass(frozen=True)
class ShowSchedules(Statement):
    """SHOW [RUNNING | PAUSED] SCHEDULES [FOR BACKUP | FOR SQL STATISTICS | FOR CHANGEFEED]."""

    family: ClassVar[str] = "SHOW SCHEDULES"
    state: str | None = None
    executor: str | None = None


@dataclass(frozen=True)
class ShowSchedule(Statement):
    family: ClassVar[str] = "SHOW SCHEDULE"
    schedule_id: Expr


@dataclass(frozen=True)
class ShowCreateSchedule(Statement):
    family: ClassVar[str] = "SHOW CREATE SCHEDULE"
    schedule_id: Expr


@dataclass(frozen=True)
class ShowCreateAllSchedules(Statement):
    family: ClassVar[str] = "SHOW CREATE ALL SCHEDULES"


@dataclass(frozen=True)
class _ControlSchedules(Statement):
    """One schedule by id, or every schedule whose id the query returns."""

    schedule_id: Expr | None = None
    query: "SelectFromShow | None" = None

    def own_words(self) -> str:
        verb = self.family.split()[0]
        return f"{verb} SCHEDULE" if self.schedule_id is not None else f"{verb} SCHEDULES <select>"


@dataclass(frozen=True)
class PauseSchedules(_ControlSchedules):
    family: ClassVar[str] = "PAUSE SCHEDULES"


@dataclass(frozen=True)
class ResumeSchedules(_ControlSchedules):
    family: ClassVar[str] = "RESUME SCHEDULES"


@dataclass(frozen=True)
class DropSchedules(_ControlSchedules):
    family: ClassVar[str] = "DROP SCHEDULES"


@dataclass(frozen=True)
class ExecuteSchedule(Statement):
    """EXECUTE SCHEDULE id (v26.1+; CockroachDB refuses it for backup schedules)."""

    family: ClassVar[str] = "EXECUTE SCHEDULE"
    schedule_id: Expr


# --- jobs ---------------------------------------------------------------------------------

def _for_schedules_words(head: str, stmt) -> str | None:
    if stmt.schedule_id is not None:
        return f"{head} FOR SCHEDULE"
    if stmt.schedules_query is not None:
        return f"{head} FOR SCHEDULES <select>"
    return None


@dataclass(frozen=True)
class ShowJobs(Statement):
    """SHOW [AUTOMATIC] JOBS [query | FOR SCHEDULE[S] ...] [WHEN COMPLETE]. `block` is WHEN
    COMPLETE; `schedule_id`/`schedules_query` are the FOR SCHEDULE / FOR SCHEDULES forms."""

    family: ClassVar[str] = "SHOW JOBS"
    automatic: bool = False
    query: "SelectFromShow | None" = None
    block: bool = False
    schedule_id: Expr | None = None
    schedules_query: "SelectFromShow | None" = None
    execution_details: bool = False

    def own_words(self) -> str:
        return _for_schedules_words("SHOW JOBS", self) or (
            "SHOW AUTOMATIC JOBS" if self.automatic else self.family)


@dataclass(frozen=True)
class ShowJob(Statement):
    family: ClassVar[str] = "SHOW JOB"
    job_id: Expr
    block: bool = False
    execution_details: bool = False


@dataclass(frozen=True)
class _ControlJobs(Statement):
    """Exactly one selector is set: a job id, a query returning ids, FOR SCHEDULE id,
    FOR SCHEDULES query, or ALL <type> JOBS (`all_type` upper-case, e.g. "BACKUP")."""

    job_id: Expr | None = None
    query: "SelectFromShow | None" = None
    schedule_id: Expr | None = None
    schedules_query: "SelectFromShow | None" = None
    all_type: str | None = None

    def own_words(self) -> str:
        verb = self.family.split()[0]
        if self.job_id is not None:
            return f"{verb} JOB"
        if self.all_type is not None:
            return f"{verb} ALL {self.all_type} JOBS"
        return _for_schedules_words(f"{verb} JOBS", self) or f"{verb} JOBS <select>"


@dataclass(frozen=True)
class PauseJobs(_ControlJobs):
    family: ClassVar[str] = "PAUSE JOBS"
    reason: Expr | None = None


@dataclass(frozen=True)
class ResumeJobs(_ControlJobs):
    family: ClassVar[str] = "RESUME JOBS"


@dataclass(frozen=True)
class CancelJobs(_ControlJobs):
    family: ClassVar[str] = "CANCEL JOBS"


@dataclass(frozen=True)
class AlterJobOwner(Statement):
    """ALTER JOB id OWNER TO role (CockroachDB v25+)."""

    family: ClassVar[str] = "ALTER JOB"
    job_id: Expr
    owner: str

    def own_words(self) -> str:
        return "ALTER JOB ... OWNER TO"


# --- privileges ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GrantSystem(Statement):
    """GRANT SYSTEM priv, ... TO role, ... [WITH GRANT OPTION]; privileges upper-case."""

    family: ClassVar[str] = "GRANT SYSTEM"
    privileges: tuple[str, ...]
    grantees: tuple[str, ...]
    with_grant_option: bool = False

    def own_words(self) -> str:
        return "GRANT SYSTEM privileges"


@dataclass(frozen=True)
class RevokeSystem(Statement):
    family: ClassVar[str] = "REVOKE SYSTEM"
    privileges: tuple[str, ...]
    grantees: tuple[str, ...]
    grant_option_for: bool = False

    def own_words(self) -> str:
        return "REVOKE SYSTEM privileges"


@dataclass(frozen=True)
class GrantOn(Statement):
    """GRANT privileges ON DATABASE | TABLE | EXTERNAL CONNECTION ... TO roles, intercepted
    only when it names a CockroachDB privilege (BACKUP, RESTORE) or an external connection.
    `on` is "DATABASE", "TABLE" or "EXTERNAL CONNECTION"; for the last, `names` holds the
    connection names."""

    family: ClassVar[str] = "GRANT"
    privileges: tuple[str, ...]
    on: str
    names: tuple
    grantees: tuple[str, ...]
    with_grant_option: bool = False

    def own_words(self) -> str:
        return f"{self.family} {', '.join(self.privileges)} ON {self.on}"


@dataclass(frozen=True)
class RevokeOn(Statement):
    family: ClassVar[str] = "REVOKE"
    privileges: tuple[str, ...]
    on: str
    names: tuple
    grantees: tuple[str, ...]
    grant_option_for: bool = False

    def own_words(self) -> str:
        return f"{self.family} {', '.join(self.privileges)} ON {self.on}"


@dataclass(frozen=True)
class ShowGrants(Statement):
    """SHOW GRANTS [ON DATABASE | SCHEMA | TABLE | EXTERNAL CONNECTION ...] [FOR roles].
    `on` None lists every grant."""

    family: ClassVar[str] = "SHOW GRANTS"
    on: str | None = None
    names: tuple = ()
    grantees: tuple[str, ...] = ()

    def own_words(self) -> str:
        return self.family if self.on is None else f"{self.family} ON {self.on}"


@dataclass(frozen=True)
class ShowSystemGrants(Statement):
    family: ClassVar[str] = "SHOW SYSTEM GRANTS"
    grantees: tuple[str, ...] = ()


# --- external connections -----------------------------------------------------------------

@dataclass(frozen=True)
class CreateExternalConnection(Statement):
    family: ClassVar[str] = "CREATE EXTERNAL CONNECTION"
    name: Expr
    uri: Expr
    if_not_exists: bool = False


@dataclass(frozen=True)
class AlterExternalConnection(Statement):
    family: ClassVar[str] = "ALTER EXTERNAL CONNECTION"
    name: Expr
    uri: Expr
    if_exists: bool = False


@dataclass(frozen=True)
class DropExternalConnection(Statement):
    family: ClassVar[str] = "DROP EXTERNAL CONNECTION"
    name: Expr


@dataclass(frozen=True)
class ShowExternalConnections(Statement):
    """SHOW EXTERNAL CONNECTIONS, or SHOW EXTERNAL CONNECTION name when `name` is set."""

    family: ClassVar[str] = "SHOW EXTERNAL CONNECTIONS"
    name: Expr | None = None


@dataclass(frozen=True)
class ShowCreateExternalConnections(Statement):
    """SHOW CREATE ALL EXTERNAL CONNECTIONS, or SHOW CREATE EXTERNAL CONNECTION name."""

    family: ClassVar[str] = "SHOW CREATE EXTERNAL CONNECTIONS"
    name: Expr | None = None


@dataclass(frozen=True)
class CheckExternalConnection(Statement):
    family: ClassVar[str] = "CHECK EXTERNAL CONNECTION"
    uri: Expr
    options: CheckConnectionOptions = CheckConnectionOptions()


# --- queries over SHOW --------------------------------------------------------------------

@dataclass(frozen=True)
class SelectFromShow(Statement):
    """A query (SELECT, WITH, ...) in its source text, with the `[SHOW ...]` table sources
    found in it. Used as a statement when it has sources, and as the <select> of SHOW JOBS,
    PAUSE JOBS, PAUSE SCHEDULES and friends (where `sources` may be empty)."""

    family: ClassVar[str] = "SELECT"
    sql: str
    sources: tuple[ShowSource, ...] = ()
