"""
The recovery table against Redis: a library client resuming from a position
gets exactly what it missed (``recovered: true``), or is told that it cannot
(``recovered: false``) and continues live, never a partial replay.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

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
from .helpers import eventually, within
from .tagged_client import ChannelLog, TaggedClient

ROOM = "chat"


class Open(StreamHandler):
    async def on_subscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
        return True


@dataclass
class Node:
    server: StreamServer
    url: str
    prefix: str
    redis: aioredis.Redis
    published: list[tuple[int, str]] = field(default_factory=list)

    async def publish(self, *texts: str) -> list[int]:
        offsets = []
        for text in texts:
            offset = await self.server.hub.broadcast_to_room(ROOM, SocketMessage.Text(text))
            self.published.append((offset, text))
            offsets.append(offset)
        return offsets

    def since(self, offset: int) -> list[tuple[int, str]]:
        """What was published after ``offset``."""
        return [(o, text) for o, text in self.published if o > offset]

    async def resume(self, epoch: str | None, offset: int | None) -> tuple[dict, list]:  # type: ignore[type-arg]
        """
        Join from ``(epoch, offset)``; return the ``joined`` frame and every
        ``pub`` before a live message published after the join.
        """
        client = TaggedClient(self.url)
        client.channels[ROOM] = ChannelLog(epoch=epoch, offset=offset)
        await client.open()
        joined = await client.next_control("joined")
        (live,) = await self.publish("live")
        await eventually(lambda: _has(client, live), what="the live message")
        await client.close()
        pubs = client.channels[ROOM].received
        assert pubs[-1] == (live, "live")
        return joined, pubs[:-1]

    async def redis_now_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000


async def _has(client: TaggedClient, offset: int) -> bool:
    return any(o == offset for o, _ in client.channels[ROOM].received)


def texts(first: int, last: int) -> list[str]:
    return [f"m{n}" for n in range(first, last + 1)]


@pytest.fixture
async def node(serve_native: Serve, redis_prefix: str) -> AsyncIterator[Node]:
    backend = redis_backend(redis_prefix)
    server = StreamServer(backend=backend)
    server.route("/ws", Open())
    redis = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield Node(server, f"{await serve_native(server)}/ws", redis_prefix, redis)
    finally:
        await redis.aclose()


async def position(node: Node) -> tuple[str, int]:
    """The room's current position, as a fresh subscriber learns it."""
    client = TaggedClient(node.url)
    await client.open(ROOM)
    joined = await client.next_control("joined")
    await client.close()
    return joined["epoch"], joined["offset"]


async def test_a_valid_position_gets_exactly_the_missed_messages(node: Node) -> None:
    epoch, start = await position(node)
    offsets = await node.publish(*texts(1, 10))
    assert offsets == list(range(start + 1, start + 11))
    for seen in (0, 3, 9):
        current, missed = node.published[-1][0], node.since(offsets[seen] - 1)
        joined, pubs = await node.resume(epoch, offsets[seen] - 1)
        assert (joined["recovered"], joined["epoch"], joined["offset"]) == (True, epoch, current)
        assert pubs == missed
        assert pubs[: 10 - seen] == list(zip(offsets[seen:], texts(seen + 1, 10), strict=True))


async def test_an_up_to_date_position_is_recovered_with_nothing_to_replay(node: Node) -> None:
    await node.publish(*texts(1, 3))
    epoch, offset = await position(node)
    joined, pubs = await node.resume(epoch, offset)
    assert (joined["recovered"], joined["epoch"], joined["offset"], pubs) == (
        True, epoch, offset, [])


async def test_a_trimmed_position_is_not_recovered(node: Node) -> None:
    node.server.history(ROOM, HistoryPolicy(size=3, ttl=60))
    epoch, start = await position(node)
    await node.publish(*texts(1, 10))  # keeps start+8 .. start+10
    joined, pubs = await node.resume(epoch, start + 7)
    assert joined["recovered"] is True
    assert pubs == list(zip(range(start + 8, start + 11), texts(8, 10), strict=True))
    # The first resume's live message pushed start+8 out: start+7 is now too old.
    joined, pubs = await node.resume(epoch, start + 7)
    assert (joined["recovered"], joined["epoch"], joined["offset"], pubs) == (
        False, epoch, start + 11, [])
    missed = node.since(start + 9)
    joined, pubs = await node.resume(epoch, start + 9)
    assert joined["recovered"] is True and pubs == missed


