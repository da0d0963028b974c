"""
What the Redis backend keeps, measured with ``MEMORY USAGE`` on a real Redis:
the figures docs/deployment.md gives per socket and per room must hold.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from nucleus.stream import (
    HistoryPolicy,
    SocketMessage,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)

from .backends import REDIS_URL, redis_backend
from .conftest import Serve
from .helpers import eventually

#: docs/deployment.md, "What Redis holds": bytes per open socket (with a user
#: and one room, rooms shared by ten sockets), and per kept message of 100 bytes.
PER_SOCKET = 800
PER_MESSAGE = 250


class Joins(StreamHandler):
    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        await hub.identify(socket.id, socket.query["user"])
        await hub.join_room(socket.id, socket.query["room"])


async def used(prefix: str) -> int:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        total = 0
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            total += await client.memory_usage(key, samples=0) or 0
        return total
    finally:
        await client.aclose()


async def test_redis_memory_per_socket_room_and_message(
    serve_native: Serve, redis_prefix: str
) -> None:
    server = StreamServer(backend=redis_backend(redis_prefix))
    server.route("/ws", Joins())
    server.history("*", HistoryPolicy(size=1000, ttl=300))
    base = await serve_native(server)
    empty = await used(redis_prefix)  # the node's own keys

    sockets, rooms = 200, 20
    clients: list[ClientConnection] = []
    for n in range(sockets):
        clients.append(await connect(f"{base}/ws?user=u{n}&room=r{n % rooms}", max_queue=None))

    async def all_in() -> bool:
        return await server.hub.connection_count() == sockets and len(
            await server.hub.room_members(f"r{rooms - 1}")) == sockets // rooms
    await eventually(all_in)
    with_sockets = await used(redis_prefix)

    messages = 100
    payload = SocketMessage.json({"text": "x" * 88})  # 100 bytes of JSON
    async def publish(room: str) -> None:
        for _ in range(messages):
            await server.hub.broadcast_to_room(room, payload)
    await asyncio.gather(*(publish(f"r{n}") for n in range(rooms)))
    with_history = await used(redis_prefix)

    # Every socket is in one room; rooms are shared: split the cost.
    per_socket_and_room = (with_sockets - empty) / sockets
    per_message = (with_history - with_sockets) / (rooms * messages)
    print(f"\nper socket (incl. its share of {rooms} rooms): {per_socket_and_room:.0f} B; "
          f"per kept message: {per_message:.0f} B")
    assert per_socket_and_room <= PER_SOCKET
    assert per_message <= PER_MESSAGE

    await asyncio.gather(*(c.close() for c in clients))

    async def all_gone() -> bool:
        return await server.hub.connection_count() == 0
    await eventually(all_gone)
    # Sockets leave nothing behind; rooms keep only their history and its meta.
    left = await used(redis_prefix)
    assert left - empty <= (with_history - with_sockets) + 200 * rooms
