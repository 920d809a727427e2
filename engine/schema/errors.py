"""Errors raised while planning a restore from a captured schema.

Each class carries its SQLSTATE where it is raised (the proxy renders any exception with `sqlstate`,
`message`, `hint`, `detail`, `position` and `severity` attributes as an ErrorResponse). The wording
of the dependency errors is CockroachDB's (`cannot restore table "t" without referenced table 16390
(or "skip_missing_foreign_keys" option)`), the number being the referenced object's OID in the backup.

SQLSTATEs:
  MissingDependency  42P01 undefined_table  a restored object needs a relation, sequence, owner table,
                                            view dependency or function that the restore leaves out
  IncompatibleType   42710 duplicate_object a type of the same name exists in the target with another
                                            definition (raised by the plan's own DO block at execution)
  MissingSchema      3F000 invalid_schema_name  a table restore into a database lacking the schema
                                            (raised by the plan's DO block at execution)
  SchemaFormatError  XX001 data_corrupted   a schema document this version cannot read
"""
from __future__ import annotations

__all__ = ["SchemaError", "MissingDependency", "IncompatibleType", "MissingSchema",
           "SchemaFormatError"]


class SchemaError(Exception):
    sqlstate = "XX000"
    severity = "ERROR"

    def __init__(self, message: str, *, hint: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail
        self.position = None


class MissingDependency(SchemaError):
    sqlstate = "42P01"


class IncompatibleType(SchemaError):
    sqlstate = "42710"


class MissingSchema(SchemaError):
    sqlstate = "3F000"


class SchemaFormatError(SchemaError):
    sqlstate = "XX001"
