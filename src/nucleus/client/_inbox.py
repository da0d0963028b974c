"""
A bounded buffer between the connection's reader and one consumer, which can
be ended, with or without an error, by whoever owns it.

The reader waits when it is full (back-pressure, as the websockets library's
``max_queue``: a consumer that stops reading eventually stops the reading of
the connection, and the server's slow-consumer rule takes over); the consumer
gets what was buffered before the end, then the end.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Ended", "Inbox"]

T = TypeVar("T")


class Ended(Exception):
    """Raised by :meth:`Inbox.get` after a normal end, once everything was read."""


class Inbox(Generic[T]):
    __slots__ = ("_ended", "_error", "_items", "_limit", "_readable", "_writable")

    def __init__(self, limit: int) -> None:
        self._items: deque[T] = deque()
        self._limit = limit
        self._ended = False
        self._error: BaseException | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def ended(self) -> bool:
        return self._ended

    async def put(self, item: T) -> None:
        """Add ``item``, waiting while the inbox is full; dropped once it ended."""
        while len(self._items) >= self._limit and not self._ended:
            self._writable.clear()
            await self._writable.wait()
        if not self._ended:
            self._items.append(item)
            self._readable.set()

    async def get(self) -> T:
        """The next item; after the end, :class:`Ended` or the error it ended with."""
        while not self._items:
            if self._ended:
                if self._error is not None:
                    raise self._error.with_traceback(None)  # not one traceback per call
                raise Ended
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        self._writable.set()
        return item

    def end(self, error: BaseException | None = None) -> None:
        """No more items; readers get what is buffered, then the end. Idempotent."""
        if self._ended:
            return
        self._ended = True
        self._error = error
        self._readable.set()
        self._writable.set()
