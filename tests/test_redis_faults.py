"""
The Redis backend under faults, counting every message.

Real nodes (``StreamServer``s with a ``RedisBackend``, in this process so that
their logs can be read, or ``nucleus serve`` processes that can be SIGKILLed)
and real ``nucleus.v1`` WebSocket clients. A publisher numbers its messages;
every client must get each one within the history window exactly once and in
order, or be told of a gap. Destructive faults (killed links, a restarted
Redis) run against a private ``redis-server``, never the shared one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from nucleus.stream import (
    BackendUnavailable,
    HistoryPolicy,
    RedisBackend,
    SocketMessage,
    StreamServer,
)
from nucleus.stream._backend import backend_from_url

from .apps.chat_node import Chat
from .backends import new_prefix, require_redis
from .cluster import Node as NodeProcess
from .cluster import PrivateRedis, TcpProxy, eventually, start_all
from .helpers import within
from .tagged_client import TaggedClient

ROOM = "chat"
LOGGER = "nucleus.stream.redis"
OUTAGE = "is unreachable"
RECOVERY = "is reachable again"


# -- the cluster under test -----------------------------------------------------------


@dataclass
class Node:
    server: StreamServer
    backend: RedisBackend
    url: str

    @property
    def hub(self) -> Any:
        return self.server.hub


class Cluster:
    """In-process nodes on one key prefix, their clients, a publisher; closed at the end."""

    def __init__(self) -> None:
        self.prefix = new_prefix()
        self.nodes: list[Node] = []
        self.servers: list[StreamServer] = []  # nodes of other backends
        self.clients: list[TaggedClient] = []

    async def node(self, redis_url: str, history: int = 1000, **options: Any) -> Node:
        options.setdefault("presence_timeout", 2.0)
        options.setdefault("probe_interval", 0.25)
        options.setdefault("timeout", 1.0)
        backend = RedisBackend(redis_url, prefix=self.prefix, **options)
        server = StreamServer(backend=backend)
        server.route("/ws", Chat(), rate_limit=None)
        server.history("*", HistoryPolicy(size=history, ttl=300))
        host, port = await server.start("127.0.0.1", 0)
        node = Node(server, backend, f"ws://{host}:{port}/ws")
        self.nodes.append(node)
        return node

    async def client(self, url: str, user: str | None = None) -> TaggedClient:
        """A library client subscribed to the room (its ``joined`` received)."""
        client = TaggedClient(f"{url}?user={user}" if user else url)
        self.clients.append(client)
        await client.open(ROOM)
        joined = await client.next_control("joined")
        assert joined["channel"] == ROOM
        return client

    async def aclose(self) -> None:
        for client in self.clients:
            if client.ws is not None:
                client.ws.transport.abort()
            await client.wait_closed()
        for server in [node.server for node in self.nodes] + self.servers:
            await server.aclose()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    cluster = Cluster()
    try:
        yield cluster
    finally:
        await cluster.aclose()


@pytest.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis()
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()


# -- counting messages ----------------------------------------------------------------


@dataclass
class Publisher:
    """Publishes ``m0``, ``m1``... to the room through a hub until stopped."""

    hub: Any
    acked: dict[int, int] = field(default_factory=dict)  # sequence -> offset
    failed: dict[int, tuple[str, float]] = field(default_factory=dict)  # -> (error, seconds)
    sent: int = 0
    _task: asyncio.Task[None] | None = None
    _stopping: bool = False

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            seq = self.sent
            self.sent += 1
            began = loop.time()
            try:
                self.acked[seq] = await self.hub.broadcast_to_room(
                    ROOM, SocketMessage.Text(f"m{seq}"))
            except BackendUnavailable as exc:
                self.failed[seq] = (type(exc).__name__, loop.time() - began)
            await asyncio.sleep(0.003)  # a steady stream, not a flood

    async def stop(self) -> None:
        """Stop after the publication in flight (so that its outcome is known)."""
        assert self._task is not None
        self._stopping = True
        await within(self._task)

    async def wait_acked(self, more: int) -> None:
        """Wait until ``more`` further messages have been published."""
        target = len(self.acked) + more

        async def enough() -> bool:
            return len(self.acked) >= target

        await eventually(enough, what=f"{more} more publications")

    @property
    def last(self) -> int:
        return max(self.acked)


def sequence(data: Any) -> int | None:
    """The publisher's number of a message, None for another (a test's own)."""
    if isinstance(data, str) and data[:1] == "m" and data[1:].isdigit():
        return int(data[1:])
    return None


async def wait_received(client: TaggedClient, seq: int, seconds: float = 10.0) -> None:
    async def got() -> bool:
        return any(sequence(d) == seq for _, d in client.channels[ROOM].received)

    await eventually(got, seconds, what=f"message m{seq} at {client.url}")


@dataclass
class Tally:
    received: list[int]
    gaps: int


def check_exact(client: TaggedClient, publisher: Publisher) -> Tally:
    """
    Every message published after the client's first join reached it once, in
    order, except those a reported gap covers; offsets run without a hole
    between gaps.
    """
    joins = [f for f in client.frames if f["type"] == "joined" and f["channel"] == ROOM]
    since = joins[0]["offset"]  # (tests that restart Redis join before any publication)
    expect: int | None = None
    received: list[int] = []
    lost: list[tuple[int, int]] = []  # (last seen, first seen after) around each gap
    gap_at: int | None = None
    for frame in client.frames:
        if frame.get("channel") != ROOM:
            continue
        if frame["type"] == "joined":
            if frame.get("recovered") is True:
                assert expect is None or frame["offset"] >= expect - 1, frame
            else:
                expect = frame["offset"] + 1
                if frame.get("recovered") is False:
                    gap_at = received[-1] if received else -1
        elif frame["type"] == "pub":
            if expect is not None:
                assert frame["offset"] == expect, (
                    f"offset {frame['offset']} where {expect} was due: {client.url}")
            expect = frame["offset"] + 1
            seq = sequence(frame.get("text", frame.get("data")))
            if seq is None:
                continue
            if gap_at is not None:
                lost.append((gap_at, seq))
                gap_at = None
            received.append(seq)
    assert received == sorted(set(received)), "a duplicate or a message out of order"
    seen = set(received)
    for seq in publisher.acked:
        if publisher.acked[seq] <= since or seq in seen or any(a < seq < b for a, b in lost):
            continue
        raise AssertionError(f"m{seq} (offset {publisher.acked[seq]}) never reached "
                             f"{client.url}; got {received}")
    return Tally(received, client.channels[ROOM].gaps)


def outage_logs(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    """How many outages and recoveries the Redis backends logged."""
    records = [r for r in caplog.records if r.name == LOGGER]
    return (sum(OUTAGE in r.getMessage() for r in records),
            sum(RECOVERY in r.getMessage() for r in records))


# -- configuration from the URL -------------------------------------------------------


def test_a_redis_url_carries_the_backend_options() -> None:
    backend = backend_from_url(
        "redis://:secret@127.0.0.1:6379/3?prefix=app1&presence_timeout=4&probe_interval=0.5"
        "&timeout=2&socket_keepalive=true")
    assert isinstance(backend, RedisBackend)
    assert (backend.prefix, backend.presence_timeout, backend.probe_interval, backend.timeout) \
        == ("app1", 4.0, 0.5, 2.0)
    # The rest is the Redis client's; the password never shows.
    assert backend.url == "redis://:secret@127.0.0.1:6379/3?socket_keepalive=true"
    assert "secret" not in repr(backend)
    unix = backend_from_url("unix:///run/redis.sock?db=2&prefix=x")
    assert isinstance(unix, RedisBackend)
    assert (unix.url, unix.prefix) == ("unix:///run/redis.sock?db=2", "x")


@pytest.mark.parametrize("query", ["timeout=soon", "presence_timeout=0.1", "prefix="])
def test_a_bad_option_in_the_url_is_refused_clearly(query: str) -> None:
    from nucleus.stream import ConfigError

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
    publisher = Publisher(a.hub)
    publisher.start()
    admin = private_redis.client()
    try:
        await publisher.wait_acked(20)
        for round_ in range(1, 4):
            assert await admin.client_kill_filter(_type="pubsub") == 2  # one link per node
            await eventually(_logged(caplog, (2 * round_, 2 * round_)),
                             what="both outages and recoveries logged")
            await eventually(_all_healthy(a, b), what="both links back")
            await publisher.wait_acked(20)
            assert outage_logs(caplog) == (2 * round_, 2 * round_)  # once each
    finally:
        await publisher.stop()
        await admin.aclose()
    for client in clients:
        await wait_received(client, publisher.last)
        tally = check_exact(client, publisher)
        assert tally.gaps == 0 and tally.received == list(range(publisher.last + 1))
    assert publisher.failed == {}


def _logged(caplog: pytest.LogCaptureFixture, counts: tuple[int, int]) -> Any:
    async def check() -> bool:
        return outage_logs(caplog) == counts

    return check


def _all_healthy(*nodes: Node) -> Any:
    async def check() -> bool:
        return all(node.backend.healthy() for node in nodes)

    return check


# -- a proxy in front of Redis, stopped and restarted ---------------------------------


async def must_fail_fast(call: Any, bound: float) -> None:
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
    require_redis()
    from .backends import REDIS_URL, delete_prefix

    caplog.set_level(logging.INFO, LOGGER)
    host, port, db = _host_port_db(REDIS_URL)
    proxy = TcpProxy((host, port))
    await proxy.start()
    try:
        a = await cluster.node(f"redis://127.0.0.1:{proxy.port}/{db}", history)
        c = await cluster.node(REDIS_URL, history)
        clients = [await cluster.client(a.url, user) for user in ("ann", "bob")]
        witness = await cluster.client(c.url, "cy")
        publisher = Publisher(c.hub)
        publisher.start()
        await publisher.wait_acked(20)

        await proxy.stop()
        await eventually(_logged(caplog, (1, 0)), what="the outage logged")
        await cluster_calls_fail_fast(a)
        # Local traffic goes on: A's own sockets are still served.
        (local, _) = a.hub.local_sockets()
        await a.hub.send_to(local, SocketMessage.Text("local"))
        assert await within(clients[0].direct.get()) == "local"
        # Within the window, or more than it can hold.
        await publisher.wait_acked(50 if history > 50 else 3 * history)
        assert not a.backend.healthy()

        await proxy.start()
        await eventually(_all_healthy(a), what="A's link back")
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
    finally:
        await proxy.aclose()
        await delete_prefix(cluster.prefix)


async def test_an_outage_longer_than_the_lease_shows_nobody_offline_after(
    private_redis: PrivateRedis, cluster: Cluster,
) -> None:
    """
    Every node loses Redis for longer than its lease. When Redis is back, the
    first node to renew its lease must not reap the others: they are alive,
    and their users must not be shown offline, even for a moment. A node that
    died during the outage is reaped within a lease of Redis being back.
    """
    proxy = TcpProxy(("127.0.0.1", private_redis.port))
    await proxy.start()
    admin = private_redis.client()
    timing = {"presence_timeout": 1.0, "probe_interval": 0.2}
    try:
        a = await cluster.node(f"redis://127.0.0.1:{proxy.port}/0", **timing)
        b = await cluster.node(f"redis://127.0.0.1:{proxy.port}/0", **timing)
        for node, user in ((a, "ann"), (a, "bob"), (b, "ann"), (b, "cy")):
            await cluster.client(node.url, user)
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
        await proxy.aclose()


async def _presence(node: Node) -> tuple[int, list[str]]:
    return await node.hub.connection_count(), await node.hub.online_users()


async def _equals(got: Any, expected: Any) -> bool:
    return bool(await got == expected)


async def test_a_re_registration_cut_short_gives_its_connection_back(
    private_redis: PrivateRedis, cluster: Cluster,
) -> None:
    """
    Re-registering sockets (after an outage) that fails or is cancelled half
    way must return its pooled connection: otherwise each outage leaks one
    until every call waits for a connection, and the leak warns at shutdown.
    """
    proxy = TcpProxy(("127.0.0.1", private_redis.port))
    await proxy.start()
    try:
        # (A slow pulse: no lease renewal holds a pooled connection meanwhile.)
        node = await cluster.node(f"redis://127.0.0.1:{proxy.port}/0", probe_interval=10.0,
                                  presence_timeout=30.0)
        await cluster.client(node.url, "ann")
        pool = node.backend._client.connection_pool  # type: ignore[union-attr]
        await eventually(lambda: _equals(_in_use(pool), 0), what="an idle pool")
        proxy.stall()
        resync = asyncio.ensure_future(node.backend._resync())
        await eventually(lambda: _equals(_in_use(pool), 1), what="the pipeline in flight")
        resync.cancel()
        await asyncio.gather(resync, return_exceptions=True)
        assert await _in_use(pool) == 0
    finally:
        await proxy.aclose()


async def _in_use(pool: Any) -> int:
    return len(pool._in_use_connections)


async def test_a_stalled_redis_fails_calls_in_bounded_time_then_resumes_cleanly(
    private_redis: PrivateRedis, cluster: Cluster, caplog: pytest.LogCaptureFixture,
) -> None:
    """
    Redis stops answering without closing anything (a partition, a stuck
    server): calls fail within the timeout instead of hanging, new sockets are
    refused with 1013, and afterwards no reply meant for a timed-out call is
    taken for another's.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    caplog.set_level(logging.INFO, LOGGER)
    proxy = TcpProxy(("127.0.0.1", private_redis.port))
    await proxy.start()
    try:
        a = await cluster.node(f"redis://127.0.0.1:{proxy.port}/0", timeout=0.5,
                               presence_timeout=5.0)
        c = await cluster.node(private_redis.url())
        clients = [await cluster.client(a.url, user) for user in ("ann", "bob")]
        publisher = Publisher(c.hub)
        publisher.start()
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
        await eventually(_logged(caplog, (1, 0)), what="the outage logged")
        await publisher.wait_acked(20)

        proxy.resume()
        await eventually(_all_healthy(a), what="A's link back")
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
    finally:
        await proxy.aclose()


