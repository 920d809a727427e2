"""Proxy overhead: pgbench select-only throughput direct to PostgreSQL, through pgkeep, and through
PgBouncer in session mode (the anchor a pass-through proxy is measured against).

    python bench/proxy_overhead.py            # defaults: scale 10, -c 8 -j 2, 15 s runs, 3 rounds
    python bench/proxy_overhead.py --quick    # 3 s runs, 1 round: a smoke test

Everything is started here and stopped at the end (also on Ctrl-C or an error): a throw-away
PostgreSQL 18 (PgCluster), pgkeep (`python -m proxy serve`) and PgBouncer (installed with apt-get
when missing). Targets are interleaved within each round, in a rotating order, so drift in the
machine's speed spreads over all of them. Prints median TPS per target and query mode, the ratios
pgkeep/direct and pgkeep/PgBouncer, each proxy's CPU per transaction and issue 18's targets;
writes every run to bench/results/proxy_overhead.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from proxy.pgcluster import PgCluster, embedded_bin_dir, ensure_system_user, free_port  # noqa: E402
from tests.support.pgkeep import PgkeepProcess  # noqa: E402

__all__ = ["main"]

TARGETS = ("direct", "pgkeep", "pgbouncer")
OPTIONAL_TARGETS = ("pyrelay",)  # bench/pyrelay.py: the floor of any Python (uvloop) proxy
MODES = ("simple", "prepared")
RESULTS = REPO / "bench" / "results" / "proxy_overhead.json"
TARGET_RATIO = 1.0   # issue 18: pgkeep at least matches PgBouncer at -M prepared and -M simple
TARGET_MODES = ("prepared", "simple")  # ... with no more CPU per transaction than PgBouncer


@dataclass
class Run:
    round: int
    mode: str
    target: str
    tps: float | None
    transactions: int | None
    failed: int | None
    latency_ms: float | None
    seconds: float
    error: str | None = None
    cpu_us_per_txn: float | None = None  # the proxy process's own CPU (user+system) per transaction
    load1: float | None = None  # the machine's 1-minute load average when the run ended
    wakeups_per_txn: float | None = None  # the proxy's voluntary context switches per transaction


# -- the servers ----------------------------------------------------------------------------------

def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _wait_port(port: int, proc: subprocess.Popen | None, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f}s")


def _pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None)
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("pgbouncer is not installed and installing it needs root: "
                           "sudo apt-get install -y pgbouncer")
    _log("installing pgbouncer with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "pgbouncer"]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(cmd, env=env, capture_output=True, check=True)
    return shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _unprivileged_account() -> pwd.struct_passwd:
    """PgBouncer refuses to run as root: use the system user PgCluster runs PostgreSQL as."""
    return ensure_system_user()


class PgBouncer:
    """PgBouncer in session mode on a free 127.0.0.1 port, trusting every user, in front of `pg_port`."""

    def __init__(self, workdir: Path, pg_port: int, pool_size: int) -> None:
        self.workdir = workdir
        self.pg_port = pg_port
        self.pool_size = pool_size
        self.port = free_port()
        self.logfile = workdir / "pgbouncer.log"
        self.proc: subprocess.Popen | None = None
        self.binary = _pgbouncer_binary()

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0].strip() if out else "?"

    def start(self) -> "PgBouncer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        ini = self.workdir / "pgbouncer.ini"
        (self.workdir / "userlist.txt").write_text('"postgres" ""\n')
        ini.write_text(f"""\
