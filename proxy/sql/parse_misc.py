"""Productions for jobs, schedule control and listing, privileges, external connections and
cluster settings (CockroachDB v26.2 grammar; see the package docstring).
"""
from __future__ import annotations

from .lexer import DECIMAL, INT, OP, PARAM, STRING
from .nodes import BoolLit, CheckConnectionOptions, Expr, NumLit, StrLit
from .options import CHECK_OPTIONS, parse_with_options
from .parser_base import Parser
from .show_sources import query_node
from .statements import (AlterExternalConnection, AlterJobOwner, CancelJobs, CheckExternalConnection,
                         CreateExternalConnection, DropExternalConnection, DropSchedules,
                         ExecuteSchedule, GrantOn, GrantSystem, PauseJobs, PauseSchedules,
                         ResumeJobs, ResumeSchedules, RevokeOn, RevokeSystem,
                         SetClusterSetting, ShowClusterSetting, ShowClusterSettings,
                         ShowCreateAllSchedules, ShowCreateExternalConnections,
                         ShowCreateSchedule, ShowExternalConnections, ShowGrants, ShowJob,
                         ShowJobs, ShowSchedule, ShowSchedules, ShowSystemGrants)

__all__ = ["parse_show_cluster_setting", "parse_set_cluster_setting",
           "parse_reset_cluster_setting", "parse_show_schedules", "parse_show_create",
           "parse_control_schedules", "parse_execute_schedule", "parse_show_jobs",
           "parse_control_jobs", "parse_alter_job_owner", "parse_show_changefeed_jobs",
           "parse_grant", "parse_show_grants",
           "parse_create_external_connection", "parse_alter_external_connection",
           "parse_drop_external_connection", "parse_show_external_connections",
           "parse_check_external_connection", "parse_check_connection_tail",
           "SYSTEM_PRIVILEGES", "JOB_TYPES"]

SYSTEM_PRIVILEGES = frozenset("""
ALL BACKUP RESTORE CANCELQUERY CHANGEFEED CONTROLJOB CREATEDB CREATELOGIN CREATEROLE
EXTERNALCONNECTION EXTERNALIOIMPLICITACCESS INSPECT MANAGEVIRTUALCLUSTER MODIFYCLUSTERSETTING
MODIFYSQLCLUSTERSETTING NOSQLLOGIN REPAIRCLUSTER REPAIRCLUSTERMETADATA REPLICATION
VIEWACTIVITY VIEWACTIVITYREDACTED VIEWCLUSTERMETADATA VIEWCLUSTERSETTING VIEWDEBUG VIEWJOB
VIEWSYSTEMTABLE
""".split())

# Privileges that may be granted on each object kind (CockroachDB's privilege.Kind lists).
_OBJECT_PRIVILEGES = {
    "DATABASE": frozenset("ALL BACKUP CHANGEFEED CONNECT CREATE DROP RESTORE TEMPORARY TEMP "
                          "ZONECONFIG".split()),
    "TABLE": frozenset("ALL BACKUP CHANGEFEED CREATE DROP SELECT INSERT DELETE UPDATE "
                       "TRUNCATE REFERENCES TRIGGER ZONECONFIG".split()),
    "EXTERNAL CONNECTION": frozenset("ALL USAGE UPDATE DROP".split()),
}

JOB_TYPES = ("BACKUP", "RESTORE", "IMPORT", "CHANGEFEED")


# --- cluster settings ---------------------------------------------------------------------

def _no_virtual_cluster(p: Parser) -> None:
    if p.at_kw("for") and p.at_kw("virtual", "tenant", k=1):
        raise p.unsupported(p.peek(), "virtual clusters are not supported by pgkeep")


def parse_show_cluster_setting(p: Parser):
    p.expect_kw("show")
    if p.accept_kw("all") or p.accept_kw("public"):
        is_all = p.tokens[p.i - 1].value == "all"
        p.expect_kw("cluster", "settings")
        _no_virtual_cluster(p)
        p.expect_end()
        return ShowClusterSettings(all=is_all)
    p.expect_kw("cluster")
    if p.accept_kw("settings"):
        _no_virtual_cluster(p)
        p.expect_end()
        return ShowClusterSettings()
    p.expect_kw("setting")
    if p.accept_kw("all"):
        _no_virtual_cluster(p)
        p.expect_end()
        return ShowClusterSettings(all=True)
    name = p.dotted_name()
    _no_virtual_cluster(p)
    p.expect_end()
    return ShowClusterSetting(name)


