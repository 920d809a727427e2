"""pgkeep's process lifecycle: graceful shutdown on SIGTERM, the embedded PostgreSQL 18 default
(started, kept across runs, stopped on exit), and configuration from flags, PGKEEP_*
environment variables and a TOML file."""
from __future__ import annotations

import argparse
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from proxy.config import OPTIONS, ConfigError, add_serve_arguments, load_config
from proxy.pgcluster import RUN_AS, embedded_bin_dir
from tests.support.pgkeep import REPO, PgkeepProcess

from .helpers import psql, wait_for
from .rawpg import RawConn, error_fields

pytestmark = pytest.mark.timeout(90)


# ---- graceful shutdown -------------------------------------------------------------------------

def _active_on_upstream(admin, text: str) -> bool:
    return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = %s",
                         (text,)).fetchone()[0] > 0


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_lets_running_statement_finish(workdir, pg18, pg18_admin):
    proc = PgkeepProcess(workdir / "pgkeep-sigterm", pg18.dsn(), args=["--shutdown-timeout", "10"]).start()
    try:
        busy = psycopg.connect(proc.dsn(), autocommit=True, connect_timeout=10)
        idle = RawConn(proc.port).login()
        sql = "SELECT pg_sleep(2), 42 AS sigterm_probe"
        outcome: dict = {}

        def run():
            try:
                outcome["row"] = busy.execute(sql).fetchone()
                outcome["returned_at"] = time.monotonic()
            except Exception as e:  # noqa: BLE001
                outcome["error"] = e

        t = threading.Thread(target=run)
        t.start()
        assert wait_for(lambda: _active_on_upstream(pg18_admin, sql), 10)
        sent_at = time.monotonic()
        proc.signal(signal.SIGTERM)

        # the idle client is closed at once, with 57P01
        idle.sock.settimeout(2)
        kind, body = idle.read()
        assert time.monotonic() - sent_at < 1.5
        assert kind == b"E" and error_fields(body)["C"] == "57P01"
        assert idle.at_eof()

        # no new connections while the busy one finishes
        assert wait_for(lambda: _refused(proc.port), 1.5)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(proc.dsn(), connect_timeout=2)

        t.join(10)
        assert outcome.get("row") == ("", 42), outcome
        # then the finished session is closed too
        with pytest.raises(psycopg.OperationalError) as err:
            for _ in range(20):
                busy.execute("SELECT 1")
                time.sleep(0.1)
        assert err.value.sqlstate == "57P01", err.value
        assert proc.proc.wait(10) == 0
        assert time.monotonic() - sent_at < 10
        busy.close()
        idle.close()
    finally:
        proc.stop()


def test_sigterm_timeout_cuts_long_statement(workdir, pg18):
    proc = PgkeepProcess(workdir / "pgkeep-sigterm-short", pg18.dsn(),
                         args=["--shutdown-timeout", "1"]).start()
    try:
        with RawConn(proc.port) as c:
            c.login()
            c.send(b"Q" + (len("SELECT pg_sleep(20)") + 5).to_bytes(4, "big") + b"SELECT pg_sleep(20)\0")
            time.sleep(0.3)
            start = time.monotonic()
            proc.signal(signal.SIGTERM)
            c.sock.settimeout(5)
            kind, body = c.read()
            assert kind == b"E" and error_fields(body)["C"] == "57P01"
            assert 0.8 <= time.monotonic() - start < 4
            assert c.at_eof()
        assert proc.proc.wait(10) == 0
    finally:
        proc.stop()


def test_sigint_exits_cleanly(workdir, pg18):
    proc = PgkeepProcess(workdir / "pgkeep-sigint", pg18.dsn()).start()
    try:
        proc.signal(signal.SIGINT)
        assert proc.proc.wait(10) == 0
    finally:
        proc.stop()


# ---- embedded PostgreSQL -----------------------------------------------------------------------

