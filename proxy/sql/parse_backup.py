"""Productions for BACKUP, RESTORE, SHOW BACKUP(S), CREATE SCHEDULE FOR BACKUP and
ALTER BACKUP SCHEDULE (CockroachDB v26.2 grammar; see the package docstring).

Removed syntax (BACKUP ... TO, RESTORE/SHOW BACKUP from a bare URI) is recognised so the
error can carry a hint with the current form.
"""
from __future__ import annotations

from proxy.errors import FeatureNotSupported

from .lexer import IDENT, INT, PARAM, STRING, Token
from .nodes import (BackupOptions, Expr, NumLit, RestoreOptions, ScheduleOptions,
                    ShowBackupOptions, StrLit)
from .options import (BACKUP_OPTIONS, RESTORE_OPTIONS, SCHEDULE_OPTIONS, SHOW_BACKUP_OPTIONS,
                      parse_one_option, parse_options, parse_with_options)
from .parse_misc import parse_check_connection_tail
from .parser_base import Parser
from .statements import (AddKms, AlterBackup, AlterBackupSchedule, Backup, CreateSchedule,
                         ExecuteImmediately, Restore, SetFullBackup, SetInto, SetLabel, SetRecurring,
                         SetScheduleOption, SetWith, ShowBackup, ShowBackups)

__all__ = ["parse_backup", "parse_restore", "parse_show_backups", "parse_show_backup",
           "parse_create_schedule", "parse_alter_backup_schedule", "parse_alter_backup"]

_BACKUP_TO_HINT = ("use BACKUP ... INTO 'collection' for a full backup, and "
                   "BACKUP ... INTO LATEST IN 'collection' for an incremental one")
_BACKUP_INC_HINT = ("use BACKUP ... INTO LATEST IN 'collection' (or INTO 'subdir' IN "
                    "'collection') to add an incremental backup to a collection")
_RESTORE_HINT = "use RESTORE ... FROM LATEST IN 'collection' (or FROM 'subdir' IN 'collection')"
_SHOW_BACKUP_HINT = ("use SHOW BACKUP FROM LATEST IN 'collection' (or FROM 'subdir' IN "
                     "'collection'); SHOW BACKUPS IN 'collection' lists the subdirs")


def _at_subdir(p: Parser) -> bool:
    """True at `<string or placeholder> IN`: the subdir of an INTO/FROM ... IN clause."""
    return p.peek().kind in (STRING, PARAM) and p.at_kw("in", k=1)


def _collection(p: Parser, many_is_unsupported: bool = False) -> tuple[Expr, ...]:
    uris = p.string_list()
    if many_is_unsupported and p.at_op(","):
        raise p.unsupported(p.peek(), "a list of backup collections is not supported; name "
                            "one collection, or a parenthesised list of locality URIs")
    return uris


def _virtual_cluster(p: Parser) -> tuple[Token, str] | None:
    """VIRTUAL CLUSTER <id> | TENANT <id> (<id> an integer, or _): returns the first token
    and the words written, or None when the targets are not a virtual cluster. A table named
    tenant or virtual stays a table."""
    tok = p.peek()
    if p.at_seq("virtual", "cluster"):
        words, n = "VIRTUAL CLUSTER", 2
    elif p.at_kw("tenant"):
        words, n = "TENANT", 1
    else:
        return None
    spec = p.peek(n)
    if not ((spec.kind == INT and spec.value.isdigit())
            or (spec.kind == IDENT and spec.value == "_")):
        return None
    p.i += n + 1
    if spec.kind == INT and int(spec.value) == 0:
        raise p.error(spec, "invalid tenant ID")
    return tok, words


def _refuse_virtual_cluster(p: Parser, verb: str, vc: tuple[Token, str] | None) -> None:
    """0A000 for a statement that parsed and names a virtual cluster: PostgreSQL has none."""
    if vc is not None:
        tok, words = vc
        raise p.unsupported(tok, f"{verb} {words} is not supported by pgkeep: PostgreSQL has "
                                 "no virtual clusters", hint=f"use {verb} DATABASE name instead")


def parse_backup(p: Parser) -> Backup:
    p.expect_kw("backup")
    vc = _virtual_cluster(p)
    targets = None if vc or p.at_kw("into", "to") else p.targets()
    if p.at_kw("to"):
        to = p.next()
        depth = 0
        for tok in p.tokens[p.i:]:
            if tok.kind == "ident" and tok.value == "incremental" and depth == 0:
                raise p.error(to, "BACKUP ... TO ... INCREMENTAL FROM is no longer supported",
                              hint=_BACKUP_INC_HINT)
        raise p.error(to, "BACKUP ... TO is no longer supported", hint=_BACKUP_TO_HINT)
    p.expect_kw("into")
    subdir, latest = None, False
    if p.at_seq("latest", "in"):
        p.i += 2
        latest = True
    elif _at_subdir(p):
        subdir = p.sconst_or_placeholder()
        p.expect_kw("in")
    collection = _collection(p)
    as_of = p.opt_as_of()
    options = parse_with_options(p, BACKUP_OPTIONS, BackupOptions())
    p.expect_end()
    _refuse_virtual_cluster(p, "BACKUP", vc)
    return Backup(targets, collection, subdir, latest, as_of, options)


