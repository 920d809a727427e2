"""azure://container/path?PARAMS (aliases azure-blob://, azure-storage://): Azure Blob Storage,
through azure-storage-blob.

Parameters (CockroachDB's names, plus pgkeep's AZURE_ENDPOINT; anything else is 22023):
  AZURE_ACCOUNT_NAME (required); AUTH=specified (default: AZURE_ACCOUNT_KEY, or the service
  principal AZURE_CLIENT_ID + AZURE_CLIENT_SECRET + AZURE_TENANT_ID) | implicit (azure-identity's
  DefaultAzureCredential from pgkeep's environment); AZURE_ENVIRONMENT (AzurePublicCloud, the
  default, AzureUSGovernmentCloud, AzureChinaCloud, AzureGermanCloud: the endpoint suffix and the
  login authority); AZURE_ENDPOINT (the account's blob endpoint, e.g.
  http://127.0.0.1:10000/devstoreaccount1 for Azurite or a private cloud; default
  https://<account>.blob.<suffix>). Service principals and AUTH=implicit need the azure-identity
  package (0A000 without it).

Contracts (base.py): a writer sends small objects with one Put Blob at commit; past one block it
stages blocks of `part_size` bytes, `parallel` at a time in the background (memory about
(parallel+1) blocks), and commits the block list at commit: nothing is visible before, and an
aborted writer's uncommitted blocks are never listed (the service drops them). Block IDs are
random per writer, so concurrent writers of one name never mix blocks (but the first commit
drops the others' uncommitted blocks, so a concurrent second writer fails: 58030). Every upload carries a
Content-MD5 (validate_content). `create` is one Put Blob with `If-None-Match: *` (409
BlobAlreadyExists: AlreadyExists). `get` streams ranged chunks (optionally from an offset),
`list` reads every page (with `delimiter`, walk_blobs: its BlobPrefix items are the folders),
then yields in name order. The SDK's retries are off (retry_total=0): wrappers.py retries.
"""
from __future__ import annotations

import base64
import binascii
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

from ..errors import AlreadyExists, InvalidURI, NotFound, StorageError, Unsupported
from .base import ObjectInfo
from .uri import (CloudStore, CloudURI, CloudWriter, PartPipeline, TransientStorageError,
                  check_azure_account, check_azure_container, describe, fix_base64, parse_auth,
                  parse_cloud_uri, unreachable)

__all__ = ["AzureStore", "parse_azure", "AZURE_PARAMS"]

AZURE_PARAMS = frozenset({
    "AUTH", "AZURE_ACCOUNT_NAME", "AZURE_ACCOUNT_KEY", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID", "AZURE_ENVIRONMENT", "AZURE_ENDPOINT",
})

# AZURE_ENVIRONMENT -> (blob endpoint suffix, login authority)
ENVIRONMENTS = {
    "AzurePublicCloud": ("core.windows.net", "login.microsoftonline.com"),
    "AzureUSGovernmentCloud": ("core.usgovcloudapi.net", "login.microsoftonline.us"),
    "AzureChinaCloud": ("core.chinacloudapi.cn", "login.chinacloudapi.cn"),
    "AzureGermanCloud": ("core.cloudapi.de", "login.microsoftonline.de"),
}

PART_SIZE = 8 << 20
PARALLEL_PARTS = 2
READ_CHUNK = 4 << 20


@dataclass(frozen=True)
class AzureConfig:
    uri: CloudURI
    auth: str
    account: str
    key: str | None = field(repr=False)
    client_id: str | None
    client_secret: str | None = field(repr=False)
    tenant_id: str | None
    account_url: str
    authority: str


