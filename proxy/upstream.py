"""Where the upstream PostgreSQL is, and how pgkeep reaches it: connect (TCP or Unix socket,
optional TLS) and send a CancelRequest.

The upstream DSN's user, password and database are pgkeep's own (catalog, backups); a client
session connects with the client's own startup packet, so pgkeep never needs the client's password.
"""
from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from .wire.messages import CANCEL_REQUEST_CODE

__all__ = ["UpstreamAddress", "parse_upstream", "send_cancel"]


@dataclass(frozen=True)
class UpstreamAddress:
    host: str
    port: int
    unix_dir: str | None   # directory holding .s.PGSQL.<port>, when host is a path
    sslmode: str           # disable | prefer | require
    user: str
    password: str | None
    database: str
    dsn: str

    @property
    def unix_path(self) -> str | None:
        return f"{self.unix_dir}/.s.PGSQL.{self.port}" if self.unix_dir else None

    def describe(self) -> str:
        return self.unix_path or f"{self.host}:{self.port}"


def parse_upstream(dsn: str) -> UpstreamAddress:
    u = urlsplit(dsn)
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    host = unquote(u.hostname or "") or q.get("host", "")
    port = u.port or int(q.get("port", 5432))
    unix_dir = host if host.startswith("/") else None
    sslmode = q.get("sslmode", "disable" if unix_dir else "prefer")
    if sslmode in ("verify-ca", "verify-full", "allow"):
        sslmode = "require" if sslmode != "allow" else "prefer"
    return UpstreamAddress(host=host or "127.0.0.1", port=port, unix_dir=unix_dir, sslmode=sslmode,
                           user=unquote(u.username or "") or q.get("user", "postgres"),
                           password=unquote(u.password) if u.password else q.get("password"),
                           database=unquote(u.path.lstrip("/")) or q.get("dbname", "postgres"),
                           dsn=dsn)


async def send_cancel(addr: UpstreamAddress, pid: int, secret: bytes) -> None:
    """Deliver a CancelRequest for the upstream backend (pid, secret); best effort, as libpq."""
    try:
        if addr.unix_path:
            reader, writer = await asyncio.open_unix_connection(addr.unix_path)
        else:
            reader, writer = await asyncio.open_connection(addr.host, addr.port)
    except OSError:
        return
    try:
        writer.write(struct.pack("!iiI", 12 + len(secret), CANCEL_REQUEST_CODE, pid) + secret)
        await writer.drain()
        await asyncio.wait_for(reader.read(1), 5)
    except (OSError, asyncio.TimeoutError):
        pass
    finally:
        writer.close()
