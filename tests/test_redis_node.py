"""A node's life in Redis: it registers, and a failed start or a clean stop leaves nothing."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from nucleus.stream import SocketMessage, StreamHub, StreamServer

from .backends import REDIS_URL, redis_backend
from .helpers import Recorder, within


async def registered_nodes(prefix: str) -> list[str]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        return [n.decode() for n in await client.zrange(f"{prefix}:nodes", 0, -1)]
    finally:
        await client.aclose()


async def test_a_start_that_fails_in_a_hook_leaves_no_node_behind(redis_prefix: str) -> None:
    backend = redis_backend(redis_prefix)
    server = StreamServer(backend=backend)

    @server.on_startup
    async def broken() -> None:
        raise RuntimeError("the database is not there")

    with pytest.raises(RuntimeError, match="database"):
        await server.start("127.0.0.1", 0)
    assert await registered_nodes(redis_prefix) == []
    await server.aclose()


async def test_a_clean_stop_unregisters_the_node_and_its_sockets(redis_prefix: str) -> None:
    backend = redis_backend(redis_prefix)
    handler = Recorder(rooms=("lobby",))
    server = StreamServer(backend=backend)
    server.route("/ws", handler)
    host, port = await server.start("127.0.0.1", 0)
    assert await registered_nodes(redis_prefix) == [backend.node_id]
    async with connect(f"ws://{host}:{port}/ws") as ws:
        socket = await within(handler.connected.get())
        await server.hub.identify(socket.id, "ann")
        assert await server.hub.room_users("lobby") == ["ann"]
        await server.aclose()
        await within(ws.wait_closed())
    assert ws.close_code == 1001
    assert await registered_nodes(redis_prefix) == []
    other = StreamServer(backend=redis_backend(redis_prefix))
    await other.start("127.0.0.1", 0)
    try:
        assert await other.hub.online_users() == []
        assert await other.hub.room_members("lobby") == []
        assert await other.hub.connection_count() == 0
    finally:
        await other.aclose()


async def test_a_process_without_sockets_publishes_through_redis(redis_prefix: str) -> None:
    """docs/deployment.md: a worker or cron job pushes with a hub of its own."""
    handler = Recorder(rooms=("news",))
    server = StreamServer(backend=redis_backend(redis_prefix))
    server.route("/ws", handler)
    host, port = await server.start("127.0.0.1", 0)
    pusher = StreamHub(redis_backend(redis_prefix))
    await pusher.start()
    try:
        async with connect(f"ws://{host}:{port}/ws") as ws:
            socket = await within(handler.connected.get())
            await server.hub.identify(socket.id, "ann")
            await pusher.broadcast_to_room("news", SocketMessage.json({"headline": "hi"}))
            assert json.loads(await within(ws.recv())) == {"headline": "hi"}
            await pusher.send_to_user("ann", SocketMessage.json({"kind": "mention"}))
            assert json.loads(await within(ws.recv())) == {"kind": "mention"}
            assert await pusher.online_users() == ["ann"]
    finally:
        await pusher.aclose()
        await server.aclose()
