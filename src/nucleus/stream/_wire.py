"""
Encoding outgoing messages for the wire, once per message and wire format.

Two wire formats exist. *Raw* clients (no subprotocol, e.g. a plain browser
``new WebSocket(url)``) get the application's message byte for byte. *Tagged*
clients (subprotocol ``nucleus.v1``, see ``docs/protocol.md``) get it inside an
envelope that names its channel and offset.

An :class:`Outgoing` is built once per broadcast and shared by every recipient;
it encodes each format lazily, at most once, so a room of ten thousand sockets
costs one encoding per format, never one per socket. Pure functions only.

Compression (permessage-deflate, RFC 7692) follows the same rule: a peer that
negotiated it gets :meth:`Outgoing.deflated_frame`, the payload deflated once
per format and window size with a fresh compressor (the server never takes
its LZ77 context from one message to the next, ``server_no_context_takeover``),
so one compressed frame serves every such peer. Nothing here compresses per
socket.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Final

import msgspec
from websockets.frames import Opcode

from ._message import Binary, SocketMessage, Text

__all__ = [
    "SUBPROTOCOL",
    "Outgoing",
    "control_frame",
    "deflate",
    "deflate_key",
    "envelope",
    "frame_size",
]

#: The WebSocket subprotocol of the library clients (``docs/protocol.md``): a socket
#: that negotiated it gets tagged frames, subscriptions, recovery and requests.
SUBPROTOCOL: Final = "nucleus.v1"

_encode = msgspec.json.encode
_decode_raw = msgspec.json.Decoder(msgspec.Raw).decode


#: zlib's defaults: the compression is paid once per message, not once per socket.
DEFLATE_LEVEL: Final = 6
DEFLATE_MEM_LEVEL: Final = 8

_FIN: Final = 0x80
_RSV1: Final = 0x40
_EMPTY_BLOCK: Final = b"\x00\x00\xff\xff"
_head16 = struct.Struct("!BBH").pack
_head64 = struct.Struct("!BBQ").pack


def _frame(opcode: Opcode, data: bytes, rsv1: bool = False) -> bytes:
    # A final, unmasked frame (RFC 6455 §5.2): server frames are never masked
    # (§5.1), so the bytes are the same for every recipient.
    first = _FIN | (_RSV1 if rsv1 else 0) | opcode
    size = len(data)
    if size < 126:
        return bytes((first, size)) + data
    if size < 65536:
        return _head16(first, 126, size) + data
    return _head64(first, 127, size) + data


def frame_size(payload_size: int) -> int:
    """The length of a server frame carrying ``payload_size`` bytes (header included)."""
    if payload_size < 126:
        return payload_size + 2
    return payload_size + (4 if payload_size < 65536 else 10)


def deflate(data: bytes, window_bits: int) -> bytes:
    """
    ``data`` as one permessage-deflate message body (RFC 7692 §7.2.1): raw
    DEFLATE from a fresh compressor, flushed to a byte boundary, without the
    trailing empty block (0x00 0x00 0xff 0xff) that the receiver appends back.
    """
    compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -window_bits, DEFLATE_MEM_LEVEL)
    body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert body.endswith(_EMPTY_BLOCK)
    return body[:-4]


def deflate_key(tagged: bool, window_bits: int) -> int:
    """
    Which compressed frame a peer needs: its wire format and the LZ77 window it
    accepted (``server_max_window_bits``, 9 to 15). Never 0.
    """
    return window_bits | (0x10 if tagged else 0)


def _is_json(data: bytes) -> bool:
    try:
        _decode_raw(data)
    except msgspec.DecodeError:
        return False
    return True


def envelope(kind: str, message: SocketMessage, fields: bytes) -> bytes:
    """
    The ``nucleus.v1`` payload carrying ``message``.

    ``fields`` are extra pre-encoded members, each starting with a comma. Text
    that is valid JSON is embedded as ``data`` without re-encoding; other text
    goes in ``text``. Binary payloads get a length-prefixed JSON header.
    """
    head = b'{"type":"' + kind.encode() + b'"' + fields
    if isinstance(message, Binary):
        header = head + b"}"
        return len(header).to_bytes(4, "big") + header + message.data
    assert isinstance(message, Text)
    data = message.text.encode()
    if _is_json(data):
        return head + b',"data":' + data + b"}"
    return head + b',"text":' + _encode(message.text) + b"}"


def control_frame(payload: Any) -> tuple[bytes, str]:
    """
    A ``nucleus.v1`` control frame (``joined``, ``error``...; see ``_tagged``)
    as WebSocket frame bytes, and its text.
    """
    data = _encode(payload)
    return _frame(Opcode.TEXT, data), data.decode()


class Outgoing:
    """
    One message on its way to one or many sockets, encoded lazily per format.

    ``channel`` and ``offset`` are set for room broadcasts, ``None`` for direct
    messages. Recipients read :attr:`raw_frame` or :attr:`tagged_frame` (native
    server) or :attr:`raw_payload` / :attr:`tagged_payload` (ASGI).
    """

    __slots__ = ("_deflated", "_raw_event", "_raw_frame", "_tagged_frame", "_tagged_payload",
                 "_tagged_text", "channel", "event", "message", "offset")

    def __init__(
        self,
        message: SocketMessage,
        channel: str | None = None,
        offset: int | None = None,
        event: str | None = None,
    ) -> None:
        self.message = message
        self.channel = channel
        self.offset = offset
        self.event = event
        self._raw_frame: bytes | None = None
        self._raw_event: str | None = None
        self._tagged_frame: bytes | None = None
        self._tagged_payload: bytes | None = None
        self._tagged_text: str | None = None
        self._deflated: dict[int, bytes] | None = None

    @property
    def is_text(self) -> bool:
        return isinstance(self.message, Text)

    @property
    def raw_payload(self) -> str | bytes:
        """
        The message itself; for a channel event (``event`` set), the JSON
        envelope ``{"channel", "event", "data"}`` that raw clients receive.
        """
        if self.event is None or self.channel is None or not isinstance(self.message, Text):
            return self.message.payload
        if self._raw_event is None:
            self._raw_event = (
                '{"channel":' + _encode(self.channel).decode()
                + ',"event":' + _encode(self.event).decode()
                + ',"data":' + self.message.text + "}"
            )
        return self._raw_event

    @property
    def tagged_payload(self) -> bytes:
        """The envelope: UTF-8 JSON for text, header-prefixed bytes for binary."""
        if self._tagged_payload is None:
            fields = b""
            if self.channel is not None:
                fields += b',"channel":' + _encode(self.channel)
            if self.offset is not None:
                fields += b',"offset":' + str(self.offset).encode()
            if self.event is not None:
                fields += b',"event":' + _encode(self.event)
            kind = "msg" if self.channel is None else "pub"
            self._tagged_payload = envelope(kind, self.message, fields)
        return self._tagged_payload

    @property
    def tagged_text(self) -> str:
        """The envelope of a text message as ``str`` (for ASGI's ``text`` field)."""
        if self._tagged_text is None:
            self._tagged_text = self.tagged_payload.decode()
        return self._tagged_text

    @property
    def raw_frame(self) -> bytes:
        if self._raw_frame is None:
            payload = self.raw_payload
            if isinstance(payload, str):
                self._raw_frame = _frame(Opcode.TEXT, payload.encode())
            else:
                self._raw_frame = _frame(Opcode.BINARY, payload)
        return self._raw_frame

    @property
    def tagged_frame(self) -> bytes:
        if self._tagged_frame is None:
            opcode = Opcode.TEXT if self.is_text else Opcode.BINARY
            self._tagged_frame = _frame(opcode, self.tagged_payload)
        return self._tagged_frame

    def deflated_frame(self, key: int) -> bytes:
        """
        The frame for a peer that negotiated permessage-deflate, ``key`` being
        its :func:`deflate_key`: the payload compressed, RSV1 set (RFC 7692
        §6). Built at most once per key, and shared.
        """
        cache = self._deflated
        if cache is None:
            cache = self._deflated = {}
        else:
            frame = cache.get(key)
            if frame is not None:
                return frame
        if key & 0x10:
            payload = self.tagged_payload
        else:
            raw = self.raw_payload
            payload = raw.encode() if isinstance(raw, str) else raw
        opcode = Opcode.TEXT if self.is_text else Opcode.BINARY
        frame = cache[key] = _frame(opcode, deflate(payload, key & 0x0F), rsv1=True)
        return frame
