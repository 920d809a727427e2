"""gs://bucket/path?PARAMS: Google Cloud Storage, through google-cloud-storage.

Parameters (CockroachDB's names; anything else is 22023):
  AUTH=specified (default; CREDENTIALS, a base64-encoded JSON key file, or BEARER_TOKEN, an
  OAuth2 access token) | implicit (Application Default Credentials of pgkeep's environment);
  ASSUME_ROLE=sa@project.iam.gserviceaccount.com[,...] (service account impersonation chain: the
  last account is the target, the others delegates).
The `STORAGE_EMULATOR_HOST` environment variable (the SDK's own convention) points every gs://
store at an emulator (fake-gcs-server) with anonymous credentials; the URI's parameters are
still validated (CREDENTIALS must decode), never sent.

Contracts (base.py): a writer sends small objects in one upload at commit; past one chunk it
streams a resumable upload, chunks of `part_size` bytes (a multiple of 256 KiB) sent in order in
the background while the next one fills (memory about two chunks), finalized at commit with the
whole object's CRC32C (X-Goog-Hash, and checked against the stored object), cancelled by abort().
Nothing is visible before commit. `create` is one upload with `ifGenerationMatch=0` (412:
AlreadyExists). A chunk sent again after a failure first asks the session how
much it has, so a retry never duplicates or loses bytes. `get` reads ranged chunks pinned to the
object's generation and checks CRC32C when it read the whole object; `list` reads every page
(with `delimiter`, the answer's `prefixes` are the folders), then yields in name order.
The SDK's own retries are off (retry=None): wrappers.py retries through the request seam.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass, field
from typing import AsyncIterator

from ..errors import AlreadyExists, InvalidURI, NotFound, StorageError, Unsupported
from .base import ObjectInfo
from .uri import (CloudStore, CloudURI, CloudWriter, PartPipeline, TransientStorageError,
                  check_gcs_bucket, describe, fix_base64, parse_auth, parse_cloud_uri, unreachable)

__all__ = ["GCSStore", "parse_gs", "GS_PARAMS"]

GS_PARAMS = frozenset({"AUTH", "CREDENTIALS", "BEARER_TOKEN", "ASSUME_ROLE"})

PART_SIZE = 8 << 20
_QUANTUM = 256 << 10          # resumable chunks are multiples of 256 KiB
READ_CHUNK = 8 << 20
_TIMEOUT = (10, 120)
_SERVICE_ACCOUNT = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]


@dataclass(frozen=True)
class GSConfig:
    uri: CloudURI
    auth: str
    credentials: dict | None = field(repr=False)
    bearer: str | None = field(repr=False)
    chain: tuple[str, ...]


def parse_gs(uri: str) -> GSConfig:
    cu = parse_cloud_uri(uri, GS_PARAMS, what="gs")
    check_gcs_bucket(cu.bucket, cu.redacted)
    auth = parse_auth(cu)
    creds_b64, bearer = cu.get("CREDENTIALS"), cu.get("BEARER_TOKEN")
    info = None
    if auth == "specified":
        if not creds_b64 and not bearer:
            raise InvalidURI(f"AUTH is set to 'specified', but CREDENTIALS is not set in {cu.redacted}",
                             hint="give CREDENTIALS=<base64 of a JSON key file> (or BEARER_TOKEN), "
                                  "or AUTH=implicit to use pgkeep's environment")
        if creds_b64 and bearer:
            raise InvalidURI(f"give CREDENTIALS or BEARER_TOKEN, not both: {cu.redacted}")
    elif creds_b64 or bearer:
        raise InvalidURI(f"AUTH=implicit takes no CREDENTIALS or BEARER_TOKEN: {cu.redacted}")
    if creds_b64:
        raw = fix_base64(creds_b64)
        raw += "=" * (-len(raw) % 4)
        try:
            alt = b"-_" if ("-" in raw or "_" in raw) else None
            info = json.loads(base64.b64decode(raw, altchars=alt, validate=True))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            info = None
        if not isinstance(info, dict):
            raise InvalidURI(f"CREDENTIALS in {cu.redacted} is not a base64-encoded JSON key file")
    chain = tuple(a.strip() for a in (cu.get("ASSUME_ROLE") or "").split(",") if a.strip())
    for a in chain:     # each goes into an IAM API URL path: nothing but an e-mail address
        if not _SERVICE_ACCOUNT.fullmatch(a):
            raise InvalidURI(f"invalid ASSUME_ROLE in {cu.redacted}: {a!r} is not a service account "
                             "e-mail")
    secrets = list(cu.secrets)
    if info and isinstance(info.get("private_key"), str):
        secrets.append(info["private_key"])
    if creds_b64:
        secrets.append(fix_base64(creds_b64))
    cu = CloudURI(cu.scheme, cu.bucket, cu.prefix, cu.params, cu.redacted, tuple(secrets))
    return GSConfig(cu, auth, info, bearer, chain)


def implicit_access(params: list[tuple[str, str]]) -> str | None:
    """AUTH=implicit uses pgkeep's Application Default Credentials (EXTERNALIOIMPLICITACCESS);
    gs:// has no endpoint parameter (the emulator is pgkeep's own environment)."""
    if any(k.upper() == "AUTH" and v.lower() == "implicit" for k, v in params):
        return "AUTH=implicit"
    return None


