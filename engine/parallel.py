"""A pool of connections working through a queue of items: BACKUP's chunks, RESTORE's loads and
index builds."""
from __future__ import annotations

import asyncio

from .jobs import JobStopped

__all__ = ["run_parallel", "close_quietly"]


async def run_parallel(conns, items, fn, job=None) -> None:
    """Items over connections, each connection taking the next item when done. A job's pause
    or cancel is honoured between items: a pausing worker takes nothing new and lets the others
    finish what they hold. A failure cancels the others and is raised once they have stopped."""
    queue: asyncio.Queue = asyncio.Queue()
    for it in items:
        queue.put_nowait(it)
    stopping: list[BaseException] = []

    async def work(conn):
        while not queue.empty():
            if job is not None:
                try:
                    job.check()
                except JobStopped as stop:
                    stopping.append(stop)
                    return
            await fn(conn, queue.get_nowait())

    tasks = [asyncio.ensure_future(work(c)) for c in conns]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    if stopping:
        raise stopping[0]


async def close_quietly(conn) -> None:
    try:
        await asyncio.wait_for(conn.close(), 5)
    except Exception:  # noqa: BLE001 - closing after a failure must not mask it
        conn.terminate()
