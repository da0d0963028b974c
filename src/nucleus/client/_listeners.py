"""
``stream.on(event, callback)``: who listens to what, and calling them so
that one failing callback can neither break delivery nor reach the caller.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, Final

__all__ = ["EVENTS", "Listeners"]

logger = logging.getLogger("nucleus.client")

#: What a stream reports besides messages, as the browser client names it.
EVENTS: Final = ("state", "gap", "message", "error")


class _Listener:
    """One registration: the same callback registered twice is two listeners."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[..., object]) -> None:
        self.callback = callback


class Listeners:
    __slots__ = ("_by_event",)

    def __init__(self) -> None:
        self._by_event: dict[str, list[_Listener]] = {}

    def add(self, event: str, callback: Callable[..., object]) -> Callable[[], None]:
        """Listen; returns the function that stops it (idempotent)."""
        if event not in EVENTS:
            raise ValueError(f"no such event {event!r}; use one of {', '.join(EVENTS)}")
        if not callable(callback) or inspect.iscoroutinefunction(callback):
            raise TypeError("callback must be a plain function (start a task from it to await)")
        entry = _Listener(callback)
        listeners = self._by_event.setdefault(event, [])
        listeners.append(entry)

        def remove() -> None:
            if entry in listeners:
                listeners.remove(entry)

        return remove

    def __contains__(self, event: str) -> bool:
        return bool(self._by_event.get(event))

    def emit(self, event: str, *args: Any) -> None:
        """Call every listener of ``event``; what one raises is logged, and the next is called."""
        for listener in list(self._by_event.get(event, ())):
            try:
                listener.callback(*args)
            except Exception:
                logger.exception("a %r listener failed", event)

    def clear(self) -> None:
        self._by_event.clear()
