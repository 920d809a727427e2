"""A tiny blocking PostgreSQL protocol client on a raw socket, for tests that must see the exact
bytes pgkeep sends (ErrorResponse fields, BackendKeyData, 'S'/'N' answers, closes)."""
from __future__ import annotations

import socket
import struct
import time

from proxy.wire import messages as m

__all__ = ["RawConn", "startup_packet", "ssl_request", "gssenc_request", "cancel_request",
           "query", "error_fields", "read_all_until_eof"]


def startup_packet(user: str = "postgres", database: str = "postgres", protocol: int = m.PROTOCOL_3_0,
                   **params: str) -> bytes:
    body = struct.pack("!i", protocol)
    for k, v in {"user": user, "database": database, **params}.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def ssl_request() -> bytes:
    return struct.pack("!ii", 8, m.SSL_REQUEST_CODE)


def gssenc_request() -> bytes:
    return struct.pack("!ii", 8, m.GSSENC_REQUEST_CODE)


def cancel_request(pid: int, secret: bytes) -> bytes:
    return struct.pack("!iiI", 12 + len(secret), m.CANCEL_REQUEST_CODE, pid) + secret


def query(sql: str) -> bytes:
    return m.frame(b"Q", sql.encode() + b"\0")


def error_fields(body: bytes) -> dict[str, str]:
    """Fields of an ErrorResponse/NoticeResponse body, keyed by their type letter."""
    out: dict[str, str] = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return out


def read_all_until_eof(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Every byte the server sends until it closes; raises TimeoutError if it never closes."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the server did not close the connection in {timeout}s; got {data!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


class RawConn:
    """A blocking protocol connection: `login()`, then `send()` frames and `read()` messages."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.key: tuple[int, bytes] | None = None
        self.params: dict[str, str] = {}

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed after {self.buf!r}")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read(self) -> tuple[bytes, bytes]:
        """One typed message: (type byte, body)."""
        kind = self.read_exact(1)
        (length,) = struct.unpack("!i", self.read_exact(4))
        return kind, self.read_exact(length - 4)

    def read_until(self, kind: bytes) -> list[tuple[bytes, bytes]]:
        """Messages up to and including the first one of type `kind`."""
        out = []
        while True:
            msg = self.read()
            out.append(msg)
            if msg[0] == kind:
                return out

    def at_eof(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (after any buffered bytes) within timeout."""
        if self.buf:
            return False
        return read_all_until_eof(self.sock, timeout) == b""

    def login(self, user: str = "postgres", database: str = "postgres", **params: str) -> "RawConn":
        self.send(startup_packet(user, database, **params))
        for kind, body in self.read_until(b"Z"):
            if kind == b"E":
                raise RuntimeError(f"login failed: {error_fields(body)}")
            if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                raise RuntimeError("raw login only supports trust users")
            if kind == b"K":
                self.key = (struct.unpack("!I", body[:4])[0], body[4:])
            if kind == b"S":
                k, v = body.split(b"\0")[:2]
                self.params[k.decode()] = v.decode()
        return self

    def simple(self, sql: str) -> list[tuple[bytes, bytes]]:
        self.send(query(sql))
        return self.read_until(b"Z")

    def scalar(self, sql: str) -> str:
        rows = [body for kind, body in self.simple(sql) if kind == b"D"]
        assert len(rows) == 1, rows
        body = rows[0]
        (n,) = struct.unpack("!i", body[2:6])
        return body[6:6 + n].decode()

    def abort(self) -> None:
        """Vanish abruptly: RST, no Terminate."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawConn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
