"""Which --workers process serves a client connection, read from the operating system (psutil):
the worker whose socket is the other end of the client's. Clients see the upstream backend's
real pid in BackendKeyData, so the pid no longer names a worker."""
from __future__ import annotations

import os
import socket

import psutil

__all__ = ["worker_of"]


def _local_port(conn) -> int:
    """The client-side port of a psycopg connection."""
    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as s:
        return s.getsockname()[1]


def worker_of(proc, conn) -> int:
    """The worker index (0: the parent) of the pgkeep `proc` that holds psycopg `conn`."""
    port = _local_port(conn)
    parent = psutil.Process(proc.proc.pid)
    for p in [parent, *parent.children()]:
        for c in p.net_connections(kind="tcp"):
            if c.raddr and c.raddr.port == port and c.laddr.port == proc.port:
                return 0 if p.pid == parent.pid else int(p.environ()["PGKEEP_WORKER_INDEX"])
    raise LookupError(f"no pgkeep worker holds the connection from port {port}")