# -- Redis restarted: its memory is gone ----------------------------------------------


async def test_a_restarted_redis_means_a_gap_then_traffic_resumes(
    private_redis: PrivateRedis, cluster: Cluster, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    a = await cluster.node(private_redis.url())
    b = await cluster.node(private_redis.url())
    clients = [await cluster.client(node.url, user)
               for node, user in ((a, "ann"), (b, "bob"), (a, "cy"), (b, "ann"))]
    publisher = Publisher(a.hub)
    publisher.start()
    try:
        await publisher.wait_acked(20)
        before = (await a.hub.connection_count(), await a.hub.online_users())
        assert before == (4, ["ann", "bob", "cy"])
        await private_redis.restart()  # SIGKILL, then a fresh, empty server on the same port
        await eventually(_all_healthy(a, b), what="both nodes back")

        async def everyone_told() -> bool:
            return all(client.channels[ROOM].gaps for client in clients)

        await eventually(everyone_told, what="every client told of the gap")
        await publisher.wait_acked(20)
    finally:
        await publisher.stop()
    for client in clients:
        await wait_received(client, publisher.last)
        tally = check_exact(client, publisher)
        assert tally.gaps == 1
        assert tally.received[-20:] == list(range(publisher.last - 19, publisher.last + 1))
    # The cluster's indexes are rebuilt by the nodes that hold the sockets, at
    # their next lease renewal.
    for node in (a, b):
        await eventually(lambda node=node: _equals(_presence(node), before),
                         node.backend.presence_timeout, what="presence rebuilt")
    assert outage_logs(caplog) == (2, 2)


# -- a node SIGKILLed -----------------------------------------------------------------


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
    from .backends import REDIS_URL, delete_prefix

    presence_timeout = 2.0
    backend = (f"{REDIS_URL}?prefix={cluster.prefix}&presence_timeout={presence_timeout}"
               "&probe_interval=0.25&timeout=1")
    a, b = NodeProcess("tests.apps.chat_node:server", backend), \
        NodeProcess("tests.apps.chat_node:server", backend)
    try:
        await start_all(a, b)
        c = await cluster.node(REDIS_URL, presence_timeout=presence_timeout)
        on_a = [await cluster.client(f"{a.url}/ws", user) for user in ("ann", "bob")]
        on_b = [await cluster.client(f"{b.url}/ws", user) for user in ("ann", "cy")]
        everyone = ["ann", "bob", "cy"]
        hub = c.hub
        assert (await hub.online_users(), await hub.connection_count()) == (everyone, 4)
        publisher = Publisher(hub)
        publisher.start()
        await publisher.wait_acked(30)

        await a.kill()
        loop = asyncio.get_running_loop()
        killed = loop.time()
        watching = asyncio.ensure_future(_watch_presence(hub, {"ann", "cy"}))
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
        watching.cancel()
        await publisher.wait_acked(30)
        await publisher.stop()
        for client in on_a + on_b:
            await wait_received(client, publisher.last)
            tally = check_exact(client, publisher)
            assert tally.gaps == 0 and tally.received == list(range(publisher.last + 1))
    finally:
        await a.aclose()
        await b.aclose()
        await delete_prefix(cluster.prefix)


async def _watch_presence(hub: Any, always: set[str]) -> None:
    """Fail if any of ``always`` is ever missing from online_users."""
    while True:
        online = set(await hub.online_users())
        assert always <= online, f"{always - online} shown offline"


# -- live publications racing replays on a slow backend -------------------------------


@pytest.mark.parametrize("slow", ["yielding", "redis-with-latency"])
async def test_replays_racing_live_publications_on_a_slow_backend(
    cluster: Cluster, slow: str,
) -> None:
    """
    Clients keep dropping and resuming, and new ones join, while a publisher
    never stops; every call to the backend is slow. The replay of each resume
    and the live publications racing it must interleave into one exact stream.
    """
    from .backends import YieldingBackend

    proxy: TcpProxy | None = None
    try:
        if slow == "yielding":
            server = StreamServer(backend=YieldingBackend(delay=0.005))
            server.route("/ws", Chat(), rate_limit=None)
            host, port = await server.start("127.0.0.1", 0)
            cluster.servers.append(server)
            url, hub = f"ws://{host}:{port}/ws", server.hub
        else:
            require_redis()
            from .backends import REDIS_URL

            host, port, db = _host_port_db(REDIS_URL)
            proxy = TcpProxy((host, port), latency=0.02)  # 40 ms round trips
            await proxy.start()
            slow_node = await cluster.node(f"redis://127.0.0.1:{proxy.port}/{db}")
            url, hub = slow_node.url, (await cluster.node(REDIS_URL)).hub
        resumers = [await cluster.client(url, "ann") for _ in range(3)]
        publisher = Publisher(hub)
        publisher.start()
        joiners = []
        for round_ in range(4):
            await publisher.wait_acked(5)
            joiners.append(await cluster.client(url, "bob"))
            for client in resumers[round_ % 2 :]:
                await client.drop()
            for client in resumers[round_ % 2 :]:
                await client.open()
        for client in resumers[1:]:
            recovered = [f.get("recovered") for f in client.frames if f["type"] == "joined"]
            assert recovered[0] is None and recovered[1:] == [True] * (len(recovered) - 1)
        await publisher.wait_acked(10)
        await publisher.stop()
        for client in resumers + joiners:
            await wait_received(client, publisher.last)
            tally = check_exact(client, publisher)
            assert tally.gaps == 0
    finally:
        if proxy is not None:
            await proxy.aclose()
        if slow != "yielding":
            from .backends import delete_prefix

            await delete_prefix(cluster.prefix)


def _host_port_db(url: str) -> tuple[str, int, str]:
    location, _, db = url.split("//", 1)[1].partition("/")
    host, _, port = location.rpartition(":")
    return host, int(port), db or "0"


# -- a subscription during an outage --------------------------------------------------


async def test_a_subscription_failing_in_an_outage_is_retried_not_refused(
    private_redis: PrivateRedis, cluster: Cluster,
) -> None:
    """
    Redis answers commands but refuses SUBSCRIBE (the pub/sub link cannot come
    back): a library client's subscription cannot be made exact now. A refusal
    (an ``error`` frame naming the channel) would make the browser client give
    up that channel for good; the socket is closed with 1013 instead, and the
    client comes back and resumes once Redis is whole again.
    """
    admin = private_redis.client()
    try:
        node = await cluster.node(private_redis.url(), timeout=0.5)
        first = await cluster.client(node.url, "ann")
        await admin.acl_setuser("default", enabled=True, nopass=True,
                                commands=["+@all", "-subscribe"], keys=["*"], channels=["*"])
        await admin.client_kill_filter(_type="pubsub")
        await eventually(lambda: _not(node.backend.healthy()), what="the link down")
        client = TaggedClient(node.url)
        await client.open("news")
        await client.wait_closed()
        assert client.ws is not None and client.ws.close_code == 1013
        assert not any(f["type"] == "error" for f in client.frames), client.frames
        # Whole again: it comes back and is subscribed.
        await admin.acl_setuser("default", enabled=True, nopass=True, commands=["+@all"],
                                keys=["*"], channels=["*"])
        await eventually(_all_healthy(node), what="the link back")
        await client.open("news")
        assert (await client.next_control("joined"))["channel"] == "news"
        assert first.ws is not None and first.ws.close_code is None  # the others stayed
    finally:
        await admin.aclose()


async def _not(value: bool) -> bool:
    return not value
