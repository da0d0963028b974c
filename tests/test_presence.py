"""Room presence: who is in a room, exact on one node and across nodes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.asyncio.client import connect

from nucleus.stream import SocketMessage, StreamHandler, StreamHub, StreamServer, WebSocket

from .backends import redis_backend
from .conftest import Serve
from .helpers import eventually, within
from .tagged_client import TaggedClient

every_backend = pytest.mark.usefixtures("any_backend")


class Users(StreamHandler):
    """Sockets say who they are with ?user=; every subscription but 'secret' is allowed."""

    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        user = socket.query.get("user")
        if user:
            await hub.identify(socket.id, user)

    async def on_subscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
        return channel != "secret"


def app(presence: bool = True) -> StreamServer:
    server = StreamServer()
    server.route("/ws", Users(), presence=presence)
    return server


async def watcher(base: str, user: str, room: str = "chat") -> TaggedClient:
    client = TaggedClient(f"{base}/ws?user={user}")
    await client.open()
    await client.send({"type": "sub", "channel": room, "id": 1, "presence": True})
    await client.next_control("joined")
    return client


async def member(base: str, user: str, room: str = "chat") -> TaggedClient:
    client = TaggedClient(f"{base}/ws?user={user}")
    await client.open(room)
    await client.next_control("joined")
    return client


async def next_presence(client: TaggedClient) -> dict[str, Any]:
    while True:
        frame = await within(client.control.get())
        if frame["type"].startswith("presence"):
            return frame


def no_presence_pending(client: TaggedClient) -> bool:
    return not any(f["type"].startswith("presence") for f in list(client.control._queue))  # type: ignore[attr-defined]


@every_backend
async def test_watchers_get_the_state_then_each_arrival_and_departure_once(
    serve: Serve,
) -> None:
    server = app()
    base = await serve(server)
    ann = await watcher(base, "ann")
    assert await next_presence(ann) == {
        "type": "presence_state", "channel": "chat", "users": ["ann"]}

    bob_tabs = [await member(base, "bob") for _ in range(3)]
    assert await next_presence(ann) == {
        "type": "presence_diff", "channel": "chat", "join": ["bob"]}
    assert await server.hub.room_users("chat") == ["ann", "bob"]
    assert len(await server.hub.room_members("chat")) == 4

    # Two of three tabs close: bob is still there, nothing is said.
    for tab in bob_tabs[:2]:
        await tab.close()
    async def two_left() -> bool:
        return len(await server.hub.room_members("chat")) == 2
    await eventually(two_left)
    assert await server.hub.room_users("chat") == ["ann", "bob"]

    # A raw unsub of the last tab is a departure.
    await bob_tabs[2].send({"type": "unsub", "channel": "chat", "id": 9})
    assert await next_presence(ann) == {
        "type": "presence_diff", "channel": "chat", "leave": ["bob"]}
    assert await server.hub.room_users("chat") == ["ann"]
    assert no_presence_pending(ann)  # the closed tabs caused nothing

    # A socket identified later arrives as that user.
    anon = TaggedClient(f"{base}/ws")
    await anon.open("chat")
    await anon.next_control("joined")
    socket_id = next(s for s in server.hub.local_sockets()
                     if server.hub.get_socket(s).user_id is None)
    await server.hub.identify(socket_id, "cy")
    assert await next_presence(ann) == {
        "type": "presence_diff", "channel": "chat", "join": ["cy"]}
    await anon.close()
    assert await next_presence(ann) == {
        "type": "presence_diff", "channel": "chat", "leave": ["cy"]}
    await bob_tabs[2].close()
    await ann.close()


@every_backend
async def test_presence_is_off_unless_the_route_allows_it(serve: Serve) -> None:
    server = app(presence=False)
    base = await serve(server)
    ann = await watcher(base, "ann")
    error = await ann.next_control("error")
    assert error["code"] == "forbidden" and error["presence"] == "chat"
    assert "presence=True" in error["message"]
    assert "channel" not in error  # the subscription itself stands
    offset = await server.hub.broadcast_to_room("chat", SocketMessage.json({"n": 1}))
    assert await within(ann.pubs.get()) == ("chat", offset, {"n": 1})
    await member(base, "bob")
    assert no_presence_pending(ann)
    await ann.close()


@every_backend
async def test_presence_is_authorized_like_the_subscription(serve: Serve) -> None:
    base = await serve(app())
    ann = await watcher_refused(base)
    error = await ann.next_control("error")
    assert error["code"] == "forbidden" and error["channel"] == "secret"
    assert no_presence_pending(ann)
    await ann.close()


async def watcher_refused(base: str) -> TaggedClient:
    client = TaggedClient(f"{base}/ws?user=ann")
    await client.open()
    await client.send({"type": "sub", "channel": "secret", "id": 1, "presence": True})
    return client


@every_backend
async def test_a_watcher_can_stop_and_a_hello_can_ask_for_presence(serve: Serve) -> None:
    server = app()
    base = await serve(server)
    ann = await watcher(base, "ann")
    await next_presence(ann)
    await ann.send({"type": "sub", "channel": "chat", "id": 2, "presence": False})
    await ann.next_control("joined")  # already a member: the position is confirmed
    bob = await member(base, "bob")
    await bob.close()

    # A reconnecting client asks for presence in its hello.
    async with connect(f"{base}/ws?user=eve", subprotocols=["nucleus.v1"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "hello", "channels": {"chat": {"presence": True}}}))
        frames = [json.loads(await within(ws.recv())) for _ in range(2)]
        assert frames[0]["type"] == "joined"
        assert frames[1] == {"type": "presence_state", "channel": "chat",
                             "users": ["ann", "eve"]}
    # ann stopped watching: eve's coming and going reached her not.
    await ann.close()
    assert no_presence_pending(ann)


async def test_presence_spans_nodes(redis_prefix: str, serve: Serve) -> None:
    one, two = app(), app()
    for server in (one, two):
        server.use_backend(redis_backend(redis_prefix))
    base_one, base_two = await serve(one), await serve(two)
    ann = await watcher(base_one, "ann")
    assert (await next_presence(ann))["users"] == ["ann"]
    bob_here = await member(base_one, "bob")
    assert (await next_presence(ann))["join"] == ["bob"]
    bob_there = await member(base_two, "bob")  # another tab on another node
    cy = await member(base_two, "cy")
    assert (await next_presence(ann))["join"] == ["cy"]
    assert await two.hub.room_users("chat") == ["ann", "bob", "cy"]
    await bob_here.close()
    await cy.close()
    assert (await next_presence(ann))["leave"] == ["cy"]  # bob is still there, on two
    assert no_presence_pending(ann)
    await bob_there.close()
    assert (await next_presence(ann))["leave"] == ["bob"]
    assert await one.hub.room_users("chat") == ["ann"]
    await ann.close()
