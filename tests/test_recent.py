"""
``hub.recent(room, limit)``: the last messages a room's history keeps, what a
page entering a chat shows. Same answers on every backend; with Redis, from
any node, including a process that serves no sockets.
"""

from __future__ import annotations

import pytest

from nucleus.stream import (
    HistoryPolicy,
    MemoryBackend,
    SocketMessage,
    StreamHub,
    StreamServer,
)

from .backends import delete_prefix, new_prefix, redis_backend, require_redis
from .conftest import Serve
from .helpers import Clock, Recorder, eventually


@pytest.mark.usefixtures("any_backend")
async def test_recent_is_the_last_messages_kept_oldest_first(serve_native: Serve) -> None:
    server = StreamServer()
    server.route("/ws", Recorder(rooms=("chat",)))
    server.history("chat", HistoryPolicy(size=5, ttl=300))
    server.history("quiet", HistoryPolicy(size=0))
    await serve_native(server)
    hub = server.hub
    assert await hub.recent("chat") == []
    for n in range(8):
        await hub.broadcast_to_room("chat", SocketMessage.json({"n": n}))
    await hub.channel("chat").broadcast("typing", "ann")

    last = await hub.recent("chat", 3)
    assert [(p.offset, p.event) for p in last] == [(7, None), (8, None), (9, "typing")]
    assert [p.message.as_json() for p in last[:2]] == [{"n": 6}, {"n": 7}]
    # Never more than the history keeps (5), whatever the limit.
    assert [p.offset for p in await hub.recent("chat", 50)] == [5, 6, 7, 8, 9]
    assert await hub.recent("chat", 0) == []

    await hub.broadcast_to_room("quiet", SocketMessage.json("not kept"))
    assert await hub.recent("quiet") == []
    with pytest.raises(ValueError, match="limit"):
        await hub.recent("chat", -1)


async def test_recent_leaves_out_what_the_ttl_expired() -> None:
    clock = Clock()
    hub = StreamHub(MemoryBackend(clock=clock))
    hub.set_history("room", HistoryPolicy(size=50, ttl=60))
    await hub.start()
    try:
        for n in range(1, 9):
            await hub.broadcast_to_room("room", SocketMessage.json(n))
        assert [p.offset for p in await hub.recent("room", 20)] == list(range(1, 9))
        clock.now += 50
        for n in range(9, 12):
            await hub.broadcast_to_room("room", SocketMessage.json(n))
        clock.now += 20  # the first eight are 70 s old now
        assert [p.offset for p in await hub.recent("room", 20)] == [9, 10, 11]
        assert [p.message.as_json() for p in await hub.recent("room", 2)] == [10, 11]
        clock.now += 100  # everything expired
        assert await hub.recent("room", 20) == []
    finally:
        await hub.aclose()


async def test_recent_on_redis_reads_what_another_node_published(serve_native: Serve) -> None:
    require_redis()
    prefix = new_prefix()
    try:
        node = StreamServer(backend=redis_backend(prefix))
        node.route("/ws", Recorder(rooms=("chat",)))
        await serve_native(node)
        for n in range(4):
            await node.hub.broadcast_to_room("chat", SocketMessage.Binary(bytes([n])))
        # A process that serves no sockets (a web worker, a job) asks too.
        reader = StreamHub(redis_backend(prefix))
        await reader.start()
        try:
            got = await reader.recent("chat", 2)
        finally:
            await reader.aclose()
        assert [(p.offset, p.message.payload) for p in got] == [(3, b"\x02"), (4, b"\x03")]
    finally:
        await delete_prefix(prefix)


async def test_recent_on_redis_leaves_out_what_the_ttl_expired() -> None:
    require_redis()
    prefix = new_prefix()
    hub = StreamHub(redis_backend(prefix))
    hub.set_history("room", HistoryPolicy(size=50, ttl=2))
    await hub.start()
    try:
        await hub.broadcast_to_room("room", SocketMessage.Text("old"))

        async def expired() -> bool:
            return await hub.recent("room") == []

        await eventually(expired, seconds=10, what="the message's expiry")
        await hub.broadcast_to_room("room", SocketMessage.Text("new"))
        # "old" is still in the stream (the next message renewed its key): left out.
        assert [(p.offset, p.message.payload) for p in await hub.recent("room")] == [(2, "new")]
    finally:
        await hub.aclose()
        await delete_prefix(prefix)
