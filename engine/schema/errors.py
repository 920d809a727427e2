"""Errors raised while planning a restore from a captured schema.

Each class carries its SQLSTATE where it is raised (the proxy renders any exception with `sqlstate`,
`message`, `hint`, `detail`, `position` and `severity` attributes as an ErrorResponse). The wording
of the dependency errors is CockroachDB's (`cannot restore table "t" without referenced table 16390
(or "skip_missing_foreign_keys" option)`), the number being the referenced object's OID in the backup.

SQLSTATEs:
  MissingDependency  42P01 undefined_table  a restored object needs a relation, sequence, owner table,
                                            view dependency or function that the restore leaves out
  SchemaFormatError  XX001 data_corrupted   a schema document this version cannot read
A type of the same name with another definition in the target (42710) and a table restore into a
database lacking the schema (3F000) are raised by the plan's own DO blocks, inside PostgreSQL.
"""
from __future__ import annotations

from ..errors import EngineError

__all__ = ["SchemaError", "MissingDependency", "SchemaFormatError"]


class SchemaError(EngineError):
    """Base of the schema package's errors (an engine error with its SQLSTATE)."""


class MissingDependency(SchemaError):
    sqlstate = "42P01"


class SchemaFormatError(SchemaError):
    sqlstate = "XX001"
