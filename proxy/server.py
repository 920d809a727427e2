"""The listener: accepts clients, owns the session registry, the cancel-key map, the connection
limit, TLS and graceful shutdown.

Cancel keys: each session's client gets the upstream backend's real pid (so pg_cancel_backend,
pg_stat_activity and NOTIFY's sender pid agree with what its driver reports) and pgkeep's own
random secret, as long as the upstream's; a CancelRequest is matched in constant time and an
unknown key does nothing. With --workers N, SO_REUSEPORT may hand the cancel connection to a
worker that does not hold the session: it relays the packet to the other workers over Unix
datagram sockets, and only the one holding the pid acts. Shutdown: stop accepting, close idle
sessions at once, let busy ones finish within the timeout, then close the rest with 57P01.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import socket
import ssl
import struct
from pathlib import Path
from typing import Any

from . import errors
from .config import Config
from .limits import ConnectionSlots
from .session import Session, SessionHost, State
from .upstream import UpstreamAddress

__all__ = ["Server"]

_log = logging.getLogger("pgkeep.server")


class Server:
    """Built by the app with what it needs; it knows nothing of the app, and hands each session
    a SessionHost: the session never reaches back here."""

    def __init__(self, config: Config, *, upstream: UpstreamAddress, upstream_tls: ssl.SSLContext | None,
                 slots: ConnectionSlots, worker_index: int, commands: Any) -> None:
        self.config = config
        self.upstream_address = upstream
        self.tls_context = self._tls_context()
        self.slots = slots
        self.sessions: set[Session] = set()
        self._admitted: set[Session] = set()
        self._keys: dict[int, tuple[bytes, Session]] = {}
        self._server: asyncio.base_events.Server | None = None
        self.port: int | None = None
        self.worker_index = worker_index
        self._relay: asyncio.DatagramTransport | None = None
        self._host = SessionHost(config=config, upstream=upstream, upstream_tls=upstream_tls,
                                 client_tls=self.tls_context, commands=commands, admit=self.admit,
                                 register_key=self.register_key, cancel=self.cancel,
                                 closed=self.session_closed)

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.config.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        ctx.set_alpn_protocols(["postgresql"])  # as PostgreSQL 17+; direct TLS requires it
        return ctx

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def factory():
            session = Session(self._host)
            self.sessions.add(session)
            return session.protocol()

        self._server = await loop.create_server(
            factory, self.config.listen_host, self.config.listen_port, backlog=1024,
            reuse_port=self.config.workers > 1, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.config.workers > 1:
            path = self._relay_path(self.worker_index)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            server = self

            class _Relay(asyncio.DatagramProtocol):
                def datagram_received(self, data, addr):
                    pid = struct.unpack("!I", data[:4])[0]
                    loop.create_task(server.cancel(pid, data[4:], relayed=True))

            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
            self._relay, _ = await loop.create_datagram_endpoint(_Relay, sock=sock)

    def _relay_path(self, index: int) -> Path:
        return self.config.data_path / "run" / f"cancel-{self.config.listen_port}-{index}.sock"

    # ---- sessions --------------------------------------------------------------------------

    def admit(self, session: Session) -> bool:
        """--max-connections counts the sessions of every worker (proxy/limits.py)."""
        if len(self._admitted) >= self.config.max_connections or \
                not self.slots.acquire(session):
            return False
        self._admitted.add(session)
        return True

    def session_closed(self, session: Session) -> None:
        self.sessions.discard(session)
        self._admitted.discard(session)
        self.slots.release(session)
        if session.key and self._keys.get(session.key[0], (None, None))[1] is session:
            del self._keys[session.key[0]]

    def register_key(self, session: Session, pid: int, secret_len: int) -> bytes:
        """The secret pgkeep gives the client with the upstream's real backend `pid`: random, as
        long as the upstream's own (4 bytes in protocol 3.0, longer in 3.2), never less than 4."""
        secret = secrets.token_bytes(max(4, secret_len))
        self._keys[pid] = (secret, session)
        return secret

    async def cancel(self, pid: int, secret: bytes, relayed: bool = False) -> None:
        entry = self._keys.get(pid)
        if entry is None and self.config.workers > 1 and not relayed:
            self._relay_cancel(pid, secret)
            return
        if entry is None or not hmac.compare_digest(entry[0], secret):
            _log.info("ignored a cancel request with an unknown key")
            return
        await entry[1].cancel()

    def _relay_cancel(self, pid: int, secret: bytes) -> None:
        """SO_REUSEPORT handed a cancel for a session this worker does not hold to this worker:
        the key carries no worker number (all its bits are secret), so every other worker gets
        it and only the owner, whose map holds the pid, checks the secret."""
        packet = struct.pack("!I", pid) + secret
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            for index in range(self.config.workers):
                if index != self.worker_index:
                    try:
                        s.sendto(packet, str(self._relay_path(index)))
                    except OSError:
                        _log.info("could not relay a cancel request to worker %d", index)

    # ---- shutdown --------------------------------------------------------------------------

    async def shutdown(self, timeout: float) -> None:
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            busy = [s for s in list(self.sessions) if s.state is State.READY and s.busy]
            for s in list(self.sessions):
                if s not in busy:
                    s.fatal(errors.admin_shutdown())
            if not busy or loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for s in list(self.sessions):
            s.fatal(errors.admin_shutdown())
        if self._server is not None:
            await self._server.wait_closed()
        if self._relay is not None:
            self._relay.close()
            self._relay_path(self.worker_index).unlink(missing_ok=True)
