"""
The Redis backend when Redis fails, counting every message.

Nodes run in this process (so that their logs can be read) with real
``nucleus.v1`` WebSocket clients; a publisher numbers its messages, and every
client must get each one within the history window exactly once and in
order, or be told of a gap (see tests/counting.py). Destructive faults (killed
links, a restarted Redis, changed ACLs) use a private ``redis-server``, never
the shared one. Each outage and each recovery is logged once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from nucleus.stream import BackendUnavailable, ConfigError, RedisBackend, SocketMessage
from nucleus.stream._backend import backend_from_url

from .backends import REDIS_URL, require_redis
from .cluster import Cluster, Node, PrivateRedis, TcpProxy, host_port_db
from .counting import ROOM, check_exact, wait_received
from .helpers import eventually, within
from .tagged_client import TaggedClient

LOGGER = "nucleus.stream.redis"
OUTAGE = "is unreachable"
RECOVERY = "is reachable again"

Check = Callable[[], Awaitable[bool]]


def outage_logs(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    """How many outages and recoveries the Redis backends logged."""
    records = [r for r in caplog.records if r.name == LOGGER]
    return (sum(OUTAGE in r.getMessage() for r in records),
            sum(RECOVERY in r.getMessage() for r in records))


def logged(caplog: pytest.LogCaptureFixture, counts: tuple[int, int]) -> Check:
    async def check() -> bool:
        return outage_logs(caplog) == counts

    return check


def healthy(*nodes: Node) -> Check:
    async def check() -> bool:
        return all(node.backend.healthy() for node in nodes)

    return check


async def via_proxy_to_shared_redis(cluster: Cluster, **options: Any) -> tuple[Node, TcpProxy]:
    """A node that reaches the shared Redis through a proxy the test can stop."""
    require_redis()
    host, port, db = host_port_db(REDIS_URL)
    proxy = await cluster.proxy((host, port))
    return await cluster.node(f"redis://127.0.0.1:{proxy.port}/{db}", **options), proxy


# -- configuration from the URL -------------------------------------------------------


def test_a_redis_url_carries_the_backend_options() -> None:
    backend = backend_from_url(
        "redis://:secret@127.0.0.1:6379/3?prefix=app1&presence_timeout=4&probe_interval=0.5"
        "&timeout=2&batch_window=0&socket_keepalive=true")
    assert isinstance(backend, RedisBackend)
    assert (backend.prefix, backend.presence_timeout, backend.probe_interval, backend.timeout,
            backend.batch_window) == ("app1", 4.0, 0.5, 2.0, 0.0)
    # The rest is the Redis client's; the password never shows.
    assert backend.url == "redis://:secret@127.0.0.1:6379/3?socket_keepalive=true"
    assert "secret" not in repr(backend)
    unix = backend_from_url("unix:///run/redis.sock?db=2&prefix=x")
    assert isinstance(unix, RedisBackend)
    assert (unix.url, unix.prefix) == ("unix:///run/redis.sock?db=2", "x")


@pytest.mark.parametrize(
    "query", ["timeout=soon", "presence_timeout=0.1", "prefix=", "batch_window=-1"])
def test_a_bad_option_in_the_url_is_refused_clearly(query: str) -> None:
    with pytest.raises(ConfigError):
        backend_from_url(f"redis://127.0.0.1:6379/0?{query}")


# -- CLIENT KILL TYPE pubsub ----------------------------------------------------------


async def test_killed_pubsub_links_lose_nothing(
    private_redis: PrivateRedis, cluster: Cluster, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    a = await cluster.node(private_redis.url())
    b = await cluster.node(private_redis.url())
    clients = [await cluster.client(node.url) for node in (a, b, a, b)]
    publisher = cluster.publisher(a.hub)
    admin = private_redis.client()
    try:
        await publisher.wait_acked(20)
        for round_ in range(1, 4):
            assert await admin.client_kill_filter(_type="pubsub") == 2  # one link per node
            await eventually(logged(caplog, (2 * round_, 2 * round_)),
                             what="both outages and recoveries logged")
            await eventually(healthy(a, b), what="both links back")
            await publisher.wait_acked(20)
            assert outage_logs(caplog) == (2 * round_, 2 * round_)  # once each
    finally:
        await admin.aclose()
    await publisher.stop()
    for client in clients:
        await wait_received(client, publisher.last)
        tally = check_exact(client, publisher)
        assert tally.gaps == 0 and tally.received == list(range(publisher.last + 1))
    assert publisher.failed == {}


# -- Redis out of reach ---------------------------------------------------------------


async def must_fail_fast(call: Awaitable[Any], bound: float) -> None:
    """``call`` raises BackendUnavailable within ``bound`` seconds, never hangs."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(BackendUnavailable):
        await within(call, bound + 5)
    assert loop.time() - began <= bound, f"took {loop.time() - began:.2f}s"


