"""Benchmark subject: Nucleus Stream's native server.

Sockets on ``/sub`` join room ``bench`` when they connect; every message
received on ``/pub`` is broadcast to the room as it came. The publisher is not
in the room, so nothing is echoed to it. Blocks until SIGTERM.

Run with ``PYTHONPATH=src`` (the harness sets it). ``--backend`` selects the
hub backend; only ``memory`` exists today, and any other value makes this
script exit with a message, which the harness reports as "not available".
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

from nucleus.stream import (
    MemoryBackend,
    SocketMessage,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)

ROOM = "bench"
BACKENDS = ("memory", "redis")


class Subscriber(StreamHandler):
    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        await hub.join_room(socket.id, ROOM)


class Publisher(StreamHandler):
    async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
        await hub.broadcast_to_room(ROOM, msg)


def build_server(backend: str) -> StreamServer:
    if backend != "memory":
        # Wire the backend in here the day nucleus.stream ships it.
        sys.exit(f"nucleus_server: backend {backend!r} is not available in nucleus.stream yet")
    return StreamServer(backend=MemoryBackend())


def describe() -> str:
    try:
        return f"nucleus {version('nucleus')}"
    except PackageNotFoundError:  # run from the source tree, not installed
        import nucleus

        return f"nucleus {getattr(nucleus, '__version__', '?')} (source tree)"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", choices=BACKENDS, default="memory")
    args = parser.parse_args()
    server = build_server(args.backend)
    server.route("/sub", Subscriber())
    # The publisher is the benchmark's trusted source, like a backend service;
    # the default inbound rate limit (meant for browsers) would close it, and
    # none of the peers limits it either.
    server.route("/pub", Publisher(), rate_limit=None)
    print(f"{describe()}, backend {args.backend}", flush=True)
    server.run(host="127.0.0.1", port=args.port)
