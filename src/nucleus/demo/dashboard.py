"""
The live dashboard: the server pushes its own figures every second and the
page draws them as live charts.

A background task samples the open connections (``hub.connection_count()``,
every node), the messages per second in and out of the demo apps (which count
them, see :class:`._rooms.Traffic`), this process's CPU use (percent of one
core) and resident memory, and publishes each sample to the ``metrics`` room.
That room keeps the last two minutes, which a page asks for when it opens so
that its charts start full. The charts are a small hand-written canvas module
(``static/charts.js``): nothing is fetched from elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from ..stream import (
    HistoryPolicy,
    RequestError,
    StreamError,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)
from ._rooms import Traffic, publish, recent_json
from ._web import install_asset, install_page, redirect

__all__ = ["INTERVAL", "PREFIX", "ROOM", "DashboardHandler", "ProcessMeter", "create_app",
           "install", "resident_memory"]

logger = logging.getLogger("nucleus.demo")

PREFIX = "/dashboard"
ROOM = "metrics"
#: Seconds between samples.
INTERVAL = 1.0
#: Samples the room keeps, and a page's charts show.
KEEP = 120


def resident_memory() -> int:
    """This process's resident set size in bytes (its peak where /proc is missing; 0 if unknown)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if os.uname().sysname == "Darwin" else peak * 1024  # bytes on macOS, else KiB


class ProcessMeter:
    """CPU time this process used between two readings, as a percentage of one core."""

    __slots__ = ("_clock", "_cpu", "_mark")

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self._clock = clock
        self._cpu = cpu
        self._mark = (clock(), cpu())

    def cpu_percent(self) -> float:
        now, used = self._clock(), self._cpu()
        then, before = self._mark
        self._mark = (now, used)
        return 0.0 if now <= then else max(0.0, 100.0 * (used - before) / (now - then))


async def sample(hub: StreamHub, traffic: Traffic, meter: ProcessMeter) -> dict[str, Any]:
    """One reading of every figure the page charts."""
    received, sent = traffic.rates()
    return {
        "t": time.time(),
        "connections": await hub.connection_count(),
        "in": round(received, 2),
        "out": round(sent, 2),
        "cpu": round(meter.cpu_percent(), 2),
        "memory": resident_memory(),
    }


class DashboardHandler(StreamHandler):
    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic

    async def on_subscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
        return channel == ROOM

    async def on_request(self, hub: StreamHub, socket: WebSocket, data: Any) -> Any:
        self.traffic.received += 1
        if data != {"type": "recent"}:
            raise RequestError("bad_request", 'ask {"type": "recent"}')
        return await recent_json(hub, ROOM, KEEP)


def install(server: StreamServer, traffic: Traffic, interval: float = INTERVAL) -> None:
    """Add the dashboard to ``server``: the page at ``/dashboard/``, the socket at ``.../ws``."""
    server.route(f"{PREFIX}/ws", DashboardHandler(traffic))
    server.history(ROOM, HistoryPolicy(size=KEEP, ttl=KEEP * interval + 60))

    async def push_metrics(hub: StreamHub) -> None:
        meter = ProcessMeter()
        while True:
            await asyncio.sleep(interval)
            try:
                await publish(hub, traffic, ROOM, "sample", await sample(hub, traffic, meter))
            except StreamError as exc:  # the backend is down: the next sample may get through
                logger.warning("dashboard: sample not published: %s", exc)

    server.background(push_metrics)
    install_page(server, PREFIX, "dashboard.html")
    install_asset(server, f"{PREFIX}/charts.js", "charts.js")


def create_app(interval: float = INTERVAL) -> StreamServer:
    """The dashboard alone, at http://127.0.0.1:3000/ (redirected to ``/dashboard/``)."""
    server = StreamServer()
    install(server, Traffic(), interval)
    redirect(server, "/", "dashboard/")
    return server
