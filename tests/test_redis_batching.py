"""
Publishes batched on the way to Redis and back: several publishers at once
share writes to Redis, and what comes back is fanned out in batches. Nothing
may change order, go missing or be doubled by it, and a failure must reach
every publisher it touched.

Nodes run in this process on the test Redis (a prefix of their own) with real
``nucleus.v1`` clients; a proxy in front of Redis stands in for a network
that fails in the middle of a batch.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nucleus.stream import BackendUnavailable, SocketMessage, StreamHub

from .backends import REDIS_URL, require_redis
from .cluster import Cluster, host_port_db
from .counting import ROOM
from .helpers import eventually, within
from .tagged_client import TaggedClient


class Flood:
    """``count`` publishers, each sending ``p:i`` back to back; what each got back."""

    def __init__(self, hub: StreamHub, count: int) -> None:
        self.hub = hub
        self.acked: dict[str, int] = {}  # text -> offset
        self.failed: list[str] = []
        self.order: dict[int, list[int]] = {p: [] for p in range(count)}
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._publish(p)) for p in range(count)]

    async def _publish(self, p: int) -> None:
        i = 0
        while not self._stop.is_set():
            text = f"{p}:{i}"
            try:
                self.acked[text] = await self.hub.broadcast_to_room(ROOM, SocketMessage.Text(text))
                self.order[p].append(i)
            except BackendUnavailable:
                self.failed.append(text)
                await asyncio.sleep(0.01)
            i += 1
            if i % 50 == 0:
                await asyncio.sleep(0)  # other work gets a turn now and then

    async def stop(self) -> None:
        self._stop.set()
        await within(asyncio.gather(*self._tasks))  # every publish returned or raised


def publications(client: TaggedClient) -> list[tuple[int, str]]:
    """The (offset, text) of each publication the client got, in order."""
    return [(f["offset"], f["text"]) for f in client.frames
            if f["type"] == "pub" and f["channel"] == ROOM]


def check(client: TaggedClient, flood: Flood) -> None:
    """One offset order, no hole or duplicate, each publisher's order, every ack there."""
    got = publications(client)
    offsets = [offset for offset, _ in got]
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), "a hole or a duplicate"
    by_text = dict((text, offset) for offset, text in got)
    for text, offset in flood.acked.items():
        assert by_text.get(text) == offset, f"{text} (offset {offset}) did not arrive as acked"
    for p in flood.order:
        sent = [int(text.split(":")[1]) for _, text in got if text.startswith(f"{p}:")]
        assert sent == sorted(sent), f"publisher {p}'s messages out of order"


async def received(client: TaggedClient, flood: Flood) -> None:
    last = max(flood.acked.values())

    async def everything() -> bool:
        got = publications(client)
        return bool(got) and got[-1][0] >= last

    await eventually(everything, what=f"offset {last} at {client.url}")


async def test_publishers_at_once_share_batches_without_reordering(cluster: Cluster) -> None:
    require_redis()
    node = await cluster.node(REDIS_URL)
    clients = [await cluster.client(node.url) for _ in range(3)]
    flood = Flood(node.hub, 6)

    async def enough() -> bool:
        return len(flood.acked) >= 1200

    await eventually(enough, what="1,200 publications")
    await flood.stop()
    assert flood.failed == []
    for client in clients:
        await received(client, flood)
        check(client, flood)


async def test_an_outage_in_the_middle_of_batches_reaches_every_publisher(
    cluster: Cluster, proxy_to: Any,
) -> None:
    require_redis()
    _, port, db = host_port_db(REDIS_URL)
    proxy = await proxy_to(port)
    node = await cluster.node(f"redis://127.0.0.1:{proxy.port}/{db}", timeout=0.5)
    clients = [await cluster.client(node.url) for _ in range(2)]
    flood = Flood(node.hub, 6)

    async def acked(count: int) -> bool:
        return len(flood.acked) >= count

    await eventually(lambda: acked(300), what="300 publications")
    proxy.stall()  # batches written, their replies held back...
    await asyncio.sleep(0.1)
    await proxy.stop()  # ...then the link is cut under them

    async def every_publisher_heard() -> bool:
        return len(flood.failed) >= 6  # each publisher in flight heard of it

    await eventually(every_publisher_heard, what="every publisher failing")
    await proxy.start()
    proxy.resume()
    before = len(flood.acked)
    await eventually(lambda: acked(before + 300), what="publications after the outage")
    await flood.stop()
    # Whatever was acknowledged arrives, once, in order (history fills the
    # hole the cut left in the pub/sub link).
    for client in clients:
        await received(client, flood)
        check(client, flood)