def _from_subdir(p: Parser, hint: str, what: str) -> tuple[Expr | None, bool]:
    """LATEST IN | <string or placeholder> IN: returns (subdir, latest). A URI without IN is
    the removed single-backup form."""
    if p.at_seq("latest", "in"):
        p.i += 2
        return None, True
    if p.at_kw("in", k=1) and (p.peek().kind in (STRING, PARAM) or p.at_name()):
        subdir = p.string_or_placeholder()
        p.i += 1
        if isinstance(subdir, StrLit) and subdir.value.upper() == "LATEST":
            return None, True
        return subdir, False
    tok = p.peek()
    if tok.kind in (STRING, PARAM) or p.at_op("("):
        raise p.error(tok, f"{what} from a backup URI without a collection is no longer "
                           "supported", hint=hint)
    raise p.error()


def _check_restore_options(p: Parser, targets, system_users: bool,
                           options: RestoreOptions) -> None:
    toks = p.option_tokens
    for field in ("new_db_name", "into_db"):
        value = getattr(options, field)
        if isinstance(value, StrLit) and value.value == "":
            # CockroachDB's sqlerrors.ErrEmptyDatabaseName: 42601 "empty database name".
            raise p.error(toks[field], "empty database name")
    if options.into_db is not None and targets is not None and targets.kind == "DATABASE":
        raise p.value_error(toks["into_db"],
                            'cannot use "into_db" option when restoring database(s)')
    if options.new_db_name is not None and (
            targets is None or targets.kind != "DATABASE" or len(targets.names) != 1):
        raise p.value_error(toks["new_db_name"], "new_db_name can only be used for RESTORE "
                                                 "DATABASE with a single target database")
    if options.verify_backup_table_data and not options.schema_only:
        raise p.value_error(toks["verify_backup_table_data"],
                            "to set the verify_backup_table_data option, the schema_only "
                            "option must be set")
    if options.grants and system_users:
        raise p.value_error(toks["grants"], "the grants option is not valid for RESTORE "
                                            "SYSTEM USERS")
    if options.encryption_passphrase is not None and options.kms is not None:
        raise p.value_error(toks["kms"], "cannot use both encryption_passphrase and kms")


def parse_restore(p: Parser) -> Restore:
    p.expect_kw("restore")
    targets, system_users = None, False
    vc = _virtual_cluster(p)
    if vc is None and p.accept_seq("system", "users"):
        system_users = True
    elif vc is None and not p.at_kw("from"):
        targets = p.targets()
    p.expect_kw("from")
    subdir, latest = _from_subdir(p, _RESTORE_HINT, "RESTORE")
    collection = _collection(p, many_is_unsupported=True)
    as_of = p.opt_as_of()
    options = parse_with_options(p, RESTORE_OPTIONS, RestoreOptions())
    p.expect_end()
    _refuse_virtual_cluster(p, "RESTORE", vc)
    _check_restore_options(p, targets, system_users, options)
    return Restore(targets, collection, subdir, latest, system_users, as_of, options)


def parse_show_backups(p: Parser) -> ShowBackups:
    p.expect_kw("show", "backups", "in")
    collection = _collection(p)
    newer = older = None
    revision_start = False
    while True:
        tok = p.peek()
        if p.accept_seq("newer", "than"):
            if newer is not None:
                raise p.error(tok, "newer than specified multiple times")
            newer = p.string_or_placeholder("newer than")
        elif p.accept_seq("older", "than"):
            if older is not None:
                raise p.error(tok, "older than specified multiple times")
            older = p.string_or_placeholder("older than")
        else:
            break
    if p.accept_kw("with"):
        p.expect_kw("revision", "start", "time")
        revision_start = True
    p.expect_end()
    return ShowBackups(collection, newer, older, revision_start)


def parse_show_backup(p: Parser):
    p.expect_kw("show", "backup")
    if p.at_kw("connection"):
        # The older spelling of CHECK EXTERNAL CONNECTION.
        p.i += 1
        return parse_check_connection_tail(p)
    details = ""
    if p.at_kw("schemas", "files", "ranges", "validate") and (
            p.at_kw("from", k=1) or p.peek(1).kind in (STRING, PARAM)):
        details = p.next().value.upper()
    if p.accept_kw("from"):
        subdir, latest = _from_subdir(p, _SHOW_BACKUP_HINT, "SHOW BACKUP")
    elif not details and _at_subdir(p):
        subdir, latest = _from_subdir(p, _SHOW_BACKUP_HINT, "SHOW BACKUP")
    elif p.peek().kind in (STRING, PARAM):
        raise p.error(p.peek(), "SHOW BACKUP of a backup URI without a collection is no "
                                "longer supported", hint=_SHOW_BACKUP_HINT)
    else:
        raise p.error()
    collection = _collection(p)
    options = parse_with_options(p, SHOW_BACKUP_OPTIONS, ShowBackupOptions())
    p.expect_end()
    return ShowBackup(details, collection, subdir, latest, options)