async def cluster_calls_fail_fast(node: Node) -> None:
    """Every hub call that needs Redis fails within the backend's timeout (+0.5 s)."""
    bound = node.backend.timeout + 0.5
    hub = node.hub
    await asyncio.gather(
        must_fail_fast(hub.broadcast_to_room(ROOM, SocketMessage.Text("lost")), bound),
        must_fail_fast(hub.channel(ROOM).broadcast("ev", {}), bound),
        must_fail_fast(hub.online_users(), bound),
        must_fail_fast(hub.connection_count(), bound),
        must_fail_fast(hub.room_members(ROOM), bound),
        must_fail_fast(hub.room_users(ROOM), bound),
        must_fail_fast(hub.rooms_of("elsewhere.1"), bound),
        must_fail_fast(hub.send_to("elsewhere.1", SocketMessage.Text("x")), bound),
        must_fail_fast(hub.send_to_user("nobody", SocketMessage.Text("x")), bound),
        must_fail_fast(hub.disconnect_user("nobody"), bound),
    )


@pytest.mark.parametrize("history", [1000, 5], ids=["within-history", "beyond-history"])
async def test_a_redis_outage_behind_a_proxy(
    cluster: Cluster, caplog: pytest.LogCaptureFixture, history: int,
) -> None:
    """
    Node A reaches Redis through a proxy that is stopped, then started again;
    node C publishes throughout. A keeps serving its sockets, its cluster calls
    fail fast, and afterwards its clients get every message or a gap.
    """
    caplog.set_level(logging.INFO, LOGGER)
    a, proxy = await via_proxy_to_shared_redis(cluster, history=history)
    c = await cluster.node(REDIS_URL, history)
    clients = [await cluster.client(a.url, user) for user in ("ann", "bob")]
    witness = await cluster.client(c.url, "cy")
    publisher = cluster.publisher(c.hub)
    await publisher.wait_acked(20)

    await proxy.stop()
    await eventually(logged(caplog, (1, 0)), what="the outage logged")
    await cluster_calls_fail_fast(a)
    # Local traffic goes on: A's own sockets are still served.
    (local, _) = a.hub.local_sockets()
    await a.hub.send_to(local, SocketMessage.Text("local"))
    assert await within(clients[0].direct.get()) == "local"
    # Within the window, or more than it can hold.
    await publisher.wait_acked(50 if history > 50 else 3 * history)
    assert not a.backend.healthy()

    await proxy.start()
    await eventually(healthy(a), what="A's link back")
    await publisher.wait_acked(20)
    await publisher.stop()
    for client in [*clients, witness]:
        await wait_received(client, publisher.last)
        tally = check_exact(client, publisher)
        if client is witness or history > 100:
            assert tally.gaps == 0 and tally.received == list(range(publisher.last + 1))
        else:
            assert tally.gaps == 1  # never a partial replay called complete
    assert outage_logs(caplog) == (1, 1)
    assert publisher.failed == {}


async def test_a_stalled_redis_fails_calls_in_bounded_time_then_resumes_cleanly(
    private_redis: PrivateRedis, cluster: Cluster, caplog: pytest.LogCaptureFixture,
) -> None:
    """
    Redis stops answering without closing anything (a partition, a stuck
    server): calls fail within the timeout instead of hanging, new sockets are
    refused with 1013, and afterwards no reply meant for a timed-out call is
    taken for another's.
    """
    caplog.set_level(logging.INFO, LOGGER)
    proxy = await cluster.proxy(("127.0.0.1", private_redis.port))
    a = await cluster.node(f"redis://127.0.0.1:{proxy.port}/0", timeout=0.5,
                           presence_timeout=5.0)
    c = await cluster.node(private_redis.url())
    clients = [await cluster.client(a.url, user) for user in ("ann", "bob")]
    publisher = cluster.publisher(c.hub)
    await publisher.wait_acked(20)

    proxy.stall()
    # (The broadcasts among these calls were sent: once the network heals,
    # Redis runs them, and the room gets them. A timeout is no proof that
    # nothing happened.)
    await cluster_calls_fail_fast(a)
    async with connect(a.url) as refused:
        with pytest.raises(ConnectionClosed) as closed:
            await within(refused.recv(), a.backend.timeout + 1)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    await eventually(logged(caplog, (1, 0)), what="the outage logged")
    await publisher.wait_acked(20)

    proxy.resume()
    await eventually(healthy(a), what="A's link back")
    await publisher.wait_acked(20)
    await publisher.stop()
    for client in clients:
        await wait_received(client, publisher.last)
        tally = check_exact(client, publisher)
        assert tally.gaps == 0 and tally.received == list(range(publisher.last + 1))
    # Every answer is the one asked for.
    for _ in range(20):
        assert await a.hub.online_users() == ["ann", "bob"]
        assert await a.hub.connection_count() == 2
        assert len(await a.hub.room_members(ROOM)) == 2
    assert outage_logs(caplog) == (1, 1)


