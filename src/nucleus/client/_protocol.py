"""
The client side of ``nucleus.v1`` without I/O: a state machine fed with what
the connection does, answering with events and frames to send.

It owns what makes delivery exactly-once and in order across reconnects
(``docs/protocol.md`` §5): each subscribed channel's position (epoch and last
offset delivered), dropping publications already delivered, reporting a gap
when the server cannot fill one; and the outgoing side: the hello that
resumes every channel, frames queued while not open (bounded), pending
requests and which of them the link took with it. Frames are built and parsed
by ``nucleus.stream._tagged``, the server's own definitions.

The I/O layer calls :meth:`connection_opened`, :meth:`receive` for each frame,
:meth:`next_outgoing` until it returns ``None`` (writing each frame in order)
and :meth:`connection_lost`. It must never reorder what :meth:`next_outgoing`
hands out, and this module must never block, sleep or touch a socket.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from nucleus.stream import InvalidMessage, _tagged
from nucleus.stream._message import decode_as, encode_json

from ._errors import SendQueueFull
from ._events import ErrorInfo, Gap, Meta

__all__ = [
    "Answer",
    "ClientProtocol",
    "Event",
    "Message",
    "Outgoing",
    "Refreshed",
    "Refused",
    "Subscribed",
    "Unsubscribed",
    "encode_message",
]

T = TypeVar("T")

_decode_json = msgspec.json.decode


@dataclass(frozen=True, slots=True)
class Message:
    """
    A message for the application: a publication (``meta.channel`` set) or a
    direct message. ``body`` is JSON (:class:`msgspec.Raw`), text that is not
    JSON (``str``) or binary (``bytes``).
    """

    meta: Meta
    body: msgspec.Raw | str | bytes

    def data(self) -> Any:
        """Decoded JSON, else the text or the bytes, as the browser client delivers it."""
        if isinstance(self.body, msgspec.Raw):
            return _decode_json(self.body)
        return self.body

    def decode(self, model: type[T]) -> T:
        """The message as a ``model`` instance; :class:`InvalidMessage` says why not."""
        body = self.body
        return decode_as(bytes(body) if isinstance(body, msgspec.Raw) else body, model)


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The server confirmed a subscription to ``channel`` (a ``joined``)."""

    channel: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused ``channel``; the client forgot it (it is not retried)."""

    channel: str
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """The server confirmed the ``unsub`` numbered ``id``."""

    channel: str
    id: int


@dataclass(frozen=True, slots=True)
class Refreshed:
    """The server took the token of the ``refresh`` numbered ``id``."""

    id: int


@dataclass(frozen=True, slots=True)
class Answer:
    """The reply to request ``id``: its JSON ``data``, or the handler's ``failure``."""

    id: int
    data: msgspec.Raw | None
    failure: _tagged.Failure | None


Event = Message | Subscribed | Refused | Unsubscribed | Refreshed | Answer | Gap | ErrorInfo


class Kind(enum.Enum):
    CONTROL = "control"  # means something on this connection only (hello, sub, refresh)
    MESSAGE = "message"  # the application's; survives reconnects, counts toward max_queue
    REQUEST = "request"  # the application's; pending until its reply


@dataclass(slots=True, eq=False)
class Outgoing:
    """One frame waiting to be written."""

    kind: Kind
    body: str | bytes
    json: bool = False  # a MESSAGE whose text is JSON (sent as ``data``, not ``text``)
    request_id: int | None = None


@dataclass(slots=True)
class _Channel:
    epoch: str | None = None
    offset: int | None = None


def encode_message(value: Any) -> tuple[str | bytes, bool]:
    """
    What ``send(value)`` puts on the wire: a ``str`` as text, bytes as binary,
    anything else as JSON (``True``: it is JSON). :class:`EncodeError` when it
    cannot be.
    """
    if isinstance(value, str):
        return value, False
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), False  # a copy: later changes by the caller cannot reach it
    return encode_json(value).decode(), True


