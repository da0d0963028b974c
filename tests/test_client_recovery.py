"""
nucleus.client across broken networks and restarts, the browser client's
scenarios: every message once and in order within the history, or a gap.
The network is broken for real, by a TCP relay between client and server.
(Live messages racing the replay, and many clients flapping under load, are
in ``test_channels.py``, on every backend.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nucleus.client import RequestFailed, State, connect
from nucleus.stream import HistoryPolicy, RateLimit, SocketMessage, StreamServer

from .apps.channels import Open
from .conftest import ProxyTo, Serve
from .helpers import port_of, within
from .stream_watch import FAST, Watch, take, url_of


async def broadcast(server: StreamServer, room: str, *items: Any) -> int:
    offset = 0
    for item in items:
        offset = await server.hub.broadcast_to_room(room, SocketMessage.json(item))
    return offset


async def test_a_network_blip_loses_nothing_and_sends_wait_for_the_link(
    serve: Serve, proxy_to: ProxyTo
) -> None:
    handler = Open()
    server = StreamServer()
    server.route("/ws", handler)
    proxy = await proxy_to(port_of(await serve(server)))
    async with connect(url_of(proxy), **FAST) as stream:
        watch = Watch(stream)
        chat = await stream.subscribe("chat")
        await broadcast(server, "chat", *range(5))
        assert await take(chat, 5) == list(range(5))

        await proxy.stop()  # the network is down: links reset, new ones refused
        await watch.until(lambda: State.RECONNECTING in watch.states)
        await broadcast(server, "chat", *range(5, 15))  # missed while away
        await stream.send("sent while away")
        await stream.send({"n": 2})
        await proxy.start()
        await watch.until(lambda: watch.reopened == 1)
        await broadcast(server, "chat", *range(15, 20))
        assert await take(chat, 15) == list(range(5, 20))
        assert watch.gaps == [] and watch.errors == []

        received = []
        while len(received) < 2:
            kind, _, msg = await within(handler.events.get())
            if kind == "message":
                received.append(msg.payload)
        assert received == ["sent while away", '{"n":2}']


async def test_away_longer_than_the_history_is_a_gap(serve: Serve, proxy_to: ProxyTo) -> None:
    server = StreamServer()
    server.route("/ws", Open())
    server.history("chat", HistoryPolicy(size=5, ttl=60))
    proxy = await proxy_to(port_of(await serve(server)))
    async with connect(url_of(proxy), **FAST) as stream:
        watch = Watch(stream)
        chat = await stream.subscribe("chat")
        await broadcast(server, "chat", "before")
        assert await take(chat, 1) == ["before"]
        await proxy.stop()  # the network is down: links reset, new ones refused
        await watch.until(lambda: State.RECONNECTING in watch.states)
        last = await broadcast(server, "chat", *(f"lost{n}" for n in range(10)))  # 5 kept
        await proxy.start()
        await watch.until(lambda: bool(watch.gaps))
        (gap,) = watch.gaps
        assert (gap.channel, gap.offset) == ("chat", last)
        await broadcast(server, "chat", "after")
        assert await take(chat, 1) == ["after"]  # nothing of the lost stretch, nothing twice


async def test_a_server_restart_with_the_memory_backend_is_a_gap(proxy_to: ProxyTo) -> None:
    servers = [StreamServer(), StreamServer()]
    for server in servers:
        server.route("/ws", Open())
    _, port = await servers[0].start("127.0.0.1", 0)
    proxy = await proxy_to(port)
    try:
        async with connect(url_of(proxy), **FAST) as stream:
            watch = Watch(stream)
            chat = await stream.subscribe("chat")
            await broadcast(servers[0], "chat", "a0", "a1")
            assert await take(chat, 2) == ["a0", "a1"]
            await servers[0].aclose()  # 1001: the history dies with the process
            await watch.until(lambda: State.RECONNECTING in watch.states)
            _, port = await servers[1].start("127.0.0.1", 0)
            proxy.upstreams = [("127.0.0.1", port)]
            await watch.until(lambda: bool(watch.gaps))
            assert watch.gaps[0].channel == "chat" and stream.state is State.OPEN
            await broadcast(servers[1], "chat", "b0", "b1")
            assert await take(chat, 2) == ["b0", "b1"]
            assert watch.errors == []
    finally:
        await servers[1].aclose()


async def test_a_request_the_link_took_fails_and_one_made_while_away_waits(
    serve_native: Serve, proxy_to: ProxyTo
) -> None:
    handler = Open()
    server = StreamServer()
    server.route("/ws", handler)
    proxy = await proxy_to(port_of(await serve_native(server)))
    async with connect(url_of(proxy), **FAST) as stream:
        watch = Watch(stream)
        slow = asyncio.create_task(stream.request("slow"))
        await within(handler.asked.wait())  # the server has it
        await proxy.stop()  # the network is down: links reset, new ones refused
        with pytest.raises(RequestFailed) as dropped:
            await within(slow)
        assert dropped.value.code == "disconnected"  # never resent: it may have been acted on
        await watch.until(lambda: State.RECONNECTING in watch.states)
        with pytest.raises(RequestFailed) as rejected:
            await stream.request(1, offline="reject")
        assert rejected.value.code == "offline"
        queued = asyncio.create_task(stream.request("made while away"))
        handler.release.set()
        await proxy.start()
        assert (await within(queued))["echo"] == "made while away"


async def test_keepalive_pings_find_a_silent_link_and_recovery_follows(
    serve_native: Serve, proxy_to: ProxyTo
) -> None:
    server = StreamServer()
    server.route("/ws", Open())
    proxy = await proxy_to(port_of(await serve_native(server)))
    timing = {"ping_interval": 0.2, "ping_timeout": 0.2, "close_timeout": 0.2}
    async with connect(url_of(proxy), **FAST, **timing) as stream:
        watch = Watch(stream)
        chat = await stream.subscribe("chat")
        proxy.stall()  # the link looks open to both ends, and carries nothing
        await broadcast(server, "chat", "while silent")
        await watch.until(lambda: State.RECONNECTING in watch.states)  # pings unanswered
        proxy.resume()
        await watch.until(lambda: watch.reopened >= 1)
        assert await take(chat, 1) == ["while silent"]
        assert watch.gaps == []


async def test_a_client_closed_for_sending_too_fast_backs_off_and_comes_back(
    serve_native: Serve,
) -> None:
    server = StreamServer()
    strict = RateLimit(rate=1, burst=2, per_user_rate=None, per_user_burst=None, strikes=2)
    server.route("/ws", Open(), rate_limit=strict)
    async with connect(f"{await serve_native(server)}/ws", **FAST) as stream:
        watch = Watch(stream)
        for n in range(10):  # a script in a loop: dropped, then closed with 4029
            await stream.send(n)
        await watch.until(lambda: watch.reopened >= 1)
        assert watch.states[0] is State.RECONNECTING
        closed = [e for e in watch.errors if "back off" in e.message]  # 4029's reason
        assert [e.code for e in closed] == ["rate_limited"]
