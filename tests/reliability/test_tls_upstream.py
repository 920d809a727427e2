"""Issue 12, point 8: every upstream connection pgkeep makes (catalog pool, engine, each client
session) verifies the upstream's certificate exactly as libpq does with the same --upstream
sslmode/sslrootcert/sslcert/sslkey. On 3ca83b6 a client session mapped verify-ca/verify-full to
`require` and used CERT_NONE: a man in the middle read every query and result.

The man in the middle is tests/support/tls.InterceptingRelay: it answers the TLS upgrade with a
certificate of its choosing and relays, decrypted, to the real PostgreSQL. The certificates:
`good` (trusted CA, names 127.0.0.1), `rogue` (right names, a CA the client does not trust),
`wrongname` (trusted CA, a certificate for another host); `downgrade` is no certificate: the
relay answers the TLS request with 'N' and reads the plaintext that follows."""
from __future__ import annotations

import os
import pwd
import socket

import psycopg
import pytest

from proxy.pgcluster import PgCluster, debian_bin_dir
from tests.e2e.rawpg import error_fields, query, read_all_until_eof, startup_packet
from tests.support.pgkeep import PgkeepProcess
from tests.support.ports import reserve_port
from tests.support.tls import InterceptingRelay, make_ca

pytestmark = pytest.mark.timeout(120)

# sslmode -> the certificates libpq refuses with it
MODES = {"verify-full": {"rogue", "wrongname", "downgrade"}, "verify-ca": {"rogue", "downgrade"},
         "require": {"rogue", "downgrade"}}   # require + an sslrootcert behaves as verify-ca (libpq)
REFUSALS = ("certificate verify failed", "does not match host name", "does not support SSL",
            "refused TLS", "rejected SSL upgrade")


@pytest.fixture(scope="module")
def certs(workdir):
    ca = make_ca(workdir / "tls-upstream-ca")
    rogue_ca = make_ca(workdir / "tls-upstream-rogue-ca", "rogue CA")
    return {"ca": ca,
            "good": ca.issue("good", "127.0.0.1", ["127.0.0.1", "localhost"]),
            "wrongname": ca.issue("wrongname", "db.wrong.invalid", ["db.wrong.invalid"]),
            "rogue": rogue_ca.issue("rogue", "127.0.0.1", ["127.0.0.1", "localhost"]),
            "keeper": ca.issue("keeper", "keeper", client=True)}


@pytest.fixture
def relay(pg18, certs):
    r = InterceptingRelay(pg18.port, certs["good"])
    yield r
    r.close()


def _upstream(port: int, mode: str, certs, **extra: str) -> str:
    q = {"sslmode": mode, "sslrootcert": str(certs["ca"].cert), **extra}
    return f"postgresql://postgres@127.0.0.1:{port}/postgres?" + "&".join(f"{k}={v}" for k, v in q.items())


def _libpq_refuses(port: int, mode: str, certs) -> str | None:
    """libpq (psycopg) connecting directly with the same settings: its error, or None."""
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                             sslmode=mode, sslrootcert=str(certs["ca"].cert), connect_timeout=10):
            return None
    except psycopg.OperationalError as e:
        return str(e)


