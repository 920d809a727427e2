"""Where the upstream PostgreSQL is, and how pgkeep reaches it: connect (TCP or Unix socket,
TLS as libpq would) and send a CancelRequest.

The upstream DSN's user, password and database are pgkeep's own (catalog, backups); a client
session connects with the client's own startup packet, so pgkeep never needs the client's password.

TLS contract: `ssl_context` is the one place that turns the DSN's ssl* parameters into an
SSLContext, with libpq's semantics (docs/ARCHITECTURE.md, "Upstream TLS"); the catalog pool,
the engine's connections (`asyncpg_connect`) and every client session's relayed connection use
what it returns, so no upstream connection is ever less verified than libpq would make it.
"""
from __future__ import annotations

import asyncio
import os
import ssl
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from .wire.messages import CANCEL_REQUEST_CODE

__all__ = ["UpstreamAddress", "UpstreamTLSError", "parse_upstream", "ssl_context", "session_ssl_context",
           "tls_first", "tls_required", "asyncpg_connect", "send_cancel"]

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# DSN parameters pgkeep interprets itself; asyncpg gets the DSN without them plus the context.
_TLS_PARAMS = frozenset(("sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslcrl",
                         "sslcrldir", "sslsni", "ssl_min_protocol_version", "ssl_max_protocol_version",
                         "sslnegotiation", "sslcertmode"))
_TLS_VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
                 "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class UpstreamTLSError(Exception):
    """The upstream's TLS settings cannot be honoured (a missing root certificate, a bad key)."""


@dataclass(frozen=True)
class UpstreamAddress:
    host: str
    port: int
    unix_dir: str | None   # directory holding .s.PGSQL.<port>, when host is a path
    sslmode: str           # one of SSLMODES, as libpq
    user: str
    password: str | None
    database: str
    dsn: str
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    sslpassword: str | None = None
    sslcrl: str | None = None
    sslsni: bool = True
    ssl_min_protocol_version: str = "TLSv1.2"
    ssl_max_protocol_version: str | None = None

    @property
    def unix_path(self) -> str | None:
        return f"{self.unix_dir}/.s.PGSQL.{self.port}" if self.unix_dir else None

    def describe(self) -> str:
        return self.unix_path or f"{self.host}:{self.port}"

    @property
    def server_hostname(self) -> str | None:
        """The name verify-full checks and SNI carries (sslsni=0 sends none unless verify-full
        needs it to check; an IP address is never sent as SNI)."""
        if self.unix_dir or not (self.sslsni or self.sslmode == "verify-full"):
            return None
        return self.host

    @property
    def asyncpg_dsn(self) -> str:
        """The DSN without the ssl* parameters pgkeep handles itself."""
        u = urlsplit(self.dsn)
        query = [(k, v) for k, v in parse_qsl(u.query, keep_blank_values=True) if k not in _TLS_PARAMS]
        return urlunsplit(u._replace(query=urlencode(query)))


