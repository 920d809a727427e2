"""A fault-injecting HTTP/1.1 reverse proxy on 127.0.0.1 (for S3 clients in front of SeaweedFS).

Each request is forwarded to the target as is (Host header untouched, so S3 signatures still
match), one request per connection (`Connection: close` both ways). With probability `rate`
(seeded RNG, so a run is repeatable) a request gets one of these faults instead:
- "503":        answered at once with 503 SlowDown (S3's throttling reply), never forwarded;
- "drop":       the connection is cut before the request is forwarded;
- "drop_after": forwarded and processed by the target, then the connection is cut before any
                answer (the client cannot know the request took effect);
- "truncate":   forwarded, and the answer is cut off part-way through its body (or its head,
                when it has no body).
`rate=1.0` makes every request fail: a permanently broken store. `counts` tells what happened.
The proxy runs its own event loop in a daemon thread, so sync and async tests can use it.
"""
from __future__ import annotations

import asyncio
import collections
import random
import threading

__all__ = ["FaultHTTPProxy", "FAULTS"]

FAULTS = ("503", "drop", "drop_after", "truncate")

_SLOWDOWN = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
             b"<Message>Please reduce your request rate.</Message></Error>")


class FaultHTTPProxy:
    def __init__(self, target_port: int, *, rate: float = 0.0, seed: int = 0,
                 faults: tuple[str, ...] = FAULTS, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.rate = rate
        self.faults = tuple(faults)
        self.rng = random.Random(seed)
        self.counts: collections.Counter[str] = collections.Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="faulthttp")
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "FaultHTTPProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        async def stop():
            self._server.close()
            await self._server.wait_closed()
        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        except Exception:  # noqa: BLE001 - connections still open are cut with the loop
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _pick(self) -> str | None:
        if self.rate > 0 and self.rng.random() < self.rate:
            return self.rng.choice(self.faults)
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method = lines[0].split(" ", 1)[0].upper()
        headers = [tuple(h.split(":", 1)) for h in lines[1:] if ":" in h]
        names = {k.strip().lower(): v.strip() for k, v in headers}
        self.counts["requests"] += 1
        fault = self._pick()
        if fault:
            self.counts[fault] += 1
        if fault == "503":
            body = b"" if method == "HEAD" else _SLOWDOWN
            writer.write(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_SLOWDOWN) + body)
            await writer.drain()
            return
        if fault == "drop":
            writer.transport.abort()
            return
        if names.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        body = await _read_body(reader, names)
        kept = [f"{k}:{v}" for k, v in headers if k.strip().lower() not in ("connection", "expect")]
        out_head = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin-1")
        up_r, up_w = await asyncio.open_connection(*self.target)
        try:
            up_w.write(out_head + body)
            await up_w.drain()
            resp_head = await up_r.readuntil(b"\r\n\r\n")
            if fault == "drop_after":
                writer.transport.abort()
                return
            rl = resp_head.decode("latin-1").split("\r\n")
            rh = [h for h in rl[1:] if h and h.split(":", 1)[0].strip().lower() != "connection"]
            resp_head = "\r\n".join([rl[0], *rh, "Connection: close", "", ""]).encode("latin-1")
            length = None
            for h in rh:
                k, _, v = h.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip())
            has_body = method != "HEAD" and not rl[0].split(" ")[1:2] in (["204"], ["304"])
            if fault == "truncate":
                if has_body and length:
                    writer.write(resp_head)
                    cut = self.rng.randrange(0, length)
                    sent = 0
                    while sent < cut:
                        data = await up_r.read(min(65536, cut - sent))
                        if not data:
                            break
                        writer.write(data)
                        sent += len(data)
                else:
                    writer.write(resp_head[:self.rng.randrange(1, len(resp_head))])
                await writer.drain()
                writer.transport.abort()
                return
            writer.write(resp_head)
            while data := await up_r.read(65536):
                writer.write(data)
                await writer.drain()
            await writer.drain()
        finally:
            up_w.close()


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """The request body exactly as sent (chunked framing kept)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            line = await reader.readuntil(b"\r\n")
            parts.append(line)
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while True:                      # trailers, then the empty line
                    t = await reader.readuntil(b"\r\n")
                    parts.append(t)
                    if t == b"\r\n":
                        return b"".join(parts)
            parts.append(await reader.readexactly(size + 2))
    n = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(n) if n else b""