def emulator_host() -> str | None:
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if not host:
        return None
    return host if "://" in host else "http://" + host


def _make_client(cfg: GSConfig):
    """(storage.Client, AuthorizedSession, credentials) for cfg; runs in a worker thread."""
    from google.auth.transport.requests import AuthorizedSession
    from google.cloud import storage

    emulator = emulator_host()
    project = (cfg.credentials or {}).get("project_id") or "pgkeep"
    if emulator:
        from google.auth.credentials import AnonymousCredentials
        creds = AnonymousCredentials()
        client = storage.Client(project=project, credentials=creds,
                                client_options={"api_endpoint": emulator})
        return client, AuthorizedSession(creds), emulator
    import google.auth
    if cfg.auth == "implicit":
        creds, _ = google.auth.default(scopes=_SCOPES)
    elif cfg.bearer:
        from google.oauth2.credentials import Credentials
        creds = Credentials(token=cfg.bearer)
    else:
        creds, _ = google.auth.load_credentials_from_dict(cfg.credentials, scopes=_SCOPES)
    if cfg.chain:
        from google.auth import impersonated_credentials
        creds = impersonated_credentials.Credentials(
            source_credentials=creds, target_principal=cfg.chain[-1],
            delegates=list(cfg.chain[:-1]), target_scopes=_SCOPES)
    client = storage.Client(project=project, credentials=creds)
    return client, AuthorizedSession(creds), "https://storage.googleapis.com"


class _UploadHTTPError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.status = status