def _start_refused(workdir, name: str, upstream: str, env: dict | None = None) -> str:
    """Start pgkeep with `upstream`: it must exit with a non-zero status; its log."""
    proc = PgkeepProcess(workdir / name, upstream, env=env)
    with pytest.raises(RuntimeError, match="pgkeep exited with [1-9]"):
        proc.start(timeout=60)
    return proc.log()


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("cert", ["rogue", "wrongname", "downgrade"])
def test_catalog_pool_connects_through_mitm_certificate(mode, cert, relay, certs, workdir):
    """pgkeep's own connections refuse at startup what libpq refuses (a clear error, exit 1),
    and accept what libpq accepts (verify-ca/require: a trusted certificate for another host)."""
    relay.present(certs.get(cert))
    libpq_error = _libpq_refuses(relay.port, mode, certs)
    upstream = _upstream(relay.port, mode, certs)
    if cert in MODES[mode]:
        assert libpq_error is not None and any(r in libpq_error for r in REFUSALS), libpq_error
        log = _start_refused(workdir, f"tls-catalog-{mode}-{cert}", upstream)
        assert "pgkeep: cannot connect to the upstream PostgreSQL at 127.0.0.1" in log, log
        assert any(r in log for r in REFUSALS), log
        assert "Traceback" not in log, log
        # libpq's and pgkeep's attempts both stopped at the handshake: nothing read (libpq checks
        # the host name once the handshake is done, so the relay may have dialled the target)
        assert not relay.decrypted
    else:
        assert libpq_error is None
        proc = PgkeepProcess(workdir / f"tls-catalog-{mode}-{cert}", upstream).start()
        try:
            with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10) as c:
                assert c.execute("SELECT 'through'").fetchone() == ("through",)
        finally:
            assert proc.stop() == 0


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("cert", ["rogue", "wrongname", "downgrade"])
def test_session_upstream_tls_unverified_mitm_reads_queries(mode, cert, relay, certs, workdir):
    """The relay presents the right certificate while pgkeep starts, then switches: a new client
    session gets a clean 08006 and the relay reads nothing of it, where libpq refuses too."""
    proc = PgkeepProcess(workdir / f"tls-session-{mode}-{cert}", _upstream(relay.port, mode, certs)).start()
    try:
        with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10) as c:
            assert c.execute("SELECT 'before the switch'").fetchone() == ("before the switch",)
        relay.present(certs.get(cert))
        bad = str(certs[cert][0]) if cert in certs else cert
        secret_sql = "SELECT 'the secret query text'"
        if cert in MODES[mode]:
            assert _libpq_refuses(relay.port, mode, certs) is not None
            # a client that pipelines its first query behind the startup packet
            sock = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
            try:
                sock.sendall(startup_packet() + query(secret_sql))
                data = read_all_until_eof(sock, timeout=10)
            finally:
                sock.close()
            assert data[:1] == b"E", data
            fields = error_fields(data[5:])
            assert fields["C"] == "08006" and any(r in fields["M"] for r in REFUSALS), fields
            with pytest.raises(psycopg.OperationalError) as err:
                psycopg.connect(proc.dsn(), connect_timeout=10)
            assert any(r in str(err.value) for r in REFUSALS), err.value
            assert relay.decrypted[bad] == 0
        else:
            assert _libpq_refuses(relay.port, mode, certs) is None
            with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10) as c:
                assert c.execute(secret_sql).fetchone() == ("the secret query text",)
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]


def test_verify_ca_without_root_cert_connects_unverified(relay, certs, workdir, tmp_path):
    """verify-ca with no sslrootcert and no ~/.postgresql/root.crt is an error (libpq), not an
    unverified connection; sslrootcert=system with a weaker sslmode is refused as libpq does."""
    env = {"HOME": str(tmp_path)}
    upstream = f"postgresql://postgres@127.0.0.1:{relay.port}/postgres?sslmode=verify-ca"
    log = _start_refused(workdir, "tls-noroot", upstream, env)
    assert f'root certificate file "{tmp_path}/.postgresql/root.crt" does not exist' in log, log
    log = _start_refused(workdir, "tls-system-weak", upstream.replace("verify-ca", "require") +
                         "&sslrootcert=system", env)
    assert 'weak sslmode "require" may not be used with sslrootcert=system' in log, log
    # sslrootcert=system with verify-full: the test CA is not a system root
    log = _start_refused(workdir, "tls-system", upstream.replace("verify-ca", "verify-full") +
                         "&sslrootcert=system", env)
    assert "certificate verify failed" in log, log
    assert not relay.decrypted


# ---- a real TLS PostgreSQL: verify-full and a client certificate, end to end -------------------

@pytest.fixture(scope="module")
def tls_pg(workdir, certs):
    """A PostgreSQL with TLS (Debian's 15: the embedded 18 is built without OpenSSL; CI installs
    it); `keeper` (superuser) may log in only over TLS with its certificate."""
    bin_dir = debian_bin_dir(15)
    assert bin_dir is not None, "PostgreSQL 15 is needed (apt-get install postgresql-15)"
    cert, key = certs["good"]
    server_dir = workdir / "tls-pg-certs"
    server_dir.mkdir(exist_ok=True)
    server_key = server_dir / "server.key"
    server_key.write_bytes(key.read_bytes())
    server_key.chmod(0o600)
    if os.geteuid() == 0:
        account = pwd.getpwnam("pgkeep")
        os.chown(server_key, account.pw_uid, account.pw_gid)
    hba = ["local all all trust", "hostssl all keeper 127.0.0.1/32 cert",
           "host all keeper 127.0.0.1/32 reject", "host all all 127.0.0.1/32 trust"]
    cluster = PgCluster(workdir / "tls-pg", port=reserve_port(), bin_dir=bin_dir, hba=hba, conf={
        "fsync": "off", "ssl": "on", "ssl_cert_file": str(cert), "ssl_key_file": str(server_key),
        "ssl_ca_file": str(certs["ca"].cert), "log_connections": "on"})
    cluster.start()
    cluster.psql("CREATE ROLE keeper SUPERUSER LOGIN")
    yield cluster
    cluster.destroy()


