"""Where a job's storage lives, so that only a process that sees the same place adopts it.

A nodelocal:// collection is a directory under one process's --nodelocal-root: another pgkeep
with another root (or on another machine) that adopted the job would read or write a different
directory, and split one backup across two disks. The root's identity is a random id pgkeep writes
once into the root (`.pgkeep-root-id`, created atomically: the first process wins, the others read
it) together with the root's resolved path; a job on nodelocal records the identity of the root it
started on, and `catalog.JobStore.claim` gives it only to a process with the same identity. Jobs on
cloud stores record nothing: every process reaches them.
"""
from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import urlsplit

__all__ = ["Placement", "root_identity"]

_log = logging.getLogger("pgkeep.jobs")
ID_FILE = ".pgkeep-root-id"


def root_identity(root: Path) -> str:
    """'nodelocal:<id>:<resolved path>' of a nodelocal root, creating its id file once."""
    root = root.resolve()
    path = root / ID_FILE
    if not path.exists():
        tmp = root / f"{ID_FILE}.{secrets.token_hex(8)}.tmp"
        tmp.write_text(secrets.token_hex(16) + "\n")
        try:
            os.link(tmp, path)          # create-if-absent with the whole content
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return f"nodelocal:{path.read_text().strip()}:{root}"


class Placement:
    """This process's place (`here`) and the place each job needs (`of`)."""

    def __init__(self, nodelocal_root: Path, resolve: Callable[[str], Awaitable[str]]) -> None:
        self.here = root_identity(nodelocal_root)
        self._resolve = resolve          # external:// name -> the URI behind it

    async def of(self, spec: dict) -> str | None:
        uri = spec.get("collection")
        if not uri:
            return None
        try:
            uri = await self._resolve(uri)
        except Exception:  # noqa: BLE001 - unknown: only this place may run it
            return self.here
        return self.here if urlsplit(uri).scheme == "nodelocal" else None
