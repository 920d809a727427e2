"""The backup manifest (docs/FORMAT.md section 4): dataclasses and their JSON form. Pure.

`Manifest.from_json` refuses a format version it does not know, rather than guess.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field

from ..errors import DataCorrupted, Unsupported

__all__ = ["FORMAT_VERSION", "READABLE_VERSIONS", "FileRef", "Chunk", "TableEntry", "DatabaseEntry",
           "ChainLink", "Manifest"]

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


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
    range: list | None = None   # heap pages [first, end), end None: to the end (version 2)


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
    identity: str = ""          # section 4.2 (b), under the backup's table lock (version 2)
    heap: bool = False          # its access method is heap (version 2)
    pages: int | None = None    # its size in pages under the backup's snapshot (version 2)

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
    snapshot: str = ""                  # pg_current_snapshot() of the data (version 2)
    # Optional (docs/FORMAT.md 7.6): where the snapshot's WAL starts, for the next layer's WAL
    # summaries ({"system", "database", "timeline", "lsn"}); None when not recorded.
    wal_start: dict | None = None
    # How this layer proved the parent's chunks unchanged: {"wal": chunks kept by the WAL
    # summaries, "scan": chunks kept by a scan, "why": why the summaries were not used, or ""}.
    proof: dict | None = None
    # Optional: the database's OID. A database dropped and re-created from a template under its
    # name has a new one, and its tables may keep their identities (FORMAT.md 7.3).
    oid: int | None = None


@dataclass(frozen=True)
class ChainLink:
    """An earlier layer of an incremental's chain (docs/FORMAT.md section 7.1)."""
    path: str                   # its directory, e.g. '/2026/11/25-101500.00'
    id: str                     # its manifest's id
    end_time: str
    manifest_sha256: str        # the SHA-256 of its BACKUP_MANIFEST (its checksum file's content)


@dataclass
class Manifest:
    id: str
    job_id: int
    backup_type: str            # "full" | "incremental"
    scope: str                  # "cluster" | "database" | "table"
    end_time: str               # ISO 8601, the snapshot time
    server_version: int
    pgkeep_version: str
    file_size_target: int
    databases: list[DatabaseEntry] = field(default_factory=list)
    start_time: str | None = None
    requested_as_of: str | None = None
    format_version: int = FORMAT_VERSION
    chain: list[ChainLink] = field(default_factory=list)   # earlier layers, the full first

    @property
    def full_path(self) -> str | None:
        """The directory of the chain's full (None for a full: its own, which it does not know)."""
        return self.chain[0].path if self.chain else None

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
        if version not in READABLE_VERSIONS:
            raise Unsupported(f"{name} has backup format version {version}; this pgkeep reads "
                              f"versions {', '.join(map(str, READABLE_VERSIONS))}")
        try:
            dbs = [DatabaseEntry(
                ordinal=db["ordinal"], name=db["name"], snapshot_time=db["snapshot_time"],
                schema_file=FileRef(**db["schema_file"]), whole_database=db["whole_database"],
                tables=[TableEntry(**{**t, "chunks": [Chunk(c["index"], c["rows"],
                                                            [FileRef(**f) for f in c["files"]],
                                                            c.get("range"))
                                                      for c in t["chunks"]]})
                        for t in db["tables"]],
                selected=db.get("selected"), snapshot=db.get("snapshot", ""),
                wal_start=db.get("wal_start"), proof=db.get("proof"), oid=db.get("oid"))
                for db in d["databases"]]
            chain = [ChainLink(**link) for link in d.get("chain", [])]
            return cls(**{**d, "databases": dbs, "chain": chain})
        except (KeyError, TypeError) as e:
            raise DataCorrupted(f"{name} is malformed: {e}") from None