class _GCSWriter(CloudWriter):
    def __init__(self, store: "GCSStore", path: str) -> None:
        super().__init__(store, path)
        self._url: str | None = None
        self._size = max(_QUANTUM, store.part_size // _QUANTUM * _QUANTUM)
        self._pipe = PartPipeline(self._size, 1, self._send_chunk, self._start)
        import google_crc32c
        self._crc = google_crc32c.Checksum()

    async def _start(self) -> None:
        s = self._s

        def op():
            blob = s._bucket().blob(self._key)
            return blob.create_resumable_upload_session(timeout=_TIMEOUT, checksum=None, retry=None)
        self._url = await s._call("write", self._path, op)

    def _b64crc(self) -> str:
        return base64.b64encode(self._crc.digest()).decode()

    def _put(self, start: int, data: bytes, total: int | None, state: dict) -> dict | None:
        """Make the session hold bytes [start, start+len(data)) (and finish it if total is
        given). Runs once per attempt: after a failed attempt it asks what the server has."""
        sess = self._s._session
        end = start + len(data)
        if state.get("tried") and not self._s.emulated:
            # The documented resume: ask the session what it holds. (fake-gcs-server finalizes
            # the object on such a query, so against the emulator the chunk is simply sent
            # again; the CRC32C check at commit catches a duplicate.)
            committed, done = self._query(total)
            if done is not None:
                return done
            if not start <= committed <= end:
                raise StorageError(f"cannot write {self._path} in {self._s.uri}: the upload session "
                                   f"holds {committed} bytes, expected {start}..{end}")
            data, start = data[committed - start:], committed
        state["tried"] = True
        stalls = 0
        while True:
            if total is None:
                rng = f"bytes {start}-{end - 1}/*"
            else:
                rng = f"bytes {start}-{end - 1}/{total}" if end > start else f"bytes */{total}"
            headers = {"Content-Range": rng}
            if total is not None:
                headers["X-Goog-Hash"] = f"crc32c={self._b64crc()}"
            r = sess.put(self._url, data=data, headers=headers, timeout=_TIMEOUT)
            if r.status_code in (200, 201):
                return r.json()
            if r.status_code != 308:
                raise _UploadHTTPError(r.status_code, r.text[:200])
            committed = _committed(r)
            if total is None and committed >= end:
                return None
            if not start <= committed <= end:
                raise StorageError(f"cannot write {self._path} in {self._s.uri}: the upload session "
                                   f"went back to {committed} bytes")
            stalls = stalls + 1 if committed == start else 0
            if stalls >= 3:
                raise _UploadHTTPError(503, "the upload session does not take the data")
            data, start = data[committed - start:], committed   # the server kept less: go on

    def _query(self, total: int | None) -> tuple[int, dict | None]:
        r = self._s._session.put(self._url, data=b"",
                                 headers={"Content-Range": f"bytes */{total if total is not None else '*'}"},
                                 timeout=_TIMEOUT)
        if r.status_code in (200, 201):
            return -1, r.json()
        if r.status_code == 308:
            return _committed(r), None
        raise _UploadHTTPError(r.status_code, r.text[:200])

    async def _send_chunk(self, n: int, data: bytes) -> None:
        self._crc.update(data)
        start = (n - 1) * self._size
        state: dict = {}
        await self._s._call("write", f"{self._path} (chunk {n})", self._put, start, data, None, state)

    async def _put_whole(self, data: bytes) -> None:
        s = self._s

        def op():
            blob = s._bucket().blob(self._key)
            blob.upload_from_string(data, content_type="application/octet-stream",
                                    timeout=_TIMEOUT, checksum="crc32c", retry=None)
        await s._call("write", self._path, op)

    async def _complete(self) -> None:
        s = self._s
        await self._pipe.drain()
        rest = self._pipe.take_rest()
        self._crc.update(rest)
        start = self._pipe.parts * self._size
        state: dict = {}
        meta = await s._call("write", self._path, self._put, start, rest, start + len(rest), state)
        self._closed = True  # finalized: a CRC mismatch below removes the object, abort must not
        want = self._b64crc()
        if meta and meta.get("crc32c") and meta["crc32c"] != want:
            await s.delete(self._path)
            raise StorageError(f"cannot write {self._path} in {s.uri}: CRC32C mismatch after upload "
                               "(the object was removed)")

    async def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pipe.cancel()
        if self._url is not None:
            def op():
                r = self._s._session.delete(self._url, timeout=_TIMEOUT)
                if r.status_code not in (204, 404, 410, 499) and r.status_code < 500:
                    raise _UploadHTTPError(r.status_code, r.text[:200])
            try:
                await self._s._call("abort the upload of", self._path, op)
            except StorageError:
                pass   # an unfinished session expires on its own; nothing became visible


def _committed(r) -> int:
    """Bytes the session holds, from a 308's Range header ('bytes=0-N'; none: nothing)."""
    rng = r.headers.get("Range")
    if not rng:
        return 0
    return int(rng.rpartition("-")[2]) + 1


class GCSStore(CloudStore):
    SERVICE = "gcs"
    PART_SIZE = PART_SIZE

    def __init__(self, cfg: GSConfig) -> None:
        super().__init__(cfg)
        self.emulated = emulator_host() is not None

    def _make_sdk(self):
        return _make_client(self.cfg)

    def _close_sdk(self, made) -> None:
        made[1].close()

    def _ensure(self):
        return self._sdk_handle()

    @property
    def _client(self):
        return self._ensure()[0]

    @property
    def _session(self):
        return self._ensure()[1]

    def _bucket(self):
        return self._client.bucket(self.bucket)

    async def _call(self, op: str, path: str, fn, *args, **kw):
        return await self._req.call(self, op, path, lambda: fn(*args, **kw))


    def _classify(self, e: BaseException, op: str, path: str) -> Exception:
        from google.api_core import exceptions as gx
        from google.auth import exceptions as ax
        from google.cloud.storage import exceptions as sx

        where = f"cannot {op} {path} in {self.uri}"
        if isinstance(e, ImportError):
            return Unsupported(f"{where}: {e.name} is not installed")
        if isinstance(e, _UploadHTTPError):
            status = e.status
            text = f"{where}: the resumable upload failed (HTTP {status})"
            if status in (404, 410):
                return StorageError(f"{where}: the resumable upload session expired (HTTP {status})")
            return TransientStorageError(text) if status >= 500 or status in (408, 429) else StorageError(text)
        if isinstance(e, gx.NotFound):
            if op in ("read", "stat", "delete"):
                return NotFound(f"{path} does not exist in {self.uri}")
            return StorageError(f"{where}: the bucket {self.bucket!r} does not exist (HTTP 404)")
        if isinstance(e, gx.GoogleAPICallError):
            status = e.code or 0
            text = f"{where}: {type(e).__name__} (HTTP {status})"
            if status >= 500 or status in (408, 429):
                return TransientStorageError(text)
            return StorageError(text)
        if isinstance(e, sx.InvalidResponse):
            status = getattr(getattr(e, "response", None), "status_code", 0) or 0
            if status == 404 and op in ("read", "stat", "delete"):
                return NotFound(f"{path} does not exist in {self.uri}")
            text = f"{where}: unexpected answer (HTTP {status})"
            if status >= 500 or status in (408, 429):
                return TransientStorageError(text)
            return StorageError(text)
        text = f"{where}: {describe(e, self.cfg.uri.secrets)}"
        if isinstance(e, ax.RefreshError):
            return StorageError(f"{where}: cannot obtain Google credentials")
        if isinstance(e, sx.DataCorruption):
            return TransientStorageError(text)
        # requests' connection, timeout and chunked-encoding errors are OSErrors (IOError);
        # refused, reset, DNS, timeouts: the same words for each
        if isinstance(e, (ax.TransportError, OSError)):
            return unreachable(self.uri, op, path, e, self.cfg.uri.secrets)
        if isinstance(e, ax.DefaultCredentialsError):
            return StorageError(f"{where}: no Google credentials in pgkeep's environment (AUTH=implicit)")
        return StorageError(text)

    async def writer(self, path: str) -> _GCSWriter:
        self._key(path)
        return _GCSWriter(self, path)

    async def get(self, path: str, offset: int = 0) -> AsyncIterator[bytes]:
        key = self._key(path)
        blob = await self._call("read", path, lambda: self._bucket().get_blob(
            key, timeout=_TIMEOUT, retry=None))
        if blob is None:
            raise NotFound(f"{path} does not exist in {self.uri}")
        size, gen = int(blob.size or 0), blob.generation
        crc = None
        if offset == 0 and blob.crc32c:
            import google_crc32c
            crc = google_crc32c.Checksum()
        pos = offset
        while pos < size:
            end = min(pos + READ_CHUNK, size)
            chunk = await self._call("read", path, blob.download_as_bytes, start=pos, end=end - 1,
                                     raw_download=True, if_generation_match=gen, checksum=None,
                                     timeout=_TIMEOUT, retry=None)
            if not chunk:
                raise TransientStorageError(f"cannot read {path} in {self.uri}: empty answer at {pos}")
            if crc is not None:
                crc.update(chunk)
            pos += len(chunk)
            yield chunk
        if crc is not None and base64.b64encode(crc.digest()).decode() != blob.crc32c:
            raise StorageError(f"cannot read {path} in {self.uri}: CRC32C mismatch")

    async def get_range(self, path: str, offset: int, length: int) -> bytes:
        key = self._key(path)
        if length <= 0:
            await self.stat(path)
            return b""

        def op():
            from google.api_core.exceptions import RequestRangeNotSatisfiable
            blob = self._bucket().blob(key)
            try:
                return blob.download_as_bytes(start=offset, end=offset + length - 1, raw_download=True,
                                              checksum=None, timeout=_TIMEOUT, retry=None)
            except RequestRangeNotSatisfiable:
                if self._bucket().get_blob(key, timeout=_TIMEOUT, retry=None) is None:
                    raise NotFound(f"{path} does not exist in {self.uri}") from None
                return b""
        return await self._call("read", path, op)

    def _list_page(self, prefix: str, delimiter, token):
        it = self._client.list_blobs(self.bucket, prefix=prefix, delimiter=delimiter,
                                     page_token=token, page_size=self.list_page_size,
                                     timeout=_TIMEOUT, retry=None)
        page = next(it.pages)
        items = [(b.name, int(b.size or 0)) for b in page]
        return items, list(page.prefixes), it.next_page_token

    async def create(self, path: str, data: bytes) -> None:
        key = self._key(path)

        def op():
            from google.api_core.exceptions import PreconditionFailed
            blob = self._bucket().blob(key)
            try:
                blob.upload_from_string(data, content_type="application/octet-stream",
                                        timeout=_TIMEOUT, checksum="crc32c", retry=None,
                                        if_generation_match=0)
            except PreconditionFailed:
                raise AlreadyExists(f"{path} already exists in {self.uri}") from None
        await self._call("create", path, op)

    async def discard_incomplete(self, prefix: str) -> int:
        """Nothing to do: an unfinished resumable upload is never an object, and Cloud Storage
        drops its session a week after it began ("A resumable upload must be completed within a
        week of being initiated", https://cloud.google.com/storage/docs/resumable-uploads). A
        single-request upload leaves nothing at all."""
        return 0

    async def delete(self, path: str) -> None:
        key = self._key(path)
        try:
            await self._call("delete", path, lambda: self._bucket().delete_blob(
                key, timeout=_TIMEOUT, retry=None))
        except NotFound:
            pass

    async def stat(self, path: str) -> ObjectInfo:
        key = self._key(path)
        blob = await self._call("stat", path, lambda: self._bucket().get_blob(
            key, timeout=_TIMEOUT, retry=None))
        if blob is None:
            raise NotFound(f"{path} does not exist in {self.uri}")
        return ObjectInfo(path, int(blob.size or 0))

