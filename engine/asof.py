"""AS OF SYSTEM TIME values, resolved to an absolute time.

PostgreSQL cannot read the past, so pgkeep honours AS OF SYSTEM TIME on BACKUP as "a snapshot
taken now" (and records the snapshot's real time); a time in the future is an error (22023), as
in CockroachDB. Accepted forms: CockroachDB durations ('-10s', '-1m30s', '-4.8s', '-500ms'),
PostgreSQL intervals ('-10 seconds'), timestamps ('2024-03-01 10:00:00'), and decimals of
nanoseconds since the epoch ('1700000000000000000.0000000000').
"""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation

from .errors import EngineError

__all__ = ["resolve_as_of", "parse_duration", "FOLLOWER_READ_LAG"]

FOLLOWER_READ_LAG = dt.timedelta(seconds=4.8)
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9,
          "hour": 3600.0, "hours": 3600.0, "minute": 60.0, "minutes": 60.0, "min": 60.0,
          "mins": 60.0, "second": 1.0, "seconds": 1.0, "sec": 1.0, "secs": 1.0,
          "millisecond": 1e-3, "milliseconds": 1e-3, "microsecond": 1e-6, "microseconds": 1e-6}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zµ]+)\s*")


class InvalidAsOf(EngineError):
    sqlstate = "22023"


def parse_duration(text: str) -> dt.timedelta | None:
    s = text.strip().lower()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION.match(s, pos)
        if not m or m.group(2) not in _UNITS:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return dt.timedelta(seconds=sign * total) if pos else None


def resolve_as_of(value: str, now: dt.datetime, *, is_function: bool = False) -> dt.datetime:
    """`value` as written (a string literal's text, a decimal, or a function name)."""
    if is_function:
        if value.lower() in ("follower_read_timestamp", "experimental_follower_read_timestamp"):
            return now - FOLLOWER_READ_LAG
        raise InvalidAsOf(f"AS OF SYSTEM TIME: unsupported function {value}()")
    d = parse_duration(value)
    if d is not None:
        t = now + d
    else:
        try:
            t = dt.datetime.fromisoformat(value.strip())
            if t.tzinfo is None:
                t = t.replace(tzinfo=dt.timezone.utc)
        except ValueError:
            try:
                nanos = Decimal(value.strip())
            except InvalidOperation:
                raise InvalidAsOf(f"AS OF SYSTEM TIME: value is neither timestamp, decimal, nor "
                                  f"interval: {value!r}") from None
            t = dt.datetime.fromtimestamp(float(nanos / Decimal(10**9)), dt.timezone.utc)
    if t > now:
        raise InvalidAsOf("AS OF SYSTEM TIME: cannot specify timestamp in the future",
                          hint=f"{t.isoformat()} is after the current time {now.isoformat()}")
    return t
