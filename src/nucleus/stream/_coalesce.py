"""
What a broker delivers, handed on in batches while this node's own publishes are in flight.

The native server writes each socket's queued frames once per event-loop turn
(docs/performance.md, "Why the fan-out is fast"). With the memory backend a
publisher's queued messages are fanned out in one turn, so one write carries
many frames. Through a broker, each publication comes back on its own, one
round trip after the previous one was sent, and every member would get one
write per message.

A :class:`Coalescer` holds what arrives from the broker while publishes of this
node are in flight (their echoes are on the way), and hands it all on, in
arrival order, once none is in flight, or ``window`` seconds after the first
held arrival, whichever comes first. It never reorders, never drops, and holds
nothing while this node is not publishing. Pure logic over a scheduler (the
event loop), no I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["Coalescer", "Scheduler"]

logger = logging.getLogger("nucleus.stream")

T = TypeVar("T")


class Scheduler(Protocol):
    """The two calls of the event loop a :class:`Coalescer` uses."""

    def call_soon(self, callback: Callable[[], object]) -> asyncio.Handle: ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> asyncio.TimerHandle: ...


class Coalescer(Generic[T]):
    """Hands arrivals to ``handle`` in order, batching them while publishes are in flight."""

    __slots__ = ("_check", "_handle", "_held", "_in_flight", "_scheduler", "_timer", "window")

    def __init__(self, handle: Callable[[T], None], window: float, scheduler: Scheduler) -> None:
        self._handle = handle
        #: The longest an arrival is held (seconds); 0 holds nothing.
        self.window = window
        self._scheduler = scheduler
        self._in_flight = 0
        self._held: list[T] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._check: asyncio.Handle | None = None

    @property
    def holding(self) -> int:
        """How many arrivals are held."""
        return len(self._held) if self._held is not None else 0

    def begin(self) -> None:
        """A publish of this node was sent: what arrives now may be held."""
        self._in_flight += 1

    def end(self) -> None:
        """
        A publish of this node was answered (or failed). When none is left in
        flight, what is held goes on at the next loop turn, unless the task
        that was answered publishes again first (a publisher's queued messages).
        """
        self._in_flight -= 1
        if not self._in_flight and self._held is not None and self._check is None:
            self._check = self._scheduler.call_soon(self._release_if_idle)

    def arrived(self, item: T) -> None:
        """One arrival from the broker, in broker order."""
        if self._held is not None:
            self._held.append(item)
        elif self._in_flight and self.window > 0:
            self._held = [item]
            self._timer = self._scheduler.call_later(self.window, self.release)
        else:
            self._handle(item)

    def _release_if_idle(self) -> None:
        self._check = None
        if not self._in_flight:
            self.release()

    def release(self) -> None:
        """Hand on everything held, now, in order."""
        held, self._held = self._held, None
        for pending in (self._timer, self._check):
            if pending is not None:
                pending.cancel()
        self._timer = self._check = None
        if held is None:
            return
        for item in held:
            try:
                self._handle(item)
            except Exception:  # one bad arrival must not lose those after it
                logger.exception("handling a broker arrival failed")
