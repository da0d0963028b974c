"""Benchmark subject: Nucleus Stream's native server.

Sockets on ``/sub`` join room ``bench`` when they connect; every message
received on ``/pub`` is broadcast to the room as it came. The publisher is not
in the room, so nothing is echoed to it. Blocks until SIGTERM.

Two ways to run it (``PYTHONPATH=src``, the harness sets it):

- ``python nucleus_server.py --port P [--backend memory|redis://...] [--prefix K]``:
  one process, the hub on the backend given (``memory`` by default).
- ``python -m nucleus serve nucleus_server:server --port P --workers N --backend redis://...``
  (with this folder on ``PYTHONPATH``): the same routes, served by ``nucleus
  serve``, which then owns the backend and the processes.
"""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version

from nucleus.stream import (
    Backend,
    MemoryBackend,
    RedisBackend,
    SocketMessage,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)

ROOM = "bench"


class Subscriber(StreamHandler):
    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        await hub.join_room(socket.id, ROOM)


class Publisher(StreamHandler):
    async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
        await hub.broadcast_to_room(ROOM, msg)


def make_backend(url: str, prefix: str) -> Backend:
    """``memory`` or a ``redis://`` URL; the Redis keys and channels start with ``prefix``."""
    if url in ("memory", "memory://"):
        return MemoryBackend()
    return RedisBackend(url, prefix=prefix)


def build_server(backend: Backend) -> StreamServer:
    server = StreamServer(backend=backend)
    server.route("/sub", Subscriber())
    # The publisher is the benchmark's trusted source, like a backend service;
    # the default inbound rate limit (meant for browsers) would close it, and
    # none of the peers limits it either.
    server.route("/pub", Publisher(), rate_limit=None)
    return server


def describe() -> str:
    try:
        return f"nucleus {version('nucleus')}"
    except PackageNotFoundError:  # run from the source tree, not installed
        import nucleus

        return f"nucleus {getattr(nucleus, '__version__', '?')} (source tree)"


# For ``nucleus serve nucleus_server:server``, which replaces the backend (--backend).
server = build_server(MemoryBackend())
if __name__ != "__main__":  # the harness reads the first line of output as the version
    print(f"{describe()}, nucleus serve", flush=True)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", default="memory", help="memory or redis://host:port/db")
    parser.add_argument("--prefix", default="nucleus-bench", help="Redis key prefix")
    args = parser.parse_args()
    subject = build_server(make_backend(args.backend, args.prefix))
    shown = "memory" if args.backend.startswith("memory") else "redis"
    print(f"{describe()}, backend {shown}", flush=True)
    subject.run(host="127.0.0.1", port=args.port)