def _setting_value(p: Parser) -> Expr:
    if p.accept_op("("):  # an expression in parentheses: drivers that inline parameters send ('v')
        value = _setting_value(p)
        p.expect_op(")")
        return value
    tok = p.peek()
    if tok.kind == STRING:
        p.i += 1
        return StrLit(tok.value)
    if tok.kind == PARAM:
        return p.placeholder()
    sign = ""
    if tok.kind == OP and tok.value in ("-", "+") and p.peek(1).kind in (INT, DECIMAL):
        sign = "-" if tok.value == "-" else ""
        p.i += 1
        tok = p.peek()
    if tok.kind in (INT, DECIMAL):
        p.i += 1
        return NumLit(sign + tok.value)
    if p.at_kw("true", "false"):
        return BoolLit(p.next().value == "true")
    if p.at_kw("on") or p.at_name():
        return StrLit(p.next().value)
    raise p.error()


def parse_set_cluster_setting(p: Parser) -> SetClusterSetting:
    p.expect_kw("set", "cluster", "setting")
    name = p.dotted_name()
    if not (p.accept_op("=") or p.accept_kw("to")):
        raise p.error()
    value = None if p.accept_kw("default") else _setting_value(p)
    _no_virtual_cluster(p)
    p.expect_end()
    return SetClusterSetting(name, value)


def parse_reset_cluster_setting(p: Parser) -> SetClusterSetting:
    p.expect_kw("reset", "cluster", "setting")
    name = p.dotted_name()
    _no_virtual_cluster(p)
    p.expect_end()
    return SetClusterSetting(name, None)


# --- schedules ----------------------------------------------------------------------------

def parse_show_schedules(p: Parser):
    p.expect_kw("show")
    if p.accept_kw("schedule"):
        schedule_id = p.id_value("schedule ID")
        p.expect_end()
        return ShowSchedule(schedule_id)
    state = None
    if p.at_kw("running", "paused"):
        state = p.next().value.upper()
    p.expect_kw("schedules")
    executor = None
    if p.accept_kw("for"):
        if p.accept_kw("backup"):
            executor = "BACKUP"
        elif p.accept_seq("sql", "statistics"):
            executor = "SQL STATISTICS"
        else:
            p.expect_kw("changefeed")
            executor = "CHANGEFEED"
    p.expect_end()
    return ShowSchedules(state, executor)


def parse_show_create(p: Parser):
    p.expect_kw("show", "create")
    if p.accept_seq("all", "schedules"):
        p.expect_end()
        return ShowCreateAllSchedules()
    if p.accept_seq("all", "external", "connections"):
        p.expect_end()
        return ShowCreateExternalConnections(None)
    if p.accept_kw("schedule"):
        schedule_id = p.id_value("schedule ID")
        p.expect_end()
        return ShowCreateSchedule(schedule_id)
    p.expect_kw("external", "connection")
    name = p.string_or_placeholder()
    p.expect_end()
    return ShowCreateExternalConnections(name)


def parse_control_schedules(p: Parser):
    verb = p.next().value
    cls = {"pause": PauseSchedules, "resume": ResumeSchedules, "drop": DropSchedules}[verb]
    if p.accept_kw("schedule"):
        if p.at_op("("):
            start, end, _ = p.query_span()
            node = cls(query=query_node(p, start, end))
        else:
            node = cls(schedule_id=p.id_value("schedule ID"))
    else:
        p.expect_kw("schedules")
        start, end, _ = p.query_span()
        node = cls(query=query_node(p, start, end))
    p.expect_end()
    return node


def parse_execute_schedule(p: Parser) -> ExecuteSchedule:
    p.expect_kw("execute", "schedule")
    schedule_id = p.id_value("schedule ID")
    p.expect_end()
    return ExecuteSchedule(schedule_id)


# --- jobs ---------------------------------------------------------------------------------

def _execution_details(p: Parser) -> bool:
    if p.accept_kw("with"):
        p.expect_kw("execution", "details")
        return True
    return False


def _for_schedules(p: Parser) -> dict:
    p.expect_kw("for")
    if p.accept_kw("schedules"):
        start, end, _ = p.query_span()
        return {"schedules_query": query_node(p, start, end)}
    p.expect_kw("schedule")
    return {"schedule_id": p.id_value("schedule ID")}


