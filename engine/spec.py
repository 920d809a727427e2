"""Plain specifications of what to back up or restore: the proxy's commands translate statement
ASTs into these, so the engine never sees SQL text or wire bytes."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Callable, Protocol

__all__ = ["TableRef", "BackupSpec", "RestoreSpec", "BackupResult", "RestoreResult", "Connector",
           "EngineSettings", "Progress", "spec_to_dict", "backup_spec_from_dict", "restore_spec_from_dict"]


@dataclass(frozen=True)
class TableRef:
    """A table name or pattern as written: ('t',), ('db','t'), ('db','s','t'); star for x.*."""
    parts: tuple[str, ...]
    star: bool = False


@dataclass(frozen=True)
class BackupSpec:
    job_id: int
    user: str
    session_database: str
    scope: str                              # "database" | "table" | "cluster"
    collection: str                         # URI (secrets included: never log it)
    databases: tuple[str, ...] = ()
    tables: tuple[TableRef, ...] = ()
    subdir: str | None = None               # INTO 'subdir' IN (incremental)
    latest: bool = False                    # INTO LATEST IN (incremental)
    as_of: dt.datetime | None = None        # the requested AS OF SYSTEM TIME, resolved
    requested_as_of: str | None = None      # as written, for the manifest


@dataclass(frozen=True)
class RestoreSpec:
    job_id: int
    user: str
    session_database: str
    scope: str                              # "database" | "table" | "cluster"
    collection: str
    subdir: str | None = None
    latest: bool = False
    databases: tuple[str, ...] = ()
    tables: tuple[TableRef, ...] = ()
    new_db_name: str | None = None
    into_db: str | None = None
    skip_missing_foreign_keys: bool = False
    skip_missing_sequences: bool = False
    skip_missing_sequence_owners: bool = False
    skip_missing_views: bool = False
    skip_missing_udfs: bool = False
    schema_only: bool = False
    verify_backup_table_data: bool = False
    as_of: dt.datetime | None = None        # AS OF SYSTEM TIME: the layer ending then
    grants: bool = False                    # WITH grants: original owners and GRANTs (roles that
                                            # exist); without it the restoring user owns everything


@dataclass
class BackupResult:
    rows: int = 0
    index_entries: int = 0
    bytes: int = 0                      # logical bytes of table data (COPY stream)
    end_time: dt.datetime | None = None
    subdir: str = ""
    uncaptured: list[str] = field(default_factory=list)   # "db: kind name", left out of the backup


@dataclass
class RestoreResult:
    rows: int = 0
    index_entries: int = 0
    bytes: int = 0
    uncaptured: list[str] = field(default_factory=list)   # what the backup itself left out


Progress = Callable[[int, int], None]  # (bytes done, rows done)


class Connector(Protocol):
    """Opens asyncpg connections to the upstream as pgkeep's own user."""

    async def connect(self, database: str): ...


@dataclass(frozen=True)
class EngineSettings:
    file_size: int = 128 << 20
    chunk_size: int = 8 << 20
    backup_parallelism: int = 3
    restore_parallelism: int = 3
    compression_level: int = 1
    pausepoints: frozenset = frozenset()   # jobs.debug.pausepoints (engine/pausepoints.py)


def spec_to_dict(spec: BackupSpec | RestoreSpec) -> dict:
    """JSON-safe form of a spec, stored with its job so any pgkeep process can run it."""
    from dataclasses import asdict
    d = asdict(spec)
    if spec.as_of is not None:
        d["as_of"] = spec.as_of.isoformat()
    return d


def backup_spec_from_dict(d: dict) -> BackupSpec:
    d = dict(d)
    d["databases"] = tuple(d["databases"])
    d["tables"] = tuple(TableRef(tuple(t["parts"]), t["star"]) for t in d["tables"])
    if d.get("as_of"):
        d["as_of"] = dt.datetime.fromisoformat(d["as_of"])
    return BackupSpec(**d)


def restore_spec_from_dict(d: dict) -> RestoreSpec:
    d = dict(d)
    if d.get("as_of"):
        d["as_of"] = dt.datetime.fromisoformat(d["as_of"])
    d["databases"] = tuple(d["databases"])
    d["tables"] = tuple(TableRef(tuple(t["parts"]), t["star"]) for t in d["tables"])
    return RestoreSpec(**d)
