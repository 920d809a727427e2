"""Storage URIs as an attacker writes them (issue 12, point 11), through pgkeep as a non-admin
user with a password. Before: AZURE_ACCOUNT_NAME was spliced into https://<account>.blob...,
so `127.0.0.1:5432#` made pgkeep connect to any host:port, and the error text told an open port
from a closed one. Now every URI part that shapes a host name is validated when the URI is
parsed (22023, nothing connects), endpoint parameters are admin-only (42501, nothing connects),
and a store that cannot be reached reads the same whatever the reason."""
from __future__ import annotations

import base64
import json
import socket
import threading
import time
from urllib.parse import quote

import psycopg
import pytest

from tests.support.pgkeep import PgkeepProcess

USER, PASSWORD = "uri_attacker", "attacker pw"
AZ_KEY = quote(base64.b64encode(b"k" * 32).decode(), safe="")
S3_CREDS = "AWS_ACCESS_KEY_ID=AKIDattacker&AWS_SECRET_ACCESS_KEY=attackerSECRET"
GCS_CREDS = quote(base64.b64encode(json.dumps(
    {"type": "service_account", "project_id": "p"}).encode()).decode(), safe="")


class Listener:
    """A TCP port this test owns: records every connection; `answer` is sent back, then the
    connection is closed (a service that does not speak HTTP)."""

    def __init__(self, answer: bytes = b"") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(4096)
                    if self.answer:
                        conn.sendall(self.answer)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


@pytest.fixture(scope="module")
def attacker(pg18):
    pg18.psql(f"DROP ROLE IF EXISTS {USER}; CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
    yield USER
    pg18.psql(f"DROP ROLE IF EXISTS {USER}")


def _as_attacker(proc, attacker):
    return psycopg.connect(proc.dsn(user=attacker, password=PASSWORD), autocommit=True,
                           connect_timeout=10)


def _refused(conn, statement: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as e:
        conn.execute(statement)
    assert conn.execute("SELECT 1").fetchone() == (1,)      # the session goes on
    return e.value


SPLICES = [
    "azure-blob://ccc/p?AZURE_ACCOUNT_NAME=127.0.0.1:{port}%23&AZURE_ACCOUNT_KEY=" + AZ_KEY,
    "azure://ccc/p?AZURE_ACCOUNT_NAME=127.0.0.1:{port}%2F&AZURE_ACCOUNT_KEY=" + AZ_KEY,
    "azure-storage://ccc/p?AZURE_ACCOUNT_NAME=x%40127.0.0.1:{port}%23&AZURE_ACCOUNT_KEY=" + AZ_KEY,
    "s3://127.0.0.1:{port}%23/p?" + S3_CREDS,
    "s3://bucket/p?AWS_REGION=x.127.0.0.1:{port}%23&" + S3_CREDS,
]


@pytest.mark.parametrize("template", SPLICES, ids=["azure-account-hash", "azure-account-slash",
                                                   "azure-account-userinfo", "s3-bucket", "s3-region"])
def test_host_splicing_is_22023_and_connects_nowhere(pgkeep, attacker, listener, template):
    uri = template.format(port=listener.port)
    with _as_attacker(pgkeep, attacker) as conn:
        for stmt in (f"SHOW BACKUPS IN '{uri}'", f"SHOW BACKUP FROM LATEST IN '{uri}'"):
            err = _refused(conn, stmt)
            assert err.diag.sqlstate == "22023", (err.diag.sqlstate, err.diag.message_primary)
            assert "invalid" in err.diag.message_primary
            assert "attackerSECRET" not in str(err)
    time.sleep(0.5)
    assert listener.connections == 0


ENDPOINTS = [
    "s3://bucket/p?AWS_ENDPOINT=http://127.0.0.1:{port}&" + S3_CREDS,
    "s3://bucket/p?aws_endpoint=http://127.0.0.1:{port}&" + S3_CREDS,
    "s3://bucket/p?AWS_ENDPOINT=&" + S3_CREDS,
    "azure://ccc/p?AZURE_ACCOUNT_NAME=acct&AZURE_ENDPOINT=http://127.0.0.1:{port}/acct&AZURE_ACCOUNT_KEY=" + AZ_KEY,
]


@pytest.mark.parametrize("template", ENDPOINTS, ids=["aws", "aws-lowercase", "aws-empty", "azure"])
def test_endpoint_parameters_are_42501_for_non_admins(pgkeep, attacker, listener, template):
    uri = template.format(port=listener.port)
    with _as_attacker(pgkeep, attacker) as conn:
        for stmt in (f"SHOW BACKUPS IN '{uri}'", f"SHOW BACKUP FROM LATEST IN '{uri}'"):
            err = _refused(conn, stmt)
            assert err.diag.sqlstate == "42501", (err.diag.sqlstate, err.diag.message_primary)
            assert "custom endpoint" in err.diag.message_primary
    time.sleep(0.5)
    assert listener.connections == 0


def test_open_and_closed_ports_read_the_same_to_a_non_admin(pg18, attacker, tmp_path):
    """An admin pointed gs:// at an endpoint (STORAGE_EMULATOR_HOST) that is down: whether the
    port is closed or open with something else behind it, a non-admin learns nothing more than
    'could not reach'; the cause is in pgkeep's log for the admin."""
    port_owner = Listener(answer=b"\x00\x01 not http at all\r\n\r\n")
    port = port_owner.port
    proc = PgkeepProcess(tmp_path / "pgkeep", pg18.dsn(),
                         env={"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"}).start()
    uri = f"gs://some-bucket/coll?AUTH=specified&CREDENTIALS={GCS_CREDS}"
    try:
        with _as_attacker(proc, attacker) as conn:
            open_err = _refused(conn, f"SHOW BACKUPS IN '{uri}'")
            assert port_owner.connections > 0          # it did talk to the open port
            port_owner.close()                         # now nothing listens there
            closed_err = _refused(conn, f"SHOW BACKUPS IN '{uri}'")
        seen = []
        for err in (open_err, closed_err):
            d = err.diag
            seen.append((d.sqlstate, d.message_primary, d.message_detail, d.message_hint))
        assert seen[0] == seen[1], seen
        sqlstate, message, detail, hint = seen[0]
        assert sqlstate == "58030" and message.startswith("could not reach gs://some-bucket/coll"), message
        text = f"{message} {detail} {hint}"
        for leak in ("Errno", "refused", "Connection", "BadStatusLine", "aborted", str(port)):
            assert leak not in text, text
        log = proc.log()
        assert "could not reach" in log and "refused" in log.lower()   # the admin's detail
        assert "Traceback" not in log
    finally:
        port_owner.close()
        proc.stop()
