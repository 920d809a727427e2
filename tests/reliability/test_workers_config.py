"""Issue 12, point 10: with --workers N every worker runs with the whole resolved configuration
(flags, environment and config file), --max-connections bounds the whole pgkeep, and the upstream
password is in no child's argv. On 3ca83b6 children got only `--upstream` (in argv, password
included): plaintext served, 100 connections admitted per child, backups in the default root.

SO_REUSEPORT spreads connections over the workers by a hash of the client's port; the worker that
serves a session is the low 4 bits of the backend pid pgkeep hands out (proxy/server.py)."""
from __future__ import annotations

import time
from pathlib import Path

import psutil
import psycopg
import pytest

from tests.support.pgkeep import PgkeepProcess
from tests.support.tls import make_cert
from tests.support.workers import worker_of

pytestmark = pytest.mark.timeout(120)

PASSWORD = "w0rker-pa55-Zq7"
LIMIT = 3


@pytest.fixture(scope="module")
def workers(workdir, pg18):
    """Two workers; TLS and the connection limit as flags, the upstream (with a password) and the
    nodelocal root in a config file."""
    base = workdir / "workers-config"
    cert, key = make_cert(base / "tls")
    root = base / "configured-root"
    config = base / "pgkeep.toml"
    config.write_text(f'upstream = "postgresql://postgres:{PASSWORD}@127.0.0.1:{pg18.port}/postgres"\n'
                      f'nodelocal_root = "{root}"\n')
    proc = PgkeepProcess(base, None, args=[
        "--workers", "2", "--config", str(config), "--tls-cert", str(cert), "--tls-key", str(key),
        "--max-connections", str(LIMIT)]).start()
    deadline = time.monotonic() + 30
    while "worker 1 is serving" not in proc.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.root = root
    yield proc
    assert proc.stop() == 0, proc.log()[-3000:]


def _connect(proc, **kw) -> psycopg.Connection:
    return psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10, **kw)


def _worker(proc, conn: psycopg.Connection) -> int:
    return worker_of(proc, conn)


def _one_per_worker(proc, **kw) -> dict[int, psycopg.Connection]:
    """One open connection on each of the two workers (the kernel picks: connect until both)."""
    found: dict[int, psycopg.Connection] = {}
    for _ in range(60):
        c = _connect(proc, **kw)
        if _worker(proc, c) in found:
            c.close()
        else:
            found[_worker(proc, c)] = c
        if len(found) == 2:
            return found
    for c in found.values():
        c.close()
    pytest.fail(f"connections landed on workers {sorted(found)} only")


def test_children_serve_plaintext_without_tls_flags(workers):
    """--tls-cert/--tls-key reach every worker: sslmode=require is served by both."""
    seen = set()
    for _ in range(40):
        with _connect(workers, sslmode="require") as c:
            assert c.pgconn.ssl_in_use
            seen.add(_worker(workers, c))
        if seen == {0, 1}:
            break
    assert seen == {0, 1}


def test_max_connections_exceeded_across_workers(workers):
    """Exactly LIMIT sessions at once over both workers: the next ones get 53300 from either
    worker, and a slot freed on one worker admits a client on the other."""
    held = list(_one_per_worker(workers).values())
    try:
        while len(held) < LIMIT:
            held.append(_connect(workers))   # never refused below the limit
        refused = 0
        for _ in range(12):  # 12 attempts: both workers are asked (2**-11 odds otherwise)
            with pytest.raises(psycopg.OperationalError) as err:
                _connect(workers).close()
            assert "53300" in str(err.value) or "too many clients" in str(err.value), err.value
            refused += 1
        assert refused == 12
        for _ in range(3):  # free one, take one: admitted again within a moment, twice over
            held.pop(0).close()
            deadline = time.monotonic() + 10
            while True:
                try:
                    held.append(_connect(workers))
                    break
                except psycopg.OperationalError:
                    assert time.monotonic() < deadline, "a freed slot was never given back"
                    time.sleep(0.05)
            with pytest.raises(psycopg.OperationalError, match="too many clients"):
                _connect(workers).close()
    finally:
        for c in held:
            c.close()


def test_backup_lands_outside_configured_nodelocal_root(workers):
    """nodelocal_root from the config file: a BACKUP run by either worker lands in it."""
    conns = _one_per_worker(workers)
    try:
        for index, c in conns.items():
            c.execute(f"BACKUP DATABASE postgres INTO 'nodelocal://self/by-worker-{index}'")
    finally:
        for c in conns.values():
            c.close()
    default_root = workers.workdir / "data" / "external"
    for index in conns:
        landed = list((workers.root / f"by-worker-{index}").rglob("BACKUP_MANIFEST*"))
        assert landed, f"worker {index}'s backup is not under {workers.root}"
        assert not (default_root / f"by-worker-{index}").exists()


def test_child_argv_holds_upstream_password(workers):
    """No worker's command line or environment holds the upstream password, nor any file in the
    data directory (the configuration travelled through a pipe)."""
    children = psutil.Process(workers.proc.pid).children()
    assert len(children) == 1
    for p in [psutil.Process(workers.proc.pid), *children]:
        assert PASSWORD not in " ".join(p.cmdline())
        assert PASSWORD not in Path(f"/proc/{p.pid}/environ").read_bytes().decode(errors="replace")
    for f in (workers.workdir / "data").rglob("*"):
        if f.is_file() and f.stat().st_size < 1 << 20:
            assert PASSWORD.encode() not in f.read_bytes(), f


def test_killed_worker_leaks_connection_slots(workdir, pg18):
    """A worker killed by kill -9 takes its sessions' slots with it (the kernel drops its fcntl
    locks): the remaining worker admits up to the limit again, no more."""
    proc = PgkeepProcess(workdir / "workers-kill", pg18.dsn(),
                         args=["--workers", "2", "--max-connections", "2"]).start()
    try:
        deadline = time.monotonic() + 30
        while "worker 1 is serving" not in proc.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        conns = _one_per_worker(proc)
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            _connect(proc).close()
        child = psutil.Process(proc.proc.pid).children()[0]
        child.kill()
        child.wait(10)
        conns.pop(1).close()
        admitted = _connect(proc)   # only worker 0 listens now; worker 1's slot is free
        try:
            assert _worker(proc, admitted) == 0
            with pytest.raises(psycopg.OperationalError, match="too many clients"):
                _connect(proc).close()
        finally:
            admitted.close()
            conns[0].close()
    finally:
        proc.stop()
