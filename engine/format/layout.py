"""Names inside a collection (docs/FORMAT.md sections 1 and 5). Pure."""
from __future__ import annotations

import datetime as dt
import re

__all__ = ["full_subdir", "parse_subdir", "manifest_path", "checksum_path", "lock_path",
           "LOCK_NAME", "LEGACY_LOCK_PREFIX",
           "latest_marker", "LATEST_PREFIX", "schema_path", "data_path", "SUBDIR_RE",
           "INCREMENTALS", "incrementals_of", "layer_dir", "claim_path", "LAYER_RE"]

LATEST_PREFIX = "metadata/latest/"
_MAX_NS = 9999999999999999999
SUBDIR_RE = re.compile(r"^/?(\d{4})/(\d{2})/(\d{2})-(\d{6})\.(\d{2})/?$")


def full_subdir(t: dt.datetime) -> str:
    """CockroachDB's '/2006/01/02-150405.00' in UTC (hundredths of a second)."""
    t = t.astimezone(dt.timezone.utc)
    return t.strftime("/%Y/%m/%d-%H%M%S.") + f"{t.microsecond // 10000:02d}"


INCREMENTALS = "incrementals"
# <YYYYMMDD>/<HHMMSS.ss>-<start YYYYMMDD-HHMMSS.ss>, under incrementals/<full subdir>/
LAYER_RE = re.compile(r"^(\d{8})/(\d{6})\.(\d{2})-(\d{8})-(\d{6})\.(\d{2})$")


def incrementals_of(full: str) -> str:
    """The directory of a full's incremental layers: 'incrementals/2026/11/25-101500.00/'."""
    return f"{INCREMENTALS}/{full.strip('/')}/"


def _stamp(t: dt.datetime, fmt: str) -> str:
    t = t.astimezone(dt.timezone.utc)
    return t.strftime(fmt) + f"{t.microsecond // 10000:02d}"


def layer_dir(full: str, claimed: dt.datetime, start: dt.datetime) -> str:
    """An incremental layer's directory (CockroachDB v25.2+, docs/FORMAT.md section 7.1):
    '/incrementals/<full>/<YYYYMMDD>/<HHMMSS.ss>-<start YYYYMMDD-HHMMSS.ss>'."""
    return ("/" + incrementals_of(full) + _stamp(claimed, "%Y%m%d/%H%M%S.")
            + "-" + _stamp(start, "%Y%m%d-%H%M%S."))


def claim_path(full: str, parent_id: str) -> str:
    """The chain claim on extending the layer whose manifest id is `parent_id` (section 7.2)."""
    return f"{incrementals_of(full)}claims/{parent_id}"


def parse_subdir(text: str) -> str:
    """Normalize a user-given subdir ('2024/03/01-100000.00', with or without slashes); the
    result starts with '/' and has no trailing '/'. Anything else is returned normalized too:
    CockroachDB accepts an arbitrary subdir (it will just not be listed by SHOW BACKUPS)."""
    return "/" + text.strip().strip("/")


def _rel(subdir: str, name: str) -> str:
    return subdir.strip("/") + "/" + name


def manifest_path(subdir: str) -> str:
    return _rel(subdir, "BACKUP_MANIFEST")


def checksum_path(subdir: str) -> str:
    return _rel(subdir, "BACKUP_MANIFEST-CHECKSUM")


# The subdir's lock object: created (create-if-absent) before anything else is written there,
# naming the job and a token unique to it; it stays behind a committed backup. Version-1
# pgkeeps wrote BACKUP-LOCK-<job_id> instead, after listing the subdir.
LOCK_NAME = "BACKUP-LOCK"
LEGACY_LOCK_PREFIX = "BACKUP-LOCK-"


def lock_path(subdir: str) -> str:
    return _rel(subdir, LOCK_NAME)


def schema_path(subdir: str, db_ordinal: int, attempt: str = "") -> str:
    """`attempt` names the run of the job that writes it (docs/FORMAT.md section 4.4): two runs
    of one job, a zombie and its adopter, never write the same name."""
    return _rel(subdir, f"schema/{db_ordinal}{_suffix(attempt)}.json")


def data_path(subdir: str, db_ordinal: int, table_oid: int, chunk: int, part: int,
              attempt: str = "") -> str:
    return _rel(subdir, f"data/{db_ordinal}/{table_oid}-{chunk}-{part}{_suffix(attempt)}.pgkd")


def _suffix(attempt: str) -> str:
    return f"-{attempt}" if attempt else ""


def latest_marker(end_time: dt.datetime, extra_ns: int = 0) -> str:
    """The marker's name for a backup ending at `end_time`; `extra_ns` (< 1000) moves it a few
    nanoseconds later when another backup's marker took the name."""
    ns = int(end_time.timestamp()) * 1_000_000_000 + end_time.microsecond * 1000 + extra_ns
    return f"{LATEST_PREFIX}LATEST-{_MAX_NS - ns:019d}"
