"""The audit log: one JSON line per statement that changes who may do what or moves data
(BACKUP, RESTORE, pgkeep's GRANT/REVOKE, external connections, schedules, job control, cluster
settings), with its time, user, client address, redacted statement, outcome and SQLSTATE.

Lines are appended to `--audit-log FILE` (opened O_APPEND, fsynced after each line, so a line
that was written survives a crash and lines from several pgkeep processes never interleave) or
written to stderr for `-`. The statement is `sql.format_statement(stmt, redact=True)`, the form
job descriptions use: no secret reaches this file. Writing happens in a thread, so a slow disk
delays only the statement being audited.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import sys

from . import sql

__all__ = ["AuditLog", "AUDITED"]

_log = logging.getLogger("pgkeep.audit")

AUDITED: tuple[type, ...] = (
    sql.Backup, sql.Restore, sql.GrantSystem, sql.RevokeSystem, sql.GrantOn, sql.RevokeOn,
    sql.CreateExternalConnection, sql.AlterExternalConnection, sql.DropExternalConnection,
    sql.CreateSchedule, sql.AlterBackupSchedule, sql.ExecuteSchedule, sql.statements._ControlSchedules,
    sql.statements._ControlJobs, sql.AlterJobOwner, sql.SetClusterSetting,
)


class AuditLog:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None
        if path and path != "-":
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    async def record(self, stmt, *, user: str, client: str, error: BaseException | None,
                     sqlstate: str | None) -> None:
        if not self.enabled or not isinstance(stmt, AUDITED):
            return
        try:
            text = sql.format_statement(stmt, redact=True)
        except Exception:  # noqa: BLE001 - never the raw text: it may hold secrets
            text = f"<{type(stmt).__name__}>"
        line = json.dumps({
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds"),
            "user": user, "client": client, "statement": text,
            "outcome": "ok" if error is None else "error", "sqlstate": sqlstate or "00000",
        }, ensure_ascii=False) + "\n"
        await asyncio.to_thread(self._write, line.encode())

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            sys.stderr.buffer.write(data)
            sys.stderr.flush()
            return
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
