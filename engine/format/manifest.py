"""The backup manifest (docs/FORMAT.md section 4): dataclasses and their JSON form. Pure.

`Manifest.from_json` refuses a format version it does not know, rather than guess.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field

from ..errors import DataCorrupted, Unsupported

__all__ = ["FORMAT_VERSION", "FileRef", "Chunk", "TableEntry", "DatabaseEntry", "Manifest"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class FileRef:
    path: str
    size: int
    sha256: str
    logical_bytes: int = 0


@dataclass
class Chunk:
    index: int
    rows: int = 0
    files: list[FileRef] = field(default_factory=list)


@dataclass
class TableEntry:
    oid: int
    schema: str
    name: str
    kind: str
    format: str           # "binary" or "text": the COPY format of the data files
    columns: list[str]
    rows: int = 0
    logical_bytes: int = 0
    chunks: list[Chunk] = field(default_factory=list)

    @property
    def files(self) -> list[FileRef]:
        return [f for c in self.chunks for f in c.files]


@dataclass
class DatabaseEntry:
    ordinal: int
    name: str
    snapshot_time: str
    schema_file: FileRef
    whole_database: bool
    tables: list[TableEntry] = field(default_factory=list)
    selected: list[int] | None = None   # table backups: the relations named (tables, views,
                                        # sequences, partitions), by OID; None for a whole database


@dataclass
class Manifest:
    id: str
    job_id: int
    backup_type: str            # "full" (incrementals: later format feature)
    scope: str                  # "cluster" | "database" | "table"
    end_time: str               # ISO 8601, the snapshot time
    server_version: int
    pgkeep_version: str
    file_size_target: int
    databases: list[DatabaseEntry] = field(default_factory=list)
    start_time: str | None = None
    requested_as_of: str | None = None
    format_version: int = FORMAT_VERSION

    @property
    def end_datetime(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.end_time)

    def all_files(self) -> list[FileRef]:
        out = []
        for d in self.databases:
            out.append(d.schema_file)
            for t in d.tables:
                out.extend(t.files)
        return out

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "BACKUP_MANIFEST") -> "Manifest":
        try:
            d = json.loads(data)
        except ValueError:
            raise DataCorrupted(f"{name} is not valid JSON") from None
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise Unsupported(f"{name} has backup format version {version}; this pgkeep reads "
                              f"version {FORMAT_VERSION}")
        try:
            dbs = [DatabaseEntry(
                ordinal=db["ordinal"], name=db["name"], snapshot_time=db["snapshot_time"],
                schema_file=FileRef(**db["schema_file"]), whole_database=db["whole_database"],
                tables=[TableEntry(**{**t, "chunks": [Chunk(c["index"], c["rows"],
                                                            [FileRef(**f) for f in c["files"]])
                                                      for c in t["chunks"]]})
                        for t in db["tables"]],
                selected=db.get("selected"))
                for db in d["databases"]]
            return cls(**{**d, "databases": dbs})
        except (KeyError, TypeError) as e:
            raise DataCorrupted(f"{name} is malformed: {e}") from None
