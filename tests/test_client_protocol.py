"""The client's Sans-I/O core and its policies, with plain calls: no socket, no clock."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest

from nucleus.client import ErrorInfo, Gap, Meta, SendQueueFull
from nucleus.client._policy import (
    after_close,
    backoff,
    fits_subprotocol,
    refresh_delay,
    refresh_retry_delay,
    token_expiry,
)
from nucleus.client._protocol import (
    Answer,
    ClientProtocol,
    Message,
    Refreshed,
    Refused,
    Subscribed,
    Unsubscribed,
    encode_message,
)
from nucleus.fortress import Fortress


def written(protocol: ClientProtocol) -> list[Any]:
    """Everything the protocol wants written now, JSON frames decoded."""
    frames = []
    while (item := protocol.next_outgoing()) is not None:
        frame = protocol.wire(item)
        frames.append(json.loads(frame) if isinstance(frame, str) else frame)
    return frames


def joined(channel: str, epoch: str, offset: int, **extra: Any) -> str:
    return json.dumps({"type": "joined", "channel": channel, "epoch": epoch, "offset": offset,
                       **extra})


def pub(channel: str, offset: int, data: Any, **extra: Any) -> str:
    return json.dumps({"type": "pub", "channel": channel, "offset": offset, "data": data,
                       **extra})


def data_of(events: list[Any]) -> list[Any]:
    return [e.data() for e in events if isinstance(e, Message)]


def opened(*channels: str) -> ClientProtocol:
    protocol = ClientProtocol()
    for channel in channels:
        protocol.subscribe(channel)
    protocol.connection_opened(tagged=True)
    return protocol


def test_the_hello_comes_first_with_every_position_then_what_waited() -> None:
    protocol = ClientProtocol()
    protocol.subscribe("chat")
    protocol.subscribe("news")
    protocol.send("queued while away")
    assert written(protocol) == []  # nothing is written before a connection opens
    protocol.connection_opened(tagged=True)
    assert written(protocol) == [
        {"type": "hello", "channels": {"chat": {}, "news": {}}},
        {"type": "msg", "text": "queued while away"},
    ]
    protocol.receive(joined("chat", "e1", 40))
    protocol.receive(pub("chat", 41, "hi"))
    protocol.connection_lost()
    protocol.connection_opened(tagged=True)
    assert written(protocol) == [{"type": "hello", "channels": {
        "chat": {"epoch": "e1", "offset": 41}, "news": {}}}]


def test_publications_are_delivered_once_in_order_and_duplicates_dropped() -> None:
    protocol = opened("chat")
    assert protocol.receive(joined("chat", "e1", 5)) == [Subscribed("chat")]
    events = [e for n in (6, 7, 7, 6, 9) for e in protocol.receive(pub("chat", n, n))]
    assert data_of(events) == [6, 7, 9]
    assert [e.meta for e in events] == [Meta("chat", None, n) for n in (6, 7, 9)]
    # A resume: recovered keeps our offset, the replay follows, overlapping live is dropped.
    protocol.connection_lost()
    protocol.connection_opened(tagged=True)
    assert protocol.receive(joined("chat", "e1", 11, recovered=True)) == [Subscribed("chat")]
    events = [e for n in (10, 11, 9, 11, 12) for e in protocol.receive(pub("chat", n, n))]
    assert data_of(events) == [10, 11, 12]


def test_a_gap_is_reported_with_the_new_position_and_delivery_goes_on() -> None:
    protocol = opened("chat")
    protocol.receive(joined("chat", "e1", 5))
    protocol.receive(pub("chat", 6, "seen"))
    protocol.connection_lost()
    protocol.connection_opened(tagged=True)
    assert protocol.receive(joined("chat", "e2", 3, recovered=False)) == [
        Subscribed("chat"), Gap("chat", "e2", 3)]
    # Offsets of the new epoch, lower than the old position, are delivered.
    assert data_of(protocol.receive(pub("chat", 4, "new life"))) == ["new life"]


def test_channels_never_subscribed_are_ignored() -> None:
    protocol = opened()
    assert protocol.receive(joined("other", "e", 1)) == []
    assert protocol.receive(pub("other", 2, "not ours")) == []


def test_sub_and_unsub_go_out_only_while_open_and_answers_are_matched() -> None:
    protocol = opened()
    written(protocol)
    assert protocol.subscribe("chat") is True
    assert protocol.subscribe("chat") is False
    (sub,) = written(protocol)
    assert sub == {"type": "sub", "channel": "chat", "id": sub["id"]}
    assert protocol.receive(joined("chat", "e", 0, id=sub["id"])) == [Subscribed("chat")]
    unsub_id = protocol.unsubscribe("chat")
    assert written(protocol) == [{"type": "unsub", "channel": "chat", "id": unsub_id}]
    left = {"type": "left", "channel": "chat", "id": unsub_id}
    assert unsub_id is not None and protocol.receive(json.dumps(left)) == [
        Unsubscribed("chat", unsub_id)]
    assert protocol.receive(json.dumps({"type": "left", "channel": "x"})) == []
    protocol.connection_lost()
    protocol.subscribe("later")
    assert protocol.unsubscribe("later") is None  # never sent: the next hello decides
    assert written(protocol) == []


def test_refusals_forget_the_channel_but_other_errors_do_not() -> None:
    protocol = opened()
    written(protocol)
    protocol.subscribe("secret")
    (sub,) = written(protocol)
    refusal = {"type": "error", "code": "forbidden", "message": "no", "id": sub["id"],
               "channel": "secret"}
    (event,) = protocol.receive(json.dumps(refusal))
    assert event == Refused("secret", ErrorInfo("forbidden", "no", sub["id"], "secret"))
    assert "secret" not in protocol.channels
    # Refused in a hello (no id).
    protocol.subscribe("news")
    protocol.connection_lost()
    protocol.connection_opened(tagged=True)
    (hello,) = written(protocol)
    assert hello["channels"] == {"news": {}}
    (event,) = protocol.receive(json.dumps({"type": "error", "code": "forbidden",
                                            "message": "no", "channel": "news"}))
    assert isinstance(event, Refused) and not protocol.channels
    # A hello entry answered already is not refused by a later error naming it.
    protocol.subscribe("kept")
    protocol.connection_lost()
    protocol.connection_opened(tagged=True)
    protocol.receive(joined("kept", "e", 0))
    (event,) = protocol.receive(json.dumps({"type": "error", "code": "unavailable",
                                            "message": "later", "channel": "kept"}))
    assert isinstance(event, ErrorInfo) and "kept" in protocol.channels
    protocol.unsubscribe("kept")
    written(protocol)
    # An unsub refused for a channel subscribed again meanwhile is no refusal of it;
    # neither is a presence refusal.
    protocol.subscribe("chat")
    (sub,) = written(protocol)
    protocol.receive(joined("chat", "e", 0, id=sub["id"]))
    unsub_id = protocol.unsubscribe("chat")
    protocol.subscribe("chat")
    written(protocol)
    for frame in ({"type": "error", "code": "forbidden", "message": "stay", "id": unsub_id,
                   "channel": "chat"},
                  {"type": "error", "code": "forbidden", "message": "off", "presence": "chat"}):
        (event,) = protocol.receive(json.dumps(frame))
        assert isinstance(event, ErrorInfo)
    assert "chat" in protocol.channels


def test_requests_are_answered_once_and_those_in_flight_are_lost_with_the_link() -> None:
    protocol = ClientProtocol()
    early = protocol.request({"item": "tea"})  # queued while not open
    protocol.connection_opened(tagged=True)
    assert written(protocol)[1] == {"type": "req", "id": early, "data": {"item": "tea"}}
    text = protocol.request("stock?")
    assert written(protocol) == [{"type": "req", "id": text, "text": "stock?"}]
    reply = {"type": "reply", "id": early, "data": {"order": 1}}
    (answer,) = protocol.receive(json.dumps(reply))
    assert isinstance(answer, Answer) and answer.failure is None
    assert answer.data is not None and msgspec.json.decode(answer.data) == {"order": 1}
    assert protocol.receive(json.dumps(reply)) == []  # answered already
    unsent = protocol.request("later")
    assert protocol.connection_lost() == [text]  # written, unanswered: never resent
    protocol.connection_opened(tagged=True)
    assert written(protocol)[1]["id"] == unsent
    failure = {"type": "reply", "id": unsent, "error": {"code": "nope", "message": "no"}}
    (answer,) = protocol.receive(json.dumps(failure))
    assert isinstance(answer, Answer) and answer.failure is not None
    assert (answer.failure.code, answer.failure.message) == ("nope", "no")
    with pytest.raises(TypeError):
        protocol.request(b"bytes")


def test_a_timed_out_request_is_never_sent_and_closing_returns_the_rest() -> None:
    protocol = ClientProtocol()
    forgotten = protocol.request(1)
    kept = protocol.request(2)
    protocol.forget_request(forgotten)
    protocol.connection_opened(tagged=True)
    assert [f.get("id") for f in written(protocol)] == [None, kept]
    assert protocol.close() == [kept]


def test_sends_queue_up_to_max_queue_while_not_open() -> None:
    protocol = ClientProtocol(max_queue=2)
    protocol.send("a")
    protocol.send(*encode_message({"b": [1]}))
    with pytest.raises(SendQueueFull) as full:
        protocol.send("c")
    assert full.value.code == "queue_full"
    protocol.connection_opened(tagged=True)
    protocol.send("d")  # while open the I/O layer paces sends instead
    assert written(protocol) == [{"type": "hello", "channels": {}},
                                 {"type": "msg", "text": "a"},
                                 {"type": "msg", "data": {"b": [1]}},
                                 {"type": "msg", "text": "d"}]
    protocol.send(*encode_message(bytearray(b"\x00\x01")))
    assert written(protocol) == [b"\x00\x01"]
    assert protocol.backlog == 0


def test_a_frame_not_written_goes_first_again_and_control_frames_die_with_the_link() -> None:
    protocol = opened()
    written(protocol)
    protocol.send("first")
    protocol.send("second")
    item = protocol.next_outgoing()
    assert item is not None
    protocol.unsend(item)
    protocol.subscribe("chat")  # a sub frame for this connection only
    protocol.connection_lost()
    protocol.connection_opened(tagged=True)
    assert [f.get("text", f["type"]) for f in written(protocol)] == ["hello", "first", "second"]


def test_binary_frames_carry_a_header() -> None:
    protocol = opened("img")
    protocol.receive(joined("img", "e", 0))
    header = b'{"type":"pub","channel":"img","offset":7,"event":"frame"}'
    (message,) = protocol.receive(len(header).to_bytes(4, "big") + header + b"\x89PN")
    assert message == Message(Meta("img", "frame", 7), b"\x89PN")
    direct = b'{"type":"msg"}'
    (message,) = protocol.receive(len(direct).to_bytes(4, "big") + direct + b"raw")
    assert isinstance(message, Message) and message.data() == b"raw"


@pytest.mark.parametrize("frame", [
    "not json", "[1, 2]", '{"no": "type"}', '{"type": 5}', '{"type": "joined", "channel": 5}',
    '{"type": "pub", "channel": "chat", "offset": "x", "data": 1}',
    '{"type": "pub", "channel": "chat", "offset": 3}', '{"type": "msg"}',
    '{"type": "error", "code": "x"}', b"\x00\x00", b"\x00\x00\x00\x09{}", b"\x00\x00\x00\x02[]",
])
def test_malformed_frames_are_reported_and_change_nothing(frame: str | bytes) -> None:
    protocol = opened("chat")
    protocol.receive(joined("chat", "e", 2))
    (event,) = protocol.receive(frame)
    assert isinstance(event, ErrorInfo) and event.code == "bad_frame"
    assert data_of(protocol.receive(pub("chat", 3, "still fine"))) == ["still fine"]


def test_unknown_frame_types_and_fields_are_ignored() -> None:
    protocol = opened("chat")
    assert protocol.receive('{"type": "from_the_future", "x": [1]}') == []
    protocol.receive(joined("chat", "e", 0, later="field"))
    assert data_of(protocol.receive(pub("chat", 1, "ok", later=True))) == ["ok"]
    assert protocol.receive('{"type":"pong"}') == []
    assert protocol.receive('{"type":"refreshed","id":3}') == [Refreshed(3)]


def test_text_json_and_direct_messages_decode_as_the_browser_client_does() -> None:
    protocol = opened("chat")
    protocol.receive(joined("chat", "e", 0))
    text = json.dumps({"type": "pub", "channel": "chat", "offset": 1, "text": "not {json"})
    (message,) = protocol.receive(text)
    assert isinstance(message, Message) and message.data() == "not {json"
    (message,) = protocol.receive('{"type":"msg","data":{"n":1}}')
    assert isinstance(message, Message) and message.meta == Meta()
    assert message.data() == {"n": 1}


def test_a_server_without_the_subprotocol_gets_raw_frames_both_ways() -> None:
    protocol = ClientProtocol()
    protocol.subscribe("chat")
    protocol.send("plain")
    protocol.send(*encode_message({"a": 1}))
    refused = protocol.request("q")
    assert protocol.connection_opened(tagged=False) == [refused]
    wire = []
    while (item := protocol.next_outgoing()) is not None:
        wire.append(protocol.wire(item))
    assert wire == ["plain", '{"a":1}']  # no hello, no envelope
    (message,) = protocol.receive('{"type":"pub"}')
    assert isinstance(message, Message) and message.data() == {"type": "pub"}
    (message,) = protocol.receive("words")
    assert isinstance(message, Message) and message.data() == "words"


def test_backoff_is_full_jitter_under_a_growing_capped_ceiling() -> None:
    assert [backoff(n, 0.5, 30.0, lambda: 1.0) for n in range(8)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff(10_000, 0.5, 30.0, lambda: 0.5) == 15.0
    assert backoff(3, 0.5, 30.0, lambda: 0.0) == 0.0
    # Rate limited (4029): at least half the ceiling, random(c/2, c).
    assert backoff(3, 0.5, 30.0, lambda: 0.0, at_least=0.5) == 2.0
    assert backoff(3, 0.5, 30.0, lambda: 1.0, at_least=0.5) == 4.0


@pytest.mark.parametrize(("code", "renewable", "final", "restart", "error"), [  # stream.js's
    (1000, False, True, False, None),
    (1001, False, False, True, None),
    (1006, False, False, False, None),
    (1008, True, True, False, "policy_violation"),
    (1009, False, False, False, "message_too_big"),
    (1011, False, False, False, None),
    (1012, False, False, True, None),
    (1013, False, False, False, None),
    (4001, False, True, False, "token_expired"),
    (4001, True, False, False, None),
    (4003, True, True, False, "token_revoked"),
    (4029, False, False, False, "rate_limited"),
    (4999, False, False, False, None),
])
def test_close_codes_are_handled_as_the_browser_client_does(
    code: int, renewable: bool, final: bool, restart: bool, error: str | None
) -> None:
    action = after_close(code, "", renewable)
    assert (action.final, action.restart) == (final, restart)
    assert (action.error.code if action.error else None) == error
    assert action.throttled is (code == 4029)


def test_refresh_is_timed_from_the_tokens_exp() -> None:
    secret = "s" * 32
    token = Fortress.issue_token("ann", secret, expires_in=3600, now=lambda: 1000.0)
    assert token_expiry(token) == 4600.0
    assert refresh_delay(token, 1000.0, 30.0) == 3570.0
    assert refresh_delay(token, 4580.0, 30.0) == 10.0  # half of what is left, at least
    assert refresh_delay(token, 4600.0, 30.0) is None
    # A failed refresh is tried again before the token the server holds expires.
    assert refresh_retry_delay(token, 1000.0) == 30.0
    assert refresh_retry_delay(token, 4580.0) == 5.0
    assert refresh_retry_delay(token, 4599.0) == 1.0
    assert refresh_retry_delay(token, 4601.0) is None
    unsigned = "x." + base64.urlsafe_b64encode(b'{"sub":"ann"}').decode().rstrip("=") + ".y"
    for opaque in (None, "", "opaque", "a.b.c", unsigned, "x.eyJleHAiOnRydWV9.y"):
        assert token_expiry(opaque) is None


def test_tokens_that_fit_a_subprotocol() -> None:
    assert fits_subprotocol(Fortress.issue_token("ann", "s" * 32))
    for bad in ("a b", "a=b", "a/b", "", "é"):
        assert not fits_subprotocol(bad)


def test_the_client_reads_exactly_what_the_server_writes() -> None:
    """_wire's envelopes and _tagged's control frames, read back by the client's parser."""
    from nucleus.stream import SocketMessage, _tagged
    from nucleus.stream._wire import Outgoing

    protocol = opened("chat")
    _, joined_text = _tagged.encode(_tagged.Joined("chat", "e1", 4))
    assert protocol.receive(joined_text) == [Subscribed("chat")]
    cases = [
        (Outgoing(SocketMessage.json({"a": [1, None]}), "chat", 5, "typing"),
         Meta("chat", "typing", 5), {"a": [1, None]}),
        (Outgoing(SocketMessage.Text("not json {"), "chat", 6), Meta("chat", None, 6),
         "not json {"),
        (Outgoing(SocketMessage.Binary(b"\x00\xff"), "chat", 7), Meta("chat", None, 7),
         b"\x00\xff"),
        (Outgoing(SocketMessage.Text('"quoted"')), Meta(), "quoted"),
        (Outgoing(SocketMessage.Binary(b"direct")), Meta(), b"direct"),
    ]
    for outgoing, meta, data in cases:
        payload = outgoing.tagged_text if outgoing.is_text else outgoing.tagged_payload
        (message,) = protocol.receive(payload)
        assert isinstance(message, Message)
        assert (message.meta, message.data()) == (meta, data)
    reply = _tagged.Reply(protocol.request("q"), error=_tagged.Failure("nope", "no"))
    (answer,) = protocol.receive(_tagged.encode(reply)[1])
    assert isinstance(answer, Answer) and answer.failure == reply.error
