"""One client session: an explicit state machine between a client and its own upstream backend.

States: STARTUP (untyped packets: SSLRequest, GSSENCRequest, CancelRequest, StartupMessage),
TLS (handshake in progress: any byte is a violation), CONNECTING (opening the upstream), AUTH
(authentication relayed both ways, pgkeep knows no password), READY (forwarding), CLOSED.
Until READY the client's frames wait in `_early`: the upstream gets one each time it asks for an
authentication message, and whatever is left (a query pipelined behind the startup packet or the
password) goes through the READY path, in order, once the session is ready.

In READY the hot path forwards raw bytes both ways. Client frames are only decoded when they
may concern pgkeep: every Query and Parse (to classify the SQL), and Bind/Describe/Execute/Close
while the session has intercepted statements or portals. Upstream frames are only walked by
header, to count responses (`_inflight`) and read the transaction status of ReadyForQuery.

Ordering contract: intercepted messages are answered by `intercept.Interceptor` strictly in
the order the client sent them, interleaved with the upstream's answers to forwarded messages:
once a message is intercepted, every later client message is held until it has been answered,
and an intercepted message is answered only after the upstream has answered everything
forwarded before it. Backpressure: each side stops reading while the other cannot keep up.

Bounds (docs/ARCHITECTURE.md): until READY a client gets PostgreSQL's limits (startup packet
10000 bytes, authentication messages 65535 bytes of body) and --client-login-timeout; once READY
it makes pgkeep hold at most about INSPECT_LIMIT bytes. Buffering is linear in bytes received.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any, Awaitable, Callable

from . import errors
from .config import Config
from .intercept import INSPECT_LIMIT, Interceptor
from .sql import may_intercept_bytes
from .sql.parser import INTERCEPT_WORDS
from .upstream import UpstreamAddress, send_cancel, tls_first, tls_required
from .wire import messages as m
from .wire.framing import (DISCARD, MAX_AUTH_MESSAGE, PASS, STREAM, DirectTLS, FrameScanner,
                           GSSENCRequest, SSLRequest, StartupLengthError, StartupReader, fast_relay)

__all__ = ["Session", "SessionHost", "State", "INSPECT_LIMIT"]

_log = logging.getLogger("pgkeep.session")

ALL_TYPES = frozenset(range(256))
_Q, _P, _B, _D, _E, _C, _S, _X, _F = (ord(c) for c in "QPBDECSXF")
_BASE_INSPECT = frozenset((_Q, _P, _X))
_EXT_INSPECT = frozenset((_Q, _P, _X, _B, _D, _E, _C))
# The upstream message that ends the answer to each forwarded client message (Z handled apart).
_TERMINALS = {_P: b"1", _B: b"2", _C: b"3", _D: b"Tn", _E: b"CIs"}
_TERMINAL_SETS = {k: frozenset(v) for k, v in _TERMINALS.items()}
_SYNCING = frozenset((_S, _Q, _F))  # answered with ReadyForQuery
_EXPECTS_ANSWER = frozenset(_TERMINALS) | _SYNCING
_Z, _ERR, _DATAROW = ord("Z"), ord("E"), ord("D")
_FLUSH = m.frame(b"H")
_NOTHING: frozenset[int] = frozenset()


if fast_relay is not None:
    fast_relay.configure([w.encode() for w in INTERCEPT_WORDS], _TERMINAL_SETS, _SYNCING, _EXPECTS_ANSWER)


def _interesting(kind: int, frame: bytes) -> bool:
    """Could this Query or Parse be pgkeep's? A Terminate always is (the session must close)."""
    return kind == _X or may_intercept_bytes(frame)


def _feed(transport: asyncio.Transport, data: bytes) -> None:
    """Hand bytes already read from `transport` to the protocol it now has (start_tls's)."""
    proto = transport.get_protocol()
    view = memoryview(data)
    while view:
        buf = proto.get_buffer(len(view))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        proto.buffer_updated(n)
        view = view[n:]


def _unencrypted_after(request: str) -> errors.PgError:
    return errors.ProtocolViolation(
        f"received unencrypted data after {request}", severity="FATAL",
        detail="This could be either a client-software bug or evidence of an attempted "
               "man-in-the-middle attack.")


