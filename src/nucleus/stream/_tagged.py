"""
Frames a ``nucleus.v1`` client sends, parsed into typed structs.

Pure parsing; see ``docs/protocol.md`` for the protocol itself. Anything that
is not one of these frames is reported as :class:`InvalidMessage` so the
session can answer with an ``error`` frame and go on.
"""

from __future__ import annotations

from typing import Union

import msgspec

from ._errors import InvalidMessage
from ._message import validation_error

__all__ = ["ClientFrame", "Hello", "Msg", "Position", "Refresh", "Sub", "Unsub", "parse"]


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


ClientFrame = Union[Hello, Sub, Unsub, Msg, Refresh]  # noqa: UP007 (msgspec needs a Union)

_decoder = msgspec.json.Decoder(ClientFrame)


def parse(text: str) -> ClientFrame:
    """Parse one client text frame; :class:`InvalidMessage` says what is wrong."""
    try:
        frame: ClientFrame = _decoder.decode(text)
        return frame
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from exc
    except msgspec.DecodeError as exc:
        raise InvalidMessage(f"malformed JSON: {exc}") from exc
    except UnicodeEncodeError as exc:
        raise InvalidMessage("text is not valid Unicode (lone surrogate)") from exc