async def test_an_expired_position_is_not_recovered(node: Node) -> None:
    ttl_ms = 600
    node.server.history(ROOM, HistoryPolicy(size=100, ttl=ttl_ms / 1000))
    epoch, start = await position(node)
    hist = f"{node.prefix}:room:{ROOM}:hist"
    (first,) = await node.publish("old")
    published = await node.redis_now_ms()
    # A second message while the first is still young keeps the stream alive...
    await eventually(lambda: _after(node, published + ttl_ms // 2), what="half the ttl")
    (second,) = await node.publish("young")
    # ...and once the first has outlived the ttl, it is no longer recoverable.
    await eventually(lambda: _after(node, published + ttl_ms + 50), what="the ttl")
    assert await node.redis.exists(hist)
    joined, pubs = await node.resume(epoch, start)
    assert (joined["recovered"], pubs) == (False, [])
    joined, pubs = await node.resume(epoch, first)  # "young", then the last resume's "live"
    assert (joined["recovered"], pubs) == (True, [(second, "young"), (second + 1, "live")])
    # Once every entry is older than the ttl, the stream itself is gone.
    await eventually(lambda: _gone(node, hist), what="the history to expire")
    joined, pubs = await node.resume(epoch, joined["offset"])
    assert (joined["recovered"], joined["epoch"], pubs) == (False, epoch, [])


async def _after(node: Node, when_ms: int) -> bool:
    return await node.redis_now_ms() > when_ms


async def _gone(node: Node, key: str) -> bool:
    return not await node.redis.exists(key)


@pytest.mark.parametrize("ahead", [1, 1000])
async def test_a_future_offset_is_not_recovered(node: Node, ahead: int) -> None:
    await node.publish(*texts(1, 3))
    epoch, offset = await position(node)
    joined, pubs = await node.resume(epoch, offset + ahead)
    assert (joined["recovered"], joined["epoch"], joined["offset"], pubs) == (
        False, epoch, offset, [])


async def test_a_negative_offset_is_not_recovered(node: Node) -> None:
    await node.publish(*texts(1, 3))
    epoch, offset = await position(node)
    joined, pubs = await node.resume(epoch, -1)
    assert (joined["recovered"], joined["offset"], pubs) == (False, offset, [])


async def test_a_position_in_another_epoch_is_not_recovered(node: Node) -> None:
    await node.publish(*texts(1, 3))
    epoch, offset = await position(node)
    joined, pubs = await node.resume("0" + epoch, 1)
    assert (joined["recovered"], joined["epoch"], joined["offset"], pubs) == (
        False, epoch, offset, [])


async def test_a_lost_history_starts_a_new_epoch_and_old_positions_get_a_gap(node: Node) -> None:
    await node.publish(*texts(1, 5))
    epoch, offset = await position(node)
    # The room's keys are deleted (evicted, flushed, Redis replaced): its epoch changes.
    await node.redis.delete(f"{node.prefix}:room:{ROOM}:meta", f"{node.prefix}:room:{ROOM}:hist")
    await node.publish("after")
    joined, pubs = await node.resume(epoch, offset - 2)
    assert joined["recovered"] is False and pubs == []
    assert joined["epoch"] != epoch and joined["offset"] == 1
    # The new epoch recovers as usual.
    joined, pubs = await node.resume(joined["epoch"], 0)
    assert joined["recovered"] is True and pubs == [(1, "after"), (2, "live")]


async def test_a_resume_racing_live_traffic_is_still_exact(node: Node) -> None:
    """Publications made while the resume is in flight come once, after the replay."""
    epoch, start = await position(node)
    offsets = await node.publish(*texts(1, 20))
    client = TaggedClient(node.url)
    client.channels[ROOM] = ChannelLog(epoch=epoch, offset=start + 5)
    await client.open()
    more = await node.publish(*texts(21, 40))
    await eventually(lambda: _has(client, more[-1]), what="the last message")
    joined = await within(client.next_control("joined"))
    assert joined["recovered"] is True
    assert client.channels[ROOM].received == list(
        zip(offsets[5:] + more, texts(6, 40), strict=True))
    await client.close()