def parse_upstream(dsn: str) -> UpstreamAddress:
    u = urlsplit(dsn)
    q = dict(parse_qsl(u.query, keep_blank_values=True))
    host = unquote(u.hostname or "") or q.get("host", "")
    port = u.port or int(q.get("port", 5432))
    unix_dir = host if host.startswith("/") else None
    sslrootcert = q.get("sslrootcert") or os.environ.get("PGSSLROOTCERT") or None
    default_mode = "disable" if unix_dir else ("verify-full" if sslrootcert == "system" else "prefer")
    sslmode = q.get("sslmode") or os.environ.get("PGSSLMODE") or default_mode
    if sslmode not in SSLMODES:
        raise UpstreamTLSError(f"invalid sslmode value: {sslmode!r} (one of {', '.join(SSLMODES)})")
    if sslrootcert == "system" and sslmode != "verify-full" and not unix_dir:
        raise UpstreamTLSError(f'weak sslmode "{sslmode}" may not be used with sslrootcert=system '
                               '(use "verify-full")')
    for key in ("ssl_min_protocol_version", "ssl_max_protocol_version"):
        if q.get(key) and q[key] not in _TLS_VERSIONS:
            raise UpstreamTLSError(f"invalid {key} value: {q[key]!r}")
    return UpstreamAddress(host=host or "127.0.0.1", port=port, unix_dir=unix_dir, sslmode=sslmode,
                           user=unquote(u.username or "") or q.get("user", "postgres"),
                           password=unquote(u.password) if u.password else q.get("password"),
                           database=unquote(u.path.lstrip("/")) or q.get("dbname", "postgres"),
                           dsn=dsn, sslrootcert=sslrootcert,
                           sslcert=q.get("sslcert") or os.environ.get("PGSSLCERT") or None,
                           sslkey=q.get("sslkey") or os.environ.get("PGSSLKEY") or None,
                           sslpassword=q.get("sslpassword") or None,
                           sslcrl=q.get("sslcrl") or os.environ.get("PGSSLCRL") or None,
                           sslsni=q.get("sslsni", "1") != "0",
                           ssl_min_protocol_version=q.get("ssl_min_protocol_version") or "TLSv1.2",
                           ssl_max_protocol_version=q.get("ssl_max_protocol_version") or None)


# ---- libpq's sslmode semantics ------------------------------------------------------------------

def tls_first(addr: UpstreamAddress) -> bool:
    """Whether the first attempt asks for TLS (allow tries plaintext first; sockets never TLS)."""
    return addr.unix_dir is None and addr.sslmode not in ("disable", "allow")


def tls_required(addr: UpstreamAddress) -> bool:
    """Whether a connection without TLS must be refused (an 'N' answer is an error)."""
    return addr.unix_dir is None and addr.sslmode in ("require", "verify-ca", "verify-full")


def _dot_postgresql(name: str) -> Path:
    return Path(os.path.expanduser("~")) / ".postgresql" / name


def ssl_context(addr: UpstreamAddress, *, client_cert: bool = True) -> ssl.SSLContext | None:
    """The client-side context libpq would build for this DSN; None when TLS is never used.

    verify-ca/verify-full check the chain against sslrootcert (default ~/.postgresql/root.crt; an
    error if it is missing), verify-full also the host name; require verifies like verify-ca when a
    root certificate file exists (libpq's backward-compatible rule), else checks nothing; prefer and
    allow follow require's rule. sslrootcert=system uses the platform's trust store.
    `client_cert=False` leaves out sslcert/sslkey (see session_ssl_context)."""
    if addr.unix_dir is not None or addr.sslmode == "disable":
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = _TLS_VERSIONS[addr.ssl_min_protocol_version]
    if addr.ssl_max_protocol_version:
        ctx.maximum_version = _TLS_VERSIONS[addr.ssl_max_protocol_version]
    _load_roots(ctx, addr)
    if addr.sslmode == "verify-full":
        ctx.check_hostname = True
    if client_cert:
        _load_client_cert(ctx, addr)
    return ctx


def session_ssl_context(addr: UpstreamAddress) -> ssl.SSLContext | None:
    """The context of a client session's relayed connection: the server is verified exactly as
    for pgkeep's own connections, but pgkeep's client certificate is not presented. The session
    logs in as whatever user the client names; lending it pgkeep's certificate would let anyone
    who reaches pgkeep log in as pgkeep's user wherever pg_hba.conf says `cert`."""
    return ssl_context(addr, client_cert=False)


def _load_roots(ctx: ssl.SSLContext, addr: UpstreamAddress) -> None:
    verify = addr.sslmode in ("verify-ca", "verify-full")
    if addr.sslrootcert == "system":
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return
    path = Path(addr.sslrootcert) if addr.sslrootcert else _dot_postgresql("root.crt")
    if not path.is_file():
        if verify:
            raise UpstreamTLSError(
                f'root certificate file "{path}" does not exist; either provide the file, use the '
                f"system's trusted roots with sslrootcert=system, or change sslmode to disable "
                f"server certificate verification")
        return
    try:
        ctx.load_verify_locations(cafile=str(path))
        crl = Path(addr.sslcrl) if addr.sslcrl else _dot_postgresql("root.crl")
        if addr.sslcrl or crl.is_file():
            ctx.load_verify_locations(cafile=str(crl))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
    except (OSError, ssl.SSLError) as e:
        raise UpstreamTLSError(f'could not read root certificate file "{path}": {e}') from None
    ctx.verify_mode = ssl.CERT_REQUIRED


