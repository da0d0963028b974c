"""
The ``nucleus.v1`` control frames, both ways, as typed structs: the one
definition of the protocol's frames (``docs/protocol.md``).

What a client sends is parsed by :func:`parse`; anything that is not one of
those frames is reported as :class:`InvalidMessage`, so the session can answer
with an ``error`` frame and go on. What the server answers is built here and
encoded once by :func:`encode`, however many sockets get it. Publications and
direct messages (``pub``, ``msg``) are enveloped by ``_wire`` instead, which
embeds the application's payload without decoding it.

The other way round, a client (``nucleus.client``) builds its frames from the
same structs with :func:`build`, and reads the server's with
:func:`parse_server`, whose :class:`Pub` and :class:`Msg` read the envelopes
``_wire`` writes. Pure code, no I/O.
"""

from __future__ import annotations

from typing import Final, Union

import msgspec

from ._errors import InvalidMessage
from ._message import validation_error
from ._wire import control_frame

__all__ = [
    "PONG",
    "ClientFrame",
    "Error",
    "Failure",
    "Hello",
    "Incoming",
    "Joined",
    "Left",
    "Msg",
    "Ping",
    "Pong",
    "Position",
    "PresenceDiff",
    "PresenceState",
    "Pub",
    "Refresh",
    "Refreshed",
    "Reply",
    "Req",
    "ServerFrame",
    "Sub",
    "Unsub",
    "build",
    "encode",
    "parse",
    "parse_server",
]

# client to server


class Position(msgspec.Struct, frozen=True, omit_defaults=True):
    """Where a client stands in a channel: the last epoch and offset it saw."""

    epoch: str | None = None
    offset: int | None = None
    presence: bool = False


class Hello(msgspec.Struct, tag="hello", tag_field="type", frozen=True):
    channels: dict[str, Position] = {}


class Sub(msgspec.Struct, tag="sub", tag_field="type", frozen=True, omit_defaults=True):
    channel: str
    id: int | None = None
    epoch: str | None = None
    offset: int | None = None
    presence: bool | None = None  # start (True) or stop (False) watching its presence


class Unsub(msgspec.Struct, tag="unsub", tag_field="type", frozen=True, omit_defaults=True):
    channel: str
    id: int | None = None


class Msg(msgspec.Struct, tag="msg", tag_field="type", frozen=True, omit_defaults=True):
    text: str | None = None
    data: msgspec.Raw = msgspec.Raw()


class Refresh(msgspec.Struct, tag="refresh", tag_field="type", frozen=True,
              omit_defaults=True):
    token: str
    id: int | None = None


class Req(msgspec.Struct, tag="req", tag_field="type", frozen=True, omit_defaults=True):
    """A request for the handler's ``on_request``, answered by a ``reply`` with its ``id``."""

    id: int
    text: str | None = None
    data: msgspec.Raw = msgspec.Raw()


class Ping(msgspec.Struct, tag="ping", tag_field="type", frozen=True):
    """The client heard nothing for a while: is the link alive? (answered by ``pong``)"""


ClientFrame = Union[Hello, Sub, Unsub, Msg, Req, Refresh, Ping]  # noqa: UP007 (msgspec needs a Union)

_decoder = msgspec.json.Decoder(ClientFrame)
_CLIENT_TYPES = ("hello", "sub", "unsub", "msg", "req", "refresh", "ping")


class _Kind(msgspec.Struct):
    type: object = None


def _kind(text: str) -> object:
    """The ``type`` of a frame that failed validation, if it has one."""
    try:
        return msgspec.json.decode(text, type=_Kind).type
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def parse(text: str) -> ClientFrame:
    """Parse one client text frame; :class:`InvalidMessage` says what is wrong."""
    try:
        frame: ClientFrame = _decoder.decode(text)
        return frame
    except msgspec.ValidationError as exc:
        kind = _kind(text)
        if isinstance(kind, str) and kind not in _CLIENT_TYPES:
            raise InvalidMessage(f"unknown frame type {kind!r}; this server knows "
                                 f"{', '.join(_CLIENT_TYPES)}") from exc
        raise validation_error(exc) from exc
    except msgspec.DecodeError as exc:
        raise InvalidMessage(f"malformed JSON: {exc}") from exc
    except UnicodeEncodeError as exc:
        raise InvalidMessage("text is not valid Unicode (lone surrogate)") from exc


# server to client (``None`` fields are left out)


class Joined(msgspec.Struct, tag="joined", tag_field="type", frozen=True, omit_defaults=True):
    """The socket is a member of ``channel``, which stands at ``epoch``/``offset``."""

    channel: str
    epoch: str
    offset: int
    recovered: bool | None = None  # only when the client gave a position
    id: int | None = None


