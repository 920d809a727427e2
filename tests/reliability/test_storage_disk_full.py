"""Disk full during BACKUP (issue 12, point 15): a nodelocal root on a 3 MiB tmpfs, a database far
bigger than that. Before, the client got XX000 "[Errno 28] No space left on device" with a
traceback in pgkeep's log; now 53100 (disk_full) naming the store by its redacted URI, the job
failed in SHOW JOBS, the session usable, and nothing of the job left under the root."""
from __future__ import annotations

import os
import subprocess
import threading
import time

import psycopg
import pytest

from engine.placement import ID_FILE as ROOT_ID_FILE
from tests.support.pgkeep import PgkeepProcess

DB = "diskfull_src"


@pytest.fixture
def tiny_root(tmp_path):
    root = tmp_path / "tiny"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(root)], check=True)
    yield root
    subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.fixture
def big_db(pg18_admin):
    pg18_admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg18_admin.execute(f"CREATE DATABASE {DB}")
    with psycopg.connect(pg18_admin.info.dsn.replace("dbname=postgres", f"dbname={DB}"),
                         autocommit=True) as c:
        # ~13 MB of hex text: about half of it after compression, still four times the disk
        c.execute("CREATE TABLE filler AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) "
                  "|| md5((g * 13)::text) || md5((g * 31)::text) AS pad "
                  "FROM generate_series(1, 100000) g")
    yield DB
    pg18_admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def _files(root) -> list[str]:
    """Every file under root but the root's identity file (engine/placement.py)."""
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, files in os.walk(root) for f in files
                  if os.path.join(d, f) != os.path.join(root, ROOT_ID_FILE))


def test_backup_onto_a_full_disk_is_53100_naming_the_store(pg18, big_db, tiny_root, tmp_path):
    proc = PgkeepProcess(tmp_path / "pgkeep", pg18.dsn(),
                         args=["--nodelocal-root", str(tiny_root)]).start()
    try:
        with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10) as conn:
            # small chunks: several data files are complete before the disk fills, so the
            # cleanup has finished files to delete, not only the one being written
            conn.execute("SET CLUSTER SETTING pgkeep.backup.chunk_size = '512KiB'")
            seen: set[str] = set()
            failure: list[BaseException] = []

            def backup():
                try:
                    conn.execute(f"BACKUP DATABASE {big_db} INTO 'nodelocal://self/full'")
                except BaseException as exc:  # noqa: BLE001 - examined below
                    failure.append(exc)
            t = threading.Thread(target=backup)
            try:
                t.start()
                while t.is_alive():
                    seen.update(f for f in _files(tiny_root) if not f.endswith(".tmp"))
                    time.sleep(0.005)
                t.join()
            finally:     # the catalog is the session's: leave the setting as it was
                conn.execute("RESET CLUSTER SETTING pgkeep.backup.chunk_size")
            assert len(failure) == 1 and isinstance(failure[0], psycopg.Error), failure
            data_files = [f for f in seen if "BACKUP-LOCK" not in f]
            assert data_files, seen          # the backup had written whole files before failing
            diag = failure[0].diag
            assert diag.sqlstate == "53100", (diag.sqlstate, diag.message_primary)
            msg = diag.message_primary
            assert msg.startswith("nodelocal://self/full") and "no space left on device" in msg, msg
            assert "Errno" not in msg
            # the session goes on
            assert conn.execute("SELECT 1").fetchone() == (1,)
            cur = conn.execute("SHOW JOBS")
            cols = [d.name for d in cur.description]
            jobs = [j for j in (dict(zip(cols, r)) for r in cur.fetchall())
                    if j["job_type"] == "BACKUP" and big_db in j["description"]]
            assert len(jobs) == 1 and jobs[0]["status"] == "failed", jobs
            assert "no space left on device" in (jobs[0].get("error") or ""), jobs[0]
        log = proc.log()
        assert "Traceback" not in log, log[-4000:]
        assert "Errno 28" not in log
        # the backup engine deletes what it wrote; a partial file never outlives its writer
        assert _files(tiny_root) == []
        # and the disk is usable again: a small backup of the same store succeeds
        pg18.psql("CREATE DATABASE diskfull_small")
        try:
            pg18.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g", "diskfull_small")
            with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10) as conn:
                conn.execute("BACKUP DATABASE diskfull_small INTO 'nodelocal://self/full'")
                assert len(conn.execute("SHOW BACKUPS IN 'nodelocal://self/full'").fetchall()) == 1
        finally:
            pg18.psql("DROP DATABASE diskfull_small WITH (FORCE)")
    finally:
        proc.stop()