def _schedule_options(p: Parser) -> ScheduleOptions:
    if p.accept_op("("):
        options = parse_options(p, SCHEDULE_OPTIONS, ScheduleOptions(), allow_string_keys=True)
        p.expect_op(")")
        return options
    return parse_options(p, SCHEDULE_OPTIONS, ScheduleOptions(), allow_string_keys=True)


def parse_create_schedule(p: Parser) -> CreateSchedule:
    p.expect_kw("create", "schedule")
    if_not_exists, label = False, None
    if p.accept_seq("if", "not", "exists"):
        if_not_exists = True
        label = p.string_or_placeholder()
    elif not p.at_kw("for"):
        label = p.string_or_placeholder()
    if p.at_seq("for", "changefeed"):
        # No source detail: a changefeed's sink URI has secrets engine.redact does not know.
        raise FeatureNotSupported("CREATE SCHEDULE FOR CHANGEFEED is not supported by pgkeep: "
                                  "pgkeep runs no changefeeds", position=p.peek(1).start + 1)
    p.expect_kw("for", "backup")
    targets = None if p.at_kw("into") else p.targets()
    p.expect_kw("into")
    collection = _collection(p)
    backup_options = BackupOptions()
    if p.at_kw("with") and not p.at_kw("schedule", k=1):
        backup_options = parse_with_options(p, BACKUP_OPTIONS, BackupOptions())
    p.expect_kw("recurring")
    recurring = p.sconst_or_placeholder()
    full_backup, always = None, False
    if p.accept_seq("full", "backup"):
        if p.accept_kw("always"):
            always = True
        else:
            full_backup = p.sconst_or_placeholder()
    schedule_options = ScheduleOptions()
    if p.accept_seq("with", "schedule", "options"):
        schedule_options = _schedule_options(p)
    p.expect_end()
    return CreateSchedule(label, targets, collection, recurring, if_not_exists, backup_options,
                          full_backup, always, schedule_options)


def parse_alter_backup(p: Parser) -> AlterBackup:
    """ALTER BACKUP {LATEST | 'subdir'} [IN collection] ADD NEW_KMS = uris WITH OLD_KMS = uris
    [ADD ...]."""
    p.expect_kw("alter", "backup")
    backup = p.string_or_placeholder()
    collection = p.string_or_placeholder() if p.accept_kw("in") else None
    commands = []
    while True:
        p.expect_kw("add", "new_kms")
        p.expect_op("=")
        new_kms = p.string_list("new_kms")
        p.expect_kw("with", "old_kms")
        p.expect_op("=")
        commands.append(AddKms(new_kms, p.string_list("old_kms")))
        if not p.at_kw("add"):
            break
    p.expect_end()
    return AlterBackup(backup, collection, tuple(commands))


def parse_alter_backup_schedule(p: Parser) -> AlterBackupSchedule:
    p.expect_kw("alter", "backup", "schedule")
    tok = p.peek()
    if tok.kind != INT or not tok.value.isdigit():
        raise p.error()
    schedule_id = NumLit(str(int(p.next().value)))
    commands = []
    seen: set[str] = set()

    def once(key: str, at) -> None:
        if key in seen:
            raise p.error(at, f"{key} specified multiple times")
        seen.add(key)

    while True:
        at = p.peek()
        if p.accept_seq("execute", "immediately"):
            once("execute immediately", at)
            commands.append(ExecuteImmediately(False))
        elif p.accept_seq("execute", "full", "immediately"):
            once("execute immediately", at)
            commands.append(ExecuteImmediately(True))
        else:
            p.expect_kw("set")
            at = p.peek()
            if p.accept_kw("label"):
                once("label", at)
                commands.append(SetLabel(p.string_or_placeholder()))
            elif p.accept_kw("into"):
                once("into", at)
                commands.append(SetInto(_collection(p)))
            elif p.accept_kw("with"):
                spec, value, opt_tok = parse_one_option(p, BACKUP_OPTIONS)   # bare: = true
                once(spec.label, opt_tok)
                commands.append(SetWith(BackupOptions(**{spec.field: value})))
            elif p.accept_kw("recurring"):
                once("recurring", at)
                commands.append(SetRecurring(p.sconst_or_placeholder()))
            elif p.accept_seq("full", "backup"):
                once("full backup", at)
                if p.accept_kw("always"):
                    commands.append(SetFullBackup(None, True))
                else:
                    commands.append(SetFullBackup(p.sconst_or_placeholder()))
            elif p.accept_seq("schedule", "option"):
                spec, value, opt_tok = parse_one_option(p, SCHEDULE_OPTIONS,
                                                        allow_string_keys=True)
                once(spec.label, opt_tok)
                commands.append(SetScheduleOption(ScheduleOptions(**{spec.field: value})))
            else:
                raise p.error()
        if not p.accept_op(","):
            break
    p.expect_end()
    return AlterBackupSchedule(schedule_id, tuple(commands))
