"""The listen address, checked before anything else starts: a port another process holds is one
clear line naming it (and the process, when this user may see it), not a traceback after the
embedded PostgreSQL already said it was running."""
from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

__all__ = ["ListenError", "check_listen", "port_holder"]


class ListenError(Exception):
    """The listen address cannot be bound; the message is one line for the operator."""


def check_listen(host: str, port: int, reuse_port: bool) -> None:
    """Bind (host, port) as the server will, then let go: raises ListenError when it is taken.
    A race with another process between this check and the real bind is reported the same way
    by `listen_error` at the real bind."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                s.bind(addr)
            except OSError as e:
                raise listen_error(host, port, e) from None


def listen_error(host: str, port: int, e: OSError) -> ListenError:
    if e.errno == errno.EADDRINUSE:
        holder = port_holder(port)
        return ListenError(f"port {port} on {host} is already in use"
                           + (f" by {holder}" if holder else "")
                           + "; stop it or choose another port with --listen HOST:PORT")
    return ListenError(f"cannot listen on {host}:{port}: {e.strerror or e}")


def port_holder(port: int) -> str | None:
    """'process 1234 (python3 -m proxy serve)' listening on TCP `port`, from /proc (Linux),
    when this user may read that process's file descriptors; None otherwise."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                return f"process {pid} ({' '.join(cmd.split())[:80]})"
        except OSError:
            continue
    return None
