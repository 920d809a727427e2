"""From a URI to an ObjectStore: one entry per scheme (scheme, parser/factory).

`open_store(uri, ctx)` validates the URI (unknown query parameters are 22023, as CockroachDB)
and returns a store rooted at the URI's path, wrapped in wrappers.RetryingStore (retries with
backoff; harmless for nodelocal, whose failures are never transient). Opening does no I/O: the
cloud SDKs are imported and their clients made on first use, in the store's worker threads.
Errors name the store by its redacted URI only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import InvalidURI, Unsupported
from ..redact import redact_uri
from .base import ObjectStore
from .local import LocalStore
from .wrappers import RetryingStore

__all__ = ["StoreContext", "open_store", "join_uri", "implicit_access"]


@dataclass(frozen=True)
class StoreContext:
    nodelocal_root: Path


def _nodelocal(uri: str, ctx: StoreContext) -> ObjectStore:
    u = urlsplit(uri)
    node = u.netloc
    if node != "self" and not node.isdigit():
        raise InvalidURI(f"invalid nodelocal URI {redact_uri(uri)}: the host must be a node ID or 'self'",
                         hint="nodelocal://1/path or nodelocal://self/path")
    params = parse_qsl(u.query, keep_blank_values=True)
    if params:
        raise InvalidURI(f"unknown query parameters: {', '.join(sorted(k for k, _ in params))} "
                         f"for {redact_uri(uri)}")
    path = unquote(u.path).strip("/")
    if any(part == ".." for part in path.split("/")):
        raise InvalidURI(f"invalid nodelocal URI {redact_uri(uri)}: '..' is not allowed")
    return LocalStore(ctx.nodelocal_root, path, redact_uri(uri))


def _s3(uri: str, ctx: StoreContext) -> ObjectStore:
    from .s3 import S3Store, parse_s3
    return S3Store(parse_s3(uri))


def _gs(uri: str, ctx: StoreContext) -> ObjectStore:
    from .gcs import GCSStore, parse_gs
    return GCSStore(parse_gs(uri))


def _azure(uri: str, ctx: StoreContext) -> ObjectStore:
    from .azure import AzureStore, parse_azure
    return AzureStore(parse_azure(uri))


def _not_yet(scheme: str) -> Callable[[str, StoreContext], ObjectStore]:
    def factory(uri: str, ctx: StoreContext) -> ObjectStore:
        raise Unsupported(f"{scheme}:// storage is not supported by pgkeep yet",
                          hint="use nodelocal://self/<path> for now")
    return factory


_SCHEMES: dict[str, Callable[[str, StoreContext], ObjectStore]] = {
    "nodelocal": _nodelocal,
    "s3": _s3,
    "gs": _gs,
    "azure": _azure,
    "azure-blob": _azure,
    "azure-storage": _azure,
    **{s: _not_yet(s) for s in ("external", "userfile")},
}


def _implicit(module: str) -> Callable[[list[tuple[str, str]]], str | None]:
    def check(params: list[tuple[str, str]]) -> str | None:
        from importlib import import_module
        return import_module(f"{__package__}.{module}").implicit_access(params)
    return check


# Per scheme: what of a URI uses pgkeep's own disk, identity or network position instead of
# credentials the user gave (CockroachDB's EXTERNALIOIMPLICITACCESS); each cloud scheme's module
# declares its own (`implicit_access`), on the raw query pairs, so no spelling slips past.
_IMPLICIT: dict[str, Callable[[list[tuple[str, str]]], str | None]] = {
    "nodelocal": lambda params: "pgkeep's own disk (nodelocal://)",
    "userfile": lambda params: "pgkeep's own disk (userfile://)",
    "s3": _implicit("s3"),
    "gs": _implicit("gcs"),
    "azure": _implicit("azure"),
    "azure-blob": _implicit("azure"),
    "azure-storage": _implicit("azure"),
}


def implicit_access(uri: str) -> str | None:
    """Why `uri` needs implicit access (admin or EXTERNALIOIMPLICITACCESS), or None when the
    user's own credentials carry it. Reads the URI's text only; no I/O."""
    u = urlsplit(uri)
    check = _IMPLICIT.get(u.scheme.lower())
    return check(parse_qsl(u.query, keep_blank_values=True)) if check else None


def open_store(uri: str, ctx: StoreContext) -> ObjectStore:
    scheme = urlsplit(uri).scheme.lower()
    if not scheme:
        raise InvalidURI(f"{redact_uri(uri)} is not a storage URI",
                         hint="e.g. nodelocal://self/backups or s3://bucket/path?AUTH=implicit")
    factory = _SCHEMES.get(scheme)
    if factory is None:
        raise InvalidURI(f"unsupported storage scheme: {scheme!r}",
                         hint="pgkeep stores backups in nodelocal://, s3://, gs://, azure:// or external://")
    return RetryingStore(factory(uri, ctx))


def join_uri(uri: str, *parts: str) -> str:
    """uri with path segments appended before the query string."""
    u = urlsplit(uri)
    path = "/".join([u.path.rstrip("/")] + [p.strip("/") for p in parts if p.strip("/")])
    return u._replace(path=path).geturl()
