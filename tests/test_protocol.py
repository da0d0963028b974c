"""
The server's side of nucleus.v1 as a state machine (``_protocol``): strings in,
events and frame bytes out, no sockets. What the server does with the events is
tested end to end in test_channels.py, test_request.py and test_client*.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from nucleus.stream import SocketMessage, _tagged
from nucleus.stream._protocol import (
    Answer,
    Encoded,
    Message,
    PingReceived,
    ProtocolState,
    Started,
    TaggedProtocol,
    error_frame,
    presence_diff,
    presence_state,
)


def text(frame: Encoded) -> dict[str, object]:
    """What a client reads: the frame's JSON (its text, as the ASGI door sends it)."""
    parsed = _tagged.parse_server(frame[1])
    assert parsed is not None, "the client's parser must know every frame the server writes"
    value = json.loads(frame[1])
    assert isinstance(value, dict)
    return value


def answered(events: Sequence[object]) -> list[dict[str, object]]:
    return [text(e.frame) for e in events if isinstance(e, Answer)]


HELLO = json.dumps({"type": "hello", "channels": {
    "chat": {"epoch": "e1", "offset": 7},
    "news": {},
    "lobby": {"epoch": "e2", "offset": 0, "presence": True},
}})


def test_a_hello_starts_the_socket_and_keeps_its_positions_for_the_joins() -> None:
    protocol = TaggedProtocol()
    assert protocol.state is ProtocolState.HELLO
    assert protocol.receive(SocketMessage.Text(HELLO)) == [Started(hello=True)]
    assert protocol.state is ProtocolState.OPEN
    # A join (on_connect's join_room) takes its channel's position, once.
    assert protocol.take_position("chat") == ("e1", 7)
    assert protocol.take_position("chat") is None
    positions, watch = protocol.take_hello()
    assert positions == {"news": (None, None), "lobby": ("e2", 0)}
    assert watch == frozenset({"lobby"})
    assert protocol.take_hello() == ({}, frozenset())


def test_a_malformed_first_frame_is_answered_and_the_hello_still_awaited() -> None:
    protocol = TaggedProtocol()
    events = protocol.receive(SocketMessage.Text("{not json"))
    [error] = answered(events)
    assert len(events) == 1
    assert error["code"] == "bad_request"
    assert "must be a hello" in str(error["message"])
    assert protocol.state is ProtocolState.HELLO
    assert protocol.receive(SocketMessage.Text(HELLO)) == [Started(hello=True)]


def test_another_first_frame_starts_without_positions_and_is_then_handled() -> None:
    protocol = TaggedProtocol()
    events = protocol.receive(SocketMessage.Text('{"type":"sub","channel":"chat","id":3}'))
    assert events[0] == Started(hello=False)
    assert "must be a hello" in str(answered(events)[0]["message"])
    assert events[2] == _tagged.Sub("chat", 3)
    assert protocol.take_position("chat") is None
    # The hello is past: one now is refused, and the socket goes on.
    [again] = answered(protocol.receive(SocketMessage.Text(HELLO)))
    assert "only valid as the first frame" in str(again["message"])
    assert protocol.state is ProtocolState.OPEN


def test_a_binary_first_frame_is_an_application_message() -> None:
    protocol = TaggedProtocol()
    events = protocol.receive(SocketMessage.Binary(b"\x00\x01"))
    assert events[0] == Started(hello=False)
    assert events[-1] == Message(SocketMessage.Binary(b"\x00\x01"))


def test_after_the_hello_timeout_no_frame_is_refused_for_not_being_a_hello() -> None:
    protocol = TaggedProtocol()
    protocol.start()  # the session's hello timer fired: on_connect runs without one
    assert protocol.receive(SocketMessage.Text('{"type":"msg","text":"hi"}')) == [
        Message(SocketMessage.Text("hi"))]
    [late] = answered(protocol.receive(SocketMessage.Text(HELLO)))
    assert late["code"] == "bad_request"
    assert protocol.take_hello() == ({}, frozenset())


@pytest.mark.parametrize("ping", ['{"type":"ping"}', '{ "type" : "ping" }'])
def test_a_ping_in_any_spelling_asks_for_a_pong(ping: str) -> None:
    protocol = TaggedProtocol()
    protocol.receive(SocketMessage.Text(HELLO))
    assert protocol.receive(SocketMessage.Text(ping)) == [PingReceived()]
    assert text(protocol.pong()) == {"type": "pong"}


