"""Helpers shared by the end-to-end tests (psql runner, liveness checks, polling)."""
from __future__ import annotations

import os
import subprocess
import time
from typing import Callable

from proxy.pgcluster import embedded_bin_dir

__all__ = ["PSQL", "psql", "assert_alive", "wait_for", "not_built_statement"]

PSQL = str(embedded_bin_dir() / "psql")


def psql(dsn: str, *args: str, input: str | None = None, check: bool = True, timeout: float = 30,
         env: dict[str, str] | None = None, psql_bin: str = PSQL) -> subprocess.CompletedProcess:
    return subprocess.run([psql_bin, "-X", dsn, *args], input=input, capture_output=True, text=True,
                          timeout=timeout, check=check, env={**os.environ, **(env or {})})


def assert_alive(proc) -> None:
    """The pgkeep process has not exited."""
    assert proc.proc is not None and proc.proc.poll() is None, (
        f"pgkeep exited with {proc.proc.returncode}:\n{proc.log()[-4000:]}")


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05):
    """Poll until predicate() is truthy; return its value, or the last one after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# Families get built while this suite lives (BACKUP, RESTORE ...): the 0A000 tests use the first
# of these read-only statements whose family has no command yet.
NOT_BUILT_CANDIDATES = ["SHOW SCHEDULES", "SHOW SYSTEM GRANTS", "SHOW EXTERNAL CONNECTIONS",
                        "SHOW JOBS", "PAUSE SCHEDULE 123", "CANCEL JOB 1",
                        "BACKUP DATABASE d INTO 'nodelocal://1/x'", "ALTER JOB 1 OWNER TO nobody"]


def not_built_statement() -> tuple[str, str]:
    """(SQL, family) of an intercepted statement whose family pgkeep does not implement yet."""
    import pytest

    from proxy import errors, sql
    from proxy.commands import command_for
    for text in NOT_BUILT_CANDIDATES:
        stmt = sql.parse_statement(text)
        assert stmt is not None, f"{text!r} is no longer intercepted"
        try:
            command_for(stmt)
        except errors.FeatureNotSupported:
            return text, stmt.family
    pytest.fail(f"every family of {NOT_BUILT_CANDIDATES} is built: pick another unbuilt one")
