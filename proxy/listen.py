"""The listen address, checked before anything else starts: a port another process holds is one
clear line naming it (and the process, when this user may see it), not a traceback after the
embedded PostgreSQL already said it was running."""
from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

__all__ = ["ListenError", "check_listen", "port_holder", "lock_data_dir"]


class ListenError(Exception):
    """The listen address (or the data directory) is taken; the message is one line for the
    operator."""


def lock_data_dir(data_dir: Path) -> int:
    """Take DATA_DIR/pgkeep.pid for this process's lifetime (an exclusive flock, which the
    kernel drops when the process dies, kill -9 included) and write our pid in it. A second
    pgkeep on the same data directory, whatever its port, would share the embedded PostgreSQL
    and stop it on its way out: it gets ListenError naming the first one instead. Returns the
    file descriptor to keep open."""
    import fcntl
    path = data_dir / "pgkeep.pid"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise ListenError(f"another pgkeep (process {holder or '?'}) is using the data directory "
                          f"{data_dir}; stop it, or give this one its own --data-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


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


def _redact(cmd: str) -> str:
    """Another process's command line may hold a password (a DSN in argv): never repeat it."""
    import re
    return re.sub(r"(://[^/@\s:]*:)[^@\s]*@", r"\1redacted@", cmd)


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
                return f"process {pid} ({_redact(' '.join(cmd.split()))[:80]})"
        except OSError:
            continue
    return None
