"""Job identifiers, CockroachDB-style: large unique INT8s ordered by creation time
(CockroachDB's unique_rowid layout: time in 10-microsecond units, then 15 random bits).
Persisted jobs (SHOW JOBS, PAUSE/RESUME/CANCEL, adoption) come with the jobs issue."""
from __future__ import annotations

import secrets
import time

__all__ = ["new_job_id"]


def new_job_id() -> int:
    return ((time.time_ns() // 10_000) << 15) | secrets.randbits(15)
