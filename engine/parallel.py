"""A pool of connections working through a queue of items: BACKUP's chunks, RESTORE's loads and
index builds."""
from __future__ import annotations

import asyncio

from .jobs import JobStopped

__all__ = ["run_parallel", "close_quietly"]

_SETTLE = 10.0  # seconds the other workers have to finish their item after a failure


async def run_parallel(conns, items, fn, job=None) -> None:
    """Items over connections, each connection taking the next item when done. A job's pause
    or cancel is honoured between items: a pausing worker takes nothing new and lets the others
    finish what they hold.

    A failure (a job's cancel included) stops the others without interrupting a COPY: they take
    nothing new and get `_SETTLE` seconds to finish their item; then the connections still busy
    are cut. asyncpg's own way of interrupting a COPY (a cancel request while rows are still
    arriving) breaks its protocol state and logs transport errors, so workers are never
    cancelled. Every worker's exception is retrieved; the first failure is raised."""
    queue: asyncio.Queue = asyncio.Queue()
    for it in items:
        queue.put_nowait(it)
    stopping: list[BaseException] = []
    failed = False

    async def work(conn):
        while not queue.empty() and not failed:
            if job is not None:
                try:
                    job.check()
                except JobStopped as stop:
                    stopping.append(stop)
                    return
            await fn(conn, queue.get_nowait())

    tasks = [asyncio.ensure_future(work(c)) for c in conns]
    if not tasks:                          # nothing to do (a database without tables)
        return
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:         # the job itself is being torn down: cut at once
        failed = True
        _cut(conns)
        await _settle(tasks, conns, 0)
        raise
    failure = next((t.exception() for t in tasks if t.done() and t.exception() is not None), None)
    if failure is not None:
        failed = True
        await _settle(tasks, conns, _SETTLE)
        raise failure
    if stopping:
        raise stopping[0]


async def _settle(tasks: list[asyncio.Future], conns, grace: float) -> None:
    pending = [t for t in tasks if not t.done()]
    if pending and grace:
        _, pending = await asyncio.wait(pending, timeout=grace)
    if pending:
        _cut(conns)
        await asyncio.wait(pending, timeout=_SETTLE)
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()                   # retrieved: never logged as unretrieved


def _cut(conns) -> None:
    for c in conns:
        if hasattr(c, "terminate") and not c.is_closed():
            c.terminate()


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
