"""TLS between clients and pgkeep: SSLRequest answered 'S' with a certificate and 'N' without,
verify-full against the certificate, no plaintext accepted after SSLRequest (CVE-2021-23214
class), GSSENCRequest answered 'N', direct TLS (ALPN "postgresql") served with a certificate and
refused cleanly without one, and --require-tls."""
from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import psycopg
import pytest

from tests.support.pgkeep import PgkeepProcess
from tests.support.tls import make_cert

from .helpers import assert_alive, psql as _psql
from .rawpg import (RawConn, cancel_request, error_fields, gssenc_request, query, read_all_until_eof,
                    ssl_request, startup_packet)

pytestmark = pytest.mark.timeout(60)

AUTH_OK = b"R\0\0\0\x08\0\0\0\0"


def _tls_psql() -> str:
    """The embedded psql is built without SSL: use Debian's (linked with the system libpq)."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"), reverse=True):
        return str(candidate)
    pytest.fail("no psql built with SSL support: apt-get install postgresql-client")


def psql(*args, **kw):
    return _psql(*args, psql_bin=_tls_psql(), **kw)


@pytest.fixture(scope="module")
def cert(workdir):
    return make_cert(workdir / "tls-cert")


@pytest.fixture(scope="module")
def other_cert(workdir):
    return make_cert(workdir / "tls-other-cert")


@pytest.fixture(scope="module")
def tls_pgkeep(workdir, pg18, cert):
    cert_path, key_path = cert
    proc = PgkeepProcess(workdir / "pgkeep-tls", pg18.dsn(),
                         args=["--tls-cert", str(cert_path), "--tls-key", str(key_path)]).start()
    yield proc
    proc.stop()


def _info(proc, **extra) -> str:
    parts = {"host": "127.0.0.1", "port": proc.port, "user": "postgres", "dbname": "postgres",
             "connect_timeout": 10, **extra}
    return " ".join(f"{k}={v}" for k, v in parts.items())


def _works(proc, info: str) -> None:
    """A plain pgkeep client still gets served."""
    with psycopg.connect(info, autocommit=True) as conn:
        assert conn.execute("SELECT 'still serving'").fetchone() == ("still serving",)
    assert_alive(proc)


# ---- with a certificate ----------------------------------------------------------------------

def test_psql_sslmode_require(tls_pgkeep):
    out = psql(_info(tls_pgkeep, sslmode="require"), "-qAt", "-c", "SELECT 6*7").stdout
    assert out.strip() == "42"


def test_psql_sslmode_require_reports_ssl(tls_pgkeep):
    out = psql(_info(tls_pgkeep, sslmode="require"), "-c", r"\conninfo").stdout
    assert "TLSv1.3" in out or "TLSv1.2" in out


def test_psycopg_sslmode_require(tls_pgkeep):
    with psycopg.connect(_info(tls_pgkeep, sslmode="require"), autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT %s::int + 1", (41,)).fetchone() == (42,)
        # big results over TLS
        assert conn.execute("SELECT length(string_agg(md5(i::text), '')) "
                            "FROM generate_series(1, 20000) i").fetchone() == (640000,)
        rows = conn.execute("SELECT repeat('x', 100000) FROM generate_series(1, 20)").fetchall()
        assert len(rows) == 20 and all(len(r[0]) == 100000 for r in rows)


def test_verify_full(tls_pgkeep, cert):
    info = _info(tls_pgkeep, host="localhost", hostaddr="127.0.0.1", sslmode="verify-full",
                 sslrootcert=cert[0])
    with psycopg.connect(info, autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    out = psql(info, "-qAt", "-c", "SELECT 'verified'").stdout
    assert out.strip() == "verified"


def test_verify_full_with_wrong_root_cert_fails(tls_pgkeep, other_cert):
    info = _info(tls_pgkeep, host="localhost", hostaddr="127.0.0.1", sslmode="verify-full",
                 sslrootcert=other_cert[0])
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(info)
    assert "certificate verify failed" in str(err.value)
    r = psql(info, "-c", "SELECT 1", check=False)
    assert r.returncode == 2 and "certificate verify failed" in r.stderr
    _works(tls_pgkeep, _info(tls_pgkeep, sslmode="require"))


def test_verify_full_with_wrong_host_name_fails(tls_pgkeep, cert):
    """The certificate names localhost and 127.0.0.1 only."""
    info = _info(tls_pgkeep, host="not-localhost.invalid", hostaddr="127.0.0.1",
                 sslmode="verify-full", sslrootcert=cert[0])
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(info)
    assert "does not match host name" in str(err.value)


def test_plaintext_still_allowed_with_certificate(tls_pgkeep):
    with psycopg.connect(_info(tls_pgkeep, sslmode="disable"), autocommit=True) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_raw_ssl_request_answered_s_then_tls_session(tls_pgkeep, cert):
    sock = socket.create_connection(("127.0.0.1", tls_pgkeep.port), timeout=10)
    sock.sendall(ssl_request())
    assert sock.recv(1) == b"S"
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
        tls.sendall(startup_packet())
        data = b""
        while not data.endswith(b"Z\0\0\0\x05I"):
            chunk = tls.recv(65536)
            assert chunk, data
            data += chunk
        assert data.startswith(AUTH_OK)


# ---- the CVE-2021-23214 class: bytes after SSLRequest before the handshake ------------------

@pytest.mark.parametrize("which", ["with_cert", "without_cert"])
def test_plaintext_in_same_packet_as_ssl_request_is_refused(which, tls_pgkeep, pgkeep):
    proc = tls_pgkeep if which == "with_cert" else pgkeep
    sock = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
    try:
        # SSLRequest, a startup packet and a query, all in one write
        sock.sendall(ssl_request() + startup_packet() + query("SELECT 'injected'"))
        data = read_all_until_eof(sock, timeout=5)
    finally:
        sock.close()
    assert b"injected" not in data
    assert AUTH_OK not in data
    assert not data.startswith(b"S"), data
    if which == "without_cert":  # as PostgreSQL without TLS: 'N', then the refusal
        assert data[:1] == b"N", data
        data = data[1:]
    # pgkeep answers with a protocol-violation ErrorResponse (or just closes)
    if data:
        assert data[:1] == b"E", data
        fields = error_fields(data[5:])
        assert fields["C"] == "08P01", fields
    assert_alive(proc)
    _works(proc, _info(proc, sslmode="disable"))


def test_plaintext_after_s_answer_is_never_served(tls_pgkeep):
    """After 'S' the server expects a TLS handshake: a plaintext startup must not get in."""
    sock = socket.create_connection(("127.0.0.1", tls_pgkeep.port), timeout=10)
    try:
        sock.sendall(ssl_request())
        assert sock.recv(1) == b"S"
        sock.sendall(startup_packet() + query("SELECT 'injected'"))
        data = read_all_until_eof(sock, timeout=5)
    finally:
        sock.close()
    assert AUTH_OK not in data and b"injected" not in data
    assert_alive(tls_pgkeep)
    _works(tls_pgkeep, _info(tls_pgkeep, sslmode="require"))


# ---- without a certificate -------------------------------------------------------------------

def test_no_cert_require_fails_prefer_works(pgkeep):
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(_info(pgkeep, sslmode="require"))
    assert "server does not support SSL" in str(err.value)
    r = psql(_info(pgkeep, sslmode="require"), "-c", "SELECT 1", check=False)
    assert r.returncode == 2 and "server does not support SSL" in r.stderr
    with psycopg.connect(_info(pgkeep, sslmode="prefer"), autocommit=True) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 2").fetchone() == (2,)
    assert psql(_info(pgkeep, sslmode="prefer"), "-qAt", "-c", "SELECT 3").stdout.strip() == "3"


def test_no_cert_raw_ssl_request_answered_n_then_startup(pgkeep):
    with RawConn(pgkeep.port) as c:
        c.send(ssl_request())
        assert c.read_exact(1) == b"N"
        c.login()
        assert c.scalar("SELECT 'after N'") == "after N"


# ---- GSSENCRequest ---------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["with_cert", "without_cert"])
def test_gssenc_request_answered_n_then_startup(which, tls_pgkeep, pgkeep):
    proc = tls_pgkeep if which == "with_cert" else pgkeep
    with RawConn(proc.port) as c:
        c.send(gssenc_request())
        assert c.read_exact(1) == b"N"
        c.login()
        assert c.key is not None
        assert c.scalar("SELECT 'after gss'") == "after gss"


def test_gssenc_then_ssl_request(tls_pgkeep):
    """libpq with gssencmode=prefer: GSSENCRequest, 'N', then SSLRequest, 'S', then TLS."""
    with psycopg.connect(_info(tls_pgkeep, sslmode="require", gssencmode="prefer"),
                         autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


# ---- direct TLS (no SSLRequest) --------------------------------------------------------------

def test_direct_tls_refused_cleanly_without_a_certificate(pgkeep):
    """Without --tls-cert a ClientHello is never misread as a packet: the connection closes."""
    if psycopg.pq.version() < 170000:
        pytest.fail("libpq 17+ is needed for sslnegotiation=direct")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_info(pgkeep, sslmode="require", sslnegotiation="direct", connect_timeout=5))
    assert_alive(pgkeep)
    _works(pgkeep, _info(pgkeep, sslmode="disable"))


@pytest.mark.parametrize("mode", ["require", "verify-full"])
def test_direct_tls_served_by_libpq(mode, tls_pgkeep, cert):
    """sslnegotiation=direct (libpq 17+): TLS from the first byte, ALPN "postgresql"."""
    if psycopg.pq.version() < 170000:
        pytest.fail("libpq 17+ is needed for sslnegotiation=direct")
    info = _info(tls_pgkeep, sslmode=mode, sslnegotiation="direct", host="localhost",
                 hostaddr="127.0.0.1", sslrootcert=cert[0])
    with psycopg.connect(info, autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 'direct'").fetchone() == ("direct",)
    assert_alive(tls_pgkeep)


def test_direct_tls_needs_alpn(tls_pgkeep):
    """As PostgreSQL: a direct TLS client that does not negotiate ALPN "postgresql" is closed
    after the handshake, before anything is read from it."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sock = socket.create_connection(("127.0.0.1", tls_pgkeep.port), timeout=5)
    try:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(startup_packet())
            assert tls.recv(1) == b""
    except (ssl.SSLError, ConnectionError):
        pass
    finally:
        sock.close()
    assert_alive(tls_pgkeep)


