"""Hypothesis strategies for pgkeep statement ASTs (valid ones: each parses back equal).

Secret values (URI secret parameters, userinfo passwords, passphrases) are drawn from
`secrets`, whose values carry a marker so a test can check none survives redaction.
"""
from __future__ import annotations

from hypothesis import strategies as st

from proxy.sql import (BackupOptions, BoolLit, CheckConnectionOptions, FuncCall, NumLit,
                       Placeholder, RestoreOptions, ScheduleOptions, ShowBackupOptions, StrLit,
                       TablePattern, Targets)
from proxy.sql import statements as S
from proxy.sql.show_sources import build_query
from proxy.sql.format import format_statement

MARK = "Sx9q"
SECRET_PARAMS = ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "CREDENTIALS",
                 "AZURE_ACCOUNT_KEY", "AZURE_CLIENT_SECRET"]

secrets = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=12).map(
    lambda s: MARK + s)
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=12)
ident = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)
name = st.one_of(ident, ident, st.text(st.characters(blacklist_categories=("Cs",),
                                                     blacklist_characters="\x00."),
                                       min_size=1, max_size=8))
placeholder = st.integers(1, 12).map(Placeholder)
str_or_ph = st.one_of(text.map(StrLit), placeholder)
# A database name: never empty (an empty new_db_name or into_db is 42601 "empty database name").
db_name_or_ph = st.one_of(text.filter(bool).map(StrLit), placeholder)
ints = st.integers(0, 10**12).map(lambda n: NumLit(str(n)))
int_or_ph = st.one_of(ints, placeholder)
bool_expr = st.one_of(st.booleans().map(BoolLit), placeholder)


@st.composite
def uri(draw) -> StrLit:
    scheme = draw(st.sampled_from(["s3", "gs", "azure", "azure-blob", "nodelocal", "external",
                                   "userfile"]))
    user = ""
    if draw(st.booleans()):
        user = "u" + draw(ident) + ":" + draw(secrets) + "@"
    path = draw(st.from_regex(r"[a-z0-9_/.-]{0,12}", fullmatch=True))
    params = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            params.append(draw(st.sampled_from(SECRET_PARAMS)) + "=" + draw(secrets))
        else:
            params.append(draw(st.sampled_from(["AUTH", "AWS_REGION", "AWS_ACCESS_KEY_ID",
                                                "COCKROACH_LOCALITY"]))
                          + "=" + draw(st.from_regex(r"[a-z0-9%]{0,6}", fullmatch=True)))
    query = ("?" + "&".join(params)) if params else ""
    return StrLit(f"{scheme}://{user}bucket/{path}{query}")


uri_or_ph = st.one_of(uri(), uri(), placeholder)
uris = st.lists(uri_or_ph, min_size=1, max_size=3).map(tuple)
@st.composite
def kms_uri(draw) -> StrLit:
    scheme = draw(st.sampled_from(["aws-kms", "gcp-kms", "azure-kms", "aws", "gs"]))
    params = [draw(st.sampled_from(SECRET_PARAMS)) + "=" + draw(secrets)
              for _ in range(draw(st.integers(0, 2)))]
    query = ("?AUTH=specified&" + "&".join(params)) if params else ""
    return StrLit(f"{scheme}:///key-{draw(ident)}{query}")


kms_uris = st.lists(st.one_of(kms_uri(), placeholder), min_size=1, max_size=2).map(tuple)
passphrase = st.one_of(secrets.map(StrLit), placeholder)
subdir = st.one_of(text.filter(lambda s: s.upper() != "LATEST").map(StrLit), placeholder)
aost = st.one_of(st.none(), text.map(StrLit), placeholder, ints,
                 st.just(NumLit("1700000000000000000.0000000001")), st.just(NumLit("-5")),
                 st.just(FuncCall("follower_read_timestamp")))


def opt(strategy):
    return st.one_of(st.none(), strategy)


