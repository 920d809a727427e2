"""Errors raised by the engine, each carrying its SQLSTATE. EngineError derives from
catalog.errors.PgkeepError, the one base of pgkeep's own errors: the proxy shows them to clients
as they are and never imports into the engine; anything else the engine lets escape is foreign
and is sanitised (catalog.errors.foreign_error) before a client or a job's record sees it."""
from __future__ import annotations

from catalog.errors import PgkeepError

__all__ = ["EngineError", "NotFound", "InvalidURI", "StorageError", "BackupExists",
           "DataCorrupted", "Unsupported", "DuplicateDatabase", "DuplicateTable",
           "UndefinedObject", "InvalidTarget", "Canceled"]


class EngineError(PgkeepError):
    """Base of the engine's errors."""

    def __init__(self, message: str, *, hint: str | None = None, detail: str | None = None) -> None:
        super().__init__(message, hint=hint, detail=detail)


class NotFound(EngineError):
    """The one sentinel of the object-store protocol: the object does not exist."""
    sqlstate = "58P01"


class InvalidURI(EngineError):
    sqlstate = "22023"


class StorageError(EngineError):
    """A store failed for good (after retries); the message names the store, redacted."""
    sqlstate = "58030"


class BackupExists(EngineError):
    sqlstate = "58P02"  # duplicate_file, CockroachDB's FileAlreadyExists


class DataCorrupted(EngineError):
    sqlstate = "XX001"


class Unsupported(EngineError):
    sqlstate = "0A000"


class DuplicateDatabase(EngineError):
    sqlstate = "42P04"


class DuplicateTable(EngineError):
    sqlstate = "42P07"


class UndefinedObject(EngineError):
    sqlstate = "42704"


class InvalidTarget(EngineError):
    sqlstate = "42P01"


class Canceled(EngineError):
    sqlstate = "57014"


# -- storage outcomes (engine/storage) --
class AlreadyExists(EngineError):
    """`ObjectStore.create` found an object at the path already (it was left untouched). The
    engine catches it to take another name; a user sees it only if that fails too."""
    sqlstate = "58P02"  # duplicate_file


class DiskFull(StorageError):
    """A store ran out of space (ENOSPC, EDQUOT) while writing; the message names the store."""
    sqlstate = "53100"  # disk_full


__all__ += ["AlreadyExists", "DiskFull"]