def test_msg_frames_become_the_application_message() -> None:
    protocol = TaggedProtocol()
    protocol.receive(SocketMessage.Text(HELLO))
    assert protocol.receive(SocketMessage.Text('{"type":"msg","text":"plain"}')) == [
        Message(SocketMessage.Text("plain"))]
    # data arrives as the JSON the client wrote, byte for byte
    assert protocol.receive(SocketMessage.Text('{"type":"msg","data":{"a": [1, 2]}}')) == [
        Message(SocketMessage.Text('{"a": [1, 2]}'))]
    [error] = answered(protocol.receive(SocketMessage.Text('{"type":"msg"}')))
    assert error == {"type": "error", "code": "bad_request",
                     "message": "a msg frame needs text or data"}


def test_requests_subscriptions_and_refreshes_pass_as_their_frames() -> None:
    protocol = TaggedProtocol()
    protocol.receive(SocketMessage.Text(HELLO))
    for frame in (_tagged.Req(4, text="q"), _tagged.Unsub("chat", 5),
                  _tagged.Refresh("tok", 6), _tagged.Sub("x", 7, "e", 3, True)):
        assert protocol.receive(SocketMessage.Text(_tagged.build(frame))) == [frame]


@pytest.mark.parametrize("bad", ['{"type":"teleport"}', '{"type":"sub"}', "[1,2]", "\"x\""])
def test_what_is_not_a_frame_is_answered_and_nothing_else(bad: str) -> None:
    protocol = TaggedProtocol()
    protocol.receive(SocketMessage.Text(HELLO))
    events = protocol.receive(SocketMessage.Text(bad))
    [error] = answered(events)
    assert len(events) == 1
    assert error["code"] == "bad_request"
    assert str(error["message"]).startswith("not a nucleus.v1 frame: ")
    assert "first frame" not in str(error["message"])  # that hint is for first frames only


def test_a_dropped_request_gets_its_reply_and_anything_else_an_error() -> None:
    protocol = TaggedProtocol()
    reply = text(protocol.dropped(SocketMessage.Text('{"type":"req","id":9,"text":"q"}'),
                                  "rate_limited", "slow down"))
    assert reply == {"type": "reply", "id": 9,
                     "error": {"code": "rate_limited", "message": "slow down"}}
    for msg in (SocketMessage.Text('{"type":"msg","text":"req"}'),
                SocketMessage.Text('{"type":"req"'), SocketMessage.Binary(b"req")):
        assert text(protocol.dropped(msg, "rate_limited", "slow down")) == {
            "type": "error", "code": "rate_limited", "message": "slow down"}


def test_frames_out_read_back_as_the_client_reads_them() -> None:
    protocol = TaggedProtocol()
    assert text(protocol.joined("chat", "e1", 12, True, 3)) == {
        "type": "joined", "channel": "chat", "epoch": "e1", "offset": 12,
        "recovered": True, "id": 3}
    # no position given: "recovered" is left out, as docs/protocol.md says
    assert "recovered" not in text(protocol.joined("chat", "e1", 12, None))
    assert text(protocol.left("chat", 4)) == {"type": "left", "channel": "chat", "id": 4}
    assert text(protocol.left("chat")) == {"type": "left", "channel": "chat"}
    assert text(protocol.reply(5, {"n": [1]})) == {"type": "reply", "id": 5, "data": {"n": [1]}}
    assert text(protocol.reply_error(5, "invalid", "no")) == {
        "type": "reply", "id": 5, "error": {"code": "invalid", "message": "no"}}
    assert text(protocol.refreshed(6)) == {"type": "refreshed", "id": 6}
    assert text(protocol.error("forbidden", "no", 7, "chat")) == {
        "type": "error", "code": "forbidden", "message": "no", "id": 7, "channel": "chat"}
    assert text(protocol.presence_refused("chat", "forbidden", "off")) == {
        "type": "error", "code": "forbidden", "message": "off", "presence": "chat"}
    assert text(presence_state("chat", ["ann", "bob"])) == {
        "type": "presence_state", "channel": "chat", "users": ["ann", "bob"]}
    assert text(presence_diff("chat", "ann", False)) == {
        "type": "presence_diff", "channel": "chat", "leave": ["ann"]}
    # The native door's bytes are one WebSocket text frame around the same text.
    frame, payload = error_frame("bad_request", "x")
    assert frame[0] == 0x81 and frame.endswith(payload.encode())


def test_a_reply_that_is_not_json_raises_so_the_session_answers_internal() -> None:
    with pytest.raises(TypeError):
        TaggedProtocol().reply(1, object())


def test_after_close_nothing_is_read() -> None:
    protocol = TaggedProtocol()
    protocol.receive(SocketMessage.Text(HELLO))
    protocol.close()
    assert protocol.state is ProtocolState.CLOSED
    assert protocol.receive(SocketMessage.Text('{"type":"msg","text":"late"}')) == []
    assert protocol.take_position("chat") is None
