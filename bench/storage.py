"""Storage throughput: BACKUP and RESTORE of one database through pgkeep to nodelocal and to each
object-store emulator (S3 on SeaweedFS, GCS on fake-gcs-server, Azure on Azurite), interleaved
over several rounds; prints median seconds, MB/s and the ratios to nodelocal.

The emulators are real protocol servers on 127.0.0.1 (tests/support/objstores.py starts them);
their speed is not a cloud's, so the ratios tell what pgkeep's store code costs on top of the
protocol, not what S3 itself would do.

    python bench/storage.py [--rows N] [--rounds N] [--stores nodelocal,s3,gcs,azure] [--quick]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import psycopg  # noqa: E402

from backup_restore import REAL_DDL, REAL_INSERT, REAL_POST  # noqa: E402
from proxy.pgcluster import PgCluster  # noqa: E402
from tests.support.objstores import azurite, fake_gcs, seaweedfs  # noqa: E402
from tests.support.pgkeep import PgkeepProcess  # noqa: E402

SERVERS = {"s3": seaweedfs, "gcs": fake_gcs, "azure": azurite}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _timed(proc: PgkeepProcess, sql: str) -> float:
    t0 = time.perf_counter()
    with psycopg.connect(proc.dsn(), autocommit=True) as conn:
        conn.execute(sql)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the realistic table (~200 B each)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--stores", default="nodelocal,s3,gcs,azure")
    p.add_argument("--quick", action="store_true", help="100k rows, 1 round")
    p.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "storage.json")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.rounds = 100_000, 1
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="pgkeep-bench-storage-"))
    tmp.chmod(0o755)
    pg = PgCluster(tmp / "pg", conf={"fsync": "off", "shared_buffers": "512MB",
                                     "maintenance_work_mem": "256MB", "max_wal_size": "4GB"}).start()
    servers = {name: SERVERS[name]() for name in stores if name in SERVERS}
    env: dict[str, str] = {}
    for server in servers.values():
        env.update(server.env())
    pk = PgkeepProcess(tmp / "pgkeep", pg.dsn(), env=env).start()
    try:
        pg.psql("CREATE DATABASE bench_storage")
        _log(f"loading {args.rows:,} rows")
        pg.psql(REAL_DDL + ";" + (REAL_INSERT % args.rows) + ";" + ";".join(REAL_POST), "bench_storage")
        pg.psql("VACUUM ANALYZE", "bench_storage")
        size = int(pg.psql("SELECT pg_database_size('bench_storage')"))
        times: dict[str, dict[str, list[float]]] = {s: {"backup": [], "restore": []} for s in stores}
        for rnd in range(1, args.rounds + 1):
            order = stores[rnd % len(stores):] + stores[:rnd % len(stores)]
            for store in order:
                uri = (f"nodelocal://self/bench-{rnd}" if store == "nodelocal"
                       else servers[store].collection_uri(f"bench-{rnd}"))
                b = _timed(pk, f"BACKUP DATABASE bench_storage INTO '{uri}'")
                r = _timed(pk, f"RESTORE DATABASE bench_storage FROM LATEST IN '{uri}' "
                               f"WITH new_db_name = 'bench_storage_r'")
                pg.psql("DROP DATABASE bench_storage_r")
                times[store]["backup"].append(b)
                times[store]["restore"].append(r)
                _log(f"round {rnd} {store:<9} backup {b:6.2f}s  restore {r:6.2f}s")
        med = {s: {op: statistics.median(v) for op, v in ops.items()} for s, ops in times.items()}
        base = med.get("nodelocal")
        print(f"\nBACKUP/RESTORE of a {size / 1e6:,.0f} MB database through pgkeep, "
              f"median of {args.rounds} round(s)")
        print(f"{'store':<10} {'backup s':>9} {'MB/s':>8} {'restore s':>10} {'MB/s':>8} "
              f"{'backup/nodelocal':>17} {'restore/nodelocal':>18}")
        for s in stores:
            b, r = med[s]["backup"], med[s]["restore"]
            rb = f"{b / base['backup']:.2f}x" if base else "-"
            rr = f"{r / base['restore']:.2f}x" if base else "-"
            print(f"{s:<10} {b:9.2f} {size / 1e6 / b:8.1f} {r:10.2f} {size / 1e6 / r:8.1f} {rb:>17} {rr:>18}")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"db_bytes": size, "times": times, "median": med}, indent=2))
        return 0
    finally:
        pk.stop()
        pg.destroy()


if __name__ == "__main__":
    sys.exit(main())
