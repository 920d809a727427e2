"""The floor of a pure-Python proxy: a uvloop TCP relay that forwards bytes both ways with asyncio
transports and does nothing else (no framing, no parsing, no interception).
bench/proxy_overhead.py runs it as the target `pyrelay` to show how much any proxy built on
asyncio transports pays, whatever its own code does. (pgkeep's compiled relay, which takes the
sockets away from the transports in steady state, pays less: see docs/ARCHITECTURE.md.)

    python bench/pyrelay.py LISTEN_PORT UPSTREAM_PORT
"""
from __future__ import annotations

import asyncio
import socket
import sys


class _Half(asyncio.Protocol):
    """One side of a relayed connection; `peer` is the transport of the other side."""

    def __init__(self, peer: asyncio.Transport | None = None) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []   # client bytes that arrive before the upstream connects

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.pending.append(data)
        else:
            self.peer.write(data)

    def connection_lost(self, exc) -> None:
        if self.peer is not None:
            self.peer.close()

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()


async def serve(listen_port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()

    def accept() -> _Half:
        client = _Half()

        async def connect() -> None:
            try:
                transport, upstream = await loop.create_connection(
                    lambda: _Half(client.transport), "127.0.0.1", upstream_port)
            except OSError:
                client.transport.close()
                return
            client.peer = transport
            for data in client.pending:
                transport.write(data)
            client.pending.clear()

        loop.call_soon(lambda: loop.create_task(connect()))
        return client

    server = await loop.create_server(accept, "127.0.0.1", listen_port, backlog=512)
    async with server:
        await server.serve_forever()


def main() -> None:
    import uvloop
    uvloop.install()
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))


if __name__ == "__main__":
    main()