def parse_show_jobs(p: Parser):
    p.expect_kw("show")
    if p.accept_seq("automatic", "jobs"):
        p.expect_end()
        return ShowJobs(automatic=True)
    if p.accept_kw("job"):
        block = p.accept_seq("when", "complete")
        if p.at_op("("):
            start, end, _ = p.query_span(stop=("execution",))
            node = ShowJobs(query=query_node(p, start, end), block=block,
                            execution_details=_execution_details(p))
        else:
            node = ShowJob(p.id_value("job ID"), block, _execution_details(p))
        p.expect_end()
        return node
    p.expect_kw("jobs")
    if p.at_end():
        return ShowJobs()
    if p.at_seq("with", "execution"):
        node = ShowJobs(execution_details=_execution_details(p))
    elif p.accept_seq("when", "complete"):
        start, end, _ = p.query_span()
        node = ShowJobs(query=query_node(p, start, end), block=True)
    elif p.at_kw("for"):
        node = ShowJobs(**_for_schedules(p))
    else:
        start, end, _ = p.query_span(stop=("execution",))
        node = ShowJobs(query=query_node(p, start, end), execution_details=_execution_details(p))
    p.expect_end()
    return node


def parse_alter_job_owner(p: Parser) -> AlterJobOwner:
    p.expect_kw("alter", "job")
    job_id = p.int_value("job ID")
    p.expect_kw("owner", "to")
    owner = p.role()
    p.expect_end()
    return AlterJobOwner(job_id, owner)


def parse_show_changefeed_jobs(p: Parser):
    """SHOW CHANGEFEED JOBS [<select>] | SHOW CHANGEFEED JOB id: parsed, then 0A000."""
    at = p.expect_kw("show", "changefeed")
    words = "JOB" if p.at_kw("job") else "JOBS"
    if p.accept_kw("job"):
        if p.at_op("("):
            p.query_span()
        else:
            p.int_value("job ID")
    else:
        p.expect_kw("jobs")
        if not p.at_end():
            p.query_span()
    p.expect_end()
    raise p.unsupported(at, f"SHOW CHANGEFEED {words} is not supported by pgkeep: pgkeep runs "
                            "no changefeeds", hint="SHOW JOBS lists pgkeep's jobs")


def parse_control_jobs(p: Parser):
    verb = p.next().value
    cls = {"pause": PauseJobs, "resume": ResumeJobs, "cancel": CancelJobs}[verb]
    fields: dict = {}
    reason_allowed = False
    if p.accept_kw("all"):
        tok = p.next()
        if tok.kind != "ident" or tok.value.upper() not in JOB_TYPES:
            if tok.kind == "ident" and p.at_kw("jobs"):
                raise p.value_error(tok, f"unsupported job type {tok.value}, expected one of "
                                         f"{', '.join(JOB_TYPES)}")
            raise p.error(tok)
        fields["all_type"] = tok.value.upper()
        p.expect_kw("jobs")
    elif p.accept_kw("job"):
        reason_allowed = True
        if p.at_op("("):
            start, end, _ = p.query_span(stop=("reason",))
            fields["query"] = query_node(p, start, end)
        else:
            fields["job_id"] = p.id_value("job ID")
    else:
        p.expect_kw("jobs")
        if p.at_kw("for"):
            fields.update(_for_schedules(p))
        else:
            reason_allowed = True
            start, end, _ = p.query_span(stop=("reason",))
            fields["query"] = query_node(p, start, end)
    if reason_allowed and cls is PauseJobs and p.accept_kw("with"):
        p.expect_kw("reason")
        p.expect_op("=")
        fields["reason"] = p.string_or_placeholder("reason")
    p.expect_end()
    return cls(**fields)


# --- privileges ---------------------------------------------------------------------------

def _privileges(p: Parser) -> tuple[str, ...]:
    privs = []
    while True:
        tok = p.peek()
        if tok.kind != "ident" or tok.value in ("on", "to", "from"):
            raise p.error()
        p.i += 1
        name = tok.value.upper()
        if name == "ALL":
            p.accept_kw("privileges")
        if name in privs:
            raise p.error(tok, f"{tok.value} specified multiple times")
        privs.append(name)
        if not p.accept_op(","):
            return tuple(privs)


def _grant_target(p: Parser) -> tuple[str, tuple]:
    if p.accept_kw("database"):
        return "DATABASE", p.name_list()
    if p.accept_seq("external", "connection"):
        names = [p.string_or_placeholder()]
        while p.accept_op(","):
            names.append(p.string_or_placeholder())
        return "EXTERNAL CONNECTION", tuple(names)
    targets = p.targets()
    return targets.kind, targets.names