def _postgres_processes_for(datadir: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"postgres") and str(datadir).encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def _pg_ctl_status(datadir: Path) -> subprocess.CompletedProcess:
    kw = {}
    if os.geteuid() == 0:  # the cluster belongs to the system user pgkeep
        account = pwd.getpwnam(RUN_AS)
        kw = {"user": account.pw_uid, "group": account.pw_gid}
    return subprocess.run([str(embedded_bin_dir() / "pg_ctl"), "status", "-D", str(datadir)],
                          capture_output=True, text=True, timeout=10, **kw)


@pytest.fixture(scope="module")
def embedded_dir(workdir):
    return workdir / "emb"


def test_embedded_default(embedded_dir):
    datadir = embedded_dir / "data" / "pg"
    proc = PgkeepProcess(embedded_dir, None).start(timeout=120)
    try:
        log = proc.log()
        line = next((l for l in log.splitlines() if 'psql "postgresql://' in l), None)
        assert line is not None, log
        url = line[line.rindex('psql "') + 6:line.rindex('"')]
        assert url.startswith("postgresql://") and f":{proc.port}/" in url
        # the printed line names the password file: generated, 0600, and the only way in
        pwfile = embedded_dir / "data" / "postgres.password"
        assert f'PGPASSWORD="$(cat {pwfile})" psql' in line, line
        assert stat.S_IMODE(pwfile.stat().st_mode) == 0o600
        password = pwfile.read_text().strip()
        assert len(password) >= 24
        env = {"PGPASSWORD": password}
        # the printed command line connects through pgkeep
        out = psql(url, "-qAt", "-c", "SHOW server_version", env=env).stdout
        assert out.startswith("18"), out
        # sessions reach the server over TCP, where SCRAM is required
        assert psql(url, "-qAt", "-c", "SELECT inet_server_addr() IS NOT NULL", env=env).stdout == "t\n"
        assert _pg_ctl_status(datadir).returncode == 0
        psql(url, "-v", "ON_ERROR_STOP=1", "-qc",
             "DROP TABLE IF EXISTS kept; CREATE TABLE kept(v text); INSERT INTO kept VALUES ('survives')",
             env=env)
        assert psql(url, "-qAt", "-c", "SHOW CLUSTER SETTING bulkio.backup.file_size",
                    env=env).stdout.strip()
        # pgkeep's own engine still works (it uses the trusted Unix socket)
        psql(url, "-v", "ON_ERROR_STOP=1", "-qc",
             "BACKUP TABLE kept INTO 'nodelocal://self/emb'", env=env)
        # a wrong password, and any other user name, is refused as PostgreSQL refuses it
        for user, pw in (("postgres", "wrong"), ("someone", "anything"), ("postgres", password[:-1])):
            with pytest.raises(psycopg.OperationalError) as e:
                psycopg.connect(proc.dsn(user=user, password=pw), connect_timeout=10).close()
            assert "28P01" in str(e.value) or "password authentication failed" in str(e.value), e.value
    finally:
        code = proc.stop()
    assert code == 0, proc.log()[-3000:]
    # the embedded server is stopped with pgkeep
    status = _pg_ctl_status(datadir)
    assert status.returncode == 3, (status.returncode, status.stdout, status.stderr)
    assert "no server running" in status.stdout
    assert not (datadir / "postmaster.pid").exists()
    assert _postgres_processes_for(datadir) == []

    # the data directory is kept: start again, the table is there (a fresh log file, as
    # PgkeepProcess.start() waits for "pgkeep is listening" to appear in it)
    proc.logfile.rename(embedded_dir / "pgkeep.first.log")
    proc = PgkeepProcess(embedded_dir, None).start(timeout=120)
    try:
        assert "embedded PostgreSQL 18 running" in proc.log()
        password = (embedded_dir / "data" / "postgres.password").read_text().strip()
        assert psql(proc.dsn(password=password), "-qAt", "-c", "SELECT v FROM kept").stdout == "survives\n"
    finally:
        assert proc.stop() == 0
    assert _pg_ctl_status(datadir).returncode == 3
    assert _postgres_processes_for(datadir) == []


# ---- configuration -----------------------------------------------------------------------------

def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PGKEEP_")}
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True,
                          timeout=30, cwd=REPO, env={**base, "COLUMNS": "200", **(env or {})})


