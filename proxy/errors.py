"""Errors raised in the proxy layer, each carrying its SQLSTATE where it is raised.

Contract: every exception that reaches a client becomes one ErrorResponse through
`error_fields()`. Exceptions from any package (proxy, engine, catalog) qualify when they carry
a `sqlstate` attribute (duck-typed, so the engine and catalog need not import the proxy);
anything else becomes XX000 "internal error" and its traceback goes to the log only.
Upstream ErrorResponses are never turned into exceptions: they pass through byte for byte.

Proxy-originated connection errors are the named constructors at the bottom (PgDog's way), so
the wording of each is in one place.
"""
from __future__ import annotations

import logging

__all__ = [
    "PgError", "SyntaxError_", "FeatureNotSupported", "InvalidParameterValue", "ProtocolViolation",
    "UndefinedObject", "InsufficientPrivilege", "ActiveSqlTransaction", "QueryCanceled",
    "error_fields", "too_many_connections", "upstream_unavailable", "admin_shutdown",
    "startup_timeout", "startup_packet_too_large", "message_too_large", "auth_failed",
]

_log = logging.getLogger("pgkeep.errors")


class PgError(Exception):
    """An error with a PostgreSQL SQLSTATE; the base of every error the proxy raises itself.

    `position` is the 1-based character offset into the client's query text (the P field).
    """

    sqlstate = "XX000"
    severity = "ERROR"

    def __init__(self, message: str, *, sqlstate: str | None = None, detail: str | None = None,
                 hint: str | None = None, position: int | None = None,
                 severity: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if sqlstate is not None:
            self.sqlstate = sqlstate
        if severity is not None:
            self.severity = severity
        self.detail = detail
        self.hint = hint
        self.position = position


class SyntaxError_(PgError):
    sqlstate = "42601"


class FeatureNotSupported(PgError):
    sqlstate = "0A000"


class InvalidParameterValue(PgError):
    sqlstate = "22023"


class ProtocolViolation(PgError):
    sqlstate = "08P01"


class UndefinedObject(PgError):
    sqlstate = "42704"


class InsufficientPrivilege(PgError):
    sqlstate = "42501"


class ActiveSqlTransaction(PgError):
    sqlstate = "25001"


class QueryCanceled(PgError):
    sqlstate = "57014"


def error_fields(exc: BaseException) -> dict[str, str]:
    """The ErrorResponse fields (type letter -> value) for any exception.

    S, V, C and M are always set. Exceptions without a `sqlstate` are internal errors: the client
    sees only "internal error" and the traceback is logged.
    """
    sqlstate = getattr(exc, "sqlstate", None)
    if not isinstance(sqlstate, str) or len(sqlstate) != 5:
        _log.error("internal error", exc_info=exc)
        return {"S": "ERROR", "V": "ERROR", "C": "XX000", "M": "internal error"}
    severity = getattr(exc, "severity", "ERROR") or "ERROR"
    fields = {"S": severity, "V": severity, "C": sqlstate,
              "M": getattr(exc, "message", None) or str(exc)}
    for attr, code in (("detail", "D"), ("hint", "H")):
        value = getattr(exc, attr, None)
        if value is not None:
            fields[code] = str(value)
    # Only pgkeep's own errors point into the client's statement; a position carried by an
    # error of one of pgkeep's internal queries would point at the wrong text.
    if isinstance(exc, PgError) and exc.position is not None:
        fields["P"] = str(exc.position)
    return fields


# Proxy-originated connection errors: one constructor each, so their wording lives here.

def too_many_connections(limit: int) -> PgError:
    return PgError(f"sorry, too many clients already (pgkeep max_connections = {limit})",
                   sqlstate="53300", severity="FATAL")


def upstream_unavailable(reason: str) -> PgError:
    return PgError(f"pgkeep lost its connection to the upstream PostgreSQL: {reason}",
                   sqlstate="08006", severity="FATAL")


def admin_shutdown() -> PgError:
    return PgError("terminating connection because pgkeep is shutting down",
                   sqlstate="57P01", severity="FATAL")


def startup_timeout() -> PgError:
    return PgError("timeout expired while waiting for the startup packet",
                   sqlstate="08P01", severity="FATAL")


def startup_packet_too_large(length: int, limit: int) -> PgError:
    return PgError(f"invalid length of startup packet ({length} bytes, at most {limit})",
                   sqlstate="08P01", severity="FATAL")


def message_too_large(length: int, limit: int) -> PgError:
    return PgError(f"message of {length} bytes exceeds the maximum of {limit} bytes",
                   sqlstate="08P01", severity="FATAL")


def auth_failed(reason: str) -> PgError:
    return PgError(reason, sqlstate="28P01", severity="FATAL")
