"""Answers the statements pgkeep owns, in order with what the upstream answers.

Contract (PostgreSQL's own rules, applied to pgkeep's answers):
- Client messages are classified on arrival: Query and Parse by their SQL (`proxy.sql`), and
  Bind/Describe/Execute/Close by the statement or portal name they refer to. Intercepted
  messages, and every message after one, are queued and processed strictly in order; a queued
  message runs only after the upstream has answered everything forwarded before it.
- Extended protocol: after an ErrorResponse (pgkeep's or the upstream's) the rest of the batch up
  to Sync is discarded; Sync always goes upstream, so ReadyForQuery carries the upstream's
  transaction status.
- Simple Query mixing forwarded and intercepted statements: runs of forwarded statements go
  upstream as one Query each, intercepted ones run in between; the first error stops the rest,
  as in PostgreSQL. One ReadyForQuery ends it.
- A CancelRequest stops the running intercepted statement with 57014.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import errors, sql
from .commands import CommandContext, Result, describe_statement, execute_statement
from .commands.show_sources import rewrite_query
from .sql.parser import _handler as _leading_words_handler  # the parser's own dispatch
from .wire import messages as m
from .wire.values import OID, decode_text_param, encode_value

__all__ = ["Interceptor", "Channel", "INSPECT_LIMIT"]

_log = logging.getLogger("pgkeep.intercept")
_Q, _P, _B, _D, _E, _C, _S, _H = (ord(c) for c in "QPBDECSH")
_EXTENDED = frozenset((_P, _B, _D, _E, _C))
# Per-client memory bound once authenticated: a Query, Parse or Bind longer than this is not held
# (Interceptor.streamed decides on its first bytes: streamed upstream, or refused), and while the
# interceptor holds the client's messages at most about this much is queued before the session
# stops reading the client.
INSPECT_LIMIT = 1 << 20


class Channel(Protocol):
    """What the interceptor needs of its session (proxy.session.Session is one): the interceptor
    knows nothing else of it, and imports nothing of the session, the server or the app."""

    loop: asyncio.AbstractEventLoop
    params: dict[str, str]      # the client's startup parameters
    txn_status: bytes           # the last ReadyForQuery status

    @property
    def closed(self) -> bool: ...

    @property
    def upstream_synced(self) -> bool:
        """No extended-protocol batch is open upstream: a Query may be sent."""

    @property
    def peer(self) -> str:
        """The client's address, host:port ('local' for a Unix socket), for the audit log."""

    def write(self, data: bytes) -> None:
        """Send bytes to the client."""

    def forward(self, kind: int, raw: bytes) -> None:
        """Send one client frame upstream, its answer relayed to the client."""

    async def wait_drained(self) -> None:
        """Return once the upstream answered everything forwarded so far."""

    def send_internal_query(self, sql: str, *, silent: bool = False, collect: bool = False) -> Any:
        """Run `sql` upstream as a Query; the result has `done` (a future of whether it failed),
        `rows` (with collect) and `error` (the fields of its ErrorResponse)."""

    async def abort_transaction(self) -> None:
        """Fail the upstream's open transaction block, as an error inside it would."""

    def hold_released(self) -> None:
        """The held queue shrank: the session may read the client again."""

    def task_done(self, task: asyncio.Task) -> None:
        """A task of the interceptor ended: an exception it let out closes the session."""


@dataclass
class _LocalStatement:
    stmt: sql.Statement | None        # None when it failed to parse (error raised at Parse)
    error: BaseException | None
    param_types: tuple[int, ...]
    sql_text: str


@dataclass
class _LocalPortal:
    stmt: sql.Statement
    result_formats: tuple[int, ...]
    result: Result | None = None
    sent: int = 0
    columns: list = field(default_factory=list)