def parse_azure(uri: str) -> AzureConfig:
    cu = parse_cloud_uri(uri, AZURE_PARAMS, what="azure")
    auth = parse_auth(cu)
    check_azure_container(cu.bucket, cu.redacted)
    account = cu.get("AZURE_ACCOUNT_NAME")
    if not account:
        raise InvalidURI(f'azure uri missing "AZURE_ACCOUNT_NAME" parameter: {cu.redacted}')
    check_azure_account(account, cu.redacted)      # spliced into https://<account>.blob...
    key = cu.get("AZURE_ACCOUNT_KEY")
    cid, secret, tenant = (cu.get("AZURE_CLIENT_ID"), cu.get("AZURE_CLIENT_SECRET"),
                           cu.get("AZURE_TENANT_ID"))
    principal = [n for n, v in (("AZURE_CLIENT_ID", cid), ("AZURE_CLIENT_SECRET", secret),
                                ("AZURE_TENANT_ID", tenant)) if v]
    if auth == "specified":
        if key and principal:
            raise InvalidURI(f"give AZURE_ACCOUNT_KEY or AZURE_CLIENT_ID/AZURE_CLIENT_SECRET/"
                             f"AZURE_TENANT_ID, not both: {cu.redacted}")
        if not key and len(principal) != 3:
            missing = [n for n in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID")
                       if n not in principal]
            what = ('"AZURE_ACCOUNT_KEY" parameter' if not principal
                    else ", ".join(f'"{m}"' for m in missing) + " parameter")
            raise InvalidURI(f"azure uri missing {what}: {cu.redacted}",
                             hint="give AZURE_ACCOUNT_KEY, or AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and "
                                  "AZURE_TENANT_ID, or AUTH=implicit")
    elif key or principal:
        raise InvalidURI(f"AUTH=implicit takes no AZURE_ACCOUNT_KEY or client credentials: {cu.redacted}")
    if key:
        key = fix_base64(key)
        try:
            base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidURI(f"AZURE_ACCOUNT_KEY in {cu.redacted} is not base64") from None
    env = cu.get("AZURE_ENVIRONMENT") or "AzurePublicCloud"
    if env not in ENVIRONMENTS:
        raise InvalidURI(f"unknown AZURE_ENVIRONMENT {env!r} in {cu.redacted}",
                         hint="one of " + ", ".join(ENVIRONMENTS))
    suffix, authority = ENVIRONMENTS[env]
    endpoint = cu.get("AZURE_ENDPOINT")
    if endpoint:
        e = urlsplit(endpoint)
        if e.scheme not in ("http", "https") or not e.hostname:
            raise InvalidURI(f"invalid AZURE_ENDPOINT in {cu.redacted}: want http(s)://host[:port][/account]")
        account_url = endpoint.rstrip("/")
    else:
        account_url = f"https://{account}.blob.{suffix}"
    secrets = tuple(cu.secrets) + tuple(s for s in (key,) if s)
    cu = CloudURI(cu.scheme, cu.bucket, cu.prefix, cu.params, cu.redacted, secrets)
    return AzureConfig(cu, auth, account, key, cid, secret, tenant, account_url, authority)


def implicit_access(params: list[tuple[str, str]]) -> str | None:
    """AUTH=implicit (azure-identity's chain of pgkeep's environment) and a custom endpoint (any
    host pgkeep can reach) need EXTERNALIOIMPLICITACCESS. Names compare case-insensitively and
    empty values count."""
    if any(k.upper() == "AUTH" and v.lower() == "implicit" for k, v in params):
        return "AUTH=implicit"
    if any(k.upper() == "AZURE_ENDPOINT" for k, _ in params):
        return "a custom endpoint (AZURE_ENDPOINT)"
    return None


def _make_container_client(cfg: AzureConfig):
    from azure.storage.blob import BlobServiceClient

    # The SDK logs every request and response at INFO: pgkeep's log is not a wire trace.
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

    if cfg.key:
        credential: Any = {"account_name": cfg.account, "account_key": cfg.key}
    else:
        try:
            import azure.identity as identity
        except ImportError:
            raise Unsupported(f"{'AUTH=implicit' if cfg.auth == 'implicit' else 'AZURE_CLIENT_ID'} "
                              "for azure storage needs the azure-identity package, which is not "
                              "installed", hint="pip install azure-identity, or use AZURE_ACCOUNT_KEY") from None
        if cfg.auth == "implicit":
            credential = identity.DefaultAzureCredential(authority=cfg.authority)
        else:
            credential = identity.ClientSecretCredential(cfg.tenant_id, cfg.client_id, cfg.client_secret,
                                                         authority=cfg.authority)
    svc = BlobServiceClient(cfg.account_url, credential=credential, retry_total=0,
                            connection_timeout=10, read_timeout=120,
                            max_single_get_size=READ_CHUNK, max_chunk_get_size=READ_CHUNK,
                            max_single_put_size=PART_SIZE, max_block_size=PART_SIZE)
    return svc.get_container_client(cfg.uri.bucket)


