"""--workers N: several processes share the port; cancels reach the session wherever they land."""
from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.support.pgkeep import PgkeepProcess
from tests.support.workers import worker_of


@pytest.fixture(scope="module")
def pgkeep_workers(workdir, pg18):
    proc = PgkeepProcess(workdir / "workers", pg18.dsn(), args=["--workers", "3"]).start()
    time.sleep(1.0)  # the two child workers bind right after the parent prints its banner
    yield proc
    assert proc.stop() == 0


def test_connections_spread_over_workers_and_cancel_reaches_each(pgkeep_workers):
    # The kernel spreads SO_REUSEPORT connections by a hash of their ports: connect until every
    # worker holds two (a fixed count leaves one worker out now and then), keep those. On a busy
    # machine the child workers may bind seconds after the parent: keep trying for a while.
    by_worker: dict[int, list] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        c = psycopg.connect(pgkeep_workers.dsn(), autocommit=True)
        mine = by_worker.setdefault(worker_of(pgkeep_workers, c), [])
        if len(mine) < 2:
            mine.append(c)
        else:
            c.close()
            time.sleep(0.02)
        if len(by_worker) == 3 and all(len(v) == 2 for v in by_worker.values()):
            break
    conns = [c for v in by_worker.values() for c in v]
    try:
        assert set(by_worker) == {0, 1, 2}, "connections should land on all 3 workers"
        assert len(conns) == 6
        results: dict[int, BaseException | None] = {}

        def run(i, c):
            try:
                c.execute("SELECT pg_sleep(20)")
                results[i] = None
            except BaseException as e:  # noqa: BLE001
                results[i] = e

        threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(conns)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        started = time.monotonic()
        for c in conns:
            c.cancel_safe(timeout=5)
        for t in threads:
            t.join(15)
        assert time.monotonic() - started < 10
        assert all(isinstance(results[i], psycopg.errors.QueryCanceled) for i in range(len(conns))), results
        assert all(c.execute("SELECT 1").fetchone() == (1,) for c in conns)
    finally:
        for c in conns:
            c.close()


def test_wrong_secret_relayed_to_every_worker_cancels_nothing(pgkeep_workers):
    """A cancel for another worker's session goes to every worker; only the right secret acts."""
    from .rawpg import cancel_request, read_all_until_eof
    conns = [psycopg.connect(pgkeep_workers.dsn(), autocommit=True) for _ in range(8)]
    try:
        assert len({worker_of(pgkeep_workers, c) for c in conns}) > 1
        results: dict[int, object] = {}

        def run(i, c):
            try:
                results[i] = c.execute("SELECT pg_sleep(1.5), 'finished'").fetchone()
            except BaseException as e:  # noqa: BLE001
                results[i] = e

        threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(conns)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        for c in conns:
            for _ in range(3):  # each lands on whichever worker the kernel picks
                with pgkeep_workers.connect_raw() as s:
                    s.sendall(cancel_request(c.info.backend_pid, b"\0\0\0\0"))
                    assert read_all_until_eof(s) == b""
        for t in threads:
            t.join(15)
        assert all(results[i] == ("", "finished") for i in range(len(conns))), results
    finally:
        for c in conns:
            c.close()


def test_workers_stop_with_the_parent(workdir, pg18):
    import psutil
    proc = PgkeepProcess(workdir / "workers-stop", pg18.dsn(), args=["--workers", "2"]).start()
    time.sleep(1.0)
    children = psutil.Process(proc.proc.pid).children()
    assert len(children) == 1 and "proxy" in " ".join(children[0].cmdline())
    with psycopg.connect(proc.dsn(), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    assert proc.stop() == 0
    assert not children[0].is_running() or children[0].status() == psutil.STATUS_ZOMBIE
