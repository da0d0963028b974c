"""
The server's side of ``nucleus.v1`` (``docs/protocol.md``), as a Sans-I/O
state machine.

A :class:`TaggedProtocol` belongs to one library-client socket. It is the only
code that reads what such a client sends and the only code that writes the
control frames the server answers with; the session and the hub call it and
queue the bytes it returns, in the order they decide (a ``joined`` frame
before its replay, say). It owns:

* the hello rule: the first frame must be a ``hello``, which carries the
  client's resume positions and the channels whose presence it watches;
  a malformed first frame is answered and the hello still awaited, any other
  frame starts the socket without positions and is then handled;
* those positions and presence requests, until a join or the session takes
  them;
* every frame out: ``joined``, ``left``, ``error``, ``reply``, ``refreshed``,
  ``pong`` and the presence frames.

No I/O, no asyncio, no clock: :meth:`TaggedProtocol.receive` takes a message and
returns events, each frame method returns the frame's bytes (the WebSocket frame
for the native door and its text for the ASGI one, as ``_tagged.encode``).
Publications (``pub``) and direct messages are enveloped by ``_wire``, encoded
once for every member, and never pass through here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Any, Final, Union

import msgspec

from . import _tagged
from ._errors import InvalidMessage
from ._message import SocketMessage, Text

__all__ = [
    "Answer",
    "Encoded",
    "Event",
    "Message",
    "PingReceived",
    "ProtocolState",
    "Started",
    "TaggedProtocol",
    "error_frame",
    "presence_diff",
    "presence_state",
]

#: A frame ready to queue: the WebSocket frame (native door) and its text (ASGI).
Encoded = tuple[bytes, str]

#: A client's heartbeat, as the reference clients write it (checked before parsing).
PING_TEXT: Final = '{"type":"ping"}'

_encode_json = msgspec.json.encode


class ProtocolState(enum.Enum):
    """Where a socket stands in ``nucleus.v1``."""

    HELLO = "hello"  # waiting for the first frame
    OPEN = "open"
    CLOSED = "closed"


# what a client's frames ask for (besides the frame structs Sub, Unsub, Req and Refresh)


class Started(msgspec.Struct, frozen=True):
    """The socket may start (``on_connect``): a hello came, or a frame that is not one."""

    hello: bool


class Message(msgspec.Struct, frozen=True):
    """An application message for ``on_message`` (a ``msg`` frame, or any binary frame)."""

    msg: SocketMessage


class PingReceived(msgspec.Struct, frozen=True):
    """A heartbeat: answer at once with :meth:`TaggedProtocol.pong`, ahead of the handler."""


class Answer(msgspec.Struct, frozen=True):
    """Something the client sent is answered by this frame, and goes no further."""

    frame: Encoded


Event = Union[  # noqa: UP007
    Started, Message, PingReceived, Answer,
    _tagged.Sub, _tagged.Unsub, _tagged.Req, _tagged.Refresh]

_PING_RECEIVED: Final = PingReceived()
#: Shared by every socket whose hello watched no presence.
_NOTHING: Final[frozenset[str]] = frozenset()


def error_frame(code: str, message: str, request_id: int | None = None,
                channel: str | None = None) -> Encoded:
    """An ``error`` frame; plain WebSocket clients get the same JSON."""
    return _tagged.encode(_tagged.Error(code, message, request_id, channel))


def presence_state(channel: str, users: list[str]) -> Encoded:
    """A room's present users, encoded once for every watcher."""
    return _tagged.encode(_tagged.PresenceState(channel, users))


def presence_diff(channel: str, user_id: str, present: bool) -> Encoded:
    """One user came (``present``) or went, encoded once for every watcher."""
    return _tagged.encode(_tagged.PresenceDiff.of(channel, user_id, present))


