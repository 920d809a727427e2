"""The one error base of pgkeep's three packages, and the catalog's own errors.

Contract (as psycopg's errors module, one hierarchy): every error pgkeep raises itself is a
`PgkeepError` carrying its SQLSTATE, severity, message and optional detail and hint, all in
pgkeep's own words, so they may be shown to a client as they are. The catalog is the lowest
package (proxy -> engine -> catalog), so the base lives here; engine.errors.EngineError and
proxy.errors.PgError derive from it.

Anything else (an asyncpg error of pgkeep's own superuser connections, an OSError, a bug) is
foreign: its text may carry another user's data or a secret (a unique violation's DETAIL
echoes the key; a hint names objects), so `foreign_error()` turns it into a PgkeepError of
pgkeep's own words and sends the foreign error whole to pgkeep's log only.
"""
from __future__ import annotations

import errno
import logging
import re
import secrets
from types import TracebackType

__all__ = ["PgkeepError", "CatalogError", "UnknownSetting", "InvalidSettingValue",
           "foreign_error"]

_log = logging.getLogger("pgkeep.errors")


class PgkeepError(Exception):
    """An error in pgkeep's own words with its SQLSTATE; safe to show to any client.

    `position` is the 1-based character offset into the client's statement (only errors about
    the client's own text set it).
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


class CatalogError(PgkeepError):
    """Base of the catalog's errors."""


class UnknownSetting(CatalogError):
    sqlstate = "42704"


class InvalidSettingValue(CatalogError):
    sqlstate = "22023"


# Foreign SQLSTATEs whose class means something a client can act on (retry, reconnect, wait),
# with pgkeep's words for them. The code itself carries no data; any other becomes XX000.
_KEPT = {"57014": "query canceled", "40001": "serialization failure",
         "40P01": "deadlock detected", "55P03": "lock not available",
         "57P01": "the upstream is shutting down", "57P02": "the upstream is shutting down",
         "57P03": "the upstream is not accepting connections"}
_KEPT_CLASSES = {"08": ("08006", "connection to the upstream lost"),
                 "53": (None, "insufficient resources upstream")}
_SECRET_PARAM = re.compile(
    r"(?i)\b([A-Z0-9_]*(?:SECRET|TOKEN|CREDENTIALS|PASSWORD|ACCOUNT_KEY)[A-Z0-9_]*=)[^&\s'\"]+")
_USERINFO = re.compile(r"(://[^/:@\s'\"]+:)[^@/\s'\"]+@")
# (package, a PostgreSQL error?) -> where it happened, in the client's message
_PLACES = {("catalog", True): "pgkeep's catalog connection", ("catalog", False): "pgkeep's catalog",
           ("engine", True): "pgkeep's engine connection",
           ("engine", False): "pgkeep's engine", ("proxy", True): "pgkeep's proxy",
           ("proxy", False): "pgkeep's proxy"}


def _scrub(text: str) -> str:
    """Secret URI parameters and passwords out of a foreign error's text, before it is logged."""
    return _USERINFO.sub(r"\1redacted@", _SECRET_PARAM.sub(r"\1redacted", text))


def _classify(exc: BaseException) -> tuple[str, str, str | None]:
    """(pgkeep's SQLSTATE, pgkeep's words, the foreign SQLSTATE if it had one)."""
    code = getattr(exc, "sqlstate", None)
    if isinstance(code, str) and len(code) == 5:
        if code in _KEPT:
            return code, _KEPT[code], code
        kept = _KEPT_CLASSES.get(code[:2])
        if kept is not None:
            return kept[0] or code, kept[1], code
        return "XX000", "internal error", code
    if isinstance(exc, (ConnectionError, EOFError)):
        return "08006", "connection lost", None
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "53100", "disk full", None
    if isinstance(exc, OSError):
        return "58030", "I/O error", None
    return "XX000", "internal error", None


def _origin(tb: TracebackType | None) -> str:
    """Which of pgkeep's packages the exception came out of: its innermost frame in one."""
    where = ""
    while tb is not None:
        top = str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0]
        if top in ("catalog", "engine", "proxy"):
            where = top
        tb = tb.tb_next
    return where


def foreign_error(exc: BaseException, where: str | None = None) -> PgkeepError:
    """pgkeep's own error for a foreign exception: a safe SQLSTATE (the class kept where it
    means something: 08006 lost connection, 57014 canceled, 40001/40P01 retry, 53xxx resources,
    58030 I/O; otherwise XX000), a message in pgkeep's words naming where it happened and a
    reference to the log line; no detail, no hint, no foreign text. The foreign error is
    logged whole (secret URI parameters scrubbed) under that reference.

    `where` names the part of pgkeep ("catalog", "engine", "proxy"); by default the innermost
    of pgkeep's packages in the traceback."""
    if isinstance(exc, PgkeepError):
        return exc
    sqlstate, words, foreign_code = _classify(exc)
    part = where or _origin(exc.__traceback__)
    place = _PLACES.get((part, foreign_code is not None), "pgkeep")
    ref = secrets.token_hex(4)
    coded = f" (SQLSTATE {foreign_code})" if foreign_code else ""
    message = f"{words} in {place}{coded}; see pgkeep's log, ref {ref}"
    text = str(exc)
    if foreign_code is not None:  # a PostgreSQL error: its fields, on one line
        text = "; ".join([getattr(exc, "message", None) or text] + [
            f"{name}: {getattr(exc, name)}" for name in ("detail", "hint", "context")
            if getattr(exc, name, None)])
    _log.error("%s: %s: %s", message, type(exc).__name__, _scrub(text).replace("\n", " | "),
               exc_info=(type(exc), exc, exc.__traceback__) if foreign_code is None else None)
    return PgkeepError(message, sqlstate=sqlstate)
