"""What a paused or killed run of a backup job leaves for the next run of the same job: typed
records with a JSON form (stored in the job's catalog row). docs/FORMAT.md sections 1.1, 4.2, 7.2."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..format.manifest import FileRef

__all__ = ["DoneChunk", "TableMark", "DatabaseMark", "ParentMark", "Checkpoint", "norm_range"]


def norm_range(r) -> list:
    """A chunk's page range as [first, end|None]; older checkpoints wrote None for 'all'."""
    return [0, None] if r is None else [int(r[0]), None if r[1] is None else int(r[1])]


@dataclass
class DoneChunk:
    rows: int
    files: list[FileRef]


@dataclass
class TableMark:
    identity: str        # the table's identity (FORMAT.md 4.2 (b)), read under the run's lock
    columns: list[str]
    format: str
    ranges: list         # the chunks' page ranges, [first, end|None]
    chunks: dict[int, DoneChunk] = field(default_factory=dict)   # copied by this job


@dataclass
class DatabaseMark:
    name: str
    snapshot: str        # pg_current_snapshot() of the run's snapshot, 'xmin:xmax:xip,...'
    tables: dict[int, TableMark] = field(default_factory=dict)
    oid: int | None = None   # the database's OID (older checkpoints: None)


@dataclass
class ParentMark:
    """An incremental's parent layer and its claim on extending it (FORMAT.md 7.2)."""
    path: str            # the parent layer's directory
    id: str              # its manifest id
    full: str            # the chain's full subdir
    token: str           # this job's token in the chain claim


@dataclass
class Checkpoint:
    """The job's subdir claim and the chunks finished so far (docs/FORMAT.md section 4)."""
    subdir: str
    start: str
    token: str = ""      # the unique token this job writes into its subdir's lock object
    databases: dict[int, DatabaseMark] = field(default_factory=dict)
    parent: ParentMark | None = None

    def to_json(self) -> dict:
        return {"subdir": self.subdir, "start": self.start, "token": self.token,
                "parent": asdict(self.parent) if self.parent else None,
                "databases": {str(o): {"name": d.name, "snapshot": d.snapshot, "oid": d.oid, "tables": {
                    str(oid): {"identity": t.identity, "columns": t.columns, "format": t.format,
                               "ranges": t.ranges, "chunks": {
                                   str(i): {"rows": c.rows, "files": [asdict(f) for f in c.files]}
                                   for i, c in t.chunks.items()}}
                    for oid, t in d.tables.items()}} for o, d in self.databases.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "Checkpoint":
        """Tolerates checkpoints of older pgkeeps: a table without an identity keeps no chunk."""
        return cls(d["subdir"], d["start"], d.get("token", ""), {
            int(o): DatabaseMark(db["name"], db.get("snapshot", ""), {
                int(oid): TableMark(t.get("identity", ""), t["columns"], t["format"],
                                    [norm_range(r) for r in t["ranges"]], {
                    int(i): DoneChunk(c["rows"], [FileRef(**f) for f in c["files"]])
                    for i, c in t["chunks"].items()})
                for oid, t in db.get("tables", {}).items()}, db.get("oid"))
            for o, db in d.get("databases", {}).items()},
            ParentMark(**d["parent"]) if d.get("parent") else None)

    def files(self) -> list[str]:
        return [f.path for d in self.databases.values() for t in d.tables.values()
                for c in t.chunks.values() for f in c.files]