pattern = st.one_of(
    st.lists(name, min_size=1, max_size=3).map(lambda p: TablePattern(tuple(p))),
    st.lists(name, min_size=1, max_size=2).map(lambda p: TablePattern(tuple(p), star=True)),
    st.just(TablePattern((), star=True)))
db_targets = st.lists(name, min_size=1, max_size=3).map(lambda n: Targets("DATABASE", tuple(n)))
table_targets = st.lists(pattern, min_size=1, max_size=3).map(lambda n: Targets("TABLE", tuple(n)))
targets = st.one_of(st.none(), db_targets, table_targets)

backup_options = st.builds(
    BackupOptions, revision_history=opt(bool_expr), encryption_passphrase=opt(passphrase),
    detached=opt(st.booleans()), kms=opt(kms_uris), incremental_location=opt(uris),
    execution_locality=opt(str_or_ph), include_all_virtual_clusters=opt(bool_expr),
    updates_cluster_monitoring_metrics=opt(bool_expr), strict=opt(bool_expr))

_flag = st.booleans()


@st.composite
def restore(draw):
    system_users = draw(st.booleans())
    tg = None if system_users else draw(targets)
    o = draw(st.builds(
        RestoreOptions, encryption_passphrase=opt(passphrase), kms=opt(kms_uris),
        into_db=opt(db_name_or_ph), skip_missing_foreign_keys=_flag,
        skip_missing_sequence_owners=_flag, skip_missing_sequences=_flag,
        skip_missing_views=_flag, skip_missing_udfs=_flag, detached=_flag,
        skip_localities_check=_flag, new_db_name=opt(db_name_or_ph),
        incremental_location=opt(uris), virtual_cluster_name=opt(str_or_ph),
        virtual_cluster=opt(str_or_ph), schema_only=_flag, verify_backup_table_data=_flag,
        unsafe_restore_incompatible_version=_flag, execution_locality=opt(str_or_ph),
        experimental_deferred_copy=_flag, experimental_copy=_flag, remove_regions=_flag,
        grants=_flag, debug_pause_on=opt(str_or_ph)))
    fix = {}
    if o.verify_backup_table_data:
        fix["schema_only"] = True
    if o.encryption_passphrase is not None:
        fix["kms"] = None
    if tg is None or tg.kind != "TABLE":
        fix["into_db"] = None
    if tg is None or tg.kind != "DATABASE" or len(tg.names) != 1:
        fix["new_db_name"] = None
    if system_users:
        fix["grants"] = False
    from dataclasses import replace
    o = replace(o, **fix)
    latest = draw(st.booleans())
    return S.Restore(tg, draw(uris), None if latest else draw(subdir), latest, system_users,
                     draw(aost), o)


@st.composite
def backup(draw):
    mode = draw(st.sampled_from(["full", "latest", "subdir"]))
    return S.Backup(draw(targets), draw(uris), draw(subdir) if mode == "subdir" else None,
                    mode == "latest", draw(aost), draw(backup_options))


show_backup_options = st.builds(
    ShowBackupOptions, as_json=_flag, check_files=_flag, skip_size=_flag, debug_ids=_flag,
    incremental_location=opt(uris), kms=opt(kms_uris), encryption_passphrase=opt(passphrase),
    privileges=_flag, encryption_info_dir=opt(uri_or_ph))
enum_fail = st.one_of(st.sampled_from(["retry", "reschedule", "pause"]).map(StrLit), placeholder)
enum_prev = st.one_of(st.sampled_from(["start", "skip", "wait"]).map(StrLit), placeholder)
schedule_options = st.builds(
    ScheduleOptions, first_run=opt(str_or_ph), on_execution_failure=opt(enum_fail),
    on_previous_running=opt(enum_prev), ignore_existing_backups=_flag,
    updates_cluster_last_backup_time_metric=opt(bool_expr))