def _tls_required(user: str) -> errors.PgError:
    return errors.PgError(f'pgkeep requires TLS (--require-tls): connection for user "{user}" '
                          "without encryption refused", sqlstate="28000", severity="FATAL",
                          hint="Connect with sslmode=require, verify-ca or verify-full.")


class State(Enum):
    STARTUP = 1
    TLS = 2
    CONNECTING = 3
    AUTH = 4
    READY = 5
    CLOSED = 6


class InternalQuery:
    """An upstream Query that pgkeep sends on the client's behalf (the forwarded part of a simple
    Query that also holds intercepted statements). Its answer is relayed except the final
    ReadyForQuery, which resolves `done` with whether an ErrorResponse came back."""

    __slots__ = ("done", "failed", "silent", "rows", "error")

    def __init__(self, loop: asyncio.AbstractEventLoop, silent: bool, collect: bool = False) -> None:
        self.done: asyncio.Future[bool] = loop.create_future()
        self.failed = False
        self.silent = silent or collect  # relay nothing of the answer
        self.rows: list[tuple] | None = [] if collect else None  # DataRows, kept for pgkeep
        self.error: dict[str, str] | None = None


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, session: "Session") -> None:
        self.s = session

    def connection_made(self, transport):
        self.s.client_connected(transport)

    def data_received(self, data):
        self.s.client_data(data)

    def connection_lost(self, exc):
        self.s.close(f"client gone: {exc}" if exc else "client closed")

    def pause_writing(self):
        if self.s.upstream:
            self.s.upstream.pause_reading()

    def resume_writing(self):
        if self.s.upstream:
            self.s.upstream.resume_reading()


class _UpstreamProtocol(asyncio.Protocol):
    def __init__(self, session: "Session") -> None:
        self.s = session
        self.tls_answer: asyncio.Future[bytes] | None = None

    def data_received(self, data):
        if self.tls_answer is not None and not self.tls_answer.done():
            self.tls_answer.set_result(data)
            return
        self.s.upstream_data(data)

    def connection_lost(self, exc):
        self.s.upstream_lost(exc)

    def pause_writing(self):
        self.s.upstream_full(True)

    def resume_writing(self):
        self.s.upstream_full(False)


@dataclass(frozen=True)
class SessionHost:
    """Everything a session needs from the server that accepted it, handed down at creation:
    the session never reaches back into the server or the app (tests/test_layering.py)."""

    config: Config
    upstream: UpstreamAddress                 # where the session's own backend is
    upstream_tls: ssl.SSLContext | None       # toward it (upstream.session_ssl_context)
    client_tls: ssl.SSLContext | None         # toward the client (--tls-cert), None: answer 'N'
    commands: Any                             # what pgkeep's commands run against (CommandContext)
    admit: Callable[["Session"], bool]        # take a --max-connections slot
    register_key: Callable[["Session", int, int], bytes]  # (session, pid, length) -> secret
    cancel: Callable[[int, bytes], Awaitable[None]]       # a CancelRequest's (pid, secret)
    closed: Callable[["Session"], None]       # give back the slot and the key


