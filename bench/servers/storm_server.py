"""Benchmark subject for the reconnect storm (``python -m bench.storm``).

Library clients (``nucleus.v1``) connect to ``/ws`` and subscribe through their
hello to rooms ``room-0`` .. ``room-<R-1>``; the server joins them with the
positions the hello carries, so a client that comes back within the room's
history gets ``recovered: true`` and the replay. The publisher connects to
``/pub`` and sends requests whose text is ``"room-<r> <seq>"``: the text is
broadcast to room ``r`` as it came, and the reply is its offset, so the load
generator knows every room's head. Blocks until SIGTERM, which closes every
socket with 1001 (a restart: the memory backend's history goes with it).

It also logs every full garbage collection, and any shorter one that took
20 ms or more, one line each (``gc generation=2 ms=152.1 collected=41700
at=<CLOCK_MONOTONIC s>``): a collection stops the event loop, and the harness
puts these pauses on the storm's timeline.

``python storm_server.py --port P [--rooms R] [--history-size H] [--history-ttl S]``
(``PYTHONPATH=src``; the harness sets it).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TextIO

from nucleus.stream import (
    HistoryPolicy,
    RequestError,
    SocketMessage,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)


class Subscriber(StreamHandler):
    """Clients may subscribe to the benchmark's rooms and to nothing else."""

    def __init__(self, rooms: int) -> None:
        self.rooms = frozenset(f"room-{r}" for r in range(rooms))

    async def on_subscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
        return channel in self.rooms


class Publisher(StreamHandler):
    """Broadcast each request's text to the room it names; reply with the offset."""

    def __init__(self, rooms: int) -> None:
        self.rooms = frozenset(f"room-{r}" for r in range(rooms))

    async def on_request(self, hub: StreamHub, socket: WebSocket, data: Any) -> Any:
        room = str(data).partition(" ")[0]
        if room not in self.rooms:
            raise RequestError("not_found", f"no room {room!r}")
        return await hub.broadcast_to_room(room, SocketMessage.Text(str(data)))


def log_gc_pauses(out: TextIO, threshold: float = 0.02) -> None:
    """Write a line for every full collection and every collection of ``threshold`` s or more."""
    started = 0.0

    def callback(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
            return
        took = time.perf_counter() - started
        if info["generation"] == 2 or took >= threshold:
            print(f"gc generation={info['generation']} ms={took * 1000:.1f} "
                  f"collected={info['collected']} at={time.monotonic():.6f}", file=out, flush=True)

    gc.callbacks.append(callback)


def describe() -> str:
    try:
        return f"nucleus {version('nucleus')}"
    except PackageNotFoundError:  # run from the source tree, not installed
        import nucleus

        return f"nucleus {getattr(nucleus, '__version__', '?')} (source tree)"


def build_server(rooms: int, history: HistoryPolicy) -> StreamServer:
    server = StreamServer()
    server.history("room-*", history)
    server.route("/ws", Subscriber(rooms))
    # The publisher is a trusted backend service: the browser-sized inbound
    # limit would close it, as in the fan-out benchmark.
    server.route("/pub", Publisher(rooms), rate_limit=None)
    return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--history-size", type=int, default=1000, help="messages kept per room")
    parser.add_argument("--history-ttl", type=float, default=600.0, help="seconds kept")
    args = parser.parse_args()
    subject = build_server(args.rooms, HistoryPolicy(args.history_size, args.history_ttl))
    print(f"{describe()}, backend memory, storm subject", flush=True)
    log_gc_pauses(sys.stdout)
    subject.run(host="127.0.0.1", port=args.port)