[databases]
* = host=127.0.0.1 port={self.pg_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.workdir / 'userlist.txt'}
pool_mode = session
max_client_conn = {self.pool_size * 4}
default_pool_size = {self.pool_size}
max_db_connections = 0
ignore_startup_parameters = extra_float_digits,options
logfile = {self.logfile}
pidfile = {self.workdir / 'pgbouncer.pid'}
log_connections = 0
log_disconnections = 0
stats_period = 60
""")
        kw: dict = {}
        if os.geteuid() == 0:
            account = _unprivileged_account()
            for p in (self.workdir, *self.workdir.iterdir()):
                os.chown(p, account.pw_uid, account.pw_gid)
            kw = dict(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
        with open(self.workdir / "pgbouncer.stderr", "wb") as stderr:
            self.proc = subprocess.Popen([self.binary, str(ini)], stdout=subprocess.DEVNULL,
                                         stderr=stderr, start_new_session=True, **kw)
        try:
            _wait_port(self.port, self.proc, 30, "pgbouncer")
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{self.log()}") from None
        return self

    def log(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.logfile, self.workdir / "pgbouncer.stderr")
                 if p.exists()]
        return "\n".join(parts)[-4000:]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- pgbench --------------------------------------------------------------------------------------

_TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.M)
_TPS_ANY = re.compile(r"^tps = ([\d.]+)", re.M)
_TXNS = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)
_LAT = re.compile(r"^latency average = ([\d.]+) ms", re.M)


def pgbench(bin_dir: Path, port: int, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    cmd = [str(bin_dir / "pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", *args, "postgres"]
    env = {**os.environ, "PGAPPNAME": "pgkeep-bench", "PGCONNECT_TIMEOUT": "10"}
    env.pop("PGPASSWORD", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def measure(bin_dir: Path, port: int, mode: str, a: argparse.Namespace, rnd: int, target: str) -> Run:
    args = ["-n", "-S", "-M", mode, "-c", str(a.clients), "-j", str(a.threads), "-T", str(a.duration)]
    started = time.monotonic()
    try:
        cp = pgbench(bin_dir, port, args, timeout=a.duration * 3 + 60)
    except subprocess.TimeoutExpired:
        return Run(rnd, mode, target, None, None, None, None, time.monotonic() - started,
                   error=f"pgbench hung past {a.duration * 3 + 60:.0f}s")
    elapsed = time.monotonic() - started
    m = _TPS.search(cp.stdout) or _TPS_ANY.search(cp.stdout)
    txns, failed, lat = (_TXNS.search(cp.stdout), _FAILED.search(cp.stdout), _LAT.search(cp.stdout))
    error = None
    if cp.returncode != 0 or m is None:
        error = f"pgbench exit {cp.returncode}: " + (cp.stderr.strip() or cp.stdout.strip())[-1500:]
    return Run(rnd, mode, target, float(m.group(1)) if m and not error else None,
               int(txns.group(1)) if txns else None, int(failed.group(1)) if failed else None,
               float(lat.group(1)) if lat else None, round(elapsed, 2), error, load1=os.getloadavg()[0])


# -- reporting ------------------------------------------------------------------------------------

def summarize(runs: list[Run], targets: list[str], modes: list[str]) -> dict:
    medians: dict[str, dict[str, float | None]] = {}
    for mode in modes:
        medians[mode] = {}
        for t in targets:
            values = [r.tps for r in runs if r.mode == mode and r.target == t and r.tps is not None]
            medians[mode][t] = statistics.median(values) if values else None
    ratios: dict[str, dict[str, float | None]] = {}
    for mode in modes:
        m = medians[mode]

        def ratio(num: str, den: str) -> float | None:
            if m.get(num) and m.get(den):
                return m[num] / m[den]
            return None
        ratios[mode] = {"pgkeep/direct": ratio("pgkeep", "direct"),
                        "pgkeep/pgbouncer": ratio("pgkeep", "pgbouncer"),
                        "pgbouncer/direct": ratio("pgbouncer", "direct"),
                        "pyrelay/pgbouncer": ratio("pyrelay", "pgbouncer")}
    cpu = {mode: {t: statistics.median(v) if (v := [r.cpu_us_per_txn for r in runs if r.mode == mode
                                                         and r.target == t and r.cpu_us_per_txn]) else None
                  for t in targets if t != "direct"} for mode in modes}
    return {"median_tps": medians, "ratios": ratios, "cpu_us_per_txn": cpu}


def verdicts(summary: dict) -> list[tuple[str, float | None, float | None, bool]]:
    """(what, value, limit, met) for each target of issue 18 that this run measured."""
    out = []
    for mode in TARGET_MODES:
        if mode not in summary["ratios"]:
            continue
        ratio = summary["ratios"][mode]["pgkeep/pgbouncer"]
        out.append((f"pgkeep/pgbouncer at -M {mode} >= {TARGET_RATIO}", ratio, TARGET_RATIO,
                    ratio is not None and ratio >= TARGET_RATIO))
        cpu = summary["cpu_us_per_txn"][mode]
        mine, theirs = cpu.get("pgkeep"), cpu.get("pgbouncer")
        out.append((f"pgkeep CPU per transaction at -M {mode} <= PgBouncer's", mine, theirs,
                    mine is not None and theirs is not None and mine <= theirs))
    return out


def table(summary: dict, runs: list[Run], targets: list[str], modes: list[str]) -> str:
    def fmt(v: float | None, spec: str) -> str:
        return format(v, spec) if v is not None else "n/a"
    cols = [f"{t} tps" for t in targets] + ["pgkeep/direct", "pgkeep/pgbouncer"]
    widths = [10] + [max(14, len(c)) for c in cols]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(["mode", *cols], widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for mode in modes:
        row = [mode.ljust(widths[0])]
        row += [fmt(summary["median_tps"][mode][t], ",.0f").rjust(w) for t, w in zip(targets, widths[1:])]
        row += [fmt(summary["ratios"][mode][k], ".3f").rjust(w)
                for k, w in zip(("pgkeep/direct", "pgkeep/pgbouncer"), widths[1 + len(targets):])]
        lines.append("  ".join(row))
    lines.append("")
    for mode in modes:
        for t in ("pgkeep", "pgbouncer", "pyrelay"):
            cpu = summary["cpu_us_per_txn"][mode].get(t)
            wake = [r.wakeups_per_txn for r in runs if r.mode == mode and r.target == t and r.wakeups_per_txn]
            if cpu is not None:
                lines.append(f"{t} CPU per transaction, -M {mode}: {cpu:.1f} us (median)"
                             + (f", {statistics.median(wake):.2f} wake-ups" if wake else ""))
    for mode in modes:
        if summary["ratios"][mode].get("pyrelay/pgbouncer") is not None:
            lines.append(f"pyrelay/pgbouncer, -M {mode}: {summary['ratios'][mode]['pyrelay/pgbouncer']:.3f} "
                         "(a uvloop transport relay with no protocol work: the floor of a pure-Python proxy)")
    lines.append("")
    lines.append("per-run tps (round: " + ", ".join(targets) + "):")
    for mode in modes:
        for rnd in sorted({r.round for r in runs}):
            vals = []
            for t in targets:
                r = next((x for x in runs if x.mode == mode and x.round == rnd and x.target == t), None)
                vals.append("skipped" if r is None else ("ERROR" if r.error else f"{r.tps:,.0f}"))
            lines.append(f"  {mode:<9} round {rnd}: " + ", ".join(vals))
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------

def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--duration", type=int, default=15, help="seconds per pgbench run")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs every target in every mode")
    p.add_argument("--scale", type=int, default=10, help="pgbench -i scale factor")
    p.add_argument("--clients", type=int, default=8, help="pgbench -c")
    p.add_argument("--threads", type=int, default=2, help="pgbench -j")
    p.add_argument("--warmup", type=int, default=3, help="seconds of unrecorded pgbench per target first")
    p.add_argument("--modes", default=",".join(MODES), help="pgbench -M query modes, comma-separated")
    p.add_argument("--targets", default=",".join(TARGETS), help="subset of direct,pgkeep,pgbouncer,pyrelay (pyrelay: a uvloop byte relay, "
                   "the floor of a Python proxy; not run by default)")
    p.add_argument("--pgkeep-workers", type=int, default=1, help="passed to pgkeep serve --workers")
    p.add_argument("--pgkeep-pure", action="store_true",
                   help="run pgkeep's pure-Python relay (PGKEEP_PURE_PYTHON=1) instead of the compiled one")
    p.add_argument("--pgkeep-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for pgkeep serve (repeatable), e.g. --pgkeep-arg=--log-level=WARNING")
    p.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    p.add_argument("--quick", action="store_true", help="smoke test: 3 s runs, 1 round, 1 s warm-up")
    a = p.parse_args(argv)
    if a.quick:
        a.duration, a.rounds, a.warmup = 3, 1, 1
    a.modes = [m for m in a.modes.split(",") if m]
    a.targets = [t for t in a.targets.split(",") if t]
    bad = (set(a.modes) - {"simple", "extended", "prepared"}) | (set(a.targets) - set(TARGETS) - set(OPTIONAL_TARGETS))
    if bad or a.rounds < 1 or a.duration < 1:
        p.error(f"bad --modes/--targets/--rounds/--duration ({', '.join(sorted(bad)) or 'value < 1'})")
    return a


def _usage(proc) -> tuple[float, int] | None:
    """(user+system CPU seconds, voluntary context switches: the times it slept waiting for
    work) of a process and its children (pgkeep's --workers)."""
    if proc is None:
        return None
    try:
        import psutil
        root = psutil.Process(proc.pid)
        procs = [root, *root.children(recursive=True)]
        return (sum(sum(p.cpu_times()[:2]) for p in procs),
                sum(p.num_ctx_switches().voluntary for p in procs))
    except Exception:  # noqa: BLE001 - psutil missing or the process gone: no figure
        return None


def _exited(target: str, procs: dict) -> str | None:
    """Why `target`'s process is gone, or None while it runs (direct PostgreSQL is not checked)."""
    proc = procs.get(target)
    if proc is not None and proc.poll() is not None:
        code = proc.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return f"{target} process {proc.pid} is no longer running ({how})"
    return None


def _on_sigterm(signum, frame):  # turn SIGTERM into the same clean-up path as Ctrl-C
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    a = _parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even when started with SIGINT ignored
    tmp = Path(tempfile.mkdtemp(prefix="pgkeep-bench-"))
    os.chmod(tmp, 0o755)   # as root, PostgreSQL and PgBouncer run as an unprivileged user
    bin_dir = embedded_bin_dir()
    cluster: PgCluster | None = None
    pgkeep: PgkeepProcess | None = None
    bouncer: PgBouncer | None = None
    relay: subprocess.Popen | None = None
    relay_path: str | None = None   # pgkeep's relay: "compiled" or "pure-python"
    procs: dict[str, subprocess.Popen] = {}   # the process behind each proxy target
    runs: list[Run] = []
    notes: list[str] = []
    interrupted = False
    ports: dict[str, int] = {}
    try:
        pool = a.clients + 4
        cluster = PgCluster(tmp / "pg", bin_dir=bin_dir, conf={
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "max_connections": str(max(100, pool * 3 + 20)), "shared_buffers": "512MB"})
        _log(f"starting PostgreSQL in {cluster.datadir}")
        cluster.start()
        ports["direct"] = cluster.port
        _log(f"pgbench -i -s {a.scale}")
        init = pgbench(bin_dir, cluster.port, ["-i", "-q", "-s", str(a.scale)], timeout=1800)
        if init.returncode != 0:
            raise RuntimeError(f"pgbench -i failed:\n{init.stderr}")
        cluster.psql("VACUUM ANALYZE")
        if "pgkeep" in a.targets:
            env = {"PGKEEP_PURE_PYTHON": "1" if a.pgkeep_pure else ""}
            pgkeep = PgkeepProcess(tmp / "pgkeep", cluster.dsn(), env=env,
                                   args=["--workers", str(a.pgkeep_workers), *a.pgkeep_arg])
            relay_path = _pgkeep_relay(env)
            _log(f"pgkeep relay: {relay_path}")
            _log(f"starting pgkeep: {' '.join(pgkeep.command())}")
            try:
                pgkeep.start()
                ports["pgkeep"] = pgkeep.port
                procs["pgkeep"] = pgkeep.proc
            except RuntimeError as e:
                notes.append(f"pgkeep did not start: {e}")
                _log(notes[-1])
        if "pgbouncer" in a.targets:
            bouncer = PgBouncer(tmp / "pgbouncer", cluster.port, pool_size=pool)
            _log(f"starting {bouncer.version()} (session mode) on port {bouncer.port}")
            bouncer.start()
            ports["pgbouncer"] = bouncer.port
            procs["pgbouncer"] = bouncer.proc
        if "pyrelay" in a.targets:
            port = free_port()
            relay = subprocess.Popen([sys.executable, str(REPO / "bench" / "pyrelay.py"), str(port),
                                      str(cluster.port)], start_new_session=True)
            _wait_port(port, relay, 30, "pyrelay")
            ports["pyrelay"], procs["pyrelay"] = port, relay
        targets = [t for t in a.targets if t in ports]

        if a.warmup:
            _log(f"warming up: {a.warmup}s per target and mode, not recorded")
            for t in targets:
                for mode in a.modes:
                    cp = pgbench(bin_dir, ports[t], ["-n", "-S", "-M", mode, "-c", str(a.clients), "-j",
                                                     str(a.threads), "-T", str(a.warmup)],
                                 timeout=a.warmup * 3 + 60)
                    if cp.returncode != 0:
                        _log(f"warm-up {t} -M {mode} failed: {cp.stderr.strip()[-500:]}")

        total = a.rounds * len(a.modes) * len(targets)
        _log(f"{total} runs of {a.duration}s: ~{total * (a.duration + 1) / 60:.1f} min")
        for rnd in range(1, a.rounds + 1):
            for mi, mode in enumerate(a.modes):
                shift = (rnd - 1 + mi) % len(targets)          # rotate who goes first
                for t in targets[shift:] + targets[:shift]:
                    dead = _exited(t, procs)
                    if dead:
                        if not any(dead in n for n in notes):
                            notes.append(f"{dead} (at {time.strftime('%H:%M:%S')}); its later runs are errors")
                            _log(notes[-1])
                        runs.append(Run(rnd, mode, t, None, None, None, None, 0.0, error=dead))
                        continue
                    proc = procs.get(t)
                    use0 = _usage(proc)
                    run = measure(bin_dir, ports[t], mode, a, rnd, t)
                    use1 = _usage(proc)
                    if use0 is not None and use1 is not None and run.transactions:
                        run.cpu_us_per_txn = (use1[0] - use0[0]) / run.transactions * 1e6
                        run.wakeups_per_txn = (use1[1] - use0[1]) / run.transactions
                    runs.append(run)
                    status = f"{run.tps:,.0f} tps" if run.error is None else f"ERROR {run.error}"
                    _log(f"round {rnd}/{a.rounds} -M {mode:<8} {t:<9} {status}")
    except KeyboardInterrupt:
        interrupted = True
        _log("interrupted: stopping everything")
    finally:
        if pgkeep is not None:
            early = _exited("pgkeep", procs)
            if early and not any("pgkeep process" in n for n in notes):
                notes.append(f"{early} before the benchmark stopped it")
            pgkeep.stop()
            if any(r.target == "pgkeep" and r.error for r in runs) or any("pgkeep" in n for n in notes):
                notes.append(f"pgkeep log ({pgkeep.logfile}):\n{pgkeep.log()[-4000:]}")
        if bouncer is not None:
            bouncer.stop()
        if relay is not None:
            relay.terminate()
            relay.wait(10)
        if cluster is not None:
            cluster.stop("immediate")
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    summary = summarize(runs, a.targets, a.modes)
    print()
    loads = [r.load1 for r in runs if r.load1 is not None]
    print(f"pgbench -S, scale {a.scale}, -c {a.clients} -j {a.threads}, {a.duration} s runs, "
          f"{a.rounds} round(s), median TPS; pgkeep --workers {a.pgkeep_workers}, {relay_path} relay"
          + (f"; load average {min(loads):.1f}-{max(loads):.1f}" if loads else ""))
    print(table(summary, runs, a.targets, a.modes))
    checks = verdicts(summary)
    if checks:
        print()
    for what, value, limit, met in checks:
        if "CPU" not in what:
            shown = "n/a" if value is None else f"{value:.3f}"
        else:
            shown = " vs ".join("n/a" if v is None else f"{v:.1f} us" for v in (value, limit))
        print(f"target {what}: {shown} ({'met' if met else 'NOT met'})")
    for note in notes:
        print(f"\nnote: {note}")
    for r in runs:
        if r.error:
            print(f"\nerror in round {r.round} -M {r.mode} {r.target}: {r.error}")

    if not runs:
        print("\nno runs finished: results not written")
        return 130 if interrupted else 1
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps({
        "benchmark": "proxy_overhead",
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "complete": not interrupted,
        "config": {"scale": a.scale, "clients": a.clients, "threads": a.threads,
                   "duration_s": a.duration, "rounds": a.rounds, "warmup_s": a.warmup,
                   "modes": a.modes, "targets": a.targets, "pgkeep_workers": a.pgkeep_workers,
                   "pgkeep_args": a.pgkeep_arg, "pgkeep_pure": a.pgkeep_pure},
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                 "pgbench": _version(bin_dir / "pgbench"),
                 "pgbouncer": bouncer.version() if bouncer else None},
        **summary,
        "pgkeep_relay": relay_path,
        "targets": [{"what": w, "value": v, "limit": lim, "met": ok} for w, v, lim, ok in checks],
        "runs": [asdict(r) for r in runs],
        "notes": notes,
    }, indent=2) + "\n")
    print(f"\nresults written to {a.output}")
    if interrupted:
        return 130
    return 1 if any(r.error for r in runs) or not runs else 0


def _pgkeep_relay(env: dict[str, str]) -> str:
    """Which relay pgkeep runs with this environment (proxy.wire.framing.RELAY)."""
    cp = subprocess.run([sys.executable, "-c", "from proxy.wire.framing import RELAY; print(RELAY)"],
                        capture_output=True, text=True, cwd=REPO, env={**os.environ, **env})
    return cp.stdout.strip() or f"unknown ({cp.stderr.strip()[-200:]})"


def _version(binary: Path) -> str:
    try:
        return subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