def parse_grant(p: Parser):
    """GRANT/REVOKE SYSTEM ..., and GRANT/REVOKE ... ON DATABASE | TABLE | EXTERNAL CONNECTION."""
    verb = p.next().value
    grant_option_for = verb == "revoke" and p.accept_seq("grant", "option", "for")
    system = p.accept_kw("system")
    privs_at = p.peek()
    privileges = _privileges(p)
    on, names = None, ()
    if not system:
        p.expect_kw("on")
        on, names = _grant_target(p)
        allowed = _OBJECT_PRIVILEGES[on]
    else:
        allowed = SYSTEM_PRIVILEGES
    for priv in privileges:
        if priv not in allowed:
            where = "system" if system else on.lower()
            raise p.value_error(privs_at, f"invalid privilege type {priv} for {where}")
    p.expect_kw("to" if verb == "grant" else "from")
    grantees = p.role_list()
    with_grant_option = verb == "grant" and p.accept_seq("with", "grant", "option")
    p.expect_end()
    if verb == "grant":
        if system:
            return GrantSystem(privileges, grantees, with_grant_option)
        return GrantOn(privileges, on, names, grantees, with_grant_option)
    if system:
        return RevokeSystem(privileges, grantees, grant_option_for)
    return RevokeOn(privileges, on, names, grantees, grant_option_for)


def _dotted_list(p: Parser) -> tuple[str, ...]:
    names = [p.dotted_name()]
    while p.accept_op(","):
        names.append(p.dotted_name())
    return tuple(names)


def parse_show_grants(p: Parser):
    p.expect_kw("show")
    if p.accept_kw("system"):
        p.expect_kw("grants")
        grantees = p.role_list() if p.accept_kw("for") else ()
        p.expect_end()
        return ShowSystemGrants(grantees)
    p.expect_kw("grants")
    on, names = None, ()
    if p.accept_kw("on"):
        if p.accept_kw("schema"):
            on, names = "SCHEMA", _dotted_list(p)
        elif p.accept_kw("type"):
            on, names = "TYPE", _dotted_list(p)
        elif p.accept_kw("role"):
            on = "ROLE"
            names = () if p.at_kw("for") or p.at_end() else p.role_list()
        elif p.at_kw("function", "procedure"):
            raise p.unsupported(p.peek(), "SHOW GRANTS ON FUNCTION is not supported by pgkeep")
        else:
            on, names = _grant_target(p)
    grantees = p.role_list() if p.accept_kw("for") else ()
    p.expect_end()
    return ShowGrants(on, names, grantees)


# --- external connections -----------------------------------------------------------------

def parse_create_external_connection(p: Parser) -> CreateExternalConnection:
    p.expect_kw("create", "external", "connection")
    if_not_exists = p.accept_seq("if", "not", "exists")
    name = p.string_or_placeholder()
    p.expect_kw("as")
    uri = p.string_or_placeholder()
    p.expect_end()
    return CreateExternalConnection(name, uri, if_not_exists)


def parse_alter_external_connection(p: Parser) -> AlterExternalConnection:
    p.expect_kw("alter", "external", "connection")
    if_exists = p.accept_seq("if", "exists")
    name = p.string_or_placeholder()
    p.expect_kw("as")
    uri = p.string_or_placeholder()
    p.expect_end()
    return AlterExternalConnection(name, uri, if_exists)


def parse_drop_external_connection(p: Parser) -> DropExternalConnection:
    p.expect_kw("drop", "external", "connection")
    name = p.string_or_placeholder()
    p.expect_end()
    return DropExternalConnection(name)


def parse_show_external_connections(p: Parser) -> ShowExternalConnections:
    p.expect_kw("show", "external")
    if p.accept_kw("connections"):
        p.expect_end()
        return ShowExternalConnections(None)
    p.expect_kw("connection")
    name = p.string_or_placeholder()
    p.expect_end()
    return ShowExternalConnections(name)


def parse_check_connection_tail(p: Parser) -> CheckExternalConnection:
    uri = p.string_or_placeholder()
    options = parse_with_options(p, CHECK_OPTIONS, CheckConnectionOptions())
    p.expect_end()
    return CheckExternalConnection(uri, options)


def parse_check_external_connection(p: Parser) -> CheckExternalConnection:
    p.expect_kw("check", "external", "connection")
    return parse_check_connection_tail(p)