class Interceptor:
    def __init__(self, channel: Channel, commands: Any) -> None:
        self.s = channel
        self._commands = commands  # what proxy.commands run against (CommandContext's app)
        self._stmts: dict[str, _LocalStatement] = {}
        self._portals: dict[str, _LocalPortal] = {}
        self._queue: deque[tuple[int, bytes, Any]] = deque()
        self._worker: asyncio.Task | None = None
        self._running: asyncio.Task | None = None
        self._batch_failed = False
        self._user: str | None = None   # the last current_user the upstream reported (_identity)
        self._draining = False  # the worker is answering: later messages must queue behind it
        self._pending: Any = None  # what classify() decided for the frame it just saw
        self.queued_bytes = 0  # size of the frames in _queue (the session bounds it)

    # ---- classification (called by the session on the hot path) ---------------------------

    @property
    def has_local(self) -> bool:
        return bool(self._stmts or self._portals)

    @property
    def holding(self) -> bool:
        """Client messages must queue here: some are waiting, or the batch failed and every
        message up to the next Sync must be discarded in order."""
        return self._draining or bool(self._queue) or self._batch_failed

    @property
    def skipping(self) -> bool:
        """Only discarding the failed batch up to its Sync: a client message other than Sync
        would be dropped unanswered when its turn came, so it may be dropped as it arrives."""
        return self._batch_failed and not self._queue and not self._draining

    def classify(self, kind: int, raw: bytes) -> bool:
        """True: forward `raw` now. False: it is pgkeep's, the session must `hold()` it."""
        body = raw[5:]
        if kind == _Q:
            text = body[:-1].decode("utf-8", "replace")
            if not sql.may_intercept(text):
                self._stmts.pop("", None)
                self._portals.pop("", None)
                return True
            plan = _plan_query(text)
            if plan is None:
                self._stmts.pop("", None)
                self._portals.pop("", None)
                return True
            self._pending = plan
            return False
        if kind == _P:
            p = m.decode_parse(body)
            local = _parse_local(p)
            if local is None:
                self._stmts.pop(p.name, None)
                return True
            self._pending = (p, local)
            return False
        if kind == _B:
            b = m.decode_bind(body)
            if b.statement in self._stmts:
                self._pending = b
                return False
            self._portals.pop(b.portal, None)
            return True
        if kind in (_D, _C):
            d = m.decode_describe(body) if kind == _D else m.decode_close(body)
            names = self._stmts if d.kind == "S" else self._portals
            if d.name in names:
                self._pending = d
                return False
            return True
        if kind == _E:
            e = m.decode_execute(body)
            if e.portal in self._portals:
                self._pending = e
                return False
            return True
        return True

    def streamed(self, kind: int, head: bytes) -> bool:
        """A Query, Parse or Bind too long to hold: decide on its first bytes. False: it goes
        upstream as is, so it is the upstream's; any local statement or portal of the name it
        (re)defines is forgotten. True: its first statement is one of pgkeep's families (by its
        leading words), which pgkeep will not run unseen nor hand to the upstream (it may carry
        credentials): the session drops the frame and must `hold()` it; the answer is 54000."""
        body = head[5:]
        length = int.from_bytes(head[1:5], "big")
        if kind == _Q:
            self._stmts.pop("", None)
            self._portals.pop("", None)
            if _pgkeep_family(body.decode("utf-8", "replace")):
                self._pending = [("", _too_long(length))]
                return True
            return False
        if kind in (_P, _B):
            name, sep, rest = body.partition(b"\0")
            target = self._stmts if kind == _P else self._portals
            if not sep:
                target.clear()  # a name longer than the head: it may be any of them
                return False
            target.pop(name.decode("utf-8", "replace"), None)
            if kind == _P and _pgkeep_family(rest.decode("utf-8", "replace")):
                self._pending = (None, _LocalStatement(None, _too_long(length), (), ""))
                return True
        return False

    def hold(self, kind: int, raw: bytes) -> None:
        decided, self._pending = self._pending, None
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("hold %s (%s)", chr(kind), "pgkeep's" if decided is not None else "queued")
        self._queue.append((kind, raw, decided))
        self.queued_bytes += len(raw)
        if self._worker is None or self._worker.done():
            # Whatever the worker lets out (a malformed message queued behind an intercepted
            # one fails to decode there) reaches the session, which answers 08P01 and closes.
            self._worker = self.s.loop.create_task(self._drain())
            self._worker.add_done_callback(self.s.task_done)

    def _pop(self) -> None:
        kind, raw, _ = self._queue.popleft()
        self.queued_bytes -= len(raw)
        self.s.hold_released()

    def batch_failed(self) -> None:
        """The upstream failed a message of the current extended-protocol batch, whose Sync it
        has not seen: everything up to that Sync is discarded, pgkeep's messages included."""
        self._batch_failed = True

    def batch_ended(self) -> None:
        """A ReadyForQuery arrived: the batch it closes is over."""
        if not self._queue:
            self._batch_failed = False
            self.s.hold_released()

    # ---- processing --------------------------------------------------------------------------

    async def _drain(self) -> None:
        self._draining = True
        try:
            while self._queue:
                kind, raw, decided = self._queue[0]
                if decided is None and not self.classify(kind, raw):
                    decided, self._pending = self._pending, None
                if decided is None:
                    self._pop()
                    if self._batch_failed and kind != _S:
                        continue  # discarded up to Sync, as PostgreSQL does
                    self.s.forward(kind, raw)
                    if kind == _S:
                        # What follows belongs to the next batch: decide on it only once
                        # this Sync's ReadyForQuery has come back.
                        await self.s.wait_drained()
                        self._batch_failed = False
                    continue
                await self.s.wait_drained()
                self._pop()
                if self._batch_failed and kind in _EXTENDED:
                    continue
                try:
                    await self._answer(kind, decided)
                except asyncio.CancelledError:
                    raise
                except BaseException as e:  # noqa: BLE001 - every error becomes an ErrorResponse
                    self.s.write(m.error_response(errors.error_fields(e)))
                    if kind in _EXTENDED:
                        self._batch_failed = True
                        await self.s.abort_transaction()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the session is closing
        finally:
            self._draining = False
            self.s.hold_released()

    async def _answer(self, kind: int, decided: Any) -> None:
        if kind == _Q:
            await self._simple_query(decided)
        elif kind == _P:
            p, local = decided
            if local.error is not None:
                raise local.error  # PostgreSQL keeps no statement after a failed Parse
            if isinstance(local.stmt, sql.SelectFromShow):
                # The upstream prepares the rewritten query; everything after is plain
                # forwarding. The SHOW rows are those of Parse time (documented).
                rewritten = await self._rewrite(local.stmt)
                self._stmts.pop(p.name, None)
                self.s.forward(_P, m.encode_parse(p.name, rewritten, p.param_types))
                return
            self._stmts[p.name] = local
            self.s.write(m.PARSE_COMPLETE)
        elif kind == _B:
            self._bind(decided)
        elif kind == _D:
            self._describe(decided)
        elif kind == _E:
            await self._execute(decided)
        elif kind == _C:
            (self._stmts if decided.kind == "S" else self._portals).pop(decided.name, None)
            self.s.write(m.CLOSE_COMPLETE)

    def _bind(self, b: m.Bind) -> None:
        local = self._stmts[b.statement]
        stmt = local.stmt
        needed = sql.count_placeholders(stmt)
        if len(b.params) != needed:
            raise errors.ProtocolViolation(
                f"bind message supplies {len(b.params)} parameters, but prepared statement "
                f"\"{b.statement}\" requires {needed}")
        if needed:
            values = [decode_text_param(v, _fmt(b.param_formats, i), _at(local.param_types, i))
                      for i, v in enumerate(b.params)]
            stmt = sql.bind_placeholders(stmt, values)
        self._portals[b.portal] = _LocalPortal(stmt, b.result_formats)
        self.s.write(m.BIND_COMPLETE)

    def _describe(self, d: m.Describe) -> None:
        if d.kind == "S":
            local = self._stmts[d.name]
            n = sql.count_placeholders(local.stmt)
            oids = [(_at(local.param_types, i) or OID.TEXT) for i in range(n)]
            self.s.write(m.parameter_description(oids))
            cols = describe_statement(local.stmt)
            self.s.write(m.row_description(cols) if cols else m.NO_DATA)
        else:
            portal = self._portals[d.name]
            cols = describe_statement(portal.stmt)
            self.s.write(m.row_description(cols, portal.result_formats) if cols else m.NO_DATA)

    async def _execute(self, e: m.Execute) -> None:
        portal = self._portals[e.portal]
        if portal.result is None:
            portal.result = await self._run(portal.stmt)
        result = portal.result
        rows = result.rows
        end = len(rows) if e.max_rows <= 0 else min(len(rows), portal.sent + e.max_rows)
        out = [_data_row(row, result.columns, portal.result_formats) for row in rows[portal.sent:end]]
        count = end - portal.sent
        portal.sent = end
        if end < len(rows):
            out.append(m.PORTAL_SUSPENDED)
        else:
            out.append(m.command_complete(_tag(result, count)))
        self.s.write(b"".join(out))

    async def _simple_query(self, plan: list[tuple[str, Any]]) -> None:
        self._stmts.pop("", None)
        self._portals.pop("", None)
        try:
            # PostgreSQL parses the whole string before running any of it.
            first_error = next((item for _, item in plan if isinstance(item, BaseException)), None)
            if first_error is not None:
                raise first_error
            for text, item in plan:
                if item is None:
                    failed = await self.s.send_internal_query(text).done
                    if failed:
                        break
                    continue
                if isinstance(item, sql.SelectFromShow):
                    rewritten = await self._rewrite(item)
                    if await self.s.send_internal_query(rewritten).done:
                        break
                    continue
                result = await self._run(item)
                out = []
                if result.columns:
                    out.append(m.row_description(result.columns))
                    out.extend(_data_row(r, result.columns, ()) for r in result.rows)
                out.append(m.command_complete(_tag(result, len(result.rows))))
                self.s.write(b"".join(out))
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - every error ends in ErrorResponse + ReadyForQuery
            if self.s.closed:
                raise
            self.s.write(m.error_response(errors.error_fields(e)))
            await self.s.abort_transaction()
        self.s.write(m.ready_for_query(self.s.txn_status))

    def _context(self) -> CommandContext:
        return CommandContext(self._commands, user=self.s.params.get("user", ""),
                              database=self.s.params.get("database") or self.s.params.get("user", ""),
                              txn_status=self.s.txn_status, notify=self._notice,
                              client_query=self._client_query,
                              connected=lambda: not self.s.closed,
                              client_addr=self.s.peer, identity=self._identity)

    async def _identity(self) -> str:
        """The upstream's current_user, asked on the client's own connection, so SET ROLE and
        SET SESSION AUTHORIZATION count as PostgreSQL counts them and no name the upstream did
        not authenticate is trusted. Asked only where a Query may go upstream: not inside an
        extended-protocol batch the client left open (no Sync yet), where PostgreSQL would
        refuse it. There the last answer stands (at first the authenticated user): a role this
        session was in, which it may become again at will, so nothing is gained by it."""
        if self.s.upstream_synced:
            rows = await self._client_query(_CURRENT_USER)
            if not rows or rows[0][0] is None:
                raise errors.PgError("could not determine the current user", sqlstate="28000")
            self._user = bytes.fromhex(rows[0][0]).decode("utf-8")
        return self._user or self.s.params.get("user", "")

    async def _client_query(self, text: str) -> list[tuple]:
        """Rows of a query run upstream as the client (its privileges), not shown to it."""
        q = self.s.send_internal_query(text, collect=True)
        if await q.done:
            f = q.error or {}
            raise errors.PgError(f.get("M", "query failed"), sqlstate=f.get("C", "XX000"),
                                 detail=f.get("D"), hint=f.get("H"))
        return q.rows

    async def _rewrite(self, node: sql.SelectFromShow) -> str:
        return await self._guarded(rewrite_query(self._context(), node))

    async def _run(self, stmt: sql.Statement) -> Result:
        if self.s.txn_status == b"E":
            raise errors.PgError("current transaction is aborted, commands ignored until end of "
                                 "transaction block", sqlstate="25P02")
        return await self._guarded(execute_statement(self._context(), stmt))

    async def _guarded(self, coro):
        """Run one command as its own task, so a CancelRequest can stop it with 57014."""
        self._running = self.s.loop.create_task(coro)
        try:
            return await self._running
        except asyncio.CancelledError:
            if self.s.closed:
                raise
            raise errors.QueryCanceled("canceling statement due to user request") from None
        finally:
            self._running = None

    def _notice(self, message: str, **kw: Any) -> None:
        self.s.write(m.notice_response(message, **kw))

    # ---- cancellation and teardown ---------------------------------------------------------

    def cancel(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.cancel()

    def abort(self) -> None:
        self.cancel()
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()


# current_user as UTF-8 hex: the answer comes in the client's encoding, which need not be UTF-8,
# and a role name must arrive byte for byte.
_CURRENT_USER = "SELECT pg_catalog.encode(pg_catalog.convert_to(current_user, 'UTF8'), 'hex')"


def _too_long(length: int) -> errors.PgError:
    return errors.PgError(
        f"statement too long: {length} bytes, pgkeep reads at most {INSPECT_LIMIT} bytes of "
        f"its own statements", sqlstate="54000")


def _pgkeep_family(text: str) -> bool:
    """Do the leading words of `text` name one of pgkeep's statement families? Only those words
    are read, so `text` may be cut anywhere (an unterminated literal is fine)."""
    try:
        return _leading_words_handler(text) is not None
    except errors.PgError:
        return False


def _fmt(formats: tuple[int, ...], i: int) -> int:
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else formats[i]


def _at(types: tuple[int, ...], i: int) -> int:
    return types[i] if i < len(types) else 0


def _data_row(row, columns, formats) -> bytes:
    return m.data_row(encode_value(v, c.type_oid, _fmt(formats, i) == 1)
                      for i, (v, c) in enumerate(zip(row, columns)))


def _tag(result: Result, count: int) -> str:
    if result.tag:
        return result.tag
    return f"SELECT {count}" if result.columns else "OK"


def _plan_query(text: str) -> list[tuple[str, Any]] | None:
    """Split a simple Query into runs to forward (None) and statements pgkeep answers.
    None when nothing in it is pgkeep's, so the Query is forwarded unchanged."""
    spans = sql.split_statements(text)
    plan: list[tuple[str, Any]] = []
    run_start = run_end = None
    ours = False
    for start, end in spans:
        piece = text[start:end]
        try:
            stmt = sql.parse_statement(piece)
        except errors.PgError as e:
            if e.position is not None:
                e.position += len(text[:start])
            stmt = e
        if stmt is None:
            if run_start is None:
                run_start = start
            run_end = end
            continue
        ours = True
        if run_start is not None:
            plan.append((text[run_start:run_end], None))
            run_start = None
        plan.append((piece, stmt))
    if not ours:
        return None
    if run_start is not None:
        plan.append((text[run_start:run_end], None))
    return plan


def _parse_local(p: m.Parse) -> _LocalStatement | None:
    if not sql.may_intercept(p.sql):
        return None
    spans = sql.split_statements(p.sql)
    if len(spans) != 1:
        if any(_safe_parse(p.sql[a:b]) is not None for a, b in spans):
            return _LocalStatement(None, errors.SyntaxError_(
                "cannot insert multiple commands into a prepared statement"), p.param_types, p.sql)
        return None
    a, b = spans[0]
    try:
        stmt = sql.parse_statement(p.sql[a:b])
    except errors.PgError as e:
        if e.position is not None:
            e.position += a
        return _LocalStatement(None, e, p.param_types, p.sql)
    if stmt is None:
        return None
    return _LocalStatement(stmt, None, p.param_types, p.sql)


def _safe_parse(text: str):
    try:
        return sql.parse_statement(text)
    except errors.PgError as e:
        return e
