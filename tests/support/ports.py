"""Ports for the servers the tests start (PostgreSQL, pgkeep, the object stores), safe when
several test processes (pytest-xdist workers, other test runs) pick ports at the same time.

A plain "bind to port 0, read the port, close" leaves the port free between the pick and the
server's own bind, so another process's pick can be handed the same port. `reserve_port` closes
the gap the way Yelp's ephemeral-port-reserve does: it accepts one connection on the port and
closes its side first, which leaves a TIME_WAIT socket on it for about a minute. The kernel
hands no port in TIME_WAIT to a bind to port 0 (nor to an outgoing connection), so no other
pick gets it, while a server that binds with SO_REUSEADDR -- PostgreSQL, pgkeep, Go's and
Node's listeners all do -- takes it at once.
"""
from __future__ import annotations

import socket

__all__ = ["reserve_port"]


def reserve_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, 0))
        listener.listen(1)
        addr = listener.getsockname()
        with socket.create_connection(addr) as client:
            accepted, _ = listener.accept()
            accepted.close()     # the server side closes first: its port stays in TIME_WAIT
        return addr[1]
