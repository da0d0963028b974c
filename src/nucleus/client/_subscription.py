"""
What the application iterates: a channel's messages (:class:`Subscription`)
and the direct messages (:class:`DirectMessages`), each fed by the stream's
reader through its own bounded :class:`Inbox`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from nucleus.stream import InvalidMessage

from ._events import ErrorInfo, Meta
from ._inbox import Ended, Inbox
from ._protocol import Message

if TYPE_CHECKING:
    from ._stream import Stream

__all__ = ["DirectMessages", "Subscription"]

T = TypeVar("T")


class Subscription(Generic[T]):
    """
    One subscriber's view of a channel, from ``await stream.subscribe(channel)``.

    ``async for data in sub`` yields each message once, in order, across
    reconnects (a lost stretch is a ``gap`` event): decoded JSON, else the
    text or bytes; with ``model``, an instance of it (a message that does not
    fit is skipped and reported as an ``invalid`` error). The iteration ends
    after :meth:`unsubscribe` or ``stream.close()``, and raises
    :class:`SubscriptionRefused` or :class:`StreamClosed` when the server ended
    it. Messages wait for the consumer up to the stream's ``max_buffer``; then
    the connection waits too: iterate every subscription you keep.
    """

    def __init__(self, stream: Stream, channel: str, model: type[T] | None, limit: int) -> None:
        #: The channel's name.
        self.channel = channel
        #: What each message is decoded into (``None``: JSON, text or bytes as they come).
        self.model = model
        self._stream = stream
        self._inbox: Inbox[Message] = Inbox(limit)

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        data: T = (await self._next())[0]
        return data

    def with_meta(self) -> AsyncIterator[tuple[T, Meta]]:
        """Iterate ``(data, meta)``: the message and its channel, event name and offset."""
        return _WithMeta(self)

    async def unsubscribe(self) -> None:
        """
        Stop this subscription; the last one of its channel unsubscribes the
        client (returns once the server confirmed, when connected). Idempotent.
        """
        if self._inbox.ended:
            return
        self._inbox.end()
        await self._stream._unsubscribe(self)

    async def _next(self) -> tuple[Any, Meta]:
        while True:
            try:
                message = await self._inbox.get()
            except Ended:
                raise StopAsyncIteration from None
            if self.model is None:
                return message.data(), message.meta
            try:
                return message.decode(self.model), message.meta
            except InvalidMessage as exc:
                meta = message.meta
                self._stream._report(ErrorInfo("invalid", (
                    f"skipped a message of {meta.channel!r} (offset {meta.offset}): "
                    f"not a valid {getattr(self.model, '__name__', 'model')}: {exc}")))

    def __repr__(self) -> str:
        return f"<Subscription {self.channel!r}{' ended' if self._inbox.ended else ''}>"


class _WithMeta(Generic[T]):
    def __init__(self, subscription: Subscription[T]) -> None:
        self._subscription = subscription

    def __aiter__(self) -> _WithMeta[T]:
        return self

    async def __anext__(self) -> tuple[T, Meta]:
        return await self._subscription._next()


class DirectMessages:
    """
    The direct messages (``send_to``, ``send_to_user``) that arrive from its
    creation on, from ``stream.messages()``: each message's data (decoded
    JSON, else the text or bytes). Ends when the stream closes or :meth:`aclose`
    is called; direct messages are not recovered across reconnects.
    """

    def __init__(self, stream: Stream, limit: int) -> None:
        self._stream = stream
        self._inbox: Inbox[Message] = Inbox(limit)

    def __aiter__(self) -> DirectMessages:
        return self

    async def __anext__(self) -> Any:
        try:
            return (await self._inbox.get()).data()
        except Ended:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop receiving; what was buffered is dropped."""
        self._inbox.end()
        self._stream._direct.discard(self._inbox)