async def test_an_outage_longer_than_the_lease_shows_nobody_offline_after(
    private_redis: PrivateRedis, cluster: Cluster,
) -> None:
    """
    Every node loses Redis for longer than its lease. When Redis is back, the
    first node to renew its lease must not reap the others: they are alive,
    and their users must not be shown offline, even for a moment. A node that
    died during the outage is reaped within a lease of Redis being back.
    """
    proxy = await cluster.proxy(("127.0.0.1", private_redis.port))
    timing = {"presence_timeout": 1.0, "probe_interval": 0.2}
    a = await cluster.node(f"redis://127.0.0.1:{proxy.port}/0", **timing)
    b = await cluster.node(f"redis://127.0.0.1:{proxy.port}/0", **timing)
    for node, user in ((a, "ann"), (a, "bob"), (b, "ann"), (b, "cy")):
        await cluster.client(node.url, user)
    admin = private_redis.client()
    try:
        # A third node, with one socket of "dan", will die during the outage.
        await a.backend._call("SOCKET_OPEN", "ghost.1", "ghost")
        await a.backend._call("SOCKET_BIND", "ghost.1", "dan")
        nodes = f"{cluster.prefix}:nodes"
        await admin.zadd(nodes, {"ghost": await admin.zscore(nodes, a.backend.node_id)})
        online, count = f"{cluster.prefix}:online", f"{cluster.prefix}:count"

        async def presence() -> tuple[set[bytes], int]:
            users, sockets = await asyncio.gather(admin.smembers(online), admin.get(count))
            return users, int(sockets or 0)

        alive = ({b"ann", b"bob", b"cy"}, 4)
        assert await presence() == ({b"ann", b"bob", b"cy", b"dan"}, 5)
        await proxy.stop()

        async def leases_expired() -> bool:
            seconds, micros = await admin.time()
            now = int(seconds) * 1000 + int(micros) // 1000
            return len(await admin.zrangebyscore(nodes, "-inf", now)) == 3

        await eventually(leases_expired, what="every lease to run out")
        await proxy.start()
        # From now on, watch presence as often as Redis answers.
        loop = asyncio.get_running_loop()
        back = loop.time()
        reaped: float | None = None
        while loop.time() - back < 2 * timing["presence_timeout"]:
            users, sockets = await presence()
            assert users >= alive[0] and sockets >= alive[1], "a live user shown offline"
            if reaped is None and (users, sockets) == alive:
                reaped = loop.time() - back
        assert reaped is not None and reaped <= timing["presence_timeout"] + 0.5
        assert await presence() == alive
        assert a.backend.healthy() and b.backend.healthy()
    finally:
        await admin.aclose()


async def test_a_re_registration_cut_short_gives_its_connection_back(
    private_redis: PrivateRedis, cluster: Cluster,
) -> None:
    """
    Re-registering sockets (after an outage) that fails or is cancelled half
    way must return its pooled connection: otherwise each outage leaks one
    until every call waits for a connection, and the leak warns at shutdown.
    """
    proxy = await cluster.proxy(("127.0.0.1", private_redis.port))
    # (A slow pulse: no lease renewal holds a pooled connection meanwhile.)
    node = await cluster.node(f"redis://127.0.0.1:{proxy.port}/0", probe_interval=10.0,
                              presence_timeout=30.0)
    await cluster.client(node.url, "ann")
    pool = node.backend._client.connection_pool  # type: ignore[union-attr]

    def in_use(count: int) -> Check:
        async def check() -> bool:
            return len(pool._in_use_connections) == count

        return check

    await eventually(in_use(0), what="an idle pool")
    proxy.stall()
    resync = asyncio.ensure_future(node.backend._resync())
    await eventually(in_use(1), what="the pipeline in flight")
    resync.cancel()
    await asyncio.gather(resync, return_exceptions=True)
    assert await in_use(0)()
    proxy.resume()


