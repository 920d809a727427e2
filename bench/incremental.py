"""Incremental backups: what a layer costs after a small change, against a full of the same data.

    python bench/incremental.py               # pgbench scale 50 + the ~1.2 GB realistic table, 3 rounds
    python bench/incremental.py --quick       # scale 5 + a ~50 MB table, 1 round: a smoke test
    python bench/incremental.py --chunk-sizes 4MiB,16MiB,64MiB   # how the figures move with chunk size

Everything is started here and stopped at the end (also on Ctrl-C or SIGTERM): a throw-away
PostgreSQL 18 (PgCluster, configured as bench/backup_restore.py's) holding the datasets of
bench/backup_restore.py, built by its code (`bench_pgbench`: pgbench -i; `bench_real`: one
`orders` table of random ints, bigints, timestamps, numerics, md5 text, short text and small
jsonb with a primary key and a secondary index), frozen and read into shared_buffers; and
pgkeep (`python -m proxy serve`) in front of it, its nodelocal root in the temporary directory so
that what each backup stores can be measured on disk.

The scenarios of issue 14 point 6, each applied to the dataset's big table (pgbench_accounts,
orders; 99.9% and 100% of the rows) where N is its row count:

    (a) range    1% of rows updated in one contiguous key range (keys 40% .. 41% of N)
    (b) random   1% of rows updated at random (hashint8(key) % 100 = 0: spread evenly, reproducible)
    (c) insert   1% new rows inserted (keys N+1 .. 1.01 N; orders' rows from the same generator)
    (d) none     no change

Scenarios must not contaminate each other, so each one starts from a clean copy: per round, per
dataset, per scenario (a *unit*), in an order that rotates with the round:

 1. untimed: a working database `inc_<dataset>` made from the loaded one
    (CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY: the same frozen pages, hint bits and
    statistics), its heap read into shared_buffers, CHECKPOINT;
 2. timed, per chunk size (`SET CLUSTER SETTING pgkeep.backup.chunk_size` before each backup):
    the full, `BACKUP DATABASE inc_<ds> INTO 'nodelocal://self/<coll>'`;
 3. untimed: the scenario's change, then `VACUUM (ANALYZE)` of the table, as autovacuum would do
    after it (the choice: a user's database gets vacuumed between backups; without it the
    incremental would be the first to read the new tuples and pay for setting their hint bits,
    and which backup pays that depends on timing alone), then CHECKPOINT (the next timed
    statement does not inherit the change's dirty buffers); the source's row counts, index count
    and a hash of the changed table's rows are recorded;
 4. timed, per chunk size: the incremental, `BACKUP DATABASE inc_<ds> INTO LATEST IN '<coll>'`;
 5. timed, per chunk size: a fresh full of the changed data into another collection (the
    reference for the restore);
 6. timed, per chunk size, in rotating order: RESTORE of the chain's tip (`FROM LATEST IN
    '<coll>'`) and of the fresh full, both `WITH new_db_name`; each restored database is then
    checked (untimed: row counts of every table, the number of indexes, and for the chain the
    hash of the changed table's rows, against the source) and dropped at once (its autovacuum
    would otherwise run into the next timing); CHECKPOINT after every operation.

Before round 1 an unrecorded warm-up unit (scenario (d) of the first dataset) runs; --quick skips
it. A pgkeep statement is timed from sending it to having its result, over a connection opened
before (bench/backup_restore.py's `pgkeep_statement`).

Each statement's CPU seconds are measured too, from /proc: pgkeep's process (all its threads)
plus PostgreSQL's backends, whose time the kernel adds to the postmaster's cutime/cstime once
they exit and are reaped (the script waits for the backends a statement started to be gone, and
each untimed psql call waits for its own backend, so a row count or hash over millions of rows
never lands in the next statement's figure). On a machine shared with other work, wall time
moves with the load and CPU time much less: the CPU ratios are printed next to the targets
(which are on wall time) to tell a real regression from a busy machine.

Per dataset and chunk size it prints, as medians over the rounds, with the issue's targets:

    incr/full bytes   stored bytes of the layer (every file under <coll>/incrementals/, apparent
                      size: data, schema, manifest, checksum, lock and chain claim) over the
                      stored bytes of the full's collection; (a), (c) <= 5%, (d) <= 1%
    incr/full time    incremental over the chain's full (step 2); (a), (c) <= 30%, (d) <= 15%
    chain/full restore  restore of the chain's tip over the restore of the fresh full; <= 1.1x
    copied            chunks the incremental copied / chunks it listed (from pgkeep's log)

    CPU: incr/full, restore   the same ratios in CPU seconds (no target)

(b) has no target: random updates touch nearly every chunk, and a chunk with any changed row is
copied whole, so the layer is close to a full (docs/FORMAT.md section 7.3); the chunk-size
sweep shows how much smaller chunks buy back. Ratios are ratios of medians; the per-round
ratios follow (their spread is the noise). The median of each phase pgkeep's PhaseClock logs for
the incrementals (resolve and claim, snapshot and schema, connections, data, commit) shows where
an incremental's time goes, with its CPU split between pgkeep and PostgreSQL. A second table
gives the medians themselves: MB stored and seconds of the full, the incremental, the fresh
full and both restores, and the CPU seconds of the full and the incremental.

With several --chunk-sizes, every unit backs up and restores at every size (the fulls of one unit
each at its own size, the order rotating), and a last table puts the ratios side by side.

Options: --rounds N, --quick, --datasets pgbench,real, --scenarios range,random,insert,none,
--chunk-sizes 8MiB (a list), --no-restores (skip steps 5 and 6: to iterate on the backup side),
--scale N, --real-rows N, --op-timeout S, --pgkeep-arg ARG, --pgkeep-setting NAME=VALUE,
--output FILE (default bench/results/incremental.json), --keep (keep the temporary directory:
PostgreSQL's and pgkeep's logs, the loaded databases). The JSON holds the configuration, every
unit's figures (seconds, CPU seconds, bytes, chunks, the phases of pgkeep's log, errors), each
unit's change (rows changed, seconds of the change and of its VACUUM), the medians, ratios and
verdicts. Exit status 0 when every operation succeeded, 1 if any failed, 130 when interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.backup_restore import (DATASETS, MB, REAL_ROWS, REAL_ROWS_QUICK, REAL_TABLE,  # noqa: E402
                                  _err, _log, bench_cluster, bench_tmpdir, db_shape, db_size, drop_db,
                                  make_datasets, pgkeep_statement, print_notes, real_insert, results_head,
                                  start_pgkeep, stop_bench, tree_size, warm)
from proxy.pgcluster import PgCluster  # noqa: E402
from tests.support.pgkeep import PgkeepProcess  # noqa: E402

__all__ = ["main"]

RESULTS = REPO / "bench" / "results" / "incremental.json"

SCENARIOS = {"range": "(a) 1% updated, one key range", "random": "(b) 1% updated at random",
             "insert": "(c) 1% rows inserted", "none": "(d) no change"}
# Issue 14 point 6: (max incr/full bytes, max incr/full time); None: reported, no target.
TARGETS = {"range": (0.05, 0.30), "random": (None, None), "insert": (0.05, 0.30), "none": (0.01, 0.15)}
RESTORE_TARGET = 1.1          # chain restore / full restore, every scenario

# The table each scenario changes: (table, key, an integer column no index covers).
MAIN = {"pgbench": ("pgbench_accounts", "aid", "abalance"), "real": (REAL_TABLE, "id", "quantity")}


@dataclass
class Unit:
    """One scenario at one chunk size in one round: the chain's full and layer, the fresh full of
    the changed data, and both restores."""
    round: int
    dataset: str
    scenario: str
    chunk_size: str
    full_s: float | None = None
    full_bytes: int | None = None
    incr_s: float | None = None
    incr_bytes: int | None = None
    incr_disk_bytes: int | None = None   # allocated blocks (du): each small file takes a block
    ref_full_s: float | None = None
    ref_full_bytes: int | None = None
    chain_restore_s: float | None = None
    full_restore_s: float | None = None
    chunks_copied: int | None = None
    chunks_kept: int | None = None
    phases: dict = field(default_factory=dict)   # operation -> {phase: seconds} from pgkeep's log
    cpu: dict = field(default_factory=dict)      # operation -> {"pgkeep": s, "postgres": s}
    errors: list[str] = field(default_factory=list)


# -- pgkeep's log: PhaseClock lines ----------------------------------------------------------------

_CLOCK = re.compile(r"(?:backup job \d+|restore of \S+ as \S+): [\d.]+s \((.*)\)$", re.M)
_LAP = re.compile(r"(.+?) (\d+\.\d+)s(?:, |$)")
_DATA = re.compile(r"data \((\d+) chunks copied, (\d+) kept\)")


def clock_phases(log: str) -> dict[str, float]:
    """The laps of the PhaseClock lines in `log`, summed by phase name: a database's name
    prefix and counts in parentheses are dropped ('inc_real: data (3 chunks copied, 61 kept)'
    is 'data'); the chunk counts are kept as 'chunks_copied'/'chunks_kept'."""
    out: dict[str, float] = {}
    for line in _CLOCK.finditer(log):
        for name, secs in _LAP.findall(line.group(1)):
            d = _DATA.search(name)
            if d:
                out["chunks_copied"] = out.get("chunks_copied", 0) + int(d.group(1))
                out["chunks_kept"] = out.get("chunks_kept", 0) + int(d.group(2))
            name = re.sub(r"\s*\(.*\)$", "", name.split(": ", 1)[-1])
            name = re.sub(r"^\d+ connections$", "connections", name)
            out[name] = round(out.get(name, 0.0) + float(secs), 3)
    return out


# -- CPU time: pgkeep's process and PostgreSQL's backends --------------------------------------------

class CpuMeter:
    """CPU seconds spent by pgkeep (its threads and any child process) and by PostgreSQL's
    backends, read from /proc: a backend's time is added to the postmaster's cutime/cstime when
    it exits and is reaped, so a statement's backends are counted once they are gone. Other work
    on the machine moves this far less than it moves wall time (caches and memory bandwidth are
    still shared)."""

    def __init__(self, pgkeep_pid: int, postmaster_pid: int) -> None:
        self.pgkeep, self.postmaster = pgkeep_pid, postmaster_pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def _ticks(self, pid: int, own: bool) -> int:
        # fields after the command's closing parenthesis: state is [0], utime [11], stime [12],
        # cutime [13], cstime [14] (proc(5))
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12]) if own else 0) + int(f[13]) + int(f[14])

    def children(self) -> set[int]:
        path = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children")
        return {int(x) for x in path.read_text().split()}

    def read(self) -> dict[str, float]:
        return {"pgkeep": self._ticks(self.pgkeep, True) / self.tick,
                "postgres": self._ticks(self.postmaster, False) / self.tick}

    def settle(self, before: set[int], timeout: float = 3.0) -> list[str]:
        """Wait until the backends started since `before` was read have exited (and are counted);
        the command lines of those still there after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while left := self.children() - before:
            if time.monotonic() > deadline:
                return [self.cmdline(pid) for pid in sorted(left)]
            time.sleep(0.01)
        return []

    @staticmethod
    def cmdline(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return f"pid {pid}"


class SettledCluster:
    """The cluster's psql, returning only once the backend it used has exited: its CPU (a row
    count or hash over millions of rows) must not land in the next statement's measure."""

    def __init__(self, cluster: PgCluster, meter: CpuMeter | None) -> None:
        self.cluster, self.meter = cluster, meter
        self.unsettled: list[str] = []     # what was still running 3 s after a statement

    def psql(self, sql: str, database: str = "postgres") -> str:
        before = self.meter.children() if self.meter else set()
        out = self.cluster.psql(sql, database)
        if self.meter:
            self.unsettled += self.meter.settle(before)
        return out


def cpu_total(cpu: dict | None) -> float | None:
    return round(sum(cpu.values()), 3) if cpu else None


def cpu_text(cpu: dict | None) -> str:
    return f"CPU pgkeep {cpu['pgkeep']:.2f}s + postgres {cpu['postgres']:.2f}s" if cpu else ""


def postmaster_pid(cluster: PgCluster) -> int:
    return int((cluster.datadir / "postmaster.pid").read_text().split()[0])


# -- the bench --------------------------------------------------------------------------------------

class Bench:
    def __init__(self, a: argparse.Namespace, cluster: PgCluster, pgkeep: PgkeepProcess, root: Path) -> None:
        self.a = a
        self.pgkeep = pgkeep
        self.root = root
        self.units: list[Unit] = []
        self.rows: dict[str, int] = {}        # dataset -> rows of its main table as loaded
        self.changes: list[dict] = []         # per unit: rows changed, seconds of change and VACUUM
        self.chunk_size: str | None = None
        try:
            self.meter: CpuMeter | None = CpuMeter(pgkeep.proc.pid, postmaster_pid(cluster))
            self.meter.read(), self.meter.children()
        except (OSError, ValueError, IndexError):   # no /proc/<pid>/task/<pid>/children here
            self.meter = None
        self.cluster = SettledCluster(cluster, self.meter)

    def statement(self, sql: str) -> tuple[float, dict, dict]:
        """One pgkeep statement: (seconds, CPU seconds {pgkeep, postgres}, the phases of the
        PhaseClock lines it logged)."""
        offset = self.pgkeep.logfile.stat().st_size
        before = self.meter.children() if self.meter else set()
        cpu0 = self.meter.read() if self.meter else {}
        secs, _peak, _rows = pgkeep_statement(self.pgkeep, sql, self.a.op_timeout)
        cpu = {}
        if self.meter:
            self.cluster.unsettled += self.meter.settle(before)
            cpu = {k: round(v - cpu0[k], 3) for k, v in self.meter.read().items()}
        with open(self.pgkeep.logfile, "rb") as f:
            f.seek(offset)
            log = f.read().decode(errors="replace")
        return secs, cpu, clock_phases(log)

    def set_chunk_size(self, size: str) -> None:
        if size != self.chunk_size:
            pgkeep_statement(self.pgkeep, f"SET CLUSTER SETTING pgkeep.backup.chunk_size = '{size}'",
                             self.a.op_timeout)
            self.chunk_size = size

    def checkpoint(self) -> None:
        self.cluster.psql("CHECKPOINT")

    def coll(self, rnd: int, ds: str, scenario: str, size: str, kind: str) -> str:
        return f"inc-{rnd}-{ds}-{scenario}-{size}-{kind}"

    # -- the scenarios ------------------------------------------------------------------------

    def change_sql(self, ds: str, scenario: str) -> str | None:
        """The change, as one statement answering the number of rows it changed."""
        table, key, col = MAIN[ds]
        n = self.rows[ds]
        one = max(1, n // 100)
        if scenario == "range":
            lo = n * 2 // 5
            return (f"WITH u AS (UPDATE {table} SET {col} = {col} + 1 WHERE {key} > {lo} "
                    f"AND {key} <= {lo + one} RETURNING 1) SELECT count(*) FROM u")
        if scenario == "random":
            return (f"WITH u AS (UPDATE {table} SET {col} = {col} + 1 "
                    f"WHERE hashint8({key}::bigint) % 100 = 0 RETURNING 1) SELECT count(*) FROM u")
        if scenario == "insert":
            if ds == "real":
                insert = real_insert(n + 1, n + one)
            else:
                insert = (f"INSERT INTO {table} (aid, bid, abalance, filler) "
                          f"SELECT g, (g - 1) / 100000 + 1, 0, '' FROM generate_series({n + 1}, {n + one}) g")
            return f"WITH i AS ({insert} RETURNING 1) SELECT count(*) FROM i"
        return None

    def content(self, ds: str, db: str) -> str:
        """Row count and a hash of every row of the changed table: the chain restore must match."""
        table = MAIN[ds][0]
        return self.cluster.psql(f"SELECT count(*), sum(hashtext(t::text)::bigint) FROM {table} t", db).strip()

    # -- one unit -------------------------------------------------------------------------------

    def unit(self, rnd: int, ds: str, scenario: str) -> list[Unit]:
        """Scenario `scenario` on a clean copy of dataset `ds`, at every chunk size."""
        a = self.a
        src, db = DATASETS[ds], f"inc_{ds}"
        label = f"round {rnd}/{a.rounds}" if rnd else "warm-up"
        sizes = list(a.chunk_sizes)
        shift = (rnd + list(SCENARIOS).index(scenario)) % len(sizes)
        sizes = sizes[shift:] + sizes[:shift]
        units = {s: Unit(rnd, ds, scenario, s) for s in a.chunk_sizes}

        def log(u: Unit, what: str, secs: float | None, extra: str = "") -> None:
            _log(f"{label} {ds:<7} {scenario:<6} {u.chunk_size:>6} {what:<15} "
                 + (f"{secs:7.2f}s" if secs is not None else "  ERROR") + (f"  {extra}" if extra else ""))

        def fail(u: Unit, what: str, e: BaseException) -> None:
            u.errors.append(f"{what}: {_err(e)}")
            log(u, what, None, u.errors[-1][:1500])

        drop_db(self.cluster, db)
        self.cluster.psql(f'CREATE DATABASE "{db}" TEMPLATE "{src}" STRATEGY FILE_COPY')
        warm(self.cluster, db)
        self.checkpoint()

        for s in sizes:           # 2. the chain's full
            u = units[s]
            coll = self.coll(rnd, ds, scenario, s, "chain")
            try:
                self.set_chunk_size(s)
                u.full_s, u.cpu["full"], u.phases["full"] = self.statement(f"BACKUP DATABASE {db} INTO 'nodelocal://self/{coll}'")
                u.full_bytes = tree_size(self.root / coll)[0]
                log(u, "full", u.full_s, f"{u.full_bytes / MB:9.1f} MB  {cpu_text(u.cpu['full'])}")
            except Exception as e:  # noqa: BLE001 - reported, the unit goes on without it
                fail(u, "full", e)
            self.checkpoint()

        started = time.perf_counter()     # 3. the change, VACUUM (ANALYZE), CHECKPOINT
        sql = self.change_sql(ds, scenario)
        changed = int(self.cluster.psql(sql, db).split()[-1]) if sql else 0
        change_s = time.perf_counter() - started
        started = time.perf_counter()
        self.cluster.psql(f"VACUUM (ANALYZE) {MAIN[ds][0]}", db)
        vacuum_s = time.perf_counter() - started
        self.checkpoint()
        shape, content = db_shape(self.cluster, db), self.content(ds, db)
        self.changes.append({"round": rnd, "dataset": ds, "scenario": scenario, "rows_changed": changed,
                             "change_seconds": round(change_s, 3), "vacuum_seconds": round(vacuum_s, 3),
                             "database_size_bytes": db_size(self.cluster, db)})
        _log(f"{label} {ds:<7} {scenario:<6} {changed:,} rows changed in {change_s:.1f}s, "
             f"VACUUM (ANALYZE) {vacuum_s:.1f}s")

        for s in sizes:           # 4. the incremental
            u = units[s]
            if u.full_s is None:
                continue
            coll = self.coll(rnd, ds, scenario, s, "chain")
            try:
                self.set_chunk_size(s)
                u.incr_s, u.cpu["incremental"], u.phases["incremental"] = self.statement(
                    f"BACKUP DATABASE {db} INTO LATEST IN 'nodelocal://self/{coll}'")
                u.incr_bytes, u.incr_disk_bytes = tree_size(self.root / coll / "incrementals")
                u.chunks_copied = u.phases["incremental"].pop("chunks_copied", None)
                u.chunks_kept = u.phases["incremental"].pop("chunks_kept", None)
                log(u, "incremental", u.incr_s, f"{u.incr_bytes / MB:9.3f} MB  {cpu_text(u.cpu['incremental'])}"
                    f", chunks copied {u.chunks_copied}/{(u.chunks_copied or 0) + (u.chunks_kept or 0)}")
            except Exception as e:  # noqa: BLE001
                fail(u, "incremental", e)
            self.checkpoint()

        for s in [] if a.no_restores else sizes:    # 5. a fresh full of the changed data
            u = units[s]
            coll = self.coll(rnd, ds, scenario, s, "full")
            try:
                self.set_chunk_size(s)
                u.ref_full_s, u.cpu["fresh_full"], u.phases["fresh_full"] = self.statement(
                    f"BACKUP DATABASE {db} INTO 'nodelocal://self/{coll}'")
                u.ref_full_bytes = tree_size(self.root / coll)[0]
                log(u, "fresh full", u.ref_full_s, f"{u.ref_full_bytes / MB:9.1f} MB  "
                    f"{cpu_text(u.cpu['fresh_full'])}")
            except Exception as e:  # noqa: BLE001
                fail(u, "fresh full", e)
            self.checkpoint()

        for i, s in enumerate([] if a.no_restores else sizes):     # 6. the restores, in rotating order
            u = units[s]
            kinds = ["chain", "full"] if (rnd + i) % 2 else ["full", "chain"]
            for kind in kinds:
                if (u.incr_s if kind == "chain" else u.ref_full_s) is None:
                    continue
                target = f"{db}_r{kind[0]}"
                coll = self.coll(rnd, ds, scenario, s, kind)
                what = f"{kind} restore"
                try:
                    drop_db(self.cluster, target)
                    secs, u.cpu[f"{kind}_restore"], phases = self.statement(f"RESTORE DATABASE {db} FROM LATEST IN "
                                                     f"'nodelocal://self/{coll}' WITH new_db_name = '{target}'")
                    u.phases[f"{kind}_restore"] = phases
                    got = db_shape(self.cluster, target)
                    if got != shape:
                        raise RuntimeError(f"restored {target} differs from {db}: {got} != {shape}")
                    if kind == "chain" and self.content(ds, target) != content:
                        raise RuntimeError(f"the rows of {MAIN[ds][0]} restored from the chain differ "
                                           f"from the source's: {self.content(ds, target)} != {content}")
                    if kind == "chain":
                        u.chain_restore_s = secs
                    else:
                        u.full_restore_s = secs
                    log(u, what, secs, f"              {cpu_text(u.cpu[f'{kind}_restore'])}")
                except Exception as e:  # noqa: BLE001
                    fail(u, what, e)
                drop_db(self.cluster, target)
                self.checkpoint()

        for s in a.chunk_sizes:   # untimed clean-up
            for kind in ("chain", "full"):
                shutil.rmtree(self.root / self.coll(rnd, ds, scenario, s, kind), ignore_errors=True)
        return [units[s] for s in a.chunk_sizes]

    def round(self, rnd: int) -> None:
        order = list(SCENARIOS)
        order = [s for s in order if s in self.a.scenarios]
        shift = (rnd - 1) % len(order)
        for ds in self.a.datasets:
            for scenario in order[shift:] + order[:shift]:
                self.units += self.unit(rnd, ds, scenario)


# -- reporting ------------------------------------------------------------------------------------

def _med(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _div(x, y) -> float | None:
    return x / y if x is not None and y else None


def summarize(units: list[Unit], a: argparse.Namespace) -> dict:
    """{dataset: {chunk size: {scenario: medians, ratios, verdicts}}}."""
    out: dict = {}
    for ds in a.datasets:
        for size in a.chunk_sizes:
            for sc in a.scenarios:
                us = [u for u in units if (u.dataset, u.chunk_size, u.scenario) == (ds, size, sc)]
                if not us:
                    continue
                m = {k: _med(getattr(u, k) for u in us) for k in (
                    "full_s", "full_bytes", "incr_s", "incr_bytes", "ref_full_s", "ref_full_bytes",
                    "chain_restore_s", "full_restore_s", "chunks_copied", "chunks_kept")}
                phases = list(dict.fromkeys(p for u in us for p in u.phases.get("incremental", {})))
                for op in ("full", "incremental", "fresh_full", "chain_restore", "full_restore"):
                    m[f"{op}_cpu"] = _med(cpu_total(u.cpu.get(op)) for u in us)
                    for side in ("pgkeep", "postgres"):
                        m[f"{op}_cpu_{side}"] = _med(u.cpu.get(op, {}).get(side) for u in us)
                ratios = {"bytes": _div(m["incr_bytes"], m["full_bytes"]),
                          "time": _div(m["incr_s"], m["full_s"]),
                          "restore": _div(m["chain_restore_s"], m["full_restore_s"]),
                          # not targets: the same ratios in CPU seconds, which other work on a
                          # shared machine moves far less than wall time
                          "cpu": _div(m["incremental_cpu"], m["full_cpu"]),
                          "restore_cpu": _div(m["chain_restore_cpu"], m["full_restore_cpu"])}
                limits = {"bytes": TARGETS[sc][0], "time": TARGETS[sc][1], "restore": RESTORE_TARGET,
                          "cpu": None, "restore_cpu": None}
                out.setdefault(ds, {}).setdefault(size, {})[sc] = {
                    "medians": m, "ratios": ratios,
                    "targets": limits,
                    "met": {k: None if limits[k] is None or ratios[k] is None else ratios[k] <= limits[k]
                            for k in ratios},
                    "per_round": [{"round": u.round, "bytes": _div(u.incr_bytes, u.full_bytes),
                                   "time": _div(u.incr_s, u.full_s),
                                   "restore": _div(u.chain_restore_s, u.full_restore_s),
                                   "cpu": _div(cpu_total(u.cpu.get("incremental")), cpu_total(u.cpu.get("full"))),
                                   "restore_cpu": _div(cpu_total(u.cpu.get("chain_restore")),
                                                       cpu_total(u.cpu.get("full_restore")))} for u in us],
                    "incremental_phases": {p: _med(u.phases.get("incremental", {}).get(p) for u in us)
                                           for p in phases},
                    "runs_ok": sum(1 for u in us if not u.errors), "runs": len(us)}
    return out


def _cell(value: float | None, limit: float | None, spec: str) -> str:
    if value is None:
        return "n/a"
    text = format(value, spec)
    if limit is None:
        return text
    return f"{text} (<= {limit:g} {'met' if value <= limit else 'NOT met'})"


def _row(cells: list[str], head: list[tuple[str, int]]) -> str:
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, (_, w)) in enumerate(zip(cells, head)))


def _f(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


RATIO_KEYS = ("bytes", "time", "restore", "cpu", "restore_cpu")


def report(summary: dict, a: argparse.Namespace, sizes: dict[str, int], rows: dict[str, int]) -> str:
    lines: list[str] = []
    for ds, by_size in summary.items():
        table = MAIN[ds][0]
        for size, by_sc in by_size.items():
            lines.append(f"{DATASETS[ds]} ({table}: {rows[ds]:,} rows; pg_database_size {sizes[ds] / MB:,.0f} MB), "
                         f"chunk_size {size}, median of {a.rounds} round(s)")
            head = [("scenario", 30), ("incr/full bytes", 24), ("incr/full time", 23),
                    ("chain/full restore", 23), ("copied", 7), ("CPU: incr/full", 14), ("restore", 7)]
            lines.append(_row([h for h, _ in head], head))
            lines.append("  ".join("-" * w for _, w in head))
            for sc, s in by_sc.items():
                r, lim, m = s["ratios"], s["targets"], s["medians"]
                total = None if m["chunks_copied"] is None else m["chunks_copied"] + (m["chunks_kept"] or 0)
                lines.append(_row([SCENARIOS[sc], _cell(r["bytes"], lim["bytes"], ".4f"),
                                   _cell(r["time"], lim["time"], ".3f"), _cell(r["restore"], lim["restore"], ".3f"),
                                   "n/a" if total is None else f"{m['chunks_copied']:g}/{total:g}",
                                   _f(r["cpu"], ".3f"), _f(r["restore_cpu"], ".3f")], head))
            lines.append("")
            head = [("scenario", 30), ("full MB", 8), ("incr MB", 8), ("fresh MB", 8), ("full s", 6),
                    ("incr s", 6), ("fresh s", 7), ("rst full s", 10), ("rst chain s", 11),
                    ("CPU s: full", 11), ("incr", 5)]
            lines.append(_row([h for h, _ in head], head))
            for sc, s in by_sc.items():
                m = s["medians"]
                lines.append(_row([SCENARIOS[sc], _f(m["full_bytes"] and m["full_bytes"] / MB, ".1f"),
                                   _f(m["incr_bytes"] and m["incr_bytes"] / MB, ".3f"),
                                   _f(m["ref_full_bytes"] and m["ref_full_bytes"] / MB, ".1f"),
                                   _f(m["full_s"], ".2f"), _f(m["incr_s"], ".2f"), _f(m["ref_full_s"], ".2f"),
                                   _f(m["full_restore_s"], ".2f"), _f(m["chain_restore_s"], ".2f"),
                                   _f(m["full_cpu"], ".2f"), _f(m["incremental_cpu"], ".2f")], head))
            lines.append("")
            lines.append("  incremental: phases (pgkeep's PhaseClock) and CPU, median s:")
            for sc, s in by_sc.items():
                m = s["medians"]
                ph = ", ".join(f"{p} {v:.2f}" for p, v in s["incremental_phases"].items() if v is not None)
                cpu = (f"; CPU pgkeep {m['incremental_cpu_pgkeep']:.2f}, postgres {m['incremental_cpu_postgres']:.2f}"
                       if m["incremental_cpu_pgkeep"] is not None else "")
                lines.append(f"    {SCENARIOS[sc]:<30} {ph or 'n/a'}{cpu}")
            lines.append("  per-round ratios (bytes / time / restore / CPU / restore CPU):")
            for sc, s in by_sc.items():
                per = "; ".join(f"r{p['round']} " + " / ".join(_f(p[k], ".3f") for k in RATIO_KEYS)
                                for p in s["per_round"])
                lines.append(f"    {SCENARIOS[sc]:<30} {per}")
            lines.append("")
        if len(by_size) > 1:
            lines.append(f"{DATASETS[ds]}: by chunk size (incr/full bytes / incr/full time / chain/full restore"
                         " / incr/full CPU)")
            lines.append("  " + "scenario".ljust(30) + "".join(s.rjust(32) for s in by_size))
            for sc in a.scenarios:
                cells = []
                for size in by_size:
                    r = by_size[size].get(sc, {}).get("ratios")
                    cells.append("n/a" if r is None else " / ".join(
                        _f(r[k], ".3f") for k in ("bytes", "time", "restore", "cpu")))
                lines.append("  " + SCENARIOS[sc].ljust(30) + "".join(c.rjust(32) for c in cells))
            lines.append("")
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------

def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs every scenario on every dataset")
    p.add_argument("--scale", type=int, default=50, help="pgbench -i scale factor of bench_pgbench")
    p.add_argument("--real-rows", type=int, default=REAL_ROWS,
                   help=f"rows of bench_real.{REAL_TABLE} (~200 bytes of heap each)")
    p.add_argument("--datasets", default="pgbench,real", help="subset of pgbench,real")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="subset of " + ",".join(SCENARIOS))
    p.add_argument("--chunk-sizes", default="8MiB",
                   help="pgkeep.backup.chunk_size values, each measured in every unit (e.g. 4MiB,16MiB,64MiB)")
    p.add_argument("--op-timeout", type=float, default=3600, help="seconds before one statement is cancelled")
    p.add_argument("--pgkeep-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for pgkeep serve (repeatable)")
    p.add_argument("--pgkeep-setting", action="append", default=[], metavar="NAME=VALUE",
                   help="SET CLUSTER SETTING NAME = VALUE in pgkeep before the first round")
    p.add_argument("--summarize-wal", action="store_true",
                   help="run PostgreSQL with summarize_wal = on: layers keep unchanged chunks by its WAL "
                        "summaries instead of a scan (docs/FORMAT.md 7.6)")
    p.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    p.add_argument("--no-restores", action="store_true",
                   help="skip the restores (and the fresh fulls they compare): to iterate on the backup side")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: scale 5, {REAL_ROWS_QUICK:,} rows (~50 MB), 1 round, no warm-up")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.scale = 1, 5
        if a.real_rows == REAL_ROWS:
            a.real_rows = REAL_ROWS_QUICK
    a.datasets = [d for d in a.datasets.split(",") if d]
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    a.chunk_sizes = [s.strip() for s in a.chunk_sizes.split(",") if s.strip()]
    bad = (set(a.datasets) - set(DATASETS)) | (set(a.scenarios) - set(SCENARIOS))
    bad |= {s for s in a.chunk_sizes if not re.fullmatch(r"\d+(?:[KMG]i?B)?", s)}
    if bad or not a.datasets or not a.scenarios or not a.chunk_sizes or a.rounds < 1 or a.scale < 1 \
            or a.real_rows < 100:
        p.error(f"bad --datasets/--scenarios/--chunk-sizes/--rounds/--scale/--real-rows "
                f"({', '.join(sorted(bad)) or 'value too small'})")
    return a


def main(argv: list[str] | None = None) -> int:
    a = _parse_args(argv)
    tmp = bench_tmpdir("pgkeep-bench-incremental-")
    cluster: PgCluster | None = None
    pgkeep: PgkeepProcess | None = None
    bench: Bench | None = None
    sizes: dict[str, int] = {}
    notes: list[str] = []
    versions: dict[str, str] = {}
    interrupted = False
    started = time.monotonic()
    try:
        cluster = bench_cluster(tmp, a.quick, summarize_wal="on" if a.summarize_wal else "off")
        cluster.start()
        versions["server"] = cluster.psql("SHOW server_version").strip()
        make_datasets(cluster, a)
        root = tmp / "nodelocal"
        root.mkdir()
        pgkeep = start_pgkeep(tmp, cluster.dsn(), root, a)
        bench = Bench(a, cluster, pgkeep, root)
        for ds in a.datasets:
            sizes[ds] = db_size(cluster, DATASETS[ds])
            bench.rows[ds] = int(cluster.psql(f"SELECT count(*) FROM {MAIN[ds][0]}", DATASETS[ds]))
            _log(f"{DATASETS[ds]}: {sizes[ds] / MB:,.0f} MB (pg_database_size), "
                 f"{bench.rows[ds]:,} rows in {MAIN[ds][0]}")
        if not a.quick:   # unrecorded: the first backups and restores of a fresh server are slower
            bench.unit(0, a.datasets[0], a.scenarios[-1])
            bench.changes.clear()
            bench.cluster.unsettled.clear()   # e.g. pgkeep's catalog connection, opened by its first job
        for rnd in range(1, a.rounds + 1):
            bench.round(rnd)
    except KeyboardInterrupt:
        interrupted = True
        _log("interrupted: stopping everything")
    except Exception as e:  # noqa: BLE001 - set-up failed: still stop everything and say why
        notes.append(f"benchmark failed: {_err(e)}" + (f"\n{e.stderr}" if getattr(e, "stderr", None) else ""))
        _log(notes[-1])
    finally:
        units = bench.units if bench else []
        if bench is not None and bench.cluster.unsettled:
            left = bench.cluster.unsettled
            notes.append(f"{len(left)} time(s) a process was still running 3 s after a statement (its CPU "
                         f"may be counted in a later statement's): {'; '.join(sorted(set(left))[:5])}")
        stop_bench(pgkeep, cluster, tmp, a.keep, notes, any(u.errors for u in units))

    elapsed = time.monotonic() - started
    summary = summarize(units, a) if units else {}
    print()
    print(f"Incremental BACKUP through pgkeep: a layer after a 1% change vs the full, PostgreSQL "
          f"{versions.get('server', '?')}, {os.cpu_count()} CPUs; {elapsed / 60:.1f} min in all; MB = 10^6 bytes")
    if summary:
        print(report(summary, a, sizes, bench.rows))
    print_notes(notes)
    shown: set[str] = set()
    for u in units:
        for err in u.errors:
            if err not in shown:
                shown.add(err)
                print(f"\nerror in round {u.round} {u.dataset} {u.scenario} {u.chunk_size}: {err}")

    if not units:
        print("\nno units finished: results not written")
        return 130 if interrupted else 1
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps({
        **results_head("incremental", interrupted, notes),
        "config": {"rounds": a.rounds, "scale": a.scale, "real_rows": a.real_rows, "datasets": a.datasets,
                   "scenarios": a.scenarios, "chunk_sizes": a.chunk_sizes, "quick": a.quick,
                   "summarize_wal": a.summarize_wal,
                   "no_restores": a.no_restores,
                   "pgkeep_args": a.pgkeep_arg, "pgkeep_settings": a.pgkeep_setting},
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                 "loadavg": os.getloadavg(), **versions},
        "units_of_measure": {"size": "bytes", "mb": MB, "time": "seconds"},
        "datasets": {ds: {"database": DATASETS[ds], "size_bytes": sizes[ds], "table": MAIN[ds][0],
                          "rows": bench.rows.get(ds)} for ds in sizes},
        "targets": {"bytes_and_time": {sc: {"bytes": b, "time": t} for sc, (b, t) in TARGETS.items()},
                    "chain_restore_over_full_restore": RESTORE_TARGET},
        "summary": summary,
        "changes": bench.changes,
        "units": [asdict(u) for u in units],
        "notes": notes,
    }, indent=2) + "\n")
    print(f"\nresults written to {a.output}")
    if interrupted:
        return 130
    return 1 if any(u.errors for u in units) or any(n.startswith("benchmark failed") for n in notes) else 0


if __name__ == "__main__":
    sys.exit(main())
