"""What a cloud storage URI says, and the frame the cloud backends (s3, gs, azure) share.

Owns:
- `parse_cloud_uri`: scheme://bucket/path?PARAMS -> CloudURI. Parameters are CockroachDB's, exact
  upper-case names; anything else is 22023 `unknown query parameters: A, B` (InvalidURI). A
  parameter given twice is 22023 too. Every message names the store by its redacted URI, with
  unknown parameters' values hidden as well (a misspelt secret must not leak).
- `TransientStorageError`: a StorageError (58030) that a retry may cure (throttling, 5xx,
  resets, timeouts, truncated bodies). Backends raise it; only wrappers.py acts on it.
- `Requests`: how a backend runs its blocking SDK calls: in the store's own small thread pool
  (never on the event loop), each call through `request_policy.run(...)`, the one seam where
  wrappers.py puts its retries. A backend never retries by itself.
- `PartPipeline`: a written stream cut into parts uploaded in the background, bounded memory.
- `scrub` / `describe`: short error texts from SDK exceptions with every secret value removed.
- The validators of every URI part that shapes a host name or an endpoint (`check_s3_bucket`,
  `check_gcs_bucket`, `check_azure_container`, `check_azure_account`, `check_region`): each
  backend's parser calls them, so a bad value is 22023 before any network access. A name spliced
  into `https://<account>.blob.core.windows.net` must never be able to name another host.
- `Unreachable`: every transport-level failure (refused, reset, DNS, timeout, an answer that is
  not the service's protocol) reads the same to the client, "could not reach <redacted uri>",
  so an error cannot tell an open port from a closed one; the detail goes to pgkeep's log.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import concurrent.futures
import functools
import re
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .base import Listed, ObjectInfo, PrefixInfo, check_delimiter
from ..errors import EngineError, InvalidURI, StorageError
from ..redact import REDACTED, SECRET_QUERY_PARAMS, redact_uri

__all__ = ["CloudStore", "CloudWriter", "CloudURI", "parse_cloud_uri", "parse_bool", "parse_auth", "TransientStorageError",
           "Unreachable", "unreachable", "check_s3_bucket", "check_gcs_bucket",
           "check_azure_container", "check_azure_account", "check_region", "Requests", "DirectPolicy", "PartPipeline", "scrub", "describe", "check_name",
           "join_key", "fix_base64"]


log = logging.getLogger("pgkeep.storage")


class TransientStorageError(StorageError):
    """A failure that may go away if the same request is made again (58030 if it does not)."""


class Unreachable(TransientStorageError):
    """The service could not be reached or did not speak its protocol; the message is the same
    whatever the cause (see the module docstring)."""


def unreachable(uri: str, op: str, path: str, exc: BaseException,
                secrets: Iterable[str] = ()) -> Unreachable:
    """The client-facing error for a transport failure; the cause is logged, secrets scrubbed."""
    root, seen = exc, {id(exc)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        root = nxt
        seen.add(id(nxt))
    cause = "" if root is exc else f" (cause: {describe(root, secrets)})"
    log.warning("could not reach %s to %s %s: %s%s", uri, op, path, describe(exc, secrets), cause)
    return Unreachable(f"could not reach {uri} to {op} {path}",
                       hint="check the storage URI and that the storage service is up")


# -- names that shape host names and endpoints --
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_GCS_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_AZURE_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_AZURE_SPECIAL_CONTAINERS = ("$root", "$web", "$logs")
_AZURE_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_REGION = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62})")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def check_s3_bucket(name: str, redacted: str) -> None:
    """AWS's rules: 3-63 lowercase letters, digits, dots and hyphens, a letter or digit at both
    ends, no '..', not an IP address."""
    if not _S3_BUCKET.fullmatch(name) or ".." in name or _is_ip(name):
        raise InvalidURI(f"invalid S3 bucket name {name!r} in {redacted}",
                         hint="bucket names are 3-63 lowercase letters, digits, dots and hyphens, "
                              "starting and ending with a letter or digit")


def check_gcs_bucket(name: str, redacted: str) -> None:
    """Google's rules: as S3's plus '_', up to 222 characters when dotted, each dot-separated
    part at most 63."""
    parts = name.split(".")
    long_ok = len(name) <= 63 or (len(parts) > 1 and all(len(p) <= 63 for p in parts))
    if (not _GCS_BUCKET.fullmatch(name) or not long_ok or any(not p for p in parts)
            or _is_ip(name)):
        raise InvalidURI(f"invalid GCS bucket name {name!r} in {redacted}",
                         hint="bucket names are 3-63 lowercase letters, digits, dots, hyphens and "
                              "underscores (up to 222 when dotted), starting and ending with a "
                              "letter or digit")


def check_azure_container(name: str, redacted: str) -> None:
    if name not in _AZURE_SPECIAL_CONTAINERS and not _AZURE_CONTAINER.fullmatch(name):
        raise InvalidURI(f"invalid Azure container name {name!r} in {redacted}",
                         hint="container names are 3-63 lowercase letters, digits and single "
                              "hyphens, starting and ending with a letter or digit")


def check_azure_account(name: str, redacted: str) -> None:
    if not _AZURE_ACCOUNT.fullmatch(name):
        raise InvalidURI(f"invalid AZURE_ACCOUNT_NAME in {redacted}",
                         hint="Azure storage account names are 3-24 lowercase letters and digits")


def check_region(param: str, value: str, redacted: str) -> None:
    if not _REGION.fullmatch(value):
        raise InvalidURI(f"invalid {param} {value!r} in {redacted}",
                         hint="a region is lowercase letters, digits and hyphens, e.g. us-east-1")


@dataclass(frozen=True)
class CloudURI:
    scheme: str
    bucket: str                  # bucket or container (the URI's host)
    prefix: str                  # the path under it, no leading or trailing '/'
    params: dict[str, str] = field(repr=False)
    redacted: str                # the whole URI as it may appear in messages
    secrets: tuple[str, ...] = field(default=(), repr=False)   # values to scrub from texts

    def get(self, name: str, default: str | None = None) -> str | None:
        v = self.params.get(name)
        return default if v is None or v == "" else v


def parse_cloud_uri(uri: str, known: Iterable[str], *, what: str) -> CloudURI:
    """Split and validate a bucket URI; `known` are the parameters this scheme accepts."""
    u = urlsplit(uri)
    known = set(known)
    pairs = parse_qsl(u.query, keep_blank_values=True)
    unknown = sorted({k for k, _ in pairs if k not in known})
    if unknown:
        shown = _hide_values(uri, set(unknown))
        raise InvalidURI(f"unknown query parameters: {', '.join(unknown)} for {shown}",
                         hint=f"{what} URIs take {', '.join(sorted(known))} "
                              "(upper-case, as CockroachDB spells them)")
    red = redact_uri(uri)
    params: dict[str, str] = {}
    for k, v in pairs:
        if k in params:
            raise InvalidURI(f"query parameter {k} is given more than once in {red}")
        params[k] = v
    host = u.netloc.rpartition("@")[2]
    if not host:
        raise InvalidURI(f"empty host component; {what} URI must specify a target "
                         f"{'container' if what == 'azure' else 'bucket'}: {red}")
    prefix = unquote(u.path).strip("/")
    if any(part in ("..", ".") for part in prefix.split("/")):
        raise InvalidURI(f"invalid {what} URI {red}: '.' and '..' are not allowed in the path")
    secrets = tuple(v for k, v in params.items() if k in SECRET_QUERY_PARAMS and v)
    return CloudURI(u.scheme.lower(), unquote(host), prefix, params, red, secrets)


def _hide_values(uri: str, names: set[str]) -> str:
    """redact_uri, and the values of `names` hidden as well."""
    red = redact_uri(uri)
    head, q, query = red.partition("?")
    if not q:
        return red
    out = []
    for p in query.split("&"):
        k, eq, _ = p.partition("=")
        out.append(k + "=" + REDACTED if eq and unquote(k) in names else p)
    return head + "?" + "&".join(out)


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_bool(cu: CloudURI, name: str, default: bool = False) -> bool:
    v = cu.params.get(name)
    if v is None or v == "":
        return default
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise InvalidURI(f"invalid value {v!r} for {name} in {cu.redacted}: want true or false")


def parse_auth(cu: CloudURI) -> str:
    """AUTH=specified (the default: credentials come from the URI) or AUTH=implicit (from
    pgkeep's own environment, the SDK's default chain)."""
    v = (cu.params.get("AUTH") or "specified").lower()
    if v not in ("specified", "implicit"):
        raise InvalidURI(f"unsupported value {cu.params['AUTH']!r} for AUTH in {cu.redacted}",
                         hint="AUTH=specified or AUTH=implicit")
    return v


def check_name(name: str, cu_redacted: str) -> None:
    """Object names are '/'-separated, relative, with no empty, '.' or '..' segment."""
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
        raise InvalidURI(f"invalid object name {name!r} in {cu_redacted}")


def fix_base64(value: str) -> str:
    """A base64 value whose '+' signs became spaces because the URI did not percent-encode them
    (form decoding, as CockroachDB's): base64 has no spaces, so this is unambiguous."""
    return value.replace(" ", "+")


def join_key(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def scrub(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, REDACTED).replace(quote(s, safe=""), REDACTED)
    return text


_URL_QUERY = re.compile(r"""(https?://[^\s?"'<>]+)\?[^\s"'<>]*""")


def describe(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """One short line about an SDK exception, never containing a secret: known secret values
    are scrubbed, and URLs lose their query strings (resumable-upload session IDs, signatures)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = _URL_QUERY.sub(r"\1?...", text)
    text = "".join(c if c.isprintable() else "?" for c in text)   # a peer's bytes, maybe
    if len(text) > 240:
        text = text[:240] + "..."
    name = type(exc).__name__
    return scrub(f"{name}: {text}" if text else name, secrets)


# -- running blocking SDK calls --
class DirectPolicy:
    """No retries: one attempt. wrappers.RetryPolicy replaces it."""

    async def run(self, attempt: Callable[[], Awaitable[Any]], *, store: Any, op: str,
                  path: str) -> Any:
        return await attempt()


class Requests:
    """A store's blocking SDK calls: a bounded thread pool of its own, the request policy seam,
    and the translation of SDK exceptions into NotFound / TransientStorageError / StorageError
    by the backend's `classify(exc, op, path) -> Exception`."""

    def __init__(self, name: str, classify: Callable[[BaseException, str, str], Exception],
                 max_workers: int = 8) -> None:
        self._name = name
        self._classify = classify
        self._max_workers = max_workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.policy: Any = DirectPolicy()

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self._max_workers, thread_name_prefix=f"pgkeep-{self._name}")
        return self._pool

    async def thread(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run fn in the pool, no policy, exceptions untouched."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), functools.partial(fn, *args, **kw))

    async def call(self, store: Any, op: str, path: str, fn: Callable[..., Any], *args: Any,
                   **kw: Any) -> Any:
        """One SDK request, through the policy; exceptions classified."""
        async def attempt():
            try:
                return await self.thread(fn, *args, **kw)
            except EngineError:
                raise
            except Exception as e:  # noqa: BLE001 - every SDK failure is classified
                raise self._classify(e, op, path) from None
        return await self.policy.run(attempt, store=store, op=op, path=path)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class PartPipeline:
    """Cuts a written stream into parts of `part_size` bytes and uploads each in the background
    with `upload(number, data)` (numbers from 1), at most `parallel` at once. Memory stays
    bounded: a write waits for a free upload slot before cutting the next part, so at most
    `parallel` parts are in flight plus the one being filled (about parallel+1 parts)."""

    def __init__(self, part_size: int, parallel: int,
                 upload: Callable[[int, bytes], Awaitable[Any]],
                 start: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.part_size = part_size
        self.parallel = max(1, parallel)
        self._upload = upload
        self._start = start
        self._buf = bytearray()
        self._tasks: list[asyncio.Task] = []
        self.parts = 0           # parts launched
        self.total = 0           # bytes fed
        self.results: dict[int, Any] = {}

    @property
    def started(self) -> bool:
        return self.parts > 0

    async def feed(self, data: bytes) -> None:
        self._buf += data
        self.total += len(data)
        while len(self._buf) >= self.part_size:
            await self._reap(self.parallel - 1)
            with memoryview(self._buf) as mv:
                part = bytes(mv[:self.part_size])
            del self._buf[:self.part_size]
            await self._launch(part)

    async def _launch(self, part: bytes) -> None:
        if self.parts == 0 and self._start is not None:
            await self._start()
        self.parts += 1
        n = self.parts

        async def run():
            self.results[n] = await self._upload(n, part)
        self._tasks.append(asyncio.ensure_future(run()))

    async def _reap(self, keep: int) -> None:
        """Wait until at most `keep` uploads are in flight; raise the first failure."""
        while True:
            for t in [t for t in self._tasks if t.done()]:
                self._tasks.remove(t)
                t.result()
            if len(self._tasks) <= keep:
                return
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    def take_rest(self) -> bytes:
        rest = bytes(self._buf)
        self._buf = bytearray()
        return rest

    async def launch_rest(self) -> None:
        """Upload what is left (if anything) as the final part, after every full one."""
        if self._buf:
            await self._reap(self.parallel - 1)      # before copying: less in memory at once
            await self._launch(self.take_rest())

    async def drain(self) -> None:
        await self._reap(0)

    def cancel(self) -> None:
        for t in self._tasks:
            if t.done():
                if not t.cancelled():
                    t.exception()   # retrieved: the writer reports the first failure itself
            else:
                t.cancel()
        self._tasks.clear()
        self._buf = bytearray()


class CloudWriter:
    """The shell every cloud writer shares: writes feed a PartPipeline (parts upload in the
    background once the object is big enough); commit puts a small object in one request or
    completes the multipart upload; nothing is usable after commit or abort. A backend sets
    `self._pipe` and implements `_put_whole(data)` and `_complete()`; `abort()` is its own."""

    def __init__(self, store, path: str) -> None:
        self._s = store
        self._path = path
        self._key = join_key(store.cfg.uri.prefix, path)
        self._closed = False
        self._pipe: PartPipeline

    def _check_open(self, action: str) -> None:
        if self._closed:
            raise StorageError(f"{action} {self._path} in {self._s.uri} after commit or abort")

    async def write(self, data: bytes) -> None:
        self._check_open("write to")
        if data:
            await self._pipe.feed(data)

    async def commit(self) -> None:
        self._check_open("commit of")
        if not self._pipe.started:
            await self._put_whole(self._pipe.take_rest())
        else:
            await self._complete()
        self._closed = True

    async def _put_whole(self, data: bytes) -> None:
        raise NotImplementedError

    async def _complete(self) -> None:
        raise NotImplementedError


class CloudStore:
    """The shell every cloud store shares: its configuration, the retry seam `request_policy`
    (wrappers.RetryingStore installs its policy there), an SDK handle built lazily in the store's
    own threads (building one takes tens of milliseconds), names inside the store, and close().
    A backend sets SERVICE, PART_SIZE, PARALLEL_PARTS and implements `_make_sdk()`,
    `_close_sdk(sdk)` and `_classify(exc, op, path)`."""

    supports_get_offset = True
    SERVICE = ""
    PART_SIZE = 8 << 20
    PARALLEL_PARTS = 2

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.uri = cfg.uri.redacted
        self.bucket = cfg.uri.bucket
        self.part_size = self.PART_SIZE
        self.parallel = self.PARALLEL_PARTS
        self.list_page_size = 1000
        self._req = Requests(self.SERVICE, self._classify)
        self._sdk: Any = None
        self._sdk_lock = threading.Lock()

    @property
    def request_policy(self):
        return self._req.policy

    @request_policy.setter
    def request_policy(self, policy) -> None:
        self._req.policy = policy

    def _sdk_handle(self) -> Any:
        with self._sdk_lock:
            if self._sdk is None:
                self._sdk = self._make_sdk()
            return self._sdk

    def _key(self, path: str) -> str:
        check_name(path, self.uri)
        return join_key(self.cfg.uri.prefix, path)

    async def list(self, prefix: str = "", delimiter: str | None = None) -> AsyncIterator[Listed]:
        """Every page first, then sorted by name: a cloud lists in key order, but S3-compatible
        stores and emulators need not (SeaweedFS walks its tree: 'a/x' before 'a-b'). With a
        delimiter, the service's own delimiter listing: one level, folders as PrefixInfo."""
        check_delimiter(delimiter)
        base = self.cfg.uri.prefix + "/" if self.cfg.uri.prefix else ""
        token = None
        found: dict[str, Listed] = {}   # a folder may come again on a later page
        while True:
            objects, folders, token = await self._req.call(
                self, "list objects under", prefix or "/", self._list_page, base + prefix,
                delimiter, token)
            for name, size in objects:
                found[name[len(base):]] = ObjectInfo(name[len(base):], size)
            for name in folders:
                found[name[len(base):]] = PrefixInfo(name[len(base):])
            if not token:
                break
        for path in sorted(found):
            yield found[path]

    def _list_page(self, prefix: str, delimiter: str | None,
                   token: Any) -> tuple[list[tuple[str, int]], list[str], Any]:
        """One page under a full prefix: (full name, size) of its objects, the full names of
        its folders (delimiter listings only, each ending with the delimiter), and the next
        page's token or None; runs in the store's threads."""
        raise NotImplementedError

    async def close(self) -> None:
        self._req.shutdown()
        sdk, self._sdk = self._sdk, None
        if sdk is not None:
            await asyncio.to_thread(self._close_sdk, sdk)

    def _make_sdk(self) -> Any:
        raise NotImplementedError

    def _close_sdk(self, sdk: Any) -> None:
        raise NotImplementedError

    def _classify(self, e: BaseException, op: str, path: str) -> Exception:
        raise NotImplementedError
