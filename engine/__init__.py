"""pgkeep's backup engine: object stores, the backup format, backup/restore/incremental, jobs and
the scheduler. It never sees SQL text or wire bytes: the proxy's commands hand it plain specs.
Depends on `catalog` only."""

__all__: list[str] = []
