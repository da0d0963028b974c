"""
The ``nucleus.v1`` control frames, both ways, as typed structs: the one
definition of the protocol's frames (``docs/protocol.md``).

What a client sends is parsed by :func:`parse`; anything that is not one of
those frames is reported as :class:`InvalidMessage`, so the session can answer
with an ``error`` frame and go on. What the server answers is built here and
encoded once by :func:`encode`, however many sockets get it. Publications and
direct messages (``pub``, ``msg``) are enveloped by ``_wire`` instead, which
embeds the application's payload without decoding it. Pure code, no I/O.
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
    "Joined",
    "Left",
    "Msg",
    "Ping",
    "Pong",
    "Position",
    "PresenceDiff",
    "PresenceState",
    "Refresh",
    "Refreshed",
    "Reply",
    "Req",
    "ServerFrame",
    "Sub",
    "Unsub",
    "encode",
    "parse",
]

# client to server


class Position(msgspec.Struct, frozen=True):
    """Where a client stands in a channel: the last epoch and offset it saw."""

    epoch: str | None = None
    offset: int | None = None
    presence: bool = False


class Hello(msgspec.Struct, tag="hello", tag_field="type", frozen=True):
    channels: dict[str, Position] = {}


class Sub(msgspec.Struct, tag="sub", tag_field="type", frozen=True):
    channel: str
    id: int | None = None
    epoch: str | None = None
    offset: int | None = None
    presence: bool | None = None  # start (True) or stop (False) watching its presence


class Unsub(msgspec.Struct, tag="unsub", tag_field="type", frozen=True):
    channel: str
    id: int | None = None


class Msg(msgspec.Struct, tag="msg", tag_field="type", frozen=True):
    text: str | None = None
    data: msgspec.Raw = msgspec.Raw()


class Refresh(msgspec.Struct, tag="refresh", tag_field="type", frozen=True):
    token: str
    id: int | None = None


class Req(msgspec.Struct, tag="req", tag_field="type", frozen=True):
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
