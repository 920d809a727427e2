"""Typed WITH-option lists: which options each statement takes, and each option's value form.

One table per option set maps the option's words (some are two or three words, such as
EXECUTION LOCALITY) to the dataclass field and the value kind:

    flag     bare only (RESTORE's skip_missing_*), stored as True
    bool     bare (= true) or `= <boolean>`, stored as BoolLit or Placeholder
    detached bare, `= TRUE` or `= FALSE` (BACKUP's and RESTORE's detached), stored as bool
    string   `= <string or placeholder>`
    strings  `= <string>` or `= (<string>, ...)` (kms, incremental_location)
    int      `= <integer or placeholder>`
    enum     `= <string>` from a fixed set (schedule options), stored lowercased

A repeated option is 42601 "<opt> specified multiple times"; an unknown option is a syntax
error at its name; a value of the wrong type is 22023.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .lexer import IDENT, STRING
from .nodes import BoolLit, StrLit
from .parser_base import Parser

__all__ = ["OptionSpec", "BACKUP_OPTIONS", "RESTORE_OPTIONS", "SHOW_BACKUP_OPTIONS",
           "CHECK_OPTIONS", "SCHEDULE_OPTIONS", "parse_options", "parse_one_option",
           "parse_with_options", "ON_EXECUTION_FAILURE", "ON_PREVIOUS_RUNNING"]

ON_EXECUTION_FAILURE = ("retry", "reschedule", "pause")
ON_PREVIOUS_RUNNING = ("start", "skip", "wait")


@dataclass(frozen=True)
class OptionSpec:
    words: tuple[str, ...]     # how it is spelled (lowercase)
    field: str                 # the dataclass field it sets
    kind: str                  # flag | bool | detached | string | strings | int
    display: str = ""          # the name used in messages and formatting

    @property
    def label(self) -> str:
        return self.display or " ".join(self.words)


def _specs(*rows: tuple) -> dict[str, list[OptionSpec]]:
    """Indexes specs by their first word; longer spellings first so they win."""
    table: dict[str, list[OptionSpec]] = {}
    for row in rows:
        spec = OptionSpec(*row)
        table.setdefault(spec.words[0], []).append(spec)
    for specs in table.values():
        specs.sort(key=lambda s: -len(s.words))
    return table


BACKUP_OPTIONS = _specs(
    (("revision_history",), "revision_history", "bool"),
    (("encryption_passphrase",), "encryption_passphrase", "string"),
    (("detached",), "detached", "detached"),
    (("kms",), "kms", "strings"),
    (("incremental_location",), "incremental_location", "strings"),
    (("execution", "locality"), "execution_locality", "string"),
    (("include_all_virtual_clusters",), "include_all_virtual_clusters", "bool"),
    (("include_all_secondary_tenants",), "include_all_virtual_clusters", "bool",
     "include_all_virtual_clusters"),
    (("updates_cluster_monitoring_metrics",), "updates_cluster_monitoring_metrics", "bool"),
    (("strict",), "strict", "bool"),
)

RESTORE_OPTIONS = _specs(
    (("encryption_passphrase",), "encryption_passphrase", "string"),
    (("kms",), "kms", "strings"),
    (("into_db",), "into_db", "string"),
    (("skip_missing_foreign_keys",), "skip_missing_foreign_keys", "flag"),
    (("skip_missing_sequences",), "skip_missing_sequences", "flag"),
    (("skip_missing_sequence_owners",), "skip_missing_sequence_owners", "flag"),
    (("skip_missing_views",), "skip_missing_views", "flag"),
    (("skip_missing_udfs",), "skip_missing_udfs", "flag"),
    (("detached",), "detached", "detached"),
    (("skip_localities_check",), "skip_localities_check", "flag"),
    (("debug_pause_on",), "debug_pause_on", "string"),
    (("new_db_name",), "new_db_name", "string"),
    (("incremental_location",), "incremental_location", "strings"),
    (("virtual_cluster_name",), "virtual_cluster_name", "string"),
    (("tenant_name",), "virtual_cluster_name", "string", "virtual_cluster_name"),
    (("virtual_cluster",), "virtual_cluster", "string"),
    (("tenant",), "virtual_cluster", "string", "virtual_cluster"),
    (("schema_only",), "schema_only", "flag"),
    (("verify_backup_table_data",), "verify_backup_table_data", "flag"),
    (("unsafe_restore_incompatible_version",), "unsafe_restore_incompatible_version", "flag"),
    (("execution", "locality"), "execution_locality", "string"),
    (("experimental", "deferred", "copy"), "experimental_deferred_copy", "flag"),
    (("experimental", "copy"), "experimental_copy", "flag"),
    (("remove_regions",), "remove_regions", "flag"),
    (("strip_localities",), "remove_regions", "flag", "remove_regions"),
    (("grants",), "grants", "flag"),
)

SHOW_BACKUP_OPTIONS = _specs(
    (("as_json",), "as_json", "flag"),
    (("check_files",), "check_files", "flag"),
    (("skip", "size"), "skip_size", "flag"),
    (("nowait",), "skip_size", "flag", "skip size"),
    (("debug_ids",), "debug_ids", "flag"),
    (("incremental_location",), "incremental_location", "strings"),
    (("kms",), "kms", "strings"),
    (("encryption_passphrase",), "encryption_passphrase", "string"),
    (("privileges",), "privileges", "flag"),
    (("encryption_info_dir",), "encryption_info_dir", "string"),
)

CHECK_OPTIONS = _specs(
    (("concurrently",), "concurrently", "int"),
    (("time",), "time", "string"),
    (("transfer",), "transfer", "string"),
)

SCHEDULE_OPTIONS = _specs(
    (("first_run",), "first_run", "string"),
    (("on_execution_failure",), "on_execution_failure", "enum"),
    (("on_previous_running",), "on_previous_running", "enum"),
    (("ignore_existing_backups",), "ignore_existing_backups", "flag"),
    (("updates_cluster_last_backup_time_metric",), "updates_cluster_last_backup_time_metric",
     "bool"),
)

_ENUMS = {"on_execution_failure": ON_EXECUTION_FAILURE,
          "on_previous_running": ON_PREVIOUS_RUNNING}


# Schedule options are CockroachDB's kv_options: any key parses, an unknown one is refused when
# the statement runs (ScheduleOptions.unknown).
_UNKNOWN = OptionSpec(("?",), "unknown", "unknown")


def _option_key(p: Parser, table: dict[str, list[OptionSpec]], allow_string_keys: bool):
    tok = p.peek()
    if tok.kind == STRING and allow_string_keys:
        # kv_option also takes 'key' [= value]; a quoted key is one word.
        for spec in table.get(tok.value.lower(), ()):
            if len(spec.words) == 1:
                p.i += 1
                return spec, tok
        if table is SCHEDULE_OPTIONS:
            p.i += 1
            return _UNKNOWN, tok
        raise p.error(tok)
    if table is SCHEDULE_OPTIONS and tok.kind == IDENT and (
            tok.value not in table or not any(p.at_seq(*s.words) for s in table[tok.value])):
        p.i += 1
        return _UNKNOWN, tok
    if tok.kind != IDENT or tok.value not in table:
        raise p.error(tok)
    for spec in table[tok.value]:
        if p.at_seq(*spec.words):
            p.i += len(spec.words)
            return spec, tok
    raise p.error(p.peek(1))


def parse_one_option(p: Parser, table: dict[str, list[OptionSpec]],
                     allow_string_keys: bool = False) -> tuple[OptionSpec, object, object]:
    """One option: returns (spec, value, the token that named it)."""
    spec, tok = _option_key(p, table, allow_string_keys)
    kind, what = spec.kind, spec.label
    if kind == "unknown":
        value = p.string_or_placeholder(tok.value) if p.accept_op("=") else None
        return spec, ((tok.value.lower(), value),), tok
    if kind == "flag":
        return spec, True, tok
    if kind == "bool":
        if p.accept_op("="):
            return spec, p.bool_value(what), tok
        return spec, BoolLit(True), tok
    if kind == "detached":
        if p.accept_op("="):
            if p.accept_kw("true"):
                return spec, True, tok
            if p.accept_kw("false"):
                return spec, False, tok
            raise p.error()
        return spec, True, tok
    p.expect_op("=")
    if kind == "string":
        return spec, p.string_or_placeholder(what), tok
    if kind == "strings":
        return spec, p.string_list(what), tok
    if kind == "int":
        return spec, p.int_value(what), tok
    if kind == "enum":
        value_tok = p.peek()
        value = p.string_or_placeholder(what)
        if isinstance(value, StrLit):
            allowed = _ENUMS[spec.field]
            if value.value.lower() not in allowed:
                raise p.value_error(value_tok, f"{what}: unexpected value {value.value!r}, "
                                               f"expected one of {', '.join(allowed)}")
            value = StrLit(value.value.lower())
        return spec, value, tok
    raise AssertionError(kind)


def parse_options(p: Parser, table: dict[str, list[OptionSpec]], empty, *,
                  allow_string_keys: bool = False, seen: set[str] | None = None):
    """A comma-separated option list into the option dataclass `empty` (its default)."""
    values: dict[str, object] = {}
    seen = set() if seen is None else seen
    while True:
        spec, value, tok = parse_one_option(p, table, allow_string_keys)
        key, label = (value[0][0], value[0][0]) if spec is _UNKNOWN else (spec.field, spec.label)
        if key in seen:
            raise p.error(tok, f"{label} specified multiple times")
        seen.add(key)
        if spec is _UNKNOWN:
            values["unknown"] = values.get("unknown", ()) + value
        else:
            values[spec.field] = value
            p.option_tokens[spec.field] = tok
        if not p.accept_op(","):
            break
    return replace(empty, **values)


def parse_with_options(p: Parser, table: dict[str, list[OptionSpec]], empty):
    """[WITH opt, ... | WITH OPTIONS (opt, ...)]; the defaults when absent."""
    if not p.at_kw("with"):
        return empty
    p.i += 1
    if p.at_kw("options") and p.at_op("(", k=1):
        p.i += 2
        options = parse_options(p, table, empty)
        p.expect_op(")")
        return options
    return parse_options(p, table, empty)

