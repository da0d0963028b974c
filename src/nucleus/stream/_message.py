"""
``SocketMessage``: what handlers receive and send, and its JSON codec.

A message is one of two immutable variants, :class:`SocketMessage.Text` and
:class:`SocketMessage.Binary`, so handlers can ``match`` on it. JSON goes through
msgspec: datetimes become ISO 8601, UUIDs strings, and dataclasses, msgspec
Structs and pydantic models their fields. This module does no I/O.
"""

from __future__ import annotations

import dataclasses
import re
from types import UnionType
from typing import Any, ClassVar, TypeAlias, TypeVar, final, overload

import msgspec

from ._errors import EncodeError, InvalidMessage

__all__ = ["Binary", "SocketMessage", "Text", "decode_as", "encode_json", "payload_size",
           "validation_error"]

T = TypeVar("T")

#: What a route's ``message_model`` may be: a class (dataclass, msgspec Struct,
#: pydantic model) or a union of them (``Join | Say``, tagged Structs).
MessageModel: TypeAlias = type[Any] | UnionType


def _encode_extra(value: Any) -> Any:
    """Fallback for types msgspec doesn't know natively: pydantic models, sets."""
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):  # pydantic v2 model
        return model_dump(mode="json")
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise NotImplementedError(f"objects of type {type(value).__name__} are not JSON-encodable")


_encoder = msgspec.json.Encoder(enc_hook=_encode_extra)
_decoder = msgspec.json.Decoder()


def encode_json(value: Any) -> bytes:
    """Encode ``value`` as compact JSON bytes; raise :class:`EncodeError` if impossible."""
    try:
        return _encoder.encode(value)
    except (TypeError, NotImplementedError, OverflowError, ValueError) as exc:
        raise EncodeError(
            f"cannot encode {type(value).__name__} as JSON: {exc}; "
            "pass dicts, lists, str, numbers, datetimes, UUIDs, dataclasses, "
            "msgspec Structs or pydantic models"
        ) from exc


def _is_pydantic_model(tp: Any) -> bool:
    return isinstance(tp, type) and callable(getattr(tp, "model_validate_json", None))


@overload
def decode_as(payload: str | bytes, tp: type[T]) -> T: ...


@overload
def decode_as(payload: str | bytes, tp: UnionType) -> Any: ...


def decode_as(payload: str | bytes, tp: MessageModel) -> Any:
    """
    Decode JSON ``payload`` into ``tp`` (dataclass, msgspec Struct or pydantic
    model, or a union of them).

    Raises :class:`InvalidMessage` naming the offending field, so the reason can
    be reported to the client.
    """
    if _is_pydantic_model(tp):
        from pydantic import ValidationError  # only needed when pydantic is in use

        try:
            return tp.model_validate_json(payload)  # type: ignore[union-attr]
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "$" + "".join(
                f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]
            )
            raise InvalidMessage(first["msg"], where if first["loc"] else None) from exc
    try:
        return msgspec.json.decode(payload, type=tp)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from exc
    except msgspec.DecodeError as exc:
        raise InvalidMessage(f"malformed JSON: {exc}") from exc
    except UnicodeEncodeError as exc:
        raise InvalidMessage("text is not valid Unicode (lone surrogate)") from exc


_QUOTED = re.compile(r" ?'[^']*'")


def validation_error(exc: msgspec.ValidationError) -> InvalidMessage:
    """msgspec's reason and field path, minus any quoted value the peer sent."""
    reason, _, where = str(exc).partition(" - at `")
    return InvalidMessage(_QUOTED.sub("", reason), where.rstrip("`") or None)


class SocketMessage:
    """
    A WebSocket message: ``SocketMessage.Text(text)`` or ``SocketMessage.Binary(data)``.

    Build JSON messages with :meth:`SocketMessage.json`, read them with
    :meth:`as_json`.
    """

    __slots__ = ()

    Text: ClassVar[type[_Text]]
    Binary: ClassVar[type[_Binary]]

    @staticmethod
    def json(value: Any) -> _Text:
        """A :class:`Text` message holding ``value`` as compact JSON."""
        return Text(encode_json(value).decode())

    @property
    def payload(self) -> str | bytes:
        """The text (``str``) or the data (``bytes``)."""
        raise NotImplementedError

    @overload
    def as_json(self) -> Any: ...

    @overload
    def as_json(self, tp: type[T]) -> T | None: ...

    @overload
    def as_json(self, tp: UnionType) -> Any: ...

    def as_json(self, tp: MessageModel | None = None) -> Any:
        """
        The decoded JSON value, or ``None`` if this is not text or not valid JSON.

        With ``tp`` (a dataclass, msgspec Struct or pydantic model), the value is
        validated into an instance of ``tp``; ``None`` when it does not fit. Use
        :func:`decode_as` to learn why.
        """
        if not isinstance(self, Text):
            return None
        try:
            if tp is None:
                return _decoder.decode(self.text)
            return decode_as(self.text, tp)
        except (msgspec.DecodeError, InvalidMessage, UnicodeEncodeError):
            return None


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Text(SocketMessage):
    """A text message (a WebSocket text frame)."""

    text: str

    @property
    def payload(self) -> str:
        return self.text

    def __repr__(self) -> str:
        shown = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return f"SocketMessage.Text({shown!r})"


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Binary(SocketMessage):
    """A binary message (a WebSocket binary frame)."""

    data: bytes

    @property
    def payload(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        return f"SocketMessage.Binary(<{len(self.data)} bytes>)"


_Text = Text
_Binary = Binary
SocketMessage.Text = Text
SocketMessage.Binary = Binary


def payload_size(message: SocketMessage) -> int:
    """Payload bytes of a message (text: its UTF-8 length; ASCII is the cheap common case)."""
    if isinstance(message, Binary):
        return len(message.data)
    assert isinstance(message, Text)
    text = message.text
    return len(text) if text.isascii() else len(text.encode())