def _load_client_cert(ctx: ssl.SSLContext, addr: UpstreamAddress) -> None:
    cert = Path(addr.sslcert) if addr.sslcert else _dot_postgresql("postgresql.crt")
    key = Path(addr.sslkey) if addr.sslkey else _dot_postgresql("postgresql.key")
    if not cert.is_file():
        if addr.sslcert:
            raise UpstreamTLSError(f'could not open certificate file "{cert}"')
        return
    _check_key_permissions(key)
    try:
        ctx.load_cert_chain(str(cert), str(key), password=addr.sslpassword or "")
    except (OSError, ssl.SSLError) as e:
        raise UpstreamTLSError(f'could not load client certificate "{cert}" and key "{key}": '
                               f"{type(e).__name__}") from None


def _check_key_permissions(key: Path) -> None:
    """libpq's rule: the key is u=rw (0600) or less if owned by us, u=rw,g=r (0640) if by root."""
    try:
        st = key.stat()
    except OSError:
        raise UpstreamTLSError(f'certificate present, but not private key file "{key}"') from None
    if not stat.S_ISREG(st.st_mode):
        raise UpstreamTLSError(f'private key file "{key}" is not a regular file')
    if st.st_uid == os.geteuid():
        allowed = 0o600
    elif st.st_uid == 0:
        allowed = 0o640
    else:
        return
    if st.st_mode & 0o777 & ~allowed:
        raise UpstreamTLSError(f'private key file "{key}" has group or world access; file must have '
                               "permissions u=rw (0600) or less if owned by the current user, or "
                               "permissions u=rw,g=r (0640) or less if owned by root")


# ---- pgkeep's own asyncpg connections -----------------------------------------------------------

def _is_tls_refusal(e: BaseException) -> bool:
    return isinstance(e, (ssl.SSLError, ConnectionError)) and (
        isinstance(e, ssl.SSLError) or "SSL" in str(e))


def asyncpg_connector(addr: UpstreamAddress):
    """An asyncpg `connect` replacement for the catalog pool and the engine: the DSN's TLS
    parameters applied through ssl_context, with libpq's allow/prefer fallbacks."""
    ctx = ssl_context(addr)

    async def connect(dsn: str | None = None, **kw: Any):
        import asyncpg
        dsn = addr.asyncpg_dsn
        if ctx is None:
            return await asyncpg.connect(dsn, ssl=False, **kw)
        if addr.sslmode == "allow":
            try:
                return await asyncpg.connect(dsn, ssl=False, **kw)
            except (OSError, asyncpg.PostgresError):
                return await asyncpg.connect(dsn, ssl=ctx, **kw)
        if addr.sslmode == "prefer":
            try:
                return await asyncpg.connect(dsn, ssl=ctx, **kw)
            except (OSError, ssl.SSLError) as e:
                if not _is_tls_refusal(e):
                    raise
                return await asyncpg.connect(dsn, ssl=False, **kw)
        return await asyncpg.connect(dsn, ssl=ctx, **kw)
    return connect


async def asyncpg_connect(addr: UpstreamAddress, **kw: Any):
    """One asyncpg connection to the upstream, TLS per the DSN (see asyncpg_connector)."""
    return await asyncpg_connector(addr)(**kw)


async def send_cancel(addr: UpstreamAddress, pid: int, secret: bytes) -> None:
    """Deliver a CancelRequest for the upstream backend (pid, secret); best effort, as libpq
    (which sends it in plaintext too: it holds only the key, no query or result)."""
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