# -- Redis restarted: its memory is gone ----------------------------------------------


async def test_a_restarted_redis_means_a_gap_then_traffic_resumes(
    private_redis: PrivateRedis, cluster: Cluster, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    a = await cluster.node(private_redis.url())
    b = await cluster.node(private_redis.url())
    clients = [await cluster.client(node.url, user)
               for node, user in ((a, "ann"), (b, "bob"), (a, "cy"), (b, "ann"))]
    publisher = cluster.publisher(a.hub)
    await publisher.wait_acked(20)
    before = (await a.hub.connection_count(), await a.hub.online_users())
    assert before == (4, ["ann", "bob", "cy"])
    await private_redis.restart()  # SIGKILL, then a fresh, empty server on the same port
    await eventually(healthy(a, b), what="both nodes back")

    async def everyone_told() -> bool:
        return all(client.channels[ROOM].gaps for client in clients)

    await eventually(everyone_told, what="every client told of the gap")
    await publisher.wait_acked(20)
    await publisher.stop()
    for client in clients:
        await wait_received(client, publisher.last)
        tally = check_exact(client, publisher)
        assert tally.gaps == 1
        assert tally.received[-20:] == list(range(publisher.last - 19, publisher.last + 1))
    # The cluster's indexes are rebuilt by the nodes that hold the sockets, at
    # their next lease renewal.
    for node in (a, b):
        async def rebuilt(node: Node = node) -> bool:
            return (await node.hub.connection_count(), await node.hub.online_users()) == before

        await eventually(rebuilt, node.backend.presence_timeout, what="presence rebuilt")
    assert outage_logs(caplog) == (2, 2)


# -- a subscription during an outage --------------------------------------------------


async def test_a_subscription_failing_in_an_outage_is_retried_not_refused(
    private_redis: PrivateRedis, cluster: Cluster,
) -> None:
    """
    Redis answers commands but refuses SUBSCRIBE (the pub/sub link cannot come
    back): a library client's subscription cannot be made exact now. A refusal
    (an ``error`` frame naming the channel) would make the browser client give
    up that channel for good; the socket is closed with 1013 instead, and the
    client comes back and is subscribed once Redis is whole again.
    """
    node = await cluster.node(private_redis.url(), timeout=0.5)
    first = await cluster.client(node.url, "ann")
    admin = private_redis.client()
    try:
        await admin.acl_setuser("default", enabled=True, nopass=True,
                                commands=["+@all", "-subscribe"], keys=["*"], channels=["*"])
        await admin.client_kill_filter(_type="pubsub")

        async def link_down() -> bool:
            return not node.backend.healthy()

        await eventually(link_down, what="the link down")
        client = TaggedClient(node.url)
        cluster.clients.append(client)
        await client.open("news")
        await client.wait_closed()
        assert client.ws is not None and client.ws.close_code == 1013
        assert not any(f["type"] == "error" for f in client.frames), client.frames
        await admin.acl_setuser("default", enabled=True, nopass=True, commands=["+@all"],
                                keys=["*"], channels=["*"])
        await eventually(healthy(node), what="the link back")
        await client.open("news")
        assert (await client.next_control("joined"))["channel"] == "news"
        assert first.ws is not None and first.ws.close_code is None  # the others stayed
    finally:
        await admin.aclose()


# -- cancelling a caller --------------------------------------------------------------


async def test_a_loop_of_hub_calls_ends_at_the_first_cancel(cluster: Cluster) -> None:
    """
    A background task polling the hub (a dashboard, a presence watcher) ends
    when cancelled, at once. (With a socket timeout, redis-py writes through
    asyncio.wait_for, which on Python 3.11 swallowed nearly every such cancel:
    shutdown waited on tasks that went on polling.)
    """
    require_redis()
    node = await cluster.node(REDIS_URL)

    async def poll() -> None:
        while True:
            await node.hub.online_users()

    for _ in range(10):
        task = asyncio.ensure_future(poll())
        await asyncio.sleep(0.01)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=1.0)
        if not done:
            while not task.done():  # (leave nothing running, then fail)
                task.cancel()
                await asyncio.wait([task], timeout=0.1)
        assert done, "the cancellation was swallowed"
