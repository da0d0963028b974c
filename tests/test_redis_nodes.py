"""
Nodes failing on the Redis backend, counting every message: a node process
SIGKILLed while its room is busy, and replays racing live publications on a
slow backend. Real ``nucleus serve`` processes and real ``nucleus.v1``
WebSocket clients (see tests/counting.py for what "exact" means).
"""

from __future__ import annotations

import asyncio

import pytest

from nucleus.stream import StreamHub, StreamServer

from .apps.chat_node import Chat
from .backends import REDIS_URL, YieldingBackend, require_redis
from .cluster import Cluster, host_port_db
from .counting import ROOM, check_exact, wait_received
from .helpers import eventually


async def test_a_killed_node_s_clients_resume_elsewhere_and_presence_converges(
    cluster: Cluster,
) -> None:
    """
    Node A (a process) is SIGKILLed while its clients' room is busy: they
    reconnect to node B with their positions and get every message exactly
    once, in order, while C keeps publishing. A's sockets are reaped within
    presence_timeout; a user with a socket open on B is never shown offline.
    """
    require_redis()
    presence_timeout = 2.0
    backend = (f"{REDIS_URL}?prefix={cluster.prefix}&presence_timeout={presence_timeout}"
               "&probe_interval=0.25&timeout=1")
    a, b = await cluster.spawn("tests.apps.chat_node:server", backend, 2)
    c = await cluster.node(REDIS_URL, presence_timeout=presence_timeout)
    on_a = [await cluster.client(f"{a.url}/ws", user) for user in ("ann", "bob")]
    on_b = [await cluster.client(f"{b.url}/ws", user) for user in ("ann", "cy")]
    everyone = ["ann", "bob", "cy"]
    hub = c.hub
    assert (await hub.online_users(), await hub.connection_count()) == (everyone, 4)
    publisher = cluster.publisher(hub)
    await publisher.wait_acked(30)

    await a.kill()
    loop = asyncio.get_running_loop()
    killed = loop.time()
    watching = asyncio.ensure_future(watch_presence(hub, {"ann", "cy"}))
    try:
        for client in on_a:
            await client.wait_closed()
            client.url = client.url.replace(a.url, b.url)
            await client.open()
            joined = await client.next_control("joined")
            assert joined["recovered"] is True

        async def converged() -> bool:
            return (await hub.connection_count() == 4 and len(await hub.room_members(ROOM)) == 4
                    and await hub.online_users() == everyone
                    and await hub.room_users(ROOM) == everyone)

        await eventually(converged, presence_timeout + 2, what="presence to converge")
        assert loop.time() - killed <= presence_timeout + 0.5
        if watching.done():
            watching.result()  # someone was shown offline: say who
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    await publisher.wait_acked(30)
    await publisher.stop()
    for client in on_a + on_b:
        await wait_received(client, publisher.last)
        tally = check_exact(client, publisher)
        assert tally.gaps == 0 and tally.received == list(range(publisher.last + 1))


async def watch_presence(hub: StreamHub, always: set[str]) -> None:
    """Fail if any of ``always`` is ever missing from online_users."""
    while True:
        online = set(await hub.online_users())
        assert always <= online, f"{always - online} shown offline"


@pytest.mark.parametrize("slow", ["yielding", "redis-with-latency"])
async def test_replays_racing_live_publications_on_a_slow_backend(
    cluster: Cluster, slow: str,
) -> None:
    """
    Clients keep dropping and resuming, and new ones join, while a publisher
    never stops; every call to the backend is slow. The replay of each resume
    and the live publications racing it must interleave into one exact stream.
    """
    if slow == "yielding":
        server = StreamServer(backend=YieldingBackend(delay=0.005))
        server.route("/ws", Chat(), rate_limit=None)
        url, hub = await cluster.serve(server), server.hub
    else:
        require_redis()
        host, port, db = host_port_db(REDIS_URL)
        proxy = await cluster.proxy((host, port), latency=0.02)  # 40 ms round trips
        slow_node = await cluster.node(f"redis://127.0.0.1:{proxy.port}/{db}")
        url, hub = slow_node.url, (await cluster.node(REDIS_URL)).hub
    resumers = [await cluster.client(url, "ann") for _ in range(3)]
    publisher = cluster.publisher(hub)
    joiners = []
    for round_ in range(4):
        await publisher.wait_acked(5)
        joiners.append(await cluster.client(url, "bob"))
        for client in resumers[round_ % 2 :]:
            await client.drop()
        for client in resumers[round_ % 2 :]:
            await client.open()
    for client in resumers:
        recovered = [f.get("recovered") for f in client.frames if f["type"] == "joined"]
        assert recovered[0] is None and recovered[1:] == [True] * (len(recovered) - 1)
    await publisher.wait_acked(10)
    await publisher.stop()
    for client in resumers + joiners:
        await wait_received(client, publisher.last)
        assert check_exact(client, publisher).gaps == 0