class _Incomplete(Exception):
    """An answer missing what every complete one has (a connection cut inside the headers
    reads, to http.client, as a short but well-formed response)."""


class _AzureWriter(CloudWriter):
    def __init__(self, store: "AzureStore", path: str) -> None:
        super().__init__(store, path)
        self._tag = uuid.uuid4().hex           # block IDs unique to this writer
        self._pipe = PartPipeline(store.part_size, store.parallel, self._stage)

    def _block_id(self, n: int) -> str:
        return base64.b64encode(f"{self._tag}-{n:06d}".encode()).decode()

    async def _stage(self, n: int, data: bytes) -> str:
        bid = self._block_id(n)
        await self._s._call("write", f"{self._path} (block {n})",
                            lambda: self._s._blob(self._key).stage_block(bid, data, length=len(data),
                                                                        validate_content=True))
        return bid

    async def _put_whole(self, data: bytes) -> None:
        s = self._s
        await s._call("write", self._path, lambda: s._blob(self._key).upload_blob(
            data, overwrite=True, length=len(data), validate_content=True, max_concurrency=1))

    async def _complete(self) -> None:
        s = self._s
        await self._pipe.launch_rest()
        await self._pipe.drain()

        def op():
            from azure.storage.blob import BlobBlock
            ids = [self._pipe.results[n] for n in sorted(self._pipe.results)]
            s._blob(self._key).commit_block_list([BlobBlock(block_id=i) for i in ids])
        await s._call("write", self._path, op)

    async def abort(self) -> None:
        # Staged blocks stay uncommitted: never listed nor readable, dropped by the service
        # (after a week, or at the next commit of this name).
        self._closed = True
        self._pipe.cancel()


