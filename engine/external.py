"""external://<name>/<extra path>: a URI that names an external connection stored in the catalog,
resolved to the stored URI with the extra path appended. Also the store probes behind
CREATE EXTERNAL CONNECTION (write, read, list, delete a small object, as CockroachDB) and
CHECK EXTERNAL CONNECTION (timed transfer)."""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .errors import InvalidURI, StorageError
from .redact import redact_uri
from .storage import ObjectStore, join_uri, put, read_all

__all__ = ["parse_external", "compose", "probe", "check", "CheckResult", "PROBE_NAME"]

PROBE_NAME = "crdb_external_storage_location"


def parse_external(uri: str) -> tuple[str, str] | None:
    """(connection name, extra path) for an external:// URI, else None."""
    u = urlsplit(uri)
    if u.scheme.lower() != "external":
        return None
    if not u.netloc:
        raise InvalidURI("external:// needs a connection name: external://<name>/<path>")
    if u.query:
        raise InvalidURI(f"unknown query parameters: {u.query.split('=')[0]} for {redact_uri(uri)}",
                         hint="parameters belong to the external connection's own URI")
    return unquote(u.netloc), unquote(u.path)


def compose(base: str, extra: str) -> str:
    if urlsplit(base).scheme.lower() == "external":
        raise InvalidURI("an external connection cannot point at another external connection")
    return join_uri(base, extra) if extra.strip("/") else base


async def probe(store: ObjectStore) -> None:
    """Write, read, list and delete a small object: the connection works for backups."""
    payload = os.urandom(64)
    try:
        await put(store, PROBE_NAME, payload)
        if await read_all(store, PROBE_NAME) != payload:
            raise StorageError(f"{store.uri}: read back different bytes than written")
        if not [o async for o in store.list(PROBE_NAME)]:
            raise StorageError(f"{store.uri}: a written object is missing from the listing")
    finally:
        await store.delete(PROBE_NAME)


@dataclass
class CheckResult:
    ok: bool
    error: str | None
    transferred: int
    read_seconds: float
    write_seconds: float
    can_delete: bool


async def check(store: ObjectStore, transfer: int, concurrently: int, time_limit: float) -> CheckResult:
    """Write then read back `concurrently` objects of `transfer` bytes each (or fewer when the
    time limit runs out), then delete them."""
    block = os.urandom(1 << 20)
    names = [f"{PROBE_NAME}-check-{os.getpid()}-{i}" for i in range(concurrently)]
    deadline = time.monotonic() + time_limit

    async def write_one(name: str) -> int:
        w = await store.writer(name)
        sent = 0
        try:
            while sent < transfer and time.monotonic() < deadline:
                n = min(len(block), transfer - sent)
                await w.write(block[:n])
                sent += n
        except BaseException:
            await w.abort()
            raise
        await w.commit()
        return sent

    async def read_one(name: str) -> int:
        return sum([len(c) async for c in store.get(name)])

    written = read = 0
    t0 = time.monotonic()
    try:
        written = sum(await asyncio.gather(*(write_one(n) for n in names)))
        t1 = time.monotonic()
        read = sum(await asyncio.gather(*(read_one(n) for n in names)))
        t2 = time.monotonic()
    except (StorageError, InvalidURI, OSError) as e:
        return CheckResult(False, getattr(e, "message", str(e)), written, 0.0, 0.0, False)
    can_delete = True
    for n in names:
        try:
            await store.delete(n)
        except (StorageError, OSError):
            can_delete = False
    ok = read == written
    return CheckResult(ok, None if ok else "read back fewer bytes than written", written,
                       t2 - t1, t1 - t0, can_delete)
