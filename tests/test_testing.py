"""nucleus.testing: the in-process client users test their handlers with."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from examples import chat_room, quick_example
from nucleus.fortress import Fortress
from nucleus.stream import (
    ChannelError,
    SocketClosed,
    SocketMessage,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)
from nucleus.testing import HandshakeRefused, TestClient, nucleus_client  # noqa: F401

SECRET = "a-test-secret-of-at-least-thirty-two-bytes!"


async def test_the_guides_quick_example_without_a_port() -> None:
    async with TestClient(quick_example.server) as client:
        async with client.connect("/ws/chat") as ann, client.connect("/ws/chat") as bob:
            await ann.send_text("hello general")
            assert await ann.receive_text() == "hello general"
            assert await bob.receive_text() == "hello general"
            await bob.send_bytes(b"binary is ignored")
            await bob.send_text("after binary")
            assert await ann.receive_text() == "after binary"


async def test_json_bytes_timeouts_and_close_codes() -> None:
    class Echo(StreamHandler):
        async def on_message(self, hub: StreamHub, socket: WebSocket,
                             msg: SocketMessage) -> None:
            if msg == SocketMessage.Text("bye"):
                await socket.close(4000, "asked to")
            else:
                await socket.send(msg)

    server = StreamServer()
    server.route("/echo", Echo())
    async with TestClient(server) as client:
        ws = await client.connect("/echo")
        await ws.send_json({"n": 1})
        assert await ws.receive_json() == {"n": 1}
        await ws.send_bytes(b"\x00\x01")
        assert await ws.receive_bytes() == b"\x00\x01"
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.05)
        await ws.send_text("bye")
        assert await ws.wait_closed() == 4000 and ws.close_reason == "asked to"
        with pytest.raises(SocketClosed):
            await ws.receive()


async def test_tokens_and_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", SECRET)
    seen: list[str | None] = []

    class Who(StreamHandler):
        async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
            seen.append(socket.user_id)

    server = StreamServer()
    server.route("/ws", Who(), auth=Fortress.query_token())
    token = Fortress.issue_token("ann", SECRET)
    async with TestClient(server) as client:
        with pytest.raises(HandshakeRefused) as refused:
            await client.connect("/ws")
        assert refused.value.status == 401
        with pytest.raises(HandshakeRefused):
            await client.connect("/ws", token="not-a-token")
        async with client.connect("/ws", token=token):
            pass
    assert seen == ["ann"]


async def test_channels_over_nucleus_v1() -> None:
    class Rooms(StreamHandler):
        async def on_subscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
            return channel != "secret"

    server = StreamServer()
    server.route("/ws", Rooms())
    async with TestClient(server) as client:
        ws = await client.connect("/ws", protocol=True)
        joined = await ws.subscribe("chat")
        assert joined["type"] == "joined" and joined["offset"] == 0
        await server.hub.broadcast_to_room("chat", SocketMessage.json({"text": "hi"}))
        assert await ws.receive_data() == {"text": "hi"}
        with pytest.raises(ChannelError, match="refused"):
            await ws.subscribe("secret")


async def test_the_fixture_starts_and_stops_the_server(
    nucleus_client: Callable[[StreamServer], Awaitable[TestClient]],  # noqa: F811
) -> None:
    started = asyncio.Event()
    server = StreamServer()
    server.route("/ws/chat", chat_room.ChatRoom())

    @server.on_startup
    async def ready() -> None:
        started.set()

    client = await nucleus_client(server)
    assert started.is_set()
    async with client.connect("/ws/chat") as ws:
        await ws.send_text("hi there")
        assert (await ws.receive_json())["text"] == "hi there"