class TaggedProtocol:
    """One library client's ``nucleus.v1`` conversation: frames in, events out, frames out."""

    __slots__ = ("_positions", "_watch", "state")

    def __init__(self) -> None:
        self.state = ProtocolState.HELLO
        # From the hello: channel -> (epoch, offset), until a join takes it.
        self._positions: dict[str, tuple[str | None, int | None]] | None = None
        # From the hello: channels whose presence the client watches.
        self._watch: frozenset[str] = _NOTHING

    # frames in

    def receive(self, msg: SocketMessage) -> list[Event]:
        """
        What one message from the client asks for, in order.

        Never raises: what is not a ``nucleus.v1`` frame comes back as an
        :class:`Answer` carrying the ``error`` to send.
        """
        if self.state is ProtocolState.CLOSED:
            return []
        if not isinstance(msg, Text):
            # Binary frames are application messages, as they are (hello or not).
            return self._start_implicitly([Message(msg)])
        text = msg.text
        if text == PING_TEXT:
            return self._start_implicitly([_PING_RECEIVED])
        try:
            frame = _tagged.parse(text)
        except InvalidMessage as exc:
            hint = ("; the first frame must be a hello (see docs/protocol.md)"
                    if self.state is ProtocolState.HELLO else "")
            return [Answer(error_frame("bad_request", f"not a nucleus.v1 frame: {exc}{hint}"))]
        if isinstance(frame, _tagged.Hello):
            if self.state is ProtocolState.HELLO:
                self.state = ProtocolState.OPEN
                self._positions = {name: (pos.epoch, pos.offset)
                                   for name, pos in frame.channels.items()} or None
                self._watch = frozenset(
                    name for name, pos in frame.channels.items() if pos.presence)
                return [Started(hello=True)]
            return [Answer(error_frame("bad_request", "hello is only valid as the first frame"))]
        return self._start_implicitly(list(self._events(frame)))

    def start(self) -> None:
        """
        Start without a hello (it did not come in time): a hello from now on
        is refused, and no frame is refused for not being one.
        """
        if self.state is ProtocolState.HELLO:
            self.state = ProtocolState.OPEN

    def _start_implicitly(self, events: list[Event]) -> list[Event]:
        if self.state is not ProtocolState.HELLO:
            return events
        self.state = ProtocolState.OPEN
        return [Started(hello=False),
                Answer(error_frame("bad_request",
                                   "the first frame must be a hello (see docs/protocol.md)")),
                *events]

    def _events(self, frame: _tagged.ClientFrame) -> Iterator[Event]:
        if isinstance(frame, _tagged.Msg):
            if frame.text is not None:
                yield Message(Text(frame.text))
            elif frame.data:
                yield Message(Text(bytes(frame.data).decode()))
            else:
                yield Answer(error_frame("bad_request", "a msg frame needs text or data"))
        elif isinstance(frame, _tagged.Ping):
            yield _PING_RECEIVED
        elif isinstance(frame, _tagged.Hello):  # pragma: no cover (handled by receive)
            raise AssertionError("hello")
        else:
            yield frame

    def dropped(self, msg: SocketMessage, code: str, message: str) -> Encoded:
        """
        The frame that says ``msg`` was dropped unread (rate limits): a request
        gets its ``reply`` with the error, so it never hangs; anything else an
        ``error``.
        """
        if isinstance(msg, Text) and '"req"' in msg.text:
            try:
                frame = _tagged.parse(msg.text)
            except InvalidMessage:
                frame = None
            if isinstance(frame, _tagged.Req):
                return self.reply_error(frame.id, code, message)
        return error_frame(code, message)

    # what the hello left for the session and the hub

    def take_position(self, channel: str) -> tuple[str | None, int | None] | None:
        """The hello's resume position in ``channel``, once (a join consumes it)."""
        if self._positions is None:
            return None
        return self._positions.pop(channel, None)

    def take_hello(self) -> tuple[dict[str, tuple[str | None, int | None]], frozenset[str]]:
        """
        What the hello asked for that no join took yet: the positions (each a
        subscribe request now) and the channels whose presence to watch. Once.
        """
        positions, self._positions = self._positions or {}, None
        watch, self._watch = self._watch, _NOTHING
        return positions, watch

    # frames out

    def joined(self, channel: str, epoch: str, offset: int, recovered: bool | None,
               request_id: int | None = None) -> Encoded:
        """The socket is in ``channel``, which stands at ``epoch``/``offset``."""
        return _tagged.encode(_tagged.Joined(channel, epoch, offset, recovered, request_id))

    def left(self, channel: str, request_id: int | None = None) -> Encoded:
        """The socket is no longer in ``channel`` (``request_id``: the ``unsub`` asked)."""
        return _tagged.encode(_tagged.Left(channel, request_id))

    def error(self, code: str, message: str, request_id: int | None = None,
              channel: str | None = None) -> Encoded:
        """A request failed; with ``channel``, a subscription to it was refused."""
        return error_frame(code, message, request_id, channel)

    def presence_refused(self, channel: str, code: str, message: str) -> Encoded:
        """Watching ``channel``'s presence was refused; the subscription itself stands."""
        return _tagged.encode(_tagged.Error(code, message, presence=channel))

    def reply(self, request_id: int, result: Any) -> Encoded:
        """The answer to request ``request_id``; ``EncodeError`` if ``result`` is not JSON."""
        return _tagged.encode(_tagged.Reply(request_id, msgspec.Raw(_encode_json(result))))

    def reply_error(self, request_id: int, code: str, message: str) -> Encoded:
        """Request ``request_id`` failed, and why."""
        return _tagged.encode(_tagged.Reply(request_id, error=_tagged.Failure(code, message)))

    def refreshed(self, request_id: int | None) -> Encoded:
        """The token refresh ``request_id`` was accepted."""
        return _tagged.encode(_tagged.Refreshed(request_id))

    def pong(self) -> Encoded:
        """The answer to a ``ping``."""
        return _tagged.PONG

    def close(self) -> None:
        """The connection is gone: what arrives afterwards is ignored."""
        self.state = ProtocolState.CLOSED
        self._positions = None
