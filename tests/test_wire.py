"""What goes on the wire: frames and envelopes (_wire), and client frames (_tagged)."""

from __future__ import annotations

import json

import msgspec
import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from nucleus.stream import InvalidMessage, SocketMessage
from nucleus.stream._tagged import Hello, Msg, Position, Refresh, Sub, Unsub, parse
from nucleus.stream._wire import Outgoing, control_frame


def parse_frame(data: bytes) -> Frame:
    """Parse exactly one unmasked frame from ``data``; fail on a short or long buffer."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
    else:
        raise AssertionError("the frame is incomplete")
    at_eof = reader.at_eof()
    try:
        next(at_eof)
    except StopIteration as done:
        assert done.value is True, "bytes left over after the frame"
    return frame


def split_binary_envelope(payload: bytes) -> tuple[dict[str, object], bytes]:
    size = int.from_bytes(payload[:4], "big")
    return json.loads(payload[4 : 4 + size]), payload[4 + size :]


# -- raw frames --------------------------------------------------------------------


def test_raw_text_frame_is_one_unmasked_final_text_frame() -> None:
    data = Outgoing(SocketMessage.Text("héllo")).raw_frame
    frame = parse_frame(data)
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.TEXT, True, "héllo".encode())
    assert data[1] & 0x80 == 0  # MASK bit clear (RFC 6455 §5.1)


def test_raw_binary_frame_carries_the_bytes_unchanged() -> None:
    frame = parse_frame(Outgoing(SocketMessage.Binary(b"\x00\xff" * 3)).raw_frame)
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.BINARY, True, b"\x00\xff" * 3)


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (125, b"\x82\x7d"),  # 7-bit length
        (126, b"\x82\x7e\x00\x7e"),  # 16-bit extended length
        (65536, b"\x82\x7f" + (65536).to_bytes(8, "big")),  # 64-bit extended length
    ],
)
def test_raw_frame_length_encodings(size: int, header: bytes) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = Outgoing(SocketMessage.Binary(payload)).raw_frame
    assert data == header + payload  # RFC 6455 §5.2
    assert parse_frame(data).data == payload


@pytest.mark.parametrize("size", [125, 126, 65536])
def test_raw_text_frame_lengths_round_trip(size: int) -> None:
    text = "é" * (size // 2) + "a" * (size % 2)  # two bytes per "é"
    frame = parse_frame(Outgoing(SocketMessage.Text(text)).raw_frame)
    assert (frame.opcode, len(frame.data)) == (Opcode.TEXT, size)


@pytest.mark.parametrize(
    "out",
    [
        Outgoing(SocketMessage.Text('{"a":1}')),
        Outgoing(SocketMessage.Binary(b"abc"), "room", 3),
        Outgoing(SocketMessage.Text('{"a":1}'), "chat", 4, "message"),
    ],
)
def test_each_encoding_is_made_once_and_shared(out: Outgoing) -> None:
    assert out.raw_frame is out.raw_frame
    assert out.tagged_frame is out.tagged_frame
    assert out.tagged_payload is out.tagged_payload
    if out.is_text:
        assert out.tagged_text is out.tagged_text


def test_the_raw_channel_event_envelope_is_made_once() -> None:
    out = Outgoing(SocketMessage.Text('{"a":1}'), "chat", 4, "message")
    assert out.raw_payload is out.raw_payload


# -- raw payloads ------------------------------------------------------------------


def test_raw_payload_is_the_message_itself() -> None:
    assert Outgoing(SocketMessage.Text("hi"), "room", 5).raw_payload == "hi"
    assert Outgoing(SocketMessage.Binary(b"hi"), "room", 5, "ev").raw_payload == b"hi"


def test_raw_payload_of_a_channel_event_names_channel_and_event() -> None:
    out = Outgoing(SocketMessage.json({"text": "hi"}), 'chat "1"', 9, "message")
    assert isinstance(out.raw_payload, str)
    assert json.loads(out.raw_payload) == {
        "channel": 'chat "1"', "event": "message", "data": {"text": "hi"},
    }
    frame = parse_frame(out.raw_frame)
    assert (frame.opcode, frame.data) == (Opcode.TEXT, out.raw_payload.encode())


# -- tagged envelopes --------------------------------------------------------------


def test_json_text_is_embedded_as_data_without_reencoding() -> None:
    out = Outgoing(SocketMessage.Text('{"b": [1, 2.50]}'))
    assert out.tagged_payload == b'{"type":"msg","data":{"b": [1, 2.50]}}'
    assert out.tagged_text == out.tagged_payload.decode()


@pytest.mark.parametrize("text", ['say "hi" ☃\n', '{"a":1} trailing', "", "nul", "[1,"])
def test_other_text_is_carried_as_a_json_string(text: str) -> None:
    envelope = json.loads(Outgoing(SocketMessage.Text(text)).tagged_payload)
    assert envelope == {"type": "msg", "text": text}


def test_a_room_broadcast_is_a_pub_with_channel_offset_and_event() -> None:
    out = Outgoing(SocketMessage.Text('{"x":1}'), "chat", 7, "message")
    assert json.loads(out.tagged_payload) == {
        "type": "pub", "channel": "chat", "offset": 7, "event": "message", "data": {"x": 1},
    }
    plain = Outgoing(SocketMessage.Text("plain"), "chat", 8)
    assert json.loads(plain.tagged_payload) == {
        "type": "pub", "channel": "chat", "offset": 8, "text": "plain",
    }
    frame = parse_frame(out.tagged_frame)
    assert (frame.opcode, frame.data) == (Opcode.TEXT, out.tagged_payload)


def test_binary_envelope_matches_the_protocol_example() -> None:
    out = Outgoing(SocketMessage.Binary(b"\x89PN"), "img", 7, "frame")
    header = b'{"type":"pub","channel":"img","offset":7,"event":"frame"}'
    assert out.tagged_payload == b"\x00\x00\x00\x39" + header + b"\x89PN"  # docs/protocol.md
    frame = parse_frame(out.tagged_frame)
    assert (frame.opcode, frame.data) == (Opcode.BINARY, out.tagged_payload)


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x00\x10", b'{"type":"x"}' * 50])
def test_binary_envelope_of_a_direct_message(data: bytes) -> None:
    header, payload = split_binary_envelope(Outgoing(SocketMessage.Binary(data)).tagged_payload)
    assert (header, payload) == ({"type": "msg"}, data)


# -- control frames --------------------------------------------------------------------


def test_control_frame_returns_the_frame_and_its_text() -> None:
    message = {"type": "joined", "channel": "café", "epoch": "ab12", "offset": 3}
    data, text = control_frame(message)
    assert json.loads(text) == message
    frame = parse_frame(data)
    assert (frame.opcode, frame.data) == (Opcode.TEXT, text.encode())


# -- client frames (nucleus.v1) --------------------------------------------------------


def test_parse_hello_with_positions() -> None:
    frame = parse('{"type":"hello","channels":{"chat":{"epoch":"k3f9","offset":41},"news":{}}}')
    assert frame == Hello(channels={"chat": Position("k3f9", 41), "news": Position()})
    assert parse('{"type":"hello"}') == Hello(channels={})


def test_parse_sub_and_unsub() -> None:
    assert parse('{"type":"sub","id":1,"channel":"chat","epoch":"e","offset":0}') == Sub(
        channel="chat", id=1, epoch="e", offset=0
    )
    assert parse('{"type":"sub","channel":"chat"}') == Sub(channel="chat")
    assert parse('{"type":"unsub","id":2,"channel":"chat"}') == Unsub(channel="chat", id=2)


def test_parse_msg_keeps_json_data_as_raw_bytes() -> None:
    assert parse('{"type":"msg","text":"hi"}') == Msg(text="hi")
    frame = parse('{"type":"msg","data":{"a": [1]}}')
    assert isinstance(frame, Msg) and frame.text is None
    assert bytes(frame.data) == b'{"a": [1]}'
    assert isinstance(frame.data, msgspec.Raw)


def test_parse_refresh() -> None:
    assert parse('{"type":"refresh","id":3,"token":"t.k.n"}') == Refresh(token="t.k.n", id=3)


def test_parse_ignores_unknown_fields() -> None:
    assert parse('{"type":"unsub","channel":"c","since":"v2"}') == Unsub(channel="c")


@pytest.mark.parametrize(
    ("text", "reason", "path"),
    [
        ('{"type":"subscribe","channel":"c"}', "unknown frame type 'subscribe'", None),
        ('{"type":7}', "Expected `str`", "$.type"),
        ('{"channel":"c"}', "missing required field `type`", None),
        ('{"type":"sub"}', "missing required field `channel`", None),
        ('{"type":"refresh","id":1}', "missing required field `token`", None),
        ('{"type":"sub","channel":["c"]}', "Expected `str`, got `array`", "$.channel"),
        ('{"type":"sub","channel":"c","id":"1"}', "got `str`", "$.id"),
        ('{"type":"sub","channel":"c","id":true}', "got `bool`", "$.id"),
        ('{"type":"hello","channels":[]}', "Expected `object`", "$.channels"),
        ('{"type":"hello","channels":{"c":{"offset":"x"}}}', "got `str`", "$.channels[...].offset"),
        ('["sub"]', "Expected `object`, got `array`", None),
        ('"hello"', "Expected `object`, got `str`", None),
        ("null", "Expected `object`, got `null`", None),
    ],
)
def test_parse_says_what_is_wrong(text: str, reason: str, path: str | None) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse(text)
    assert reason in caught.value.reason
    assert caught.value.path == path


@pytest.mark.parametrize("text", ["", "{", '{"type":"sub",}', "not json", '{"type":"msg"} x'])
def test_parse_reports_malformed_json(text: str) -> None:
    with pytest.raises(InvalidMessage, match=r"^malformed JSON: ") as caught:
        parse(text)
    assert caught.value.path is None


def test_the_known_frame_types_named_in_errors_are_the_parsed_ones() -> None:
    from typing import get_args

    from nucleus.stream import _tagged

    tags = {frame.__struct_config__.tag for frame in get_args(_tagged.ClientFrame)}
    assert set(_tagged._CLIENT_TYPES) == tags
