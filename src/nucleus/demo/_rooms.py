"""
What the demo apps share on the hub side: counting their traffic, publishing
an event into a room, and reading a room's recent history.

``Traffic`` is plain counting with an injected clock. The library keeps no
message counters an app can read, so the apps count what their own handlers
receive and what their broadcasts deliver.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..stream import StreamHub

__all__ = ["Traffic", "publish", "recent_json"]


class Traffic:
    """Messages received from and delivered to sockets, and their rates."""

    __slots__ = ("_clock", "_mark", "received", "sent")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.received = 0
        self.sent = 0
        self._clock = clock
        self._mark = (clock(), 0, 0)

    def rates(self) -> tuple[float, float]:
        """Messages per second in and out since the previous call (or since creation)."""
        now = self._clock()
        then, received, sent = self._mark
        self._mark = (now, self.received, self.sent)
        elapsed = now - then
        if elapsed <= 0:
            return 0.0, 0.0
        return (self.received - received) / elapsed, (self.sent - sent) / elapsed


async def publish(hub: StreamHub, traffic: Traffic, room: str, event: str, data: Any) -> int:
    """``hub.channel(room).broadcast(event, data)``, counting one message out per member."""
    offset = await hub.channel(room).broadcast(event, data)
    traffic.sent += len(await hub.room_members(room))
    return offset


async def recent_json(hub: StreamHub, room: str, limit: int) -> list[dict[str, Any]]:
    """``hub.recent(room, limit)`` as the page's items: ``{"offset", "event", "data"}``."""
    return [{"offset": p.offset, "event": p.event, "data": p.message.as_json()}
            for p in await hub.recent(room, limit)]
