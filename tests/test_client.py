"""nucleus.client against a real server: subscribe, send, requests, direct messages, models."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pydantic
import pytest

from nucleus.client import (
    ErrorInfo,
    Meta,
    RequestFailed,
    State,
    StreamClosed,
    SubscriptionRefused,
    connect,
)
from nucleus.stream import ConfigError, SocketMessage, StreamServer

from .apps.channels import Open
from .conftest import Serve
from .helpers import within
from .stream_watch import Watch, take


async def open_server(serve: Serve, handler: Open | None = None) -> tuple[StreamServer, str]:
    server = StreamServer()
    server.route("/ws", handler or Open())
    return server, f"{await serve(server)}/ws"


async def test_a_subscription_yields_json_text_and_bytes_in_order(serve: Serve) -> None:
    server, url = await open_server(serve)
    async with connect(url) as stream:
        assert stream.state is State.OPEN
        chat = await stream.subscribe("chat")
        hub = server.hub
        first = await hub.broadcast_to_room("chat", SocketMessage.json({"n": 1}))
        await hub.broadcast_to_room("chat", SocketMessage.Text("plain words"))
        await hub.broadcast_to_room("chat", SocketMessage.Binary(bytes(range(256))))
        await hub.channel("chat").broadcast("typing", {"user": "ann"})
        got = await take(chat.with_meta(), 4)
        assert got == [
            ({"n": 1}, Meta("chat", None, first)),
            ("plain words", Meta("chat", None, first + 1)),
            (bytes(range(256)), Meta("chat", None, first + 2)),
            ({"user": "ann"}, Meta("chat", "typing", first + 3)),
        ]


async def test_sends_reach_the_handler_as_a_raw_client_would_send_them(serve: Serve) -> None:
    handler = Open()
    _, url = await open_server(serve, handler)
    async with connect(url) as stream:
        await stream.send("plain")
        await stream.send({"text": "hi", "n": [1, 2.5, None]})
        await stream.send(b"\x00\xff")
        messages: list[SocketMessage] = []
        while len(messages) < 3:
            kind, _, msg = await within(handler.events.get())
            if kind == "message":
                messages.append(msg)
    assert messages[0] == SocketMessage.Text("plain")
    assert messages[1].as_json() == {"text": "hi", "n": [1, 2.5, None]}
    assert messages[2] == SocketMessage.Binary(b"\x00\xff")


async def test_a_refused_subscription_raises_and_the_stream_goes_on(serve: Serve) -> None:
    server, url = await open_server(serve)
    async with connect(url) as stream:
        watch = Watch(stream)
        with pytest.raises(SubscriptionRefused) as refused:
            await stream.subscribe("secret-plans")
        assert (refused.value.code, refused.value.channel) == ("forbidden", "secret-plans")
        with pytest.raises(SubscriptionRefused, match="private user room"):
            await stream.subscribe("user:bob")  # private even when on_subscribe says yes
        assert watch.codes == ["forbidden", "forbidden"]
        news = await stream.subscribe("news")
        await server.hub.broadcast_to_room("news", SocketMessage.Text("headline"))
        assert await take(news, 1) == ["headline"]


async def test_unsubscribing_the_last_subscriber_leaves_the_room(serve: Serve) -> None:
    server, url = await open_server(serve)
    async with connect(url) as stream:
        one = await stream.subscribe("news")
        two = await stream.subscribe("news")  # a second subscriber: no second sub frame
        assert len(await server.hub.room_members("news")) == 1
        await server.hub.broadcast_to_room("news", SocketMessage.json(1))
        assert await take(one, 1) == await take(two, 1) == [1]
        await one.unsubscribe()
        assert [item async for item in one] == []  # ended
        assert len(await server.hub.room_members("news")) == 1
        await two.unsubscribe()  # returns once the server confirmed
        assert await server.hub.room_members("news") == []
        await two.unsubscribe()  # idempotent
        again = await stream.subscribe("news")
        await server.hub.broadcast_to_room("news", SocketMessage.json(2))
        assert await take(again, 1) == [2]


async def test_direct_messages_reach_iterators_and_listeners(serve: Serve) -> None:
    handler = Open()
    server, url = await open_server(serve, handler)
    async with connect(f"{url}?user=ann") as stream:
        await within(handler.connected.get())  # on_connect (after the hello) identified it
        heard: list[tuple[Any, Meta]] = []
        remove = stream.on("message", lambda data, meta: heard.append((data, meta)))
        direct = stream.messages()
        await server.hub.send_to_user("ann", SocketMessage.json({"kind": "note"}))
        await server.hub.send_to_user("ann", SocketMessage.Text("you have mail"))
        assert await take(direct, 2) == [{"kind": "note"}, "you have mail"]
        assert heard == [({"kind": "note"}, Meta()), ("you have mail", Meta())]
        remove()
        await direct.aclose()
        later = stream.messages()
        await server.hub.send_to_user("ann", SocketMessage.Binary(b"\x01"))
        assert await take(later, 1) == [b"\x01"]
        assert len(heard) == 2


class Order(msgspec.Struct):
    echo: dict[str, Any]
    user: str | None


async def test_requests_get_the_answer_or_an_error_with_a_code(serve: Serve) -> None:
    handler = Open()
    _, url = await open_server(serve, handler)
    async with connect(f"{url}?user=ann") as stream:
        assert await stream.request({"item": "tea"}) == {"echo": {"item": "tea"}, "user": "ann"}
        assert (await stream.request("plain"))["echo"] == "plain"
        assert (await stream.request(None))["echo"] is None
        typed = await stream.request({"item": "tea"}, model=Order)
        assert typed == Order({"item": "tea"}, "ann")
        with pytest.raises(RequestFailed) as refused:
            await stream.request({"item": "gold"})
        assert (refused.value.code, refused.value.message) == ("out_of_stock", "no gold left")
        with pytest.raises(RequestFailed) as late:
            await stream.request("slow", timeout=0.2)
        assert late.value.code == "timeout"
        handler.release.set()  # its late reply goes nowhere; the next one is matched
        assert (await stream.request(1))["echo"] == 1
        with pytest.raises(TypeError):
            await stream.request(b"bytes")


class ChatMessage(msgspec.Struct):
    user: str
    text: str


class PydanticMessage(pydantic.BaseModel):
    user: str
    text: str


@pytest.mark.parametrize("model", [ChatMessage, PydanticMessage])
async def test_a_typed_subscription_decodes_and_skips_what_does_not_fit(
    serve_native: Serve, model: type[Any]
) -> None:
    server = StreamServer()
    server.route("/ws", Open())
    url = f"{await serve_native(server)}/ws"
    async with connect(url) as stream:
        watch = Watch(stream)
        chat = await stream.subscribe("chat", model=model)
        hub = server.hub
        await hub.broadcast_to_room("chat", SocketMessage.json({"user": "ann", "text": "hi"}))
        await hub.broadcast_to_room("chat", SocketMessage.json({"user": "bo"}))  # no text
        await hub.broadcast_to_room("chat", SocketMessage.Text("not json"))
        await hub.broadcast_to_room("chat", SocketMessage.json({"user": "cy", "text": "yo"}))
        got = await take(chat, 2)
        assert got == [model(user="ann", text="hi"), model(user="cy", text="yo")]
        assert watch.codes == ["invalid", "invalid"]
        assert all(model.__name__ in e.message and "'chat'" in e.message for e in watch.errors)


async def test_close_ends_everything_once(serve_native: Serve) -> None:
    handler = Open()
    server = StreamServer()
    server.route("/ws", handler)
    stream = await connect(f"{await serve_native(server)}/ws")
    states: list[State] = []
    stream.on("state", states.append)
    chat = await stream.subscribe("chat")
    direct = stream.messages()
    pending = asyncio.create_task(stream.request("slow"))
    await within(handler.events.get())  # connect
    await stream.close()
    await stream.close()  # idempotent
    assert states == [State.CLOSED] and stream.state is State.CLOSED
    assert [m async for m in chat] == [] and [m async for m in direct] == []
    with pytest.raises(RequestFailed) as failed:
        await within(pending)
    assert failed.value.code == "closed"
    for call in (stream.send("x"), stream.subscribe("chat")):
        with pytest.raises(StreamClosed):
            await call
    with pytest.raises(RequestFailed):
        await stream.request("x")
    await stream.wait_closed()  # closed by us: no error
    handler.release.set()  # the server handles a socket's frames in turn
    assert await within(handler.disconnected.get())


async def test_settings_are_checked_when_connecting() -> None:
    for url in ("ftp://host/ws", "ws:///nohost", "/relative"):
        with pytest.raises(ConfigError):
            connect(url)
    with pytest.raises(ConfigError, match="subprotocol"):
        connect("ws://host/ws", token="has spaces")
    connect("ws://host/ws", token="has spaces", token_in="header")  # fine there
    for bad in ({"min_delay": -1}, {"max_queue": 0}, {"restart_delay": (2.0, 1.0)},
                {"token_in": "cookie"}):
        with pytest.raises(ConfigError):
            connect("ws://host/ws", **bad)


async def test_listeners_are_plain_functions_that_cannot_break_the_stream(
    serve_native: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Open()
    server = StreamServer()
    server.route("/ws", handler)
    async with connect(f"{await serve_native(server)}/ws?user=ann") as stream:
        await within(handler.connected.get())
        async def coroutine(info: ErrorInfo) -> None:
            pass

        with pytest.raises(TypeError):
            stream.on("error", coroutine)
        with pytest.raises(ValueError):
            stream.on("nope", print)  # type: ignore[call-overload]

        def broken(data: Any, meta: Meta) -> None:
            raise RuntimeError("listener bug")

        stream.on("message", broken)
        direct = stream.messages()
        await server.hub.send_to_user("ann", SocketMessage.Text("still delivered"))
        assert await take(direct, 1) == ["still delivered"]
        assert "listener bug" in caplog.text