@st.composite
def create_schedule(draw):
    ine = draw(st.booleans())
    label = draw(str_or_ph) if ine else draw(opt(str_or_ph))
    always = draw(st.booleans())
    return S.CreateSchedule(label, draw(targets), draw(uris), draw(str_or_ph), ine,
                            draw(backup_options), None if always else draw(opt(str_or_ph)),
                            always, draw(schedule_options))


def _single(cls, strategy):
    """An options object with exactly one field set."""
    return strategy.filter(lambda o: sum(
        getattr(o, f) not in (None, False) for f in o.__dataclass_fields__) == 1)


@st.composite
def alter_schedule(draw):
    pool = [S.SetLabel(draw(str_or_ph)), S.SetInto(draw(uris)),
            S.SetWith(draw(_single(BackupOptions, backup_options))),
            S.SetRecurring(draw(str_or_ph)),
            draw(st.one_of(st.just(S.SetFullBackup(None, True)),
                           str_or_ph.map(S.SetFullBackup))),
            S.SetScheduleOption(draw(_single(ScheduleOptions, schedule_options))),
            S.ExecuteImmediately(draw(st.booleans()))]
    cmds = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique_by=type))
    return S.AlterBackupSchedule(draw(ints), tuple(cmds))


simple_shows = st.sampled_from(["SHOW JOBS", "SHOW SCHEDULES", "SHOW AUTOMATIC JOBS",
                                "SHOW CLUSTER SETTINGS", "SHOW SYSTEM GRANTS"])


@st.composite
def query(draw, with_source: bool = False):
    if with_source or draw(st.booleans()):
        inner = draw(st.one_of(simple_shows, backup().map(lambda b: format_statement(
            S.ShowBackups(b.collection)))))
        sql = draw(st.sampled_from(["SELECT * FROM [{}] WHERE x = 1",
                                    "SELECT id FROM t, [{}] AS s ORDER BY 1",
                                    "(SELECT job_id FROM [{}])"])).format(inner)
    else:
        sql = draw(st.sampled_from(["SELECT 1", "VALUES (1), (2)", "(SELECT id FROM t)"]))
    return build_query(sql, 0, len(sql))


@st.composite
def control_jobs(draw):
    cls = draw(st.sampled_from([S.PauseJobs, S.ResumeJobs, S.CancelJobs]))
    which = draw(st.sampled_from(["job_id", "query", "schedule_id", "schedules_query",
                                  "all_type"]))
    value = {"job_id": int_or_ph, "query": query(), "schedule_id": int_or_ph,
             "schedules_query": query(),
             "all_type": st.sampled_from(["BACKUP", "RESTORE", "IMPORT", "CHANGEFEED"])}[which]
    fields = {which: draw(value)}
    if cls is S.PauseJobs and which in ("job_id", "query"):
        fields["reason"] = draw(opt(str_or_ph))
    return cls(**fields)


@st.composite
def show_jobs(draw):
    which = draw(st.sampled_from(["plain", "auto", "query", "block", "sched", "scheds"]))
    if which == "auto":
        return S.ShowJobs(automatic=True)
    if which == "block":
        return S.ShowJobs(query=draw(query()), block=True)
    if which == "sched":
        return S.ShowJobs(schedule_id=draw(int_or_ph))
    if which == "scheds":
        return S.ShowJobs(schedules_query=draw(query()))
    q = draw(query()) if which == "query" else None
    return S.ShowJobs(query=q, execution_details=draw(st.booleans()))


roles = st.lists(st.one_of(name, st.sampled_from(["current_user", "public"])),
                 min_size=1, max_size=3).map(tuple)
sys_privs = st.lists(st.sampled_from(["BACKUP", "RESTORE", "VIEWJOB", "CONTROLJOB",
                                      "EXTERNALCONNECTION", "EXTERNALIOIMPLICITACCESS"]),
                     min_size=1, max_size=3, unique=True).map(tuple)


