"""SHOW BACKUPS IN and SHOW BACKUP [SCHEMAS | FILES | VALIDATE] FROM ... IN, with CockroachDB's
columns. pgkeep has no KV ranges, so SHOW BACKUP RANGES answers 0A000; FILES lists pgkeep's data
files, with the table and chunk where CockroachDB shows key spans."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from typing import ClassVar

from engine.collection import read_file
from engine.errors import DataCorrupted, NotFound

from .. import errors, sql
from ..wire.messages import Column
from ..wire.values import OID
from . import authz
from .backup import collection_uri
from .base import CommandContext, Result, literal_text

__all__ = ["COMMANDS"]

_I8 = dict(type_oid=OID.INT8, type_size=8)
_TS = dict(type_oid=OID.TIMESTAMPTZ, type_size=8)
_BOOL = dict(type_oid=OID.BOOL, type_size=1)


def _columns(stmt) -> list[Column]:
    o = stmt.options
    if stmt.details == "FILES":
        return [Column("path"), Column("backup_type"), Column("start_pretty"), Column("end_pretty"),
                Column("start_key", OID.BYTEA), Column("end_key", OID.BYTEA),
                Column("size_bytes", **_I8), Column("rows", **_I8), Column("locality"),
                Column("file_bytes", **_I8)]
    if stmt.details == "VALIDATE":
        return [Column("validation_status")]
    if o.as_json:
        return [Column("manifest", OID.JSONB)]
    cols = [Column("database_name"), Column("parent_schema_name"), Column("object_name")]
    if o.debug_ids:
        cols = [Column("database_name"), Column("database_id", **_I8), Column("parent_schema_name"),
                Column("parent_schema_id", **_I8), Column("object_name"), Column("object_id", **_I8)]
    cols += [Column("object_type"), Column("backup_type"), Column("start_time", **_TS),
             Column("end_time", **_TS), Column("size_bytes", **_I8), Column("rows", **_I8),
             Column("is_full_cluster", **_BOOL), Column("regions")]
    if stmt.details == "SCHEMAS":
        cols.append(Column("create_statement"))
    if o.check_files:
        cols.append(Column("file_bytes", **_I8))
    if o.privileges:
        cols += [Column("privileges"), Column("owner")]
    return cols


class _ShowBackups:
    statement_types: ClassVar = (sql.ShowBackups,)

    def describe(self, stmt):
        return [Column("path")]

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        if stmt.newer_than is not None or stmt.older_than is not None or stmt.revision_start_time:
            raise errors.FeatureNotSupported("SHOW BACKUPS time filters need backup IDs "
                                             "(use_backups_with_ids), which pgkeep does not have yet")
        uri = collection_uri(stmt.collection)
        await authz.authorize_storage(ctx, uri, "SHOW BACKUPS IN")
        paths = await ctx.app.engine.list_backups(uri)
        return Result([Column("path")], [(p,) for p in paths])


class _ShowBackup:
    statement_types: ClassVar = (sql.ShowBackup,)

    def describe(self, stmt):
        return None if stmt.details == "RANGES" else _columns(stmt)

    async def execute(self, ctx: CommandContext, stmt) -> Result:
        o = stmt.options
        if stmt.details == "RANGES":
            raise errors.FeatureNotSupported("SHOW BACKUP RANGES: pgkeep backups have no KV ranges",
                                             hint="SHOW BACKUP FILES lists the data files")
        if o.encryption_passphrase is not None or o.kms is not None:
            raise errors.FeatureNotSupported("encrypted backups are not supported by pgkeep yet")
        if not stmt.latest and stmt.subdir is None:
            raise errors.InvalidParameterValue("SHOW BACKUP needs a backup in the collection",
                                               hint="use SHOW BACKUPS IN to list the backups of a collection")
        uri = collection_uri(stmt.collection)
        await authz.authorize_storage(ctx, uri, "SHOW BACKUP FROM")
        subdir = None if stmt.subdir is None else literal_text(stmt.subdir, "the subdir")
        handle, schemas = await ctx.app.engine.open_backup(uri, subdir, stmt.latest)
        try:
            cols = _columns(stmt)
            if stmt.details == "VALIDATE":
                return Result(cols, [(await _validate(handle),)])
            if o.as_json:       # one manifest per layer, full first (CockroachDB's jsonShower)
                return Result(cols, [(json.dumps(asdict(lm)),) for _, lm in handle.layers])
            if stmt.details == "FILES":
                return Result(cols, [r for path, lm in handle.layers for r in _file_rows(lm, path)])
            file_bytes = await _check_files(handle) if o.check_files else None
            return Result(cols, [r for path, lm in handle.layers
                                 for r in _object_rows(stmt, lm, path, schemas[path], file_bytes)])
        finally:
            await handle.store.close()


def _own(path: str):
    """Whether a file was written by the layer in directory `path` (not an earlier one)."""
    prefix = path.strip("/") + "/"
    return lambda f: f.path.startswith(prefix)


def _file_rows(m, path: str):
    """The files this layer wrote (docs/FORMAT.md 7.5)."""
    rows = []
    own = _own(path)
    for d in m.databases:
        for t in d.tables:
            for c in t.chunks:
                for f in filter(own, c.files):
                    span = f"/{d.name}/{t.schema}.{t.name}/chunk/{c.index}"
                    rows.append((f.path, m.backup_type, span, span, None, None, f.logical_bytes,
                                 c.rows if f is c.files[-1] else 0, None, f.size))
    return rows


async def _check_files(handle) -> dict[int, int]:
    """Stat every file; raise listing up to 10 missing ones (CockroachDB's wording)."""
    missing, sizes = [], {}
    refs = {f.path: f for _, m in handle.layers for f in m.all_files()}
    for ref in refs.values():
        try:
            info = await handle.store.stat(ref.path)
        except NotFound:
            missing.append(ref.path)
            continue
        sizes[ref.path] = info.size
    if missing:
        raise DataCorrupted("The following files are missing from the backup:\n\t"
                            + "\n\t".join(missing[:10]))
    return sizes


async def _validate(handle) -> str:
    """Every file read and checksummed; every schema's statements checked as a restore checks
    them (XX001 naming the object when one is not one statement of its kind)."""
    from engine.collection import read_schema
    from engine.schema.plan import check_statements
    for _, m in handle.layers:
        for d in m.databases:
            check_statements(await read_schema(handle.store, d.schema_file),
                             None if d.selected is None else set(d.selected))
    problems = []
    for ref in {f.path: f for _, m in handle.layers for f in m.all_files()}.values():
        try:
            async for _ in read_file(handle.store, ref):
                pass
        except DataCorrupted as e:
            problems.append(e.message)
    return "No problems found!" if not problems else "\n".join(problems)


def _object_rows(stmt, m, path, schemas, file_bytes):
    """One layer's block: its objects, with the size and rows of the files it wrote."""
    o = stmt.options
    end = m.end_datetime
    start = dt.datetime.fromisoformat(m.start_time) if m.start_time else None
    full_cluster = m.scope == "cluster"
    own = _own(path)
    rows = []

    def row(db, db_id, parent, parent_id, name, obj_id, kind, size=None, nrows=None, extra=()):
        names = [db, parent, name] if not o.debug_ids else [db, db_id, parent, parent_id, name, obj_id]
        return tuple(names) + (kind, m.backup_type, start, end, size, nrows, full_cluster, None) + extra

    def written(t):
        """(logical bytes, rows) of the table's chunks this layer wrote."""
        chunks = [c for c in t.chunks if any(own(f) for f in c.files)]
        return sum(f.logical_bytes for c in chunks for f in c.files), sum(c.rows for c in chunks)

    for d in m.databases:
        schema = schemas[d.ordinal]
        tables = {t.oid: t for t in d.tables}
        selected = set(d.selected) if d.selected is not None else None
        objects = [ob for ob in schema.objects_summary()
                   if selected is None or ob.object_type == "schema" or ob.oid in selected]
        if selected is not None:
            used = {ob.schema_name for ob in objects if ob.object_type != "schema"}
            objects = [ob for ob in objects if ob.object_type != "schema" or ob.object_name in used]
        rows.append(row(d.name, None, None, None, d.name, None, "database",
                        extra=_extra(stmt, o, getattr(schema.database, "create_statement", None), None,
                                     getattr(schema.database, "owner", None), None)))
        for ob in objects:
            t = tables.get(ob.oid)
            size, nrows = written(t) if t else ((0, 0) if ob.object_type == "table" else (None, None))
            fb = sum(file_bytes.get(f.path, 0) for f in filter(own, t.files)) if (t and file_bytes is not None) else None
            rows.append(row(d.name, None, ob.schema_name, None, ob.object_name, ob.oid, ob.object_type,
                            size, nrows, _extra(stmt, o, ob.create_statement, fb, ob.owner, ob.privileges)))
        for t in d.tables:
            if t.kind == "L":       # the pages of the database's large objects
                fb = sum(file_bytes.get(f.path, 0) for f in filter(own, t.files)) if file_bytes is not None else None
                rows.append(row(d.name, None, t.schema, None, t.name, t.oid, "large objects",
                                *written(t), _extra(stmt, o, None, fb, None, None)))
    return rows


def _extra(stmt, o, create, file_bytes, owner, privileges) -> tuple:
    out = ()
    if stmt.details == "SCHEMAS":
        out += (create,)
    if o.check_files:
        out += (file_bytes,)
    if o.privileges:
        out += (privileges, owner)
    return out


COMMANDS = (_ShowBackups(), _ShowBackup())
