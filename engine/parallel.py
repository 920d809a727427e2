"""A pool of connections working through a queue of items: BACKUP's chunks, RESTORE's loads and
index builds."""
from __future__ import annotations

import asyncio

from .jobs import JobStopped

__all__ = ["run_parallel", "close_quietly"]

_SETTLE = 5.0   # seconds a cancelled worker has to stop before its connection is cut


async def run_parallel(conns, items, fn, job=None) -> None:
    """Items over connections, each connection taking the next item when done. A job's pause
    or cancel is honoured between items: a pausing worker takes nothing new and lets the others
    finish what they hold. A failure cancels the others and is raised once they have stopped:
    a worker still stuck after `_SETTLE` seconds (asyncpg waiting for the answer to the cancel
    request of an interrupted COPY) has its connection cut, and every worker's exception is
    retrieved here, so none is logged as never retrieved."""
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
        await _stop_all(tasks, conns)
        raise
    if stopping:
        raise stopping[0]


async def _stop_all(tasks: list[asyncio.Future], conns) -> None:
    for t in tasks:
        t.cancel()
    _, pending = await asyncio.wait(tasks, timeout=_SETTLE)
    if pending:
        for c in conns:
            if hasattr(c, "terminate") and not c.is_closed():
                c.terminate()
        await asyncio.wait(pending, timeout=_SETTLE)
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()


async def close_quietly(conn) -> None:
    """Close without raising: gracefully within 5 s, else cut (a connection with a cancel
    request in flight may never close gracefully). Cut too when the caller is cancelled."""
    try:
        await asyncio.wait_for(conn.close(), 5)
    except Exception:  # noqa: BLE001 - closing after a failure must not mask it
        conn.terminate()
    except BaseException:
        conn.terminate()
        raise