class Left(msgspec.Struct, tag="left", tag_field="type", frozen=True, omit_defaults=True):
    channel: str
    id: int | None = None


class Error(msgspec.Struct, tag="error", tag_field="type", frozen=True, omit_defaults=True):
    """
    A request failed. ``channel``: a subscription to it was refused;
    ``presence``: watching its presence was refused (the subscription stands).
    """

    code: str
    message: str
    id: int | None = None
    channel: str | None = None
    presence: str | None = None


class Refreshed(msgspec.Struct, tag="refreshed", tag_field="type", frozen=True,
                omit_defaults=True):
    id: int | None = None


class Pong(msgspec.Struct, tag="pong", tag_field="type", frozen=True):
    pass


class Failure(msgspec.Struct, frozen=True):
    code: str
    message: str


class Reply(msgspec.Struct, tag="reply", tag_field="type", frozen=True, omit_defaults=True):
    """The answer to ``req`` ``id``: its ``data`` (JSON), or an ``error``."""

    id: int
    data: msgspec.Raw = msgspec.Raw()
    error: Failure | None = None


class PresenceState(msgspec.Struct, tag="presence_state", tag_field="type", frozen=True):
    channel: str
    users: list[str]


class PresenceDiff(msgspec.Struct, tag="presence_diff", tag_field="type", frozen=True,
                   omit_defaults=True):
    channel: str
    join: list[str] | None = None
    leave: list[str] | None = None

    @classmethod
    def of(cls, channel: str, user_id: str, present: bool) -> PresenceDiff:
        return cls(channel, join=[user_id]) if present else cls(channel, leave=[user_id])


ServerFrame = Union[  # noqa: UP007
    Joined, Left, Error, Reply, Refreshed, Pong, PresenceState, PresenceDiff]

#: The answer to every ``ping``, encoded once.
PONG: Final = control_frame(Pong())


def encode(frame: ServerFrame) -> tuple[bytes, str]:
    """The WebSocket frame carrying ``frame``, and its text (for the ASGI door)."""
    return control_frame(frame)


# what a client reads: the frames above, and the envelopes ``_wire`` writes


class Pub(msgspec.Struct, tag="pub", tag_field="type", frozen=True, omit_defaults=True):
    """
    A room broadcast as a client reads it: JSON in ``data``, other text in
    ``text``; neither in the header of a binary frame, whose payload follows it.
    """

    channel: str
    offset: int | None = None
    event: str | None = None
    text: str | None = None
    data: msgspec.Raw = msgspec.Raw()


#: Every frame a client may get; a direct message is a :class:`Msg`, as the
#: client's own.
Incoming = Union[  # noqa: UP007
    Joined, Left, Error, Reply, Refreshed, Pong, PresenceState, PresenceDiff, Pub, Msg]

_incoming = msgspec.json.Decoder(Incoming)
_KNOWN: Final = frozenset(
    cls.__struct_config__.tag for cls in (
        Joined, Left, Error, Reply, Refreshed, Pong, PresenceState, PresenceDiff, Pub, Msg))


class _Typed(msgspec.Struct):
    type: str


_typed = msgspec.json.Decoder(_Typed)


def parse_server(frame: str | bytes) -> tuple[Incoming, bytes | None] | None:
    """
    Parse one server frame (a client's side of ``docs/protocol.md`` §2): the
    frame, and for a binary one its payload. ``None``: a well-formed frame of a
    type this version does not know, to be ignored. :class:`InvalidMessage`
    says what is malformed.
    """
    payload: bytes | None = None
    header: str | bytes = frame
    if isinstance(frame, bytes):
        # 4-byte big-endian header length, the JSON header, then the payload
        size = int.from_bytes(frame[:4], "big")
        if len(frame) < 4 or 4 + size > len(frame):
            raise InvalidMessage("a binary frame's header length runs past its end")
        header, payload = frame[4 : 4 + size], frame[4 + size :]
    try:
        return _incoming.decode(header), payload
    except msgspec.ValidationError as exc:
        try:
            kind = _typed.decode(header).type
        except (msgspec.ValidationError, msgspec.DecodeError):
            kind = None
        if kind is not None and kind not in _KNOWN:
            return None
        raise validation_error(exc) from exc
    except msgspec.DecodeError as exc:
        raise InvalidMessage(f"malformed JSON: {exc}") from exc


def build(frame: ClientFrame) -> str:
    """The text of a client frame (fields left at their defaults are left out)."""
    return msgspec.json.encode(frame).decode()