def test_serve_help_lists_every_option_and_env_var():
    r = _cli("serve", "--help")
    assert r.returncode == 0, r.stderr
    help_text = " ".join(r.stdout.split())  # undo line wrapping
    for opt in OPTIONS:
        flag = "--" + opt.name.replace("_", "-")
        env = "PGKEEP_" + opt.name.upper()
        assert flag in help_text, flag
        assert env in help_text, env
    assert "--config" in help_text and "PGKEEP_CONFIG" in help_text


def _namespace(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(list(argv))


def test_precedence_flag_env_toml(tmp_path):
    toml = tmp_path / "pgkeep.toml"
    toml.write_text('max_connections = 3\nstartup_timeout = 9.0\nshutdown_timeout = 4\n'
                    'listen = "127.0.0.1:5555"\nlog_level = "DEBUG"\n')
    environ = {"PGKEEP_MAX_CONNECTIONS": "5", "PGKEEP_STARTUP_TIMEOUT": "2.5"}
    cfg = load_config(_namespace("--config", str(toml), "--max-connections", "7"), environ)
    assert cfg.max_connections == 7          # flag beats env and file
    assert cfg.startup_timeout == 2.5        # env beats file
    assert cfg.shutdown_timeout == 4.0       # file beats default
    assert cfg.listen == "127.0.0.1:5555" and cfg.listen_port == 5555
    assert cfg.log_level == "DEBUG"
    assert cfg.workers == 1                  # default
    assert cfg.max_message_size == 1 << 30   # default
    # the config file may come from PGKEEP_CONFIG too
    cfg = load_config(_namespace(), {"PGKEEP_CONFIG": str(toml)})
    assert (cfg.max_connections, cfg.startup_timeout) == (3, 9.0)
    # without anything: the defaults
    cfg = load_config(_namespace(), {})
    assert (cfg.listen, cfg.max_connections, cfg.upstream) == ("127.0.0.1:26257", 100, None)


def test_every_option_settable_three_ways(tmp_path):
    samples = {str: "x", int: 3, float: 1.5, bool: None}  # switches: tests/e2e/test_tls.py
    special = {"listen": "127.0.0.1:7777", "upstream": "postgresql://u@h:1/d", "log_level": "WARNING",
               "tls_cert": None, "tls_key": None}
    for opt in OPTIONS:
        value = special.get(opt.name, samples[opt.type])
        if value is None:
            continue
        flag = "--" + opt.name.replace("_", "-")
        env = "PGKEEP_" + opt.name.upper()
        toml = tmp_path / f"{opt.name}.toml"
        toml.write_text(f"{opt.name} = {value!r}\n".replace("'", '"'))
        assert getattr(load_config(_namespace(flag, str(value)), {}), opt.name) == value, flag
        assert getattr(load_config(_namespace(), {env: str(value)}), opt.name) == value, env
        assert getattr(load_config(_namespace("--config", str(toml)), {}), opt.name) == value, toml


def test_unknown_toml_key_is_an_error(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text('max_connections = 3\nmax_conections = 4\n')
    with pytest.raises(ConfigError) as err:
        load_config(_namespace("--config", str(toml)), {})
    assert "max_conections" in str(err.value)
    r = _cli("serve", "--config", str(toml), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2
    assert "max_conections" in r.stderr and "unknown" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:", "127.0.0.1:99999", "host:port"])
def test_bad_listen_is_an_error(tmp_path, listen):
    r = _cli("serve", "--listen", listen, "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2
    assert "--listen" in r.stderr and "HOST:PORT" in r.stderr
    assert "Traceback" not in r.stderr
    r = _cli("serve", "--data-dir", str(tmp_path / "d"), env={"PGKEEP_LISTEN": listen})
    assert r.returncode == 2 and "--listen" in r.stderr


def test_bad_number_is_an_error(tmp_path):
    r = _cli("serve", "--max-connections", "lots", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2
    assert "max_connections" in r.stderr and "Traceback" not in r.stderr


# ---- a port already in use -----------------------------------------------------------------------

def test_port_in_use_is_one_clear_line(tmp_path):
    """A port another process holds: one line naming the port and the process, exit code 1, no
    traceback, and nothing printed before it that says pgkeep is running."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = _cli("serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert f"port {port} on 127.0.0.1 is already in use by process {os.getpid()}" in lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not (tmp_path / "d" / "pg").exists(), "nothing started before the check"


def test_second_pgkeep_on_the_same_port(pgkeep, tmp_path):
    """A second pgkeep (a second `make run`) on the port of a running one."""
    r = _cli("serve", "--listen", f"127.0.0.1:{pgkeep.port}", "--data-dir", str(tmp_path / "d"),
             "--upstream", pgkeep.upstream)
    assert r.returncode == 1, (r.stdout, r.stderr)
    line = r.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, r.stderr
    assert f"port {pgkeep.port} on 127.0.0.1 is already in use by process {pgkeep.proc.pid} (" in line
    assert "proxy serve" in line and "listening" not in r.stdout


def test_bad_timeouts_are_errors(tmp_path):
    for flag in ("--client-login-timeout", "--startup-timeout", "--job-lease"):
        r = _cli("serve", flag, "0", "--data-dir", str(tmp_path / "d"))
        assert r.returncode == 2 and flag in r.stderr and "positive" in r.stderr, r.stderr


def test_second_pgkeep_on_the_same_data_dir(embedded_dir, tmp_path):
    """A second pgkeep on the data directory of a running one, on another port, used to find
    the embedded PostgreSQL running, talk to it on the wrong port, and stop it on its way out.
    Now it stops at once with one line naming the first, and the first keeps serving."""
    first = PgkeepProcess(embedded_dir, None).start(timeout=120)
    try:
        r = _cli("serve", "--listen", "127.0.0.1:0", "--data-dir", str(embedded_dir / "data"))
        assert r.returncode == 1, (r.stdout, r.stderr)
        line = r.stderr.strip()
        assert "\n" not in line and "Traceback" not in line, r.stderr
        assert f"another pgkeep (process {first.proc.pid}) is using the data directory" in line
        password = (embedded_dir / "data" / "postgres.password").read_text().strip()
        assert psql(first.dsn(password=password), "-qAt", "-c", "SELECT 1").stdout == "1\n"
    finally:
        assert first.stop() == 0


def test_embedded_server_left_running_by_a_killed_pgkeep(embedded_dir):
    """kill -9 leaves the embedded PostgreSQL running on its port; the next pgkeep finds it
    there (not on a newly picked port) and stops it when it stops."""
    first = PgkeepProcess(embedded_dir, None).start(timeout=120)
    first.proc.kill()
    first.proc.wait()
    datadir = embedded_dir / "data" / "pg"
    assert _pg_ctl_status(datadir).returncode == 0, "the server outlives a killed pgkeep"
    second = PgkeepProcess(embedded_dir, None).start(timeout=120)
    try:
        password = (embedded_dir / "data" / "postgres.password").read_text().strip()
        assert psql(second.dsn(password=password), "-qAt", "-c", "SELECT 1").stdout == "1\n"
    finally:
        assert second.stop() == 0
    assert _pg_ctl_status(datadir).returncode == 3


def test_port_holder_password_is_not_repeated(tmp_path):
    """The process named as the port's holder may carry a password in its argv (a DSN): the
    one-line refusal names the process without it."""
    code = ("import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
            "print(s.getsockname()[1], flush=True); time.sleep(60)")
    # a short command line, so the DSN falls within what the message shows of it
    holder = subprocess.Popen(["pg", "-c", "exec(__import__('os').environ['C'])",
                               "postgresql://u:TopSecret9@db/x"], executable=sys.executable,
                              env={**os.environ, "C": code}, stdout=subprocess.PIPE, text=True)
    try:
        port = int(holder.stdout.readline())
        r = _cli("serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d"))
        assert r.returncode == 1 and f"by process {holder.pid} (" in r.stderr, r.stderr
        assert "TopSecret9" not in r.stderr and "postgresql://u:redacted@db/x" in r.stderr, r.stderr
    finally:
        holder.kill()
        holder.wait()
