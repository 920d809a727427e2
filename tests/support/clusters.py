"""Throw-away PostgreSQL clusters for the tests, with users for every password method."""
from __future__ import annotations

from pathlib import Path

from proxy.pgcluster import PgCluster, debian_bin_dir
from tests.support.ports import reserve_port

__all__ = ["make_cluster", "USERS", "debian_bin_dir"]

# user -> (password, pg_hba method); the password_encryption each user's hash is made with
USERS = {
    "md5user": ("md5 secret", "md5"),
    "scramuser": ("scram secret", "scram-sha-256"),
    "pwuser": ("plain secret", "password"),
}

HBA = ["local all all trust"] + [
    f"host all {user} 127.0.0.1/32 {method}" for user, (_, method) in USERS.items()
] + ["host all all 127.0.0.1/32 trust"]


def make_cluster(base: Path, name: str, bin_dir: Path | None = None) -> PgCluster:
    cluster = PgCluster(base / name, port=reserve_port(), bin_dir=bin_dir, hba=HBA,
                        conf={"fsync": "off", "max_connections": "200", "wal_level": "logical"})
    cluster.start()
    for user, (password, method) in USERS.items():
        enc = "md5" if method == "md5" else "scram-sha-256"
        cluster.psql(f"SET password_encryption = '{enc}'; "
                     f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN "
                     f"CREATE ROLE {user} LOGIN PASSWORD '{password}'; END IF; END$$")
    return cluster
