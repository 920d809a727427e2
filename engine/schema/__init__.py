"""Schema capture and replay: what a backup records about a database's objects, and the DDL that
brings them back.

`capture(conn)` reads pg_catalog inside the backup's snapshot and returns a `Schema` (JSON-safe,
`to_json`/`from_json`); `plan_restore(schema, ...)` turns it into a `RestorePlan`: pre-data
statements, the tables to load, post-data stages whose statements may run in parallel, and the
statements naming the database itself. DDL text is the source server's own deparse where the server
has a deparser; the restore side selects, orders and renders around it. See `plan` for the plan's contract and
`select` for the dependency errors of a table restore.
"""
from __future__ import annotations

from .capture import capture
from .errors import MissingDependency, SchemaError, SchemaFormatError
from .model import (LARGEOBJECT_OID, SCHEMA_VERSION, DatabaseInfo, ObjectSummary, Schema,
                    SchemaObject, TableInfo)
from .plan import SESSION_SETUP, RestorePlan, plan_restore

__all__ = ["capture", "plan_restore", "Schema", "DatabaseInfo", "TableInfo", "SchemaObject",
           "ObjectSummary", "RestorePlan", "SESSION_SETUP", "SCHEMA_VERSION", "LARGEOBJECT_OID", "SchemaError",
           "MissingDependency", "SchemaFormatError"]
