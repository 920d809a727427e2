"""s3://bucket/path?PARAMS: Amazon S3 and S3-compatible stores, through boto3.

Parameters (CockroachDB's names; anything else is 22023):
  AUTH=specified (default; AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY required, AWS_SESSION_TOKEN
  optional) | implicit (boto3's default chain: environment, profile, instance role);
  AWS_REGION; AWS_ENDPOINT (custom endpoint, e.g. http://127.0.0.1:8333); AWS_USE_PATH_STYLE;
  AWS_SKIP_CHECKSUM (no CRC32 request checksums, for stores that lack them);
  S3_STORAGE_CLASS (e.g. STANDARD_IA, GLACIER_IR); ASSUME_ROLE=arn[,arn...] (an STS assume-role
  chain from the base credentials: every role but the last is a delegate; `arn;external_id=X`
  passes an external ID), refreshed before the temporary credentials expire.

Contracts (base.py): a writer sends small objects with one PutObject at commit; past one part
it streams a multipart upload, parts of `part_size` bytes uploaded `parallel` at a time while
more data arrives (memory about (parallel+1) parts), completed at commit, aborted by abort().
Nothing is visible before commit. `create` is one PutObject with `If-None-Match: *` (412
PreconditionFailed: AlreadyExists). `get` streams the body (optionally from an offset, so a
retry can resume), `get_range` is a Range GET, `list` reads every ListObjectsV2 page (with
`Delimiter`, its CommonPrefixes are the folders), then yields in name order.
Integrity: CRC32 checksums on every upload and checked on whole-object downloads (boto3's
flexible checksums) unless AWS_SKIP_CHECKSUM. boto3's own retries are off: every request goes
through the request seam (uri.Requests) where wrappers.py retries.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

from ..errors import AlreadyExists, InvalidURI, NotFound, StorageError
from .base import ObjectInfo
from .uri import (CloudStore, CloudURI, CloudWriter, PartPipeline, TransientStorageError,
                  check_region, check_s3_bucket, describe, parse_auth, parse_bool, parse_cloud_uri,
                  unreachable)

__all__ = ["S3Store", "parse_s3", "S3_PARAMS"]

S3_PARAMS = frozenset({
    "AUTH", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
    "AWS_ENDPOINT", "AWS_USE_PATH_STYLE", "AWS_SKIP_CHECKSUM", "S3_STORAGE_CLASS", "ASSUME_ROLE",
})

PART_SIZE = 8 << 20          # S3 wants >= 5 MiB for every part but the last
MIN_PART_SIZE = 5 << 20
PARALLEL_PARTS = 2
READ_CHUNK = 1 << 20

_THROTTLE = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
             "TooManyRequests", "RequestTimeout", "RequestTimeoutException", "InternalError",
             "ServiceUnavailable", "OperationAborted", "PriorRequestNotComplete",
             "ConditionalRequestConflict"}   # 409: a concurrent conditional write; AWS says retry


_READS = ("read", "stat", "delete")   # ops where 404 means the object is missing: NotFound


@dataclass(frozen=True)
class _Role:
    arn: str
    external_id: str | None = None


@dataclass(frozen=True)
class S3Config:
    uri: CloudURI
    auth: str
    key_id: str | None
    secret: str | None = field(repr=False)
    token: str | None = field(repr=False)
    region: str | None
    endpoint: str | None
    path_style: bool
    skip_checksum: bool
    storage_class: str | None
    roles: tuple[_Role, ...]


def parse_s3(uri: str) -> S3Config:
    cu = parse_cloud_uri(uri, S3_PARAMS, what="s3")
    check_s3_bucket(cu.bucket, cu.redacted)       # virtual-hosted style puts it in the host name
    if cu.get("AWS_REGION"):
        check_region("AWS_REGION", cu.get("AWS_REGION"), cu.redacted)
    auth = parse_auth(cu)
    key_id, secret, token = (cu.get("AWS_ACCESS_KEY_ID"), cu.get("AWS_SECRET_ACCESS_KEY"),
                             cu.get("AWS_SESSION_TOKEN"))
    if auth == "specified":
        for name, value in (("AWS_ACCESS_KEY_ID", key_id), ("AWS_SECRET_ACCESS_KEY", secret)):
            if not value:
                raise InvalidURI(f"AUTH is set to 'specified', but {name} is not set in {cu.redacted}",
                                 hint="give AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AUTH=implicit "
                                      "to use the credentials of pgkeep's environment")
    elif key_id or secret or token:
        raise InvalidURI(f"AUTH=implicit takes no AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or "
                         f"AWS_SESSION_TOKEN: {cu.redacted}")
    endpoint = cu.get("AWS_ENDPOINT")
    if endpoint is not None:
        e = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        if e.scheme not in ("http", "https") or not e.hostname:
            raise InvalidURI(f"invalid AWS_ENDPOINT in {cu.redacted}: want http(s)://host[:port]")
        endpoint = e.geturl()
    roles = []
    for part in (cu.get("ASSUME_ROLE") or "").split(","):
        part = part.strip()
        if not part:
            continue
        arn, _, rest = part.partition(";")
        ext = None
        if rest:
            k, eq, v = rest.partition("=")
            if k.strip().lower() != "external_id" or not eq or not v:
                raise InvalidURI(f"invalid ASSUME_ROLE in {cu.redacted}: want "
                                 "arn[;external_id=ID][,arn...]")
            ext = v
        if not arn.startswith("arn:"):
            raise InvalidURI(f"invalid ASSUME_ROLE in {cu.redacted}: {arn!r} is not a role ARN")
        roles.append(_Role(arn, ext))
    sc = cu.get("S3_STORAGE_CLASS")
    return S3Config(cu, auth, key_id, secret, token, cu.get("AWS_REGION"), endpoint,
                    parse_bool(cu, "AWS_USE_PATH_STYLE"), parse_bool(cu, "AWS_SKIP_CHECKSUM"),
                    sc.upper() if sc else None, tuple(roles))


def implicit_access(params: list[tuple[str, str]]) -> str | None:
    """What of a URI's query `params` (raw pairs) uses pgkeep's own identity or network position
    rather than credentials the user gave (CockroachDB's EXTERNALIOIMPLICITACCESS): AUTH=implicit
    (boto3's chain of pgkeep's environment) and a custom endpoint (any host pgkeep can reach).
    Names compare case-insensitively and empty values count: no spelling slips past."""
    if any(k.upper() == "AUTH" and v.lower() == "implicit" for k, v in params):
        return "AUTH=implicit"
    if any(k.upper() == "AWS_ENDPOINT" for k, _ in params):
        return "a custom endpoint (AWS_ENDPOINT)"
    return None


def _make_client(cfg: S3Config):
    import boto3
    from botocore.config import Config

    when = "when_required" if cfg.skip_checksum else "when_supported"
    region = (cfg.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
              or "us-east-1")
    config = Config(
        region_name=region, signature_version="s3v4",
        s3={"addressing_style": "path" if cfg.path_style else "auto"},
        retries={"total_max_attempts": 1, "mode": "standard"},    # wrappers.py retries
        connect_timeout=10, read_timeout=60, max_pool_connections=16,
        request_checksum_calculation=when, response_checksum_validation=when,
        user_agent_extra="pgkeep")
    creds = {}
    if cfg.auth == "specified":
        creds = dict(aws_access_key_id=cfg.key_id, aws_secret_access_key=cfg.secret,
                     aws_session_token=cfg.token)
    session = boto3.session.Session(**creds)
    if cfg.roles:
        session = _assume_role_chain(session, cfg, region)
    client = session.client("s3", endpoint_url=cfg.endpoint, config=config)
    # No 'Expect: 100-continue': bodies are in memory already, and with it an S3-compatible
    # server that answers an empty PUT at once (SeaweedFS) leaves the kept-alive connection
    # out of step, so the next request on it hangs until the read timeout.
    from botocore.handlers import add_expect_header
    client.meta.events.unregister("before-call.s3", add_expect_header)
    return client


def _assume_role_chain(base, cfg: S3Config, region: str):
    """A session whose credentials come from assuming each role in turn, refreshed by botocore
    before they expire. Not exercised against SeaweedFS (it has no STS): checked by parsing."""
    import boto3
    import botocore.session
    from botocore.credentials import RefreshableCredentials

    def fetch():
        session = base
        out = None
        for role in cfg.roles:
            sts = session.client("sts", region_name=region)
            kw = {"RoleArn": role.arn, "RoleSessionName": "pgkeep-backup"}
            if role.external_id:
                kw["ExternalId"] = role.external_id
            c = sts.assume_role(**kw)["Credentials"]
            out = {"access_key": c["AccessKeyId"], "secret_key": c["SecretAccessKey"],
                   "token": c["SessionToken"], "expiry_time": c["Expiration"].isoformat()}
            session = boto3.session.Session(aws_access_key_id=out["access_key"],
                                            aws_secret_access_key=out["secret_key"],
                                            aws_session_token=out["token"])
        return out

    refreshable = RefreshableCredentials.create_from_metadata(
        metadata=fetch(), refresh_using=fetch, method="sts-assume-role")
    bs = botocore.session.get_session()
    bs._credentials = refreshable       # botocore's documented way to inject credentials
    return boto3.session.Session(botocore_session=bs)


class _S3Writer(CloudWriter):
    def __init__(self, store: "S3Store", path: str) -> None:
        super().__init__(store, path)
        self._upload_id: str | None = None
        self._pipe = PartPipeline(store.part_size, store.parallel, self._upload_part, self._start)

    def _checksum(self, **kw: Any) -> dict[str, Any]:
        return kw if self._s.cfg.skip_checksum else {"ChecksumAlgorithm": "CRC32", **kw}

    def _extra(self) -> dict[str, Any]:
        sc = self._s.cfg.storage_class
        return {"StorageClass": sc} if sc else {}

    async def _start(self) -> None:
        resp = await self._s._call("write", self._path, "create_multipart_upload",
                                   Bucket=self._s.bucket, Key=self._key,
                                   **self._checksum(**self._extra()))
        self._upload_id = resp["UploadId"]

    async def _upload_part(self, n: int, data: bytes) -> dict[str, Any]:
        resp = await self._s._call("write", f"{self._path} (part {n})", "upload_part",
                                   Bucket=self._s.bucket, Key=self._key, UploadId=self._upload_id,
                                   PartNumber=n, Body=data, **self._checksum())
        part = {"PartNumber": n, "ETag": resp["ETag"]}
        if resp.get("ChecksumCRC32"):
            part["ChecksumCRC32"] = resp["ChecksumCRC32"]
        return part

    async def _put_whole(self, data: bytes) -> None:
        s = self._s
        await s._call("write", self._path, "put_object", Bucket=s.bucket, Key=self._key,
                      Body=data, **self._checksum(**self._extra()))

    async def _complete(self) -> None:
        s = self._s
        await self._pipe.launch_rest()
        await self._pipe.drain()
        parts = [self._pipe.results[n] for n in sorted(self._pipe.results)]
        total = self._pipe.total
        attempts = 0

        def complete():
            nonlocal attempts
            attempts += 1
            try:
                return s._client.complete_multipart_upload(
                    Bucket=s.bucket, Key=self._key, UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts})
            except Exception as e:  # an earlier attempt may have completed it, its answer lost
                if attempts > 1 and _code(e) == "NoSuchUpload":
                    head = s._client.head_object(Bucket=s.bucket, Key=self._key)
                    _check("head_object", head)
                    if head["ContentLength"] == total:
                        return head
                raise
        await s._call("write", self._path, complete)

    async def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pipe.cancel()
        if self._upload_id is not None:
            s = self._s

            def op():
                try:
                    s._client.abort_multipart_upload(Bucket=s.bucket, Key=self._key,
                                                     UploadId=self._upload_id)
                except Exception as e:
                    if _code(e) != "NoSuchUpload":
                        raise
            await s._call("abort the upload of", self._path, op)


class _Incomplete(Exception):
    """An answer that lacks what every complete answer has: a connection cut inside the
    headers reads, to http.client, as a short but well-formed response."""


# what every complete answer to these calls carries
_REQUIRED = {"create_multipart_upload": "UploadId", "upload_part": "ETag",
             "get_object": "ContentLength", "head_object": "ContentLength", "list_objects_v2": "Name"}


def _check(name: str, resp: dict) -> None:
    need = _REQUIRED.get(name)
    if need and need not in resp:
        raise _Incomplete(f"the answer to {name} lacks {need}")


def _code(e: BaseException) -> str:
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):
        return str(resp.get("Error", {}).get("Code", ""))
    return ""


class S3Store(CloudStore):
    SERVICE = "s3"
    PART_SIZE = PART_SIZE
    PARALLEL_PARTS = PARALLEL_PARTS

    def _make_sdk(self):
        return _make_client(self.cfg)

    def _close_sdk(self, client) -> None:
        client.close()

    @property
    def _client(self):
        # Only ever touched from the pool's threads, so the client is built off the event loop.
        return self._sdk_handle()

    async def _call(self, op: str, path: str, fn, *args, **kw):
        """fn: a client method name, or a callable run in the pool (so the client is only ever
        created there, off the event loop)."""
        if isinstance(fn, str):
            name = fn

            def checked():
                resp = getattr(self._client, name)(*args, **kw)
                _check(name, resp)
                return resp
            return await self._req.call(self, op, path, checked)
        return await self._req.call(self, op, path, lambda: fn(*args, **kw))


    def _classify(self, e: BaseException, op: str, path: str) -> Exception:
        from botocore import exceptions as bx
        uri = self.uri
        if isinstance(e, bx.ClientError):
            code = _code(e)
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code in ("NoSuchKey", "404", "NotFound") and op in _READS:
                return NotFound(f"{path} does not exist in {uri}")
            text = f"cannot {op} {path} in {uri}: {code or 'error'} (HTTP {status})"
            if code == "NoSuchBucket" or (status == 404 and op not in _READS and code != "NoSuchUpload"):
                return StorageError(f"cannot {op} {path} in {uri}: the bucket {self.bucket!r} does not exist")
            if status >= 500 or status in (408, 429) or code in _THROTTLE:
                return TransientStorageError(text)
            return StorageError(text)
        if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError)):
            return StorageError(f"cannot {op} {path} in {uri}: no AWS credentials found in pgkeep's "
                                "environment (AUTH=implicit)")
        text = f"cannot {op} {path} in {uri}: {describe(e, self.cfg.uri.secrets)}"
        from botocore.parsers import ResponseParserError
        if isinstance(e, (bx.FlexibleChecksumError, bx.ChecksumError)):
            return TransientStorageError(text)
        # refused, reset, DNS, timeouts, answers that are not S3's: the same words for each
        transport = (_Incomplete, bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError,
                     ResponseParserError, OSError)
        if isinstance(e, transport) or type(e).__module__.startswith("urllib3"):
            return unreachable(uri, op, path, e, self.cfg.uri.secrets)
        return StorageError(text)

    async def writer(self, path: str) -> _S3Writer:
        self._key(path)
        return _S3Writer(self, path)

    async def get(self, path: str, offset: int = 0) -> AsyncIterator[bytes]:
        key = self._key(path)
        kw = {"Range": f"bytes={offset}-"} if offset else {}
        if not self.cfg.skip_checksum and not offset:
            kw["ChecksumMode"] = "ENABLED"
        try:
            resp = await self._call("read", path, "get_object", Bucket=self.bucket,
                                    Key=key, **kw)
        except StorageError as e:
            if offset and "InvalidRange" in e.message:
                await self.stat(path)
                return      # the offset is the end of the object
            raise
        body = resp["Body"]
        expected, got = int(resp["ContentLength"]), 0
        try:
            while True:
                try:
                    chunk = await self._req.thread(body.read, READ_CHUNK)
                except Exception as e:  # noqa: BLE001
                    raise self._classify(e, "read", path) from None
                if not chunk:
                    break
                got += len(chunk)
                yield chunk
            if got != expected:
                raise TransientStorageError(f"cannot read {path} in {self.uri}: the answer was cut "
                                            f"short ({got} of {expected} bytes)")
        finally:
            body.close()

    async def get_range(self, path: str, offset: int, length: int) -> bytes:
        key = self._key(path)
        if length <= 0:
            await self.stat(path)
            return b""

        def op():
            from botocore.exceptions import ClientError
            try:
                resp = self._client.get_object(Bucket=self.bucket, Key=key,
                                               Range=f"bytes={offset}-{offset + length - 1}")
            except ClientError as e:
                if _code(e) == "InvalidRange":
                    self._client.head_object(Bucket=self.bucket, Key=key)   # NotFound if missing
                    return b""
                raise
            _check("get_object", resp)
            with resp["Body"] as body:
                data = body.read()
            if len(data) != resp["ContentLength"]:
                raise _Incomplete(f"the answer was cut short ({len(data)} of {resp['ContentLength']} bytes)")
            return data
        return await self._call("read", path, op)

    def _list_page(self, prefix: str, delimiter, token):
        kw = {"ContinuationToken": token} if token else {}
        if delimiter:
            kw["Delimiter"] = delimiter
        page = self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix,
                                            MaxKeys=self.list_page_size, **kw)
        _check("list_objects_v2", page)
        items = [(o["Key"], int(o["Size"])) for o in page.get("Contents", ())]
        folders = [p["Prefix"] for p in page.get("CommonPrefixes", ())]
        return items, folders, page["NextContinuationToken"] if page.get("IsTruncated") else None

    async def create(self, path: str, data: bytes) -> None:
        key = self._key(path)
        kw = {} if self.cfg.skip_checksum else {"ChecksumAlgorithm": "CRC32"}
        if self.cfg.storage_class:
            kw["StorageClass"] = self.cfg.storage_class

        def op():
            try:
                return self._client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                               IfNoneMatch="*", **kw)
            except Exception as e:
                resp = getattr(e, "response", None)
                status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(resp, dict) else None
                if _code(e) == "PreconditionFailed" or status == 412:
                    raise AlreadyExists(f"{path} already exists in {self.uri}") from None
                raise
        await self._call("create", path, op)

    async def discard_incomplete(self, prefix: str) -> int:
        """Abort every multipart upload under `prefix` that was never completed (a writer killed
        mid-upload): S3 keeps and bills their parts until aborted, and never lists them."""
        base = self.cfg.uri.prefix + "/" if self.cfg.uri.prefix else ""
        uploads = await self._call("list the unfinished uploads under", prefix or "/",
                                   self._unfinished, base + prefix)
        for key, upload_id in uploads:
            path = key[len(base):]

            def op(key=key, upload_id=upload_id):
                try:
                    self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                except Exception as e:
                    if _code(e) != "NoSuchUpload":      # completed or aborted meanwhile
                        raise
            await self._call("abort the upload of", path, op)
        return len(uploads)

    def _unfinished(self, prefix: str) -> list[tuple[str, str]]:
        """(key, upload id) of every multipart upload under a full prefix, all pages."""
        out: list[tuple[str, str]] = []
        kw: dict[str, str] = {}
        while True:
            page = self._client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix, **kw)
            out += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", ())
                    if u["Key"].startswith(prefix)]
            marker = page.get("NextKeyMarker")
            if not page.get("IsTruncated") or not marker:
                return out
            kw = {"KeyMarker": marker, "UploadIdMarker": page.get("NextUploadIdMarker", "")}

    async def delete(self, path: str) -> None:
        key = self._key(path)
        try:
            await self._call("delete", path, "delete_object", Bucket=self.bucket, Key=key)
        except NotFound:
            pass

    async def stat(self, path: str) -> ObjectInfo:
        key = self._key(path)
        resp = await self._call("stat", path, "head_object", Bucket=self.bucket, Key=key)
        return ObjectInfo(path, int(resp["ContentLength"]))