def test_verify_full_upstream_backup_and_restore_with_client_certificate(tls_pg, certs, workdir):
    """pgkeep's catalog and engine log in as `keeper` with sslcert/sslkey over verify-full;
    a client session is verify-full too, and does not lend the client pgkeep's certificate."""
    cert, key = certs["keeper"]
    upstream = _upstream(tls_pg.port, "verify-full", certs, sslcert=str(cert), sslkey=str(key)) \
        .replace("postgres@", "keeper@")
    proc = PgkeepProcess(workdir / "tls-e2e", upstream).start()
    try:
        with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10) as c:
            assert c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                             ).fetchone() == (True,)
            c.execute("DROP DATABASE IF EXISTS tlsdb")
            c.execute("DROP DATABASE IF EXISTS tlsdb2")
            c.execute("CREATE DATABASE tlsdb")
        with psycopg.connect(proc.dsn("tlsdb"), autocommit=True, connect_timeout=10) as c:
            c.execute("CREATE TABLE t AS SELECT i, md5(i::text) AS m FROM generate_series(1, 2000) i")
        with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10) as c:
            c.execute("BACKUP DATABASE tlsdb INTO 'nodelocal://self/tls'")
            c.execute("RESTORE DATABASE tlsdb FROM LATEST IN 'nodelocal://self/tls' "
                      "WITH new_db_name = 'tlsdb2'")
        with psycopg.connect(proc.dsn("tlsdb2"), autocommit=True, connect_timeout=10) as c:
            assert c.execute("SELECT count(*), sum(i) FROM t").fetchone() == (2000, 2001000)
        # keeper may only log in over TLS with its certificate: the engine's connections did
        logins = [line for line in tls_pg.logfile.read_text(errors="replace").splitlines()
                  if "connection authorized:" in line]
        engine = [line for line in logins if "user=keeper database=tlsdb application_name=pgkeep" in line]
        catalog = [line for line in logins if "application_name=pgkeep-catalog" in line]
        assert engine and catalog and all("SSL enabled" in line for line in engine + catalog)
        assert all("SSL enabled" in line for line in logins if "user=postgres database=tlsdb" in line)
        # a client naming keeper gets no certificate from pgkeep, so no login
        with pytest.raises(psycopg.OperationalError) as err:
            psycopg.connect(proc.dsn(user="keeper"), connect_timeout=10)
        assert "certificate" in str(err.value), err.value
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]


@pytest.mark.parametrize("mode,tls", [("disable", False), ("allow", False), ("prefer", True)])
def test_sslmode_allow_mapped_to_prefer(mode, tls, tls_pg, certs, workdir):
    """disable and allow (plaintext first) keep the catalog and the sessions in plaintext against
    a server that offers TLS; prefer takes it (3ca83b6 read allow as prefer)."""
    proc = PgkeepProcess(workdir / f"tls-mode-{mode}", _upstream(tls_pg.port, mode, certs)).start()
    try:
        with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10) as c:
            rows = c.execute("SELECT a.application_name, s.ssl FROM pg_stat_ssl s "
                             "JOIN pg_stat_activity a USING (pid) "
                             "WHERE a.pid = pg_backend_pid() OR a.application_name = 'pgkeep-catalog'"
                             ).fetchall()
        assert {name for name, _ in rows} == {"", "pgkeep-catalog"}, rows
        assert all(ssl is tls for _, ssl in rows), rows
    finally:
        assert proc.stop() == 0


def test_require_without_root_cert_refuses_unverifiable_server(relay, certs, workdir, tmp_path,
                                                               monkeypatch):
    """sslmode=require with no root certificate anywhere checks nothing, as libpq: an unknown
    CA is accepted (the other half of libpq's rule tested above: with one, it is verify-ca)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    relay.present(certs["rogue"])
    upstream = f"postgresql://postgres@127.0.0.1:{relay.port}/postgres?sslmode=require"
    with psycopg.connect(upstream, connect_timeout=10) as c:
        assert c.pgconn.ssl_in_use
    proc = PgkeepProcess(workdir / "tls-require-noroot", upstream, env={"HOME": str(tmp_path)}).start()
    try:
        with psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10) as c:
            assert c.execute("SELECT 'unverified, as asked'").fetchone() == ("unverified, as asked",)
        assert relay.relayed[str(certs["rogue"][0])] >= 3   # libpq, the catalog, the session
    finally:
        assert proc.stop() == 0