class Session:
    """Per-client state; created by the server for each accepted connection."""

    def __init__(self, host: SessionHost) -> None:
        self.host = host
        self.loop = asyncio.get_running_loop()
        self.state = State.STARTUP
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.params: dict[str, str] = {}
        self.protocol_version = m.PROTOCOL_3_0
        self.key: tuple[int, bytes] | None = None          # what the client got from pgkeep
        self.upstream_key: tuple[int, bytes] | None = None  # what pgkeep got from the upstream
        self.txn_status = b"I"
        self.tls = False  # the client's connection is encrypted
        self._startup = StartupReader()
        self._cscan = FrameScanner(MAX_AUTH_MESSAGE)  # widened when the session is READY
        self._early = bytearray()  # client bytes after its startup packet, before READY
        self._tls_pending = bytearray()  # decrypted bytes that came before the handshake returned
        self._auth_wanted = False  # the upstream asked for an authentication message
        self._uscan = FrameScanner(1 << 31)
        self._inflight: deque = deque()
        self._held: list[bytes] = []       # upstream bytes held while a pgkeep command runs
        self._drained: asyncio.Future | None = None
        self._internal: InternalQuery | None = None
        self._startup_timer: asyncio.TimerHandle | None = None
        self._login_timer: asyncio.TimerHandle | None = None
        self._hold_paused = False      # client reads stopped: the interceptor holds enough
        self._upstream_full = False    # client reads stopped: the upstream cannot keep up
        self._last_upstream_type = 0
        self._counted = False
        self.interceptor = Interceptor(self, host.commands)

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def peer(self) -> str:
        """host:port of a TCP client, 'local' for a Unix-socket one (the audit log's)."""
        peer = self.client.get_extra_info("peername") if self.client is not None else None
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
        return "local"

    @property
    def busy(self) -> bool:
        """A statement is running: the upstream owes an answer, or pgkeep is answering."""
        return bool(self._inflight) or self.interceptor.holding

    def protocol(self) -> _ClientProtocol:
        return _ClientProtocol(self)

    def client_connected(self, transport: asyncio.Transport) -> None:
        self.client = transport
        config = self.host.config
        self._startup_timer = self.loop.call_later(config.startup_timeout, self._startup_expired)
        self._login_timer = self.loop.call_later(config.client_login_timeout, self._login_expired)

    def _startup_expired(self) -> None:
        if self.state in (State.STARTUP, State.TLS):
            self.fatal(errors.startup_timeout())

    def _login_expired(self) -> None:
        """A client not authenticated within --client-login-timeout loses its connection and its
        --max-connections slot (PgBouncer's client_login_timeout). It is told so where the
        protocol allows: not in the middle of a TLS handshake."""
        if self.state in (State.READY, State.CLOSED):
            return
        timeout = self.host.config.client_login_timeout
        _log.info("closed a client not authenticated within %gs", timeout)
        if self.state is State.TLS:
            self.close("login timeout")
        else:
            self.fatal(errors.PgError(f"canceling authentication due to timeout ({timeout:g}s)",
                                      sqlstate="08P01", severity="FATAL"))

    def _spawn(self, coro) -> asyncio.Task:
        """Run a coroutine for this session; an exception it lets out closes the session with an
        ErrorResponse (08P01 for a malformed message) instead of vanishing in the loop."""
        task = self.loop.create_task(coro)
        task.add_done_callback(self.task_done)
        return task

    def task_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if isinstance(exc, errors.PgError):
            exc.severity = "FATAL"
        elif not isinstance(exc, ConnectionError):
            _log.error("session task failed", exc_info=exc)
        if self.state is not State.CLOSED:
            self.fatal(exc)

    def fatal(self, exc: BaseException) -> None:
        """Send one ErrorResponse and close the session."""
        if self.client and not self.client.is_closing():
            fields = errors.error_fields(exc)
            self.client.write(exc.error_bytes(fields) if isinstance(exc, m.UnsupportedProtocol)
                              else m.error_response(fields))
        self.close(str(exc))

    def close(self, reason: str = "") -> None:
        if self.state is State.CLOSED:
            return
        _log.debug("session closed: %s", reason)
        self.state = State.CLOSED
        if self._fast is not None:
            self._fast.stop()
        if self._startup_timer:
            self._startup_timer.cancel()
        if self._login_timer:
            self._login_timer.cancel()
        self.interceptor.abort()
        if self.upstream and not self.upstream.is_closing():
            self.upstream.close()
        if self.client and not self.client.is_closing():
            self.client.close()
        if self._drained and not self._drained.done():
            self._drained.set_exception(ConnectionError("session closed"))
        if self._internal and not self._internal.done.done():
            self._internal.done.set_exception(ConnectionError("session closed"))
        self.host.closed(self)

    # ---- client side -----------------------------------------------------------------------

    def client_data(self, data: bytes) -> None:
        try:
            if self.state is State.READY:
                self._client_ready(data)
                if self._fast_ok:
                    self._want_fast()
            elif self.state is State.STARTUP:
                self._client_startup(data)
            elif self.state is State.AUTH:
                self._early += data
                self._pump_auth()
            elif self.state is State.TLS:
                # Decrypted bytes that the TLS layer delivers before _start_tls resumes (reading
                # plaintext stopped at the request, so nothing else can come here)
                self._tls_pending += data
            elif self.state is State.CONNECTING:
                self._early += data  # read once the upstream is there
                self._bound_early()
        except errors.PgError as e:
            self.fatal(e)
        except Exception as e:  # noqa: BLE001 - a bug must not leave the client waiting
            self.fatal(e)  # XX000, the traceback only in the log (errors.error_fields)

    def _client_startup(self, data: bytes) -> None:
        try:
            pkt = self._startup.feed(data)
        except StartupLengthError as e:
            _log.info("%s", e)  # as PostgreSQL: logged, the connection closed without a word
            self.close(str(e))
            return
        if pkt is None:
            return
        leftover = self._startup.leftover
        if isinstance(pkt, SSLRequest):
            self._startup.ssl_done = True
            ctx = self.host.client_tls
            if ctx is not None and leftover:  # no handshake with plaintext already pending
                raise _unencrypted_after("SSL request")
            self.client.write(b"N" if ctx is None else b"S")
            if ctx is None:
                if leftover:  # as PostgreSQL: answered, then refused
                    raise _unencrypted_after("SSL request")
                return
            self.state = State.TLS
            self.client.pause_reading()  # the ClientHello is the TLS layer's
            self.loop.create_task(self._start_tls(ctx))
        elif isinstance(pkt, GSSENCRequest):
            self._startup.gss_done = True
            self.client.write(b"N")
            if leftover:
                raise _unencrypted_after("GSSAPI encryption request")
        elif isinstance(pkt, DirectTLS):
            ctx = self.host.client_tls
            if ctx is None:  # as PostgreSQL without ssl=on: closed, never misread as a packet
                _log.info("refused a direct TLS connection: pgkeep has no --tls-cert")
                self.close("direct TLS refused")
                return
            self.state = State.TLS
            self.client.pause_reading()  # the rest of the ClientHello is the TLS layer's
            self.loop.create_task(self._start_tls(ctx, pkt.hello))
        elif isinstance(pkt, m.CancelRequest):
            self.loop.create_task(self.host.cancel(pkt.pid, pkt.secret))
            self.close("cancel request")
        else:
            self._startup_timer.cancel()
            if self.host.config.require_tls and not self.tls:
                raise _tls_required(pkt.params.get("user", ""))
            if not self.host.admit(self):
                raise errors.too_many_connections(self.host.config.max_connections)
            self._counted = True
            self.params = pkt.params
            self.protocol_version = pkt.protocol
            self.state = State.CONNECTING
            self._early += leftover
            self._spawn(self._connect_upstream(pkt))

    async def _start_tls(self, ctx: ssl.SSLContext, hello: bytes = b"") -> None:
        """The TLS handshake, after an SSLRequest or (direct TLS, sslnegotiation=direct) on the
        ClientHello whose first bytes `hello` were already read as a would-be startup packet."""
        raw = self.client
        handshake = self.loop.create_task(self.loop.start_tls(
            raw, raw.get_protocol(), ctx, server_side=True,
            ssl_handshake_timeout=self.host.config.startup_timeout))
        if hello:
            # start_tls pauses reading and schedules its protocol's connection_made and then
            # resume_reading; bytes fed right after those (same loop turn, before the socket is
            # polled again) reach the TLS layer first, in order.
            await asyncio.sleep(0)
            self.loop.call_soon(_feed, raw, hello)
        try:
            transport = await handshake
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as e:
            self.close(f"TLS handshake failed: {e}")
            return
        if self.state is State.CLOSED:
            transport.close()
            return
        if hello and transport.get_extra_info("ssl_object").selected_alpn_protocol() != "postgresql":
            # PostgreSQL's rule: direct TLS only with ALPN "postgresql", so a TLS client of another
            # protocol cannot be confused into talking to it
            _log.info("refused a direct TLS connection without ALPN postgresql")
            transport.close()
            self.close("direct TLS without ALPN")
            return
        self.client = transport
        self.tls = True
        self.state = State.STARTUP
        self._startup = StartupReader()
        self._startup.ssl_done = self._startup.gss_done = True
        if self._tls_pending:
            pending, self._tls_pending = bytes(self._tls_pending), bytearray()
            self.client_data(pending)

    async def _connect_upstream(self, startup: m.StartupMessage) -> None:
        addr = self.host.upstream
        proto = _UpstreamProtocol(self)
        try:
            if addr.unix_path:
                transport, _ = await self.loop.create_unix_connection(lambda: proto, addr.unix_path)
            else:
                transport, _ = await self.loop.create_connection(lambda: proto, addr.host, addr.port)
            if tls_first(addr):
                transport = await self._upstream_tls(transport, proto, addr)
        except (OSError, ConnectionError, ssl.SSLError, asyncio.TimeoutError) as e:
            self.fatal(errors.upstream_unavailable(str(e) or type(e).__name__))
            return
        if self.state is State.CLOSED:
            transport.close()
            return
        self.upstream = transport
        self.state = State.AUTH
        transport.write(startup.raw)

    async def _upstream_tls(self, transport, proto: _UpstreamProtocol, addr):
        proto.tls_answer = self.loop.create_future()
        transport.write(struct.pack("!ii", 8, m.SSL_REQUEST_CODE))
        answer = await asyncio.wait_for(proto.tls_answer, 10)
        proto.tls_answer = None
        if answer[:1] == b"S" and len(answer) == 1:
            # libpq's sslmode semantics, built once by upstream.session_ssl_context
            return await self.loop.start_tls(transport, proto, self.host.upstream_tls,
                                             server_hostname=addr.server_hostname)
        if answer[:1] == b"S":  # bytes before the handshake (CVE-2021-23222): never read them
            raise ConnectionError("received unencrypted data after SSL response")
        if tls_required(addr):
            raise ConnectionError(f"the upstream refused TLS and sslmode={addr.sslmode}")
        return transport

    def _pump_auth(self) -> None:
        """Relay the client's answer to the upstream's authentication request: the next frame
        the client sent, whatever its type, once the upstream asked for one (the upstream judges
        it, as PostgreSQL would). Every other frame the client sent early (a query pipelined
        behind its startup or password message) stays in `_early` until the session is READY,
        then goes through the interceptor in order. Each authentication message is at most
        MAX_AUTH_MESSAGE long, as PostgreSQL has it."""
        buf = self._early
        while self._auth_wanted and len(buf) >= 5:
            length = int.from_bytes(buf[1:5], "big")
            if length < 4 or length > MAX_AUTH_MESSAGE:
                _log.info("invalid message length %d during authentication", length)
                self.close("invalid message during authentication")  # PostgreSQL: no word
                return
            if len(buf) <= length:
                break
            self._auth_wanted = False
            self.upstream.write(bytes(buf[:1 + length]))
            del buf[:1 + length]
        self._bound_early()

    def _bound_early(self) -> None:
        """Stop reading a client that sent more than INSPECT_LIMIT before it is READY (PostgreSQL
        would not read it either); read on once pgkeep holds less."""
        paused = len(self._early) > INSPECT_LIMIT
        if paused != self._hold_paused:
            self._hold_paused = paused
            self._update_client_reading()

    def _client_ready(self, data: bytes) -> None:
        scan = self._cscan
        icpt = self.interceptor
        inflight = self._inflight
        if data and not icpt.holding and not icpt.has_local and not self._hold_paused:
            types = scan.pass_all(data, _BASE_INSPECT, _interesting)
            if types is not None:  # the hot path: nothing in this chunk can be pgkeep's
                for t in types:
                    if t in _EXPECTS_ANSWER:
                        inflight.append(t)
                self.upstream.write(data)
                return
        else:
            scan.feed(data)
        out: list[bytes] = []
        while True:
            holding = icpt.holding
            inspect = ALL_TYPES if holding else (_EXT_INSPECT if icpt.has_local else _BASE_INSPECT)
            ev = scan.next(inspect, not holding or icpt.skipping)
            if ev is None:
                break
            kind, raw, types = ev
            if kind == PASS:
                out.append(raw)
                for t in types:
                    if t in _EXPECTS_ANSWER:
                        inflight.append(t)
            elif kind == STREAM and holding:  # skipping to Sync: dropped, as the queue would
                scan.discard()
            elif kind == STREAM:
                if icpt.streamed(raw[0], raw):  # pgkeep's: refused (54000), never forwarded
                    scan.discard()
                    icpt.hold(raw[0], raw)
                else:
                    out.append(raw)
            elif kind == DISCARD:
                pass
            elif holding:
                icpt.hold(kind, raw)
            elif kind == _X:
                if out:
                    self.upstream.write(b"".join(out))
                self.upstream.write(raw)
                self.close("client terminated")
                return
            elif icpt.classify(kind, raw):
                out.append(raw)
                inflight.append(kind)
            else:
                icpt.hold(kind, raw)
        if out:
            self.upstream.write(out[0] if len(out) == 1 else b"".join(out))
        if icpt.holding and (scan.blocked or scan.pending + icpt.queued_bytes > INSPECT_LIMIT):
            self._hold_paused = True  # bounded: read on once the interceptor has caught up
            self._update_client_reading()

    def hold_released(self) -> None:
        """The interceptor queue shrank or stopped holding: read the client again if paused."""
        if self._hold_paused and self.state is State.READY:
            self.loop.call_soon(self._resume_client)

    def _resume_client(self) -> None:
        if not self._hold_paused or self.state is not State.READY:
            return
        if self.interceptor.holding and self.interceptor.queued_bytes > INSPECT_LIMIT:
            return
        self._hold_paused = False
        self._update_client_reading()
        self._client_ready(b"")  # what was read but not handed out (e.g. a frame to stream)

    def upstream_full(self, full: bool) -> None:
        self._upstream_full = full
        self._update_client_reading()

    def _update_client_reading(self) -> None:
        client = self.client
        if client is None or client.is_closing():
            return
        if self._hold_paused or self._upstream_full:
            client.pause_reading()
        else:
            client.resume_reading()

    def forward(self, kind: int, raw: bytes) -> None:
        """Send one client frame upstream and expect its answer (used by the interceptor)."""
        self.upstream.write(raw)
        if kind in _EXPECTS_ANSWER:
            self._inflight.append(kind)

    @property
    def upstream_synced(self) -> bool:
        """No extended-protocol batch is open upstream: everything forwarded has been answered
        and the last answer was ReadyForQuery, so a Query may be sent."""
        return not self._inflight and self._last_upstream_type == _Z

    def send_internal_query(self, sql: str, *, silent: bool = False,
                            collect: bool = False) -> InternalQuery:
        q = InternalQuery(self.loop, silent, collect)
        self._internal = q
        self._inflight.append(q)
        self.upstream.write(m.frame(b"Q", sql.encode() + b"\0"))
        return q

    async def abort_transaction(self) -> None:
        """An intercepted statement failed inside a transaction block: fail the upstream's
        transaction too, so it is aborted exactly as PostgreSQL would have it (25P02 until
        ROLLBACK) and ReadyForQuery says 'E'. The internal error is not shown to the client."""
        if self.txn_status == b"T":
            await self.send_internal_query(
                "DO $pgkeep$BEGIN RAISE EXCEPTION 'pgkeep: the transaction is aborted'; END$pgkeep$",
                silent=True).done

    async def wait_drained(self) -> None:
        """Return once the upstream has answered everything forwarded so far.

        The upstream holds back answers to extended-protocol messages until a Flush or Sync,
        and the client's own Flush may be queued behind the intercepted message: so flush."""
        if self._inflight:
            self.upstream.write(_FLUSH)
        while self._inflight:
            self._drained = self.loop.create_future()
            await self._drained

    def write(self, data: bytes) -> None:
        if self.client and not self.client.is_closing():
            self.client.write(data)

    # ---- upstream side ---------------------------------------------------------------------

    def _command_running(self) -> asyncio.Task | None:
        running = self.interceptor._running
        return running if running is not None and not running.done() else None

    def _hold_unsolicited(self, data: bytes) -> bool:
        """Upstream bytes the upstream owes no one (a NOTICE, the FATAL of a shutdown) while a
        pgkeep command runs: relayed once it has answered, so that an attached BACKUP or RESTORE
        answers its job's outcome before the client hears of the upstream's restart."""
        running = self._command_running()
        if running is None or self._inflight:
            return False
        if not self._held:
            running.add_done_callback(lambda _t: self.loop.call_soon(self._release_held))
        self._held.append(data)
        return True

    def _release_held(self) -> None:
        held, self._held = b"".join(self._held), []
        if held and self.state is not State.CLOSED:
            self.upstream_data(held)

    def upstream_data(self, data: bytes) -> None:
        if self.state is State.READY:
            if self._fast_ok:
                self._want_fast()
            if self._hold_unsolicited(data):
                return
        if self.state is not State.READY:
            if self.state is State.AUTH:
                self._upstream_auth(data)
            return
        scan = self._uscan
        inflight = self._inflight
        if self._internal is None:
            types = scan.pass_all(data, _NOTHING, None)
            if types is not None:  # the hot path: relay the chunk, count the answers in it
                self.client.write(data)
                if types:
                    self._last_upstream_type = types[-1]
                    for t in types:
                        if not inflight:
                            break
                        head = inflight[0]
                        if t != _Z and t != _ERR and head in _TERMINAL_SETS:
                            if t in _TERMINAL_SETS[head]:
                                inflight.popleft()
                                if not inflight:
                                    self._wake_drained()
                        else:
                            self._account(t, inflight)
                self.txn_status = scan.last_status
                return
        else:
            scan.feed(data)
        client = self.client
        while True:
            ev = scan.next(ALL_TYPES if self._internal is not None else _NOTHING)
            if ev is None:
                break
            kind, raw, types = ev
            if kind != PASS:
                types = (kind,)
                if kind == _Z and inflight and inflight[0] is self._internal:
                    self._finish_internal(raw[5:6])
                    continue
                internal = self._internal
                if internal is not None:
                    if kind == _ERR:
                        internal.failed = True
                        internal.error = m.decode_error_fields(raw[5:])
                    elif kind == _DATAROW and internal.rows is not None:
                        internal.rows.append(m.decode_data_row(raw[5:]))
                    if internal.silent:
                        continue
            client.write(raw)
            for t in types:
                self._last_upstream_type = t
                if inflight:
                    self._account(t, inflight)
        self.txn_status = scan.last_status

    def _account(self, t: int, inflight: deque) -> None:
        head = inflight[0]
        if t == _Z:
            while inflight:
                if inflight.popleft() in _SYNCING:
                    break
            self.interceptor.batch_ended()
        elif t == _ERR:
            if head not in _SYNCING and not isinstance(head, InternalQuery):
                # The upstream skips the rest of the batch up to Sync; so must pgkeep.
                while inflight and inflight[0] not in _SYNCING:
                    inflight.popleft()
                if not inflight:
                    self.interceptor.batch_failed()
        elif isinstance(head, int) and head in _TERMINAL_SETS and t in _TERMINAL_SETS[head]:
            inflight.popleft()
        else:
            return
        if not inflight:
            self._wake_drained()

    def _wake_drained(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _finish_internal(self, status: bytes) -> None:
        q = self._internal
        self._internal = None
        self._inflight.popleft()
        self.txn_status = status or self.txn_status
        self._uscan.last_status = self.txn_status
        if not q.done.done():
            q.done.set_result(q.failed)
        if not self._inflight and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _upstream_auth(self, data: bytes) -> None:
        scan = self._uscan
        scan.feed(data)
        while (ev := scan.next(ALL_TYPES)) is not None:
            kind, raw, _ = ev
            if kind == ord("R"):
                code = m.auth_code(raw[5:])
                if code == 10:
                    raw = m.frame(b"R", m.strip_sasl_plus(raw[5:]))
                if code not in (0, 12):  # not AuthenticationOk/SASLFinal: an answer is due
                    self.write(raw)
                    self._auth_wanted = True
                    self._pump_auth()
                    if self.state is State.CLOSED:
                        return
                    continue
            elif kind == ord("K"):
                body = raw[5:]
                pid = struct.unpack("!I", body[:4])[0]
                self.upstream_key = (pid, body[4:])
                self.key = (pid, self.host.register_key(self, pid, len(body) - 4))
                raw = m.backend_key_data(*self.key)
            elif kind == _Z:
                self.txn_status = raw[5:6]
                self._last_upstream_type = _Z
                self.state = State.READY
                if self._login_timer:
                    self._login_timer.cancel()
                self._cscan.max_size = self.host.config.max_message_size
                self._cscan.stream_over = INSPECT_LIMIT
                self.write(raw)
                early, self._early = bytes(self._early), bytearray()
                self._bound_early()
                if early:
                    self._client_ready(early)
                continue
            elif kind == _ERR:
                self.write(raw)
                self.close("authentication failed upstream")
                return
            self.write(raw)

    # ---- the compiled steady state (proxy/wire/_relay.pyx) -----------------------------------
    # While nothing the client sends may be pgkeep's, both sockets are handed to a FastRelay,
    # which forwards and counts answers with no Python per message; it hands the session back
    # (_fast_handback) at the first byte it may not decide on. Without the compiled module (or
    # with PGKEEP_PURE_PYTHON=1) `_fast_ok` is False and none of this runs.

    _fast_ok = fast_relay is not None   # False for good once unfit (TLS) or at EOF
    _fast: "fast_relay.FastRelay | None" = None
    _fast_soon = False

    def _want_fast(self) -> None:
        """Try to enter the compiled relay once this loop iteration has flushed its writes."""
        if not self._fast_soon and (self._fast is None or not self._fast.active):
            self._fast_soon = True
            self.loop.call_soon(self._enter_fast)

    def _enter_fast(self) -> None:
        self._fast_soon = False
        client, upstream, icpt = self.client, self.upstream, self.interceptor
        if (not self._fast_ok or self.state is not State.READY or icpt.holding or icpt.has_local or self._hold_paused
                or self._upstream_full or self._internal is not None or self._held
                or (self._drained is not None and not self._drained.done())
                or self._command_running() is not None
                or client.get_write_buffer_size() or upstream.get_write_buffer_size()
                or not client.is_reading() or not upstream.is_reading()):
            return
        chand, uhand = self._cscan.handoff(), self._uscan.handoff()
        if chand is None or uhand is None:
            return
        if self._fast is None:
            socks = [t.get_extra_info("socket") for t in (client, upstream)]
            if any(t.get_extra_info("ssl_object") is not None for t in (client, upstream)) or None in socks:
                self._fast_ok = False
                return
            self._fast = fast_relay.FastRelay(self)
            _log.debug("session steady state: compiled relay")
            self._fast_fds = [sock.fileno() for sock in socks]
        client.pause_reading()
        upstream.pause_reading()
        try:
            self._fast.start(*self._fast_fds, self._cscan.max_size, self._cscan.stream_over, *chand, *uhand,
                             self.txn_status[0], self._last_upstream_type)
        except OSError as e:  # out of file descriptors (dup): stay on the Python path
            _log.warning("compiled relay unavailable for a session: %s", e)
            self._fast_ok = False
            upstream.resume_reading()
            self._update_client_reading()

    def _fast_handback(self, from_client: bool, unsent: bytes, rest: bytes) -> None:
        """The compiled relay stops: `unsent` is due to the other side of `from_client`'s
        direction, `rest` (from a frame start) goes through the Python path."""
        fast = self._fast
        if not unsent and not rest:
            self._fast_ok = False  # EOF or a socket error: the transports report it, then close
        cheld, uheld = fast.stop()
        self._cscan.take_back(fast.cpass, fast.cptype, cheld)
        self._uscan.take_back(fast.upass, fast.uptype, uheld)
        self.txn_status = self._uscan.last_status = fast.txn_status
        self.upstream.resume_reading()
        self._update_client_reading()
        if unsent:
            (self.upstream if from_client else self.client).write(unsent)
        if rest:
            if from_client:
                self.client_data(rest)
            else:
                self.upstream_data(rest)

    def upstream_lost(self, exc: BaseException | None) -> None:
        if self.state is State.CLOSED:
            return
        running = self._command_running()
        if running is not None:
            # A pgkeep command (an attached BACKUP or RESTORE waiting for its job) needs no
            # upstream session: it answers first (the job's real outcome), then the session ends.
            running.add_done_callback(lambda _t: self.loop.call_soon(self.upstream_lost, exc))
            return
        if self._last_upstream_type != _ERR:
            self.fatal(errors.upstream_unavailable(str(exc) if exc else "server closed the connection"))
        else:
            self.close("upstream closed after an error")

    async def cancel(self) -> None:
        """A client's CancelRequest matched this session: stop what it is running. The upstream
        gets one only while it owes an answer: a cancel of pgkeep's own statement relayed to an
        idle backend would land, a moment later, on the client's next query."""
        self.interceptor.cancel()
        if self.upstream_key and self._inflight:
            await send_cancel(self.host.upstream, *self.upstream_key)