@st.composite
def grant_on(draw):
    on = draw(st.sampled_from(["DATABASE", "TABLE", "EXTERNAL CONNECTION"]))
    if on == "DATABASE":
        privs = ("BACKUP",) + tuple(draw(st.lists(st.sampled_from(["RESTORE", "CONNECT"]),
                                                  unique=True)))
        names = draw(db_targets).names
    elif on == "TABLE":
        privs = ("BACKUP",) + tuple(draw(st.lists(st.sampled_from(["SELECT", "INSERT"]),
                                                  unique=True)))
        names = draw(table_targets).names
    else:
        privs = tuple(draw(st.lists(st.sampled_from(["USAGE", "UPDATE", "DROP"]), min_size=1,
                                    unique=True)))
        names = tuple(draw(st.lists(str_or_ph, min_size=1, max_size=2)))
    if draw(st.booleans()):
        return S.GrantOn(privs, on, names, draw(roles), draw(st.booleans()))
    return S.RevokeOn(privs, on, names, draw(roles), draw(st.booleans()))


setting_name = st.lists(ident, min_size=1, max_size=4).map(".".join)
setting_value = st.one_of(st.none(), text.map(StrLit), placeholder, ints,
                          st.just(NumLit("-1")), st.just(NumLit("0.25")),
                          st.booleans().map(BoolLit))

statements = st.one_of(
    setting_name.map(S.ShowClusterSetting),
    st.booleans().map(S.ShowClusterSettings),
    st.builds(S.SetClusterSetting, setting_name, setting_value),
    backup(), restore(),
    st.builds(S.ShowBackups, uris, opt(str_or_ph), opt(str_or_ph), st.booleans()),
    st.builds(lambda d, u, s, o: S.ShowBackup(d, u, s, s is None, o),
              st.sampled_from(["", "SCHEMAS", "FILES", "RANGES", "VALIDATE"]), uris,
              opt(subdir), show_backup_options),
    create_schedule(), alter_schedule(),
    st.builds(S.ShowSchedules, st.sampled_from([None, "RUNNING", "PAUSED"]),
              st.sampled_from([None, "BACKUP", "SQL STATISTICS", "CHANGEFEED"])),
    int_or_ph.map(S.ShowSchedule), int_or_ph.map(S.ShowCreateSchedule),
    st.just(S.ShowCreateAllSchedules()),
    st.builds(lambda cls, i, q, use_q: cls(query=q) if use_q else cls(schedule_id=i),
              st.sampled_from([S.PauseSchedules, S.ResumeSchedules, S.DropSchedules]),
              int_or_ph, query(), st.booleans()),
    int_or_ph.map(S.ExecuteSchedule),
    show_jobs(), st.builds(S.ShowJob, int_or_ph, st.booleans(), st.booleans()),
    control_jobs(),
    st.builds(S.GrantSystem, sys_privs, roles, st.booleans()),
    st.builds(S.RevokeSystem, sys_privs, roles, st.booleans()),
    grant_on(),
    st.builds(lambda t, r: S.ShowGrants(t.kind if t else None, t.names if t else (), r),
              opt(st.one_of(db_targets, table_targets)), st.one_of(st.just(()), roles)),
    st.builds(S.ShowSystemGrants, st.one_of(st.just(()), roles)),
    st.builds(S.CreateExternalConnection, str_or_ph, uri_or_ph, st.booleans()),
    st.builds(S.AlterExternalConnection, str_or_ph, uri_or_ph, st.booleans()),
    str_or_ph.map(S.DropExternalConnection),
    opt(str_or_ph).map(S.ShowExternalConnections),
    opt(str_or_ph).map(S.ShowCreateExternalConnections),
    st.builds(S.CheckExternalConnection, uri_or_ph, st.builds(
        CheckConnectionOptions, opt(int_or_ph), opt(str_or_ph), opt(str_or_ph))),
    query(with_source=True),
)
