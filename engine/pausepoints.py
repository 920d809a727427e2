"""Named fault points in the engine, as CockroachDB's `jobs.debug.pausepoints`.

Every step of a job where a pause or a crash matters (after the subdir is claimed, between the
manifest and its checksum, right after a restore's final rename, ...) calls `reach(name, job,
settings)` with one of the names in `POINTS`. At such a point:

- when the cluster setting `jobs.debug.pausepoints` (a comma-separated list) names it, the job
  pauses there exactly as if PAUSE JOB had been requested at that moment (JobStopped('pause'));
  RESUME JOB continues from the job's checkpoint. Clear the setting before resuming, or the job
  pauses again at the same point, as in CockroachDB;
- when the environment variable PGKEEP_TESTING_CRASHPOINTS (comma-separated, read once at start)
  names it, the whole pgkeep process dies on the spot with os._exit(137), as kill -9 would:
  no cleanup, no lease release, no buffered log line. Test-only: the reliability suite starts a
  pgkeep with it, lets it die, and checks that another pgkeep adopts the job and ends it right.

- when PGKEEP_TESTING_STALLPOINTS (comma-separated `name=seconds`) names it, the whole process
  freezes there once, event loop included (no heartbeat, no I/O), as a SIGSTOP or a long GC
  pause would: its lease expires, another pgkeep adopts the job, and the frozen one wakes up as
  a "zombie" that still believes it runs the job. Test-only, like the crash switch.

The names are the contract between the engine and tests/reliability: a test names a point, and
`reach` refuses a name that is not in POINTS, so a renamed point breaks its test loudly.
"""
from __future__ import annotations

import os
import sys
import time

from .jobs import JobStopped

__all__ = ["POINTS", "reach", "armed", "crashpoints", "parse_points"]

# name -> where it is. Keep in the order a job passes them.
POINTS: dict[str, str] = {
    "backup.stale_claim": "an incremental found another job's chain claim stale, not yet took the next one",
    "backup.after_claim": "the subdir is claimed (lock written), no data yet",
    "backup.mid_file": "a data file is half written (its store's temporary object exists), not committed",
    "backup.after_chunk": "a chunk's files are written and checkpointed",
    "backup.before_manifest": "every data and schema file is written, no manifest yet",
    "backup.after_manifest": "BACKUP_MANIFEST is written, its checksum is not",
    "backup.after_checksum": "manifest and checksum are written (the commit point), LATEST is not",
    "backup.after_latest": "LATEST is written, the job is not marked succeeded yet",
    "restore.after_create": "the temporary database exists, nothing loaded",
    "restore.after_load": "rows are loaded into the temporary database",
    "restore.after_post_phase": "a post-data phase (indexes, constraints, ...) is done in the temporary "
                                "database; reached after each phase that did work in this run",
    "restore.before_rename": "the temporary database is complete, not renamed yet",
    "restore.after_rename": "the final rename is done (the commit point), post-rename work is not",
    "scheduler.after_claim": "a scheduler pass holds due schedules and created their runs' jobs, "
                             "not committed yet",
}


def parse_points(text: str | None) -> frozenset[str]:
    return frozenset(p.strip() for p in (text or "").split(",") if p.strip())


_CRASH = parse_points(os.environ.get("PGKEEP_TESTING_CRASHPOINTS"))
_STALL = {name: float(secs) for name, _, secs in
          (p.partition("=") for p in parse_points(os.environ.get("PGKEEP_TESTING_STALLPOINTS")))}


def crashpoints() -> frozenset[str]:
    return _CRASH


def armed(name: str, job=None, pausepoints: frozenset[str] = frozenset()) -> bool:
    """Would `reach(name, ...)` stop, kill or freeze here? (The engine makes its state what the
    point's description says before reaching an armed point.)"""
    return (name in _CRASH or name in _STALL
            or (getattr(job, "real", False) and name in pausepoints))


def reach(name: str, job=None, pausepoints: frozenset[str] = frozenset()) -> None:
    """Called by the engine at the point `name`; see the module docstring."""
    if name not in POINTS:
        raise AssertionError(f"unknown pausepoint {name!r}: add it to engine.pausepoints.POINTS")
    if name in _CRASH:
        sys.stderr.write(f"pgkeep: crashpoint {name} reached, exiting as kill -9 would\n")
        sys.stderr.flush()
        os._exit(137)
    if name in _STALL:
        seconds = _STALL.pop(name)          # once per process
        sys.stderr.write(f"pgkeep: stallpoint {name} reached, freezing for {seconds} s\n")
        sys.stderr.flush()
        time.sleep(seconds)                 # blocks the event loop on purpose
    if getattr(job, "real", False) and name in pausepoints:
        raise JobStopped("pause")
