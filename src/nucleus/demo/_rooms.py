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

from ..stream import Publication, StreamHub

__all__ = ["Traffic", "publish", "recent", "recent_json"]


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


async def recent(hub: StreamHub, room: str, limit: int) -> list[Publication]:
    """
    The last ``limit`` (or fewer) publications the room's history still holds.

    The hub offers recovery from a position, not "the last N": so ask from
    ``last - limit``, and when expiry trimmed the history past that, search for
    the oldest position it can still recover from (recoverable positions are
    contiguous up to the last offset).
    """
    if limit <= 0:
        return []
    policy = hub.history_policy(room)
    now = await hub.backend.recover(room, None, None, policy)
    low, high = max(0, now.offset - limit), now.offset
    found = await hub.backend.recover(room, now.epoch, low, policy)
    best = found.publications if found.recovered else ()
    if not found.recovered:
        low += 1
        while low < high:
            middle = (low + high) // 2
            found = await hub.backend.recover(room, now.epoch, middle, policy)
            if found.recovered:
                best, high = found.publications, middle
            else:
                low = middle + 1
    return list(best[-limit:])


async def recent_json(hub: StreamHub, room: str, limit: int) -> list[dict[str, Any]]:
    """:func:`recent` as the page's items: ``{"offset", "event", "data"}``."""
    return [{"offset": p.offset, "event": p.event, "data": p.message.as_json()}
            for p in await recent(hub, room, limit)]