def test_direct_tls_raw_client_hello_with_alpn(tls_pgkeep):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["postgresql"])
    with socket.create_connection(("127.0.0.1", tls_pgkeep.port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "postgresql"
            tls.sendall(startup_packet())
            data = b""
            while not data.endswith(b"Z\0\0\0\x05I"):
                chunk = tls.recv(65536)
                assert chunk, data
                data += chunk
            assert data.startswith(AUTH_OK)


def test_require_tls_serves_direct_tls(require_tls_pgkeep):
    with psycopg.connect(_info(require_tls_pgkeep, sslmode="require", sslnegotiation="direct"),
                         autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use and conn.execute("SELECT 1").fetchone() == (1,)


def test_client_hello_bytes_never_read_as_startup(pgkeep):
    """A ClientHello's first bytes (0x16 0x03 ...) must not be parsed as a length word and
    answered with a startup error about a huge packet: the connection just closes."""
    hello = bytes([0x16, 0x03, 0x01, 0x02, 0x00]) + b"\x01" + b"\0" * 515
    sock = socket.create_connection(("127.0.0.1", pgkeep.port), timeout=5)
    try:
        sock.sendall(hello)
        data = read_all_until_eof(sock, timeout=5)
    finally:
        sock.close()
    assert b"startup packet" not in data
    assert AUTH_OK not in data
    assert_alive(pgkeep)


def test_many_tls_clients_at_once(tls_pgkeep):
    errors = []

    def worker(n):
        try:
            with psycopg.connect(_info(tls_pgkeep, sslmode="require"), autocommit=True) as conn:
                for i in range(20):
                    assert conn.execute("SELECT %s::int", (n * 100 + i,)).fetchone() == (n * 100 + i,)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []



# ---- --require-tls ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def require_tls_pgkeep(workdir, pg18, cert):
    cert_path, key_path = cert
    proc = PgkeepProcess(workdir / "pgkeep-require-tls", pg18.dsn(),
                         args=["--tls-cert", str(cert_path), "--tls-key", str(key_path),
                               "--require-tls"]).start()
    yield proc
    proc.stop()


def test_require_tls_refuses_a_plaintext_startup(require_tls_pgkeep):
    with RawConn(require_tls_pgkeep.port) as c:
        c.send(startup_packet())
        data = read_all_until_eof(c.sock)
    assert data[:1] == b"E", data
    fields = error_fields(data[5:])
    assert (fields["S"], fields["C"]) == ("FATAL", "28000")
    assert "requires TLS" in fields["M"] and "sslmode=require" in fields["H"]
    with pytest.raises(psycopg.OperationalError, match="requires TLS"):
        psycopg.connect(_info(require_tls_pgkeep, sslmode="disable"))
    assert_alive(require_tls_pgkeep)


@pytest.mark.parametrize("sslmode", ["prefer", "require"])
def test_require_tls_serves_tls_clients(require_tls_pgkeep, sslmode):
    with psycopg.connect(_info(require_tls_pgkeep, sslmode=sslmode), autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 'over TLS'").fetchone() == ("over TLS",)


def test_require_tls_still_takes_cancel_requests(require_tls_pgkeep):
    """A CancelRequest carries no query and no credentials: PostgreSQL takes it without TLS, so
    does pgkeep (libpq sends it the way the session was opened)."""
    with psycopg.connect(_info(require_tls_pgkeep, sslmode="require"), autocommit=True) as conn:
        t = threading.Timer(0.5, lambda: conn.cancel_safe(timeout=5))
        t.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(20)")
        t.join()
        with RawConn(require_tls_pgkeep.port) as raw:  # and one in plaintext: no answer, no harm
            raw.send(cancel_request(conn.info.backend_pid, b"\0\0\0\0"))
            assert read_all_until_eof(raw.sock) == b""
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_require_tls_needs_a_certificate(workdir, pg18):
    proc = PgkeepProcess(workdir / "pgkeep-require-tls-nocert", pg18.dsn(), args=["--require-tls"])
    with pytest.raises(RuntimeError, match="--require-tls needs --tls-cert and --tls-key"):
        proc.start()


def test_require_tls_set_by_flag_environment_or_file(tmp_path, cert):
    import argparse

    from proxy.config import ConfigError, add_serve_arguments, load_config
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    base = ["--tls-cert", str(cert[0]), "--tls-key", str(cert[1])]
    toml = tmp_path / "require.toml"
    toml.write_text("require_tls = true\n")
    assert load_config(parser.parse_args(base + ["--require-tls"]), {}).require_tls is True
    assert load_config(parser.parse_args(base), {"PGKEEP_REQUIRE_TLS": "on"}).require_tls is True
    assert load_config(parser.parse_args(base), {"PGKEEP_REQUIRE_TLS": "0"}).require_tls is False
    assert load_config(parser.parse_args(base + ["--config", str(toml)]), {}).require_tls is True
    assert load_config(parser.parse_args(base), {}).require_tls is False
    with pytest.raises(ConfigError, match="require_tls"):
        load_config(parser.parse_args(base), {"PGKEEP_REQUIRE_TLS": "maybe"})