class ClientProtocol:
    """One stream's ``nucleus.v1`` state, kept across its connections."""

    def __init__(self, max_queue: int = 1000) -> None:
        self.max_queue = max_queue
        #: Subscribed channels and their positions.
        self.channels: dict[str, _Channel] = {}
        #: Whether a connection is open, and whether it speaks nucleus.v1.
        self.open = False
        self.tagged = True
        self._outbox: deque[Outgoing] = deque()
        self._queued = 0  # MESSAGE items in the outbox
        self._requests: dict[int, Outgoing] = {}
        self._sent: set[int] = set()  # requests written on the current connection
        self._sub_ids: dict[int, str] = {}  # sub frames sent on this connection, unanswered
        self._hello_asked: set[str] = set()  # the hello's channels, unanswered
        self._ids = itertools.count(1)

    # the connection

    def connection_opened(self, tagged: bool) -> list[int]:
        """
        A connection opened; the hello goes first, then what waited. Returns
        the requests that cannot be sent: the server does not speak ``nucleus.v1``.
        """
        self.open, self.tagged = True, tagged
        if not tagged:
            self.channels.clear()
            dropped = list(self._requests)
            self._drop(lambda item: item.kind is Kind.REQUEST)
            self._requests.clear()
            return dropped
        self._hello_asked = set(self.channels)
        self._outbox.appendleft(Outgoing(Kind.CONTROL, _tagged.build(_tagged.Hello({
            name: _tagged.Position(c.epoch, c.offset) if c.epoch is not None
            and c.offset is not None else _tagged.Position()
            for name, c in self.channels.items()
        }))))
        return []

    def connection_lost(self) -> list[int]:
        """
        The connection is gone. Returns the requests it took with it (written,
        unanswered: never resent, the server may have acted on them); frames
        about that connection only are dropped, messages wait for the next.
        """
        self.open = False
        self._drop(lambda item: item.kind is Kind.CONTROL)
        self._sub_ids.clear()  # answers to this connection's frames never come
        self._hello_asked.clear()
        lost = [i for i in self._sent if i in self._requests]
        for request_id in lost:
            del self._requests[request_id]
        self._sent.clear()
        return lost

    def close(self) -> list[int]:
        """The stream ends: everything is forgotten; returns the pending requests."""
        pending = list(self._requests)
        self.open = False
        self.channels.clear()
        self._outbox.clear()
        self._queued = 0
        self._requests.clear()
        self._sent.clear()
        self._sub_ids.clear()
        self._hello_asked.clear()
        return pending

    # what the application does

    @property
    def backlog(self) -> int:
        """Application messages waiting to be written."""
        return self._queued

    def send(self, body: str | bytes, json: bool = False) -> None:
        """Queue a message (see :func:`encode_message`); :class:`SendQueueFull` when not open."""
        if not self.open and self._queued >= self.max_queue:
            raise SendQueueFull(
                "queue_full", f"{self._queued} messages already wait for the connection "
                f"(max_queue={self.max_queue}); wait for the open state")
        self._outbox.append(Outgoing(Kind.MESSAGE, body, json))
        self._queued += 1

    def subscribe(self, channel: str) -> bool:
        """Subscribe to ``channel``; False when it is subscribed already."""
        if channel in self.channels:
            return False
        self.channels[channel] = _Channel()
        if self.open and self.tagged:
            request_id = next(self._ids)
            self._sub_ids[request_id] = channel
            self._control(_tagged.Sub(channel, request_id))
        return True

    def unsubscribe(self, channel: str) -> int | None:
        """Forget ``channel``; the id of the ``unsub`` sent, if one was."""
        if self.channels.pop(channel, None) is None or not (self.open and self.tagged):
            return None
        request_id = next(self._ids)
        self._control(_tagged.Unsub(channel, request_id))
        return request_id

    def request(self, value: Any) -> int:
        """Queue a request for the server's ``on_request``; returns its id."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError("request() takes a string or a JSON value, not bytes")
        request_id = next(self._ids)
        if isinstance(value, str):
            frame = _tagged.Req(request_id, text=value)
        else:
            frame = _tagged.Req(request_id, data=msgspec.Raw(encode_json(value)))
        item = Outgoing(Kind.REQUEST, _tagged.build(frame), request_id=request_id)
        self._requests[request_id] = item
        self._outbox.append(item)
        return request_id

    def forget_request(self, request_id: int) -> None:
        """Stop waiting for ``request_id`` (timed out): unsent, it is not sent at all."""
        item = self._requests.pop(request_id, None)
        self._sent.discard(request_id)
        if item is not None:
            self._drop(lambda other: other is item)

    def refresh(self, token: str) -> int | None:
        """Replace the connection's token in-band; the id of the ``refresh`` sent, if one was."""
        if not (self.open and self.tagged):
            return None
        request_id = next(self._ids)
        self._control(_tagged.Refresh(token, request_id))
        return request_id

    # writing

    def next_outgoing(self) -> Outgoing | None:
        """The next frame to write (see :meth:`wire`), or ``None``; it counts as written."""
        if not self.open or not self._outbox:
            return None
        item = self._outbox.popleft()
        if item.kind is Kind.MESSAGE:
            self._queued -= 1
        elif item.request_id is not None:
            self._sent.add(item.request_id)
        return item

    def unsend(self, item: Outgoing) -> None:
        """``item`` was not written after all (the connection closed first): it goes first again."""
        if item.request_id is not None:
            if item.request_id not in self._requests:
                return  # timed out meanwhile
            self._sent.discard(item.request_id)
        elif item.kind is Kind.MESSAGE:
            self._queued += 1
        self._outbox.appendleft(item)

    def wire(self, item: Outgoing) -> str | bytes:
        """The WebSocket message carrying ``item`` on the current connection."""
        if item.kind is not Kind.MESSAGE or not self.tagged or isinstance(item.body, bytes):
            return item.body
        if item.json:
            return _tagged.build(_tagged.Msg(data=msgspec.Raw(item.body.encode())))
        return _tagged.build(_tagged.Msg(text=item.body))

    # reading

    def receive(self, frame: str | bytes) -> list[Event]:
        """What one frame from the server means; a malformed one is a ``bad_frame`` error."""
        if not self.tagged:
            return [Message(Meta(), _untagged(frame))]
        try:
            parsed = _tagged.parse_server(frame)
        except InvalidMessage as exc:
            return [ErrorInfo("bad_frame", f"ignored a malformed frame from the server: {exc}")]
        if parsed is None:
            return []  # a type this version does not know
        return list(self._dispatch(*parsed))

    def _dispatch(self, frame: _tagged.Incoming, payload: bytes | None) -> Iterator[Event]:
        if isinstance(frame, _tagged.Pub):
            body = _body(frame.data, frame.text, payload)
            if body is None:
                yield ErrorInfo("bad_frame", "ignored a pub frame with neither data nor text")
                return
            channel = self.channels.get(frame.channel)
            if channel is None:
                return  # not subscribed here: a room the server joined us to
            if frame.offset is not None:
                if channel.offset is not None and frame.offset <= channel.offset:
                    return  # delivered already
                channel.offset = frame.offset
            yield Message(Meta(frame.channel, frame.event, frame.offset), body)
        elif isinstance(frame, _tagged.Msg):
            body = _body(frame.data, frame.text, payload)
            if body is None:
                yield ErrorInfo("bad_frame", "ignored a msg frame with neither data nor text")
                return
            yield Message(Meta(), body)
        elif isinstance(frame, _tagged.Joined):
            yield from self._joined(frame)
        elif isinstance(frame, _tagged.Reply):
            if self._requests.pop(frame.id, None) is not None:
                self._sent.discard(frame.id)
                yield Answer(frame.id, frame.data if frame.error is None else None, frame.error)
        elif isinstance(frame, _tagged.Error):
            yield from self._error(frame)
        elif isinstance(frame, _tagged.Left):
            if frame.id is not None:
                yield Unsubscribed(frame.channel, frame.id)
        elif isinstance(frame, _tagged.Refreshed):
            if frame.id is not None:
                yield Refreshed(frame.id)
        # pong and presence frames need nothing here

    def _joined(self, frame: _tagged.Joined) -> Iterator[Event]:
        if frame.id is not None:
            self._sub_ids.pop(frame.id, None)
        else:
            self._hello_asked.discard(frame.channel)
        channel = self.channels.get(frame.channel)
        if channel is None:
            return
        channel.epoch = frame.epoch
        # recovered: the missed publications follow, our offset stands; otherwise
        # we continue from the room's.
        if frame.recovered is not True:
            channel.offset = frame.offset
        yield Subscribed(frame.channel)
        if frame.recovered is False:
            yield Gap(frame.channel, frame.epoch, frame.offset)

    def _error(self, frame: _tagged.Error) -> Iterator[Event]:
        info = ErrorInfo(frame.code, frame.message, frame.id, frame.channel, frame.presence)
        # It refuses the subscription it answers, and no other: a sub by its id,
        # a hello entry by its name (not one re-created since, nor an unsub's).
        if frame.id is not None:
            asked = self._sub_ids.pop(frame.id, None)
        elif frame.channel in self._hello_asked:
            self._hello_asked.discard(frame.channel)
            asked = frame.channel
        else:
            asked = None
        if (frame.channel is not None and frame.presence is None and asked == frame.channel
                and self.channels.pop(frame.channel, None) is not None):
            yield Refused(frame.channel, info)
        else:
            yield info

    # helpers

    def _control(self, frame: _tagged.ClientFrame) -> None:
        self._outbox.append(Outgoing(Kind.CONTROL, _tagged.build(frame)))

    def _drop(self, drop: Callable[[Outgoing], bool]) -> None:
        kept = deque(item for item in self._outbox if not drop(item))
        self._queued -= sum(1 for item in self._outbox if item.kind is Kind.MESSAGE) - sum(
            1 for item in kept if item.kind is Kind.MESSAGE)
        self._outbox = kept


def _body(
    data: msgspec.Raw, text: str | None, payload: bytes | None
) -> msgspec.Raw | str | bytes | None:
    if payload is not None:
        return payload
    if data:
        return data
    return text


def _untagged(frame: str | bytes) -> msgspec.Raw | str | bytes:
    """A frame from a server that does not speak nucleus.v1: JSON if it is, else as is."""
    if isinstance(frame, bytes):
        return frame
    try:
        _decode_json(frame)
    except msgspec.DecodeError:
        return frame
    return msgspec.Raw(frame.encode())
