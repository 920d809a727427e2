"""Errors raised in the proxy layer, each carrying its SQLSTATE where it is raised.

Contract: every exception that reaches a client becomes one ErrorResponse through
`error_fields()`, and only pgkeep's own words go out:
- a `PgkeepError` (catalog.errors, the one base of the proxy's, the engine's and the catalog's
  errors) is shown as it is;
- an upstream ErrorResponse to the client's own statement never becomes an exception here: it
  passes through byte for byte (and `[SHOW ...]` rewrites, run as the client, are re-raised as
  PgError with the upstream's fields, which are the client's own);
- anything else is foreign (an asyncpg error of pgkeep's own superuser connections, an OSError,
  a bug): the client gets pgkeep's generic error of a safe SQLSTATE (catalog.errors.foreign_error)
  with no detail or hint, and the foreign error goes to pgkeep's log only.

Proxy-originated connection errors are the named constructors at the bottom (PgDog's way), so
the wording of each is in one place.
"""
from __future__ import annotations

from catalog.errors import PgkeepError, foreign_error

__all__ = [
    "PgkeepError", "foreign_error", "PgError", "SyntaxError_", "FeatureNotSupported", "InvalidParameterValue",
    "ProtocolViolation", "UndefinedObject", "InsufficientPrivilege", "ActiveSqlTransaction",
    "QueryCanceled", "error_fields", "too_many_connections", "upstream_unavailable",
    "admin_shutdown", "startup_timeout", "startup_packet_too_large", "message_too_large",
    "auth_failed",
]


class PgError(PgkeepError):
    """The base of every error the proxy raises itself (fields as PgkeepError)."""


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
    """The ErrorResponse fields (type letter -> value) for any exception; S, V, C and M are
    always set. A foreign exception is replaced by pgkeep's generic error (logged in full)."""
    own = foreign_error(exc) if not isinstance(exc, PgkeepError) else exc
    severity = own.severity or "ERROR"
    fields = {"S": severity, "V": severity, "C": own.sqlstate, "M": own.message or str(own)}
    if own.detail is not None:
        fields["D"] = str(own.detail)
    if own.hint is not None:
        fields["H"] = str(own.hint)
    if own.position is not None:
        fields["P"] = str(own.position)
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