class AzureStore(CloudStore):
    SERVICE = "azure"
    PART_SIZE = PART_SIZE
    PARALLEL_PARTS = PARALLEL_PARTS

    @property
    def container(self) -> str:
        return self.bucket

    def _make_sdk(self):
        return _make_container_client(self.cfg)

    def _close_sdk(self, cc) -> None:
        cc.close()

    def _container(self):
        return self._sdk_handle()

    def _blob(self, key: str):
        return self._container().get_blob_client(key)

    async def _call(self, op: str, path: str, fn):
        return await self._req.call(self, op, path, fn)


    def _classify(self, e: BaseException, op: str, path: str) -> Exception:
        from azure.core import exceptions as zx

        where = f"cannot {op} {path} in {self.uri}"
        code = str(getattr(e, "error_code", None) or "")
        code = code.rpartition(".")[2] if code.startswith("StorageErrorCode.") else code
        if isinstance(e, zx.ResourceNotFoundError):
            if code.lower() in ("containernotfound", "container_not_found") or op not in (
                    "read", "stat", "delete"):
                return StorageError(f"{where}: the container {self.container!r} does not exist")
            return NotFound(f"{path} does not exist in {self.uri}")
        if isinstance(e, zx.ClientAuthenticationError):
            return StorageError(f"{where}: authentication failed ({code or 'HTTP 403'})")
        # refused, reset, DNS, timeouts, answers that are not Azure's: the same words for each
        if isinstance(e, (_Incomplete, zx.ServiceRequestError, zx.ServiceResponseError,
                          zx.IncompleteReadError, zx.DecodeError, zx.DeserializationError,
                          OSError)):
            return unreachable(self.uri, op, path, e, self.cfg.uri.secrets)
        if isinstance(e, zx.HttpResponseError):
            status = e.status_code or 0
            text = f"{where}: {code or type(e).__name__} (HTTP {status})"
            if status >= 500 or status in (408, 429) or code in ("ServerBusy", "OperationTimedOut"):
                return TransientStorageError(text)
            return StorageError(text)
        return StorageError(f"{where}: {describe(e, self.cfg.uri.secrets)}")

    async def writer(self, path: str) -> _AzureWriter:
        self._key(path)
        return _AzureWriter(self, path)

    async def get(self, path: str, offset: int = 0) -> AsyncIterator[bytes]:
        key = self._key(path)

        def open_():
            from azure.core.exceptions import HttpResponseError
            try:
                d = self._blob(key).download_blob(offset=offset or None, max_concurrency=1,
                                                  validate_content=False)
            except HttpResponseError as e:
                if offset and e.status_code == 416:
                    self._blob(key).get_blob_properties()     # NotFound if missing
                    return None
                raise
            if d.size is None:
                raise _Incomplete("the answer lacks its length")
            return d.size, d.chunks()
        opened = await self._call("read", path, open_)
        if opened is None:
            return
        expected, chunks = opened
        end, got = object(), 0
        while True:
            try:
                chunk = await self._req.thread(next, chunks, end)
            except Exception as e:  # noqa: BLE001
                raise self._classify(e, "read", path) from None
            if chunk is end:
                break
            if chunk:
                got += len(chunk)
                yield chunk
        if got != expected:
            raise TransientStorageError(f"cannot read {path} in {self.uri}: the answer was cut "
                                        f"short ({got} of {expected} bytes)")

    async def get_range(self, path: str, offset: int, length: int) -> bytes:
        key = self._key(path)
        if length <= 0:
            await self.stat(path)
            return b""

        def op():
            from azure.core.exceptions import HttpResponseError
            try:
                d = self._blob(key).download_blob(offset=offset, length=length, max_concurrency=1)
                if d.size is None:
                    raise _Incomplete("the answer lacks its length")
                data = d.readall()
                if len(data) != d.size:
                    raise _Incomplete(f"the answer was cut short ({len(data)} of {d.size} bytes)")
                return data
            except HttpResponseError as e:
                if e.status_code == 416:
                    self._blob(key).get_blob_properties()
                    return b""
                raise
        return await self._call("read", path, op)

    def _list_page(self, prefix: str, delimiter, token):
        from azure.storage.blob import BlobPrefix
        cc = self._container()
        if delimiter:       # BlobPrefix items are folders; nothing under them is listed
            pager = cc.walk_blobs(name_starts_with=prefix, delimiter=delimiter,
                                  results_per_page=self.list_page_size)
        else:
            pager = cc.list_blobs(name_starts_with=prefix, results_per_page=self.list_page_size)
        pages = pager.by_page(continuation_token=token)
        items, folders = [], []
        for b in next(pages, []):
            if isinstance(b, BlobPrefix):
                folders.append(b.name)
            else:
                items.append((b.name, int(b.size or 0)))
        return items, folders, pages.continuation_token

    async def create(self, path: str, data: bytes) -> None:
        key = self._key(path)

        def op():
            from azure.core.exceptions import ResourceExistsError
            try:
                self._blob(key).upload_blob(data, overwrite=False, length=len(data),
                                            validate_content=True, max_concurrency=1)
            except ResourceExistsError:     # If-None-Match: * failed (409 BlobAlreadyExists)
                raise AlreadyExists(f"{path} already exists in {self.uri}") from None
        await self._call("create", path, op)

    async def discard_incomplete(self, prefix: str) -> int:
        """Nothing to do: staged blocks never committed are not a blob, are never listed, and the
        service deletes them ("Uncommitted blocks will expire and be permanently deleted after 7
        days", https://learn.microsoft.com/dotnet/api/azure.storage.blobs.specialized.
        blockblobclient.commitblocklist). The REST API has no call to drop them sooner, short of
        deleting the blob of that name, which may be a committed object."""
        return 0

    async def delete(self, path: str) -> None:
        key = self._key(path)
        try:
            await self._call("delete", path, lambda: self._blob(key).delete_blob())
        except NotFound:
            pass

    async def stat(self, path: str) -> ObjectInfo:
        key = self._key(path)
        def op():
            props = self._blob(key).get_blob_properties()
            if props.size is None:
                raise _Incomplete("the answer lacks Content-Length")
            return props
        props = await self._call("stat", path, op)
        return ObjectInfo(path, int(props.size))

