"""`--max-connections` across every worker process of one pgkeep.

Contract: at most `limit` sessions are admitted at once over all processes sharing the slot
file, and a session is refused only when `limit` are admitted (exactly `limit` concurrent
clients get in, whatever `--workers`). Each admitted session holds an exclusive fcntl lock on
one byte (its slot) of a 0600 file in DATA_DIR/run; the kernel drops a process's locks when it
exits, so a worker killed by kill -9 leaks no slot (a counter in shared memory, a SysV or POSIX
semaphore would keep the dead worker's count forever). fcntl locks belong to the process, and
re-locking a byte the same process holds succeeds, so each process also tracks its own slots.
"""
from __future__ import annotations

import fcntl
import os
import random
from pathlib import Path

__all__ = ["ConnectionSlots"]


class ConnectionSlots:
    def __init__(self, limit: int, path: Path | None) -> None:
        """`path` None: one process, counted in memory."""
        self.limit = limit
        self.path = path
        self._fd: int | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._held: dict[object, int] = {}   # owner -> slot
        self._mine: set[int] = set()

    def acquire(self, owner: object) -> bool:
        """Take a free slot for `owner`; False when `limit` sessions hold one already."""
        if owner in self._held:
            return True
        if len(self._held) >= self.limit:
            return False
        if self._fd is None:
            self._held[owner] = len(self._held)
            return True
        start = random.randrange(self.limit)  # spread the probes of concurrent workers
        for i in range(self.limit):
            slot = (start + i) % self.limit
            if slot in self._mine:
                continue
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)
            except OSError:
                continue  # another worker's session holds it
            self._held[owner] = slot
            self._mine.add(slot)
            return True
        return False

    def release(self, owner: object) -> None:
        slot = self._held.pop(owner, None)
        if slot is None or self._fd is None:
            return
        self._mine.discard(slot)
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, slot)

    def close(self, unlink: bool = False) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if unlink and self.path is not None:
                self.path.unlink(missing_ok=True)
