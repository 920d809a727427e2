"""BACKUP into a collection: fulls and incremental layers (docs/FORMAT.md). See run.py."""
from .dest import check_backup, claim_subdir
from .run import PGKEEP_VERSION, BackupRun, run_backup
from .sink import over_tcp as _over_tcp

__all__ = ["run_backup", "check_backup", "PGKEEP_VERSION", "BackupRun", "claim_subdir", "_over_tcp"]
