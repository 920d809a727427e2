"""Phase timings of a backup or restore, logged at INFO when it ends: where the time goes."""
from __future__ import annotations

import logging
import time

__all__ = ["PhaseClock"]


class PhaseClock:
    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.start = self.last = time.monotonic()
        self.laps: list[str] = []

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps.append(f"{name} {now - self.last:.2f}s")
        self.last = now

    def done(self) -> None:
        self.log.info("%s: %.2fs (%s)", self.what, time.monotonic() - self.start, ", ".join(self.laps))
