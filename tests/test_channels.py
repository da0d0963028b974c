"""
Channels, the nucleus.v1 protocol, history and recovery, over real sockets.

Library clients are ``nucleus.client`` streams, their network broken for real
by a TCP relay; tests of the server's answers to frames no client library
sends (malformed ones, forged positions) write the frames by hand.
"""

from __future__ import annotations

import asyncio
import json
import struct

import pytest
from websockets.asyncio.client import connect

from nucleus import client
from nucleus.stream import (
    HistoryPolicy,
    MemoryBackend,
    SocketMessage,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)

from .apps.channels import Open
from .conftest import ProxyTo, Serve
from .helpers import Clock, Recorder, port_of, within
from .stream_watch import FAST, Collector, Watch, take, url_of
from .tagged_client import TaggedClient

pytestmark = pytest.mark.usefixtures("any_backend")


async def test_raw_and_tagged_clients_each_get_their_format(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws", Recorder(rooms=("chat",)))
    base = await serve(server)
    async with connect(f"{base}/ws") as raw, client.connect(f"{base}/ws") as tagged:
        chat = await tagged.subscribe("chat")  # the server joined it already: confirmed
        await server.hub.broadcast_to_room("chat", SocketMessage.json({"n": 1}))
        await server.hub.broadcast_to_room("chat", SocketMessage.Text("plain words"))
        await server.hub.channel("chat").broadcast("typing", {"user": "ann"})
        assert await within(raw.recv()) == '{"n":1}'
        assert await within(raw.recv()) == "plain words"
        assert json.loads(await within(raw.recv())) == {
            "channel": "chat", "event": "typing", "data": {"user": "ann"}}
        got = await take(chat.with_meta(), 3)
        assert [(d, m.channel, m.event) for d, m in got] == [
            ({"n": 1}, "chat", None), ("plain words", "chat", None),
            ({"user": "ann"}, "chat", "typing")]
        offsets = [m.offset for _, m in got]
        assert offsets == list(range(offsets[0], offsets[0] + 3))  # type: ignore[operator]


async def test_binary_reaches_tagged_clients_with_a_header(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws", Recorder(rooms=("files",)))
    base = await serve(server)
    async with connect(f"{base}/ws", subprotocols=["nucleus.v1"]) as ws:  # type: ignore[list-item]
        await ws.send('{"type":"hello","channels":{}}')
        assert json.loads(await within(ws.recv()))["type"] == "joined"
        blob = bytes(range(256))
        await server.hub.broadcast_to_room("files", SocketMessage.Binary(blob))
        frame = await within(ws.recv())
        assert isinstance(frame, bytes)
        (size,) = struct.unpack("!I", frame[:4])
        header = json.loads(frame[4 : 4 + size])
        assert header["type"] == "pub" and header["channel"] == "files"
        assert frame[4 + size :] == blob


async def test_subscriptions_ask_the_handler_and_refusals_are_clear(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws", Open())
    async with client.connect(f"{await serve(server)}/ws") as stream:
        news = await stream.subscribe("news")
        with pytest.raises(client.SubscriptionRefused) as refused:
            await stream.subscribe("secret-plans")
        assert (refused.value.code, refused.value.message, refused.value.channel) == (
            "forbidden", "subscription to 'secret-plans' refused", "secret-plans")
        # user:<id> rooms stay private even when on_subscribe says yes.
        with pytest.raises(client.SubscriptionRefused, match="private user room"):
            await stream.subscribe("user:bob")

        await server.hub.broadcast_to_room("news", SocketMessage.Text("headline"))
        assert await take(news, 1) == ["headline"]
        await news.unsubscribe()  # returns once the server said left
        assert await server.hub.room_members("news") == []


async def test_default_handler_denies_subscriptions(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws", StreamHandler())
    async with client.connect(f"{await serve(server)}/ws") as stream:
        with pytest.raises(client.SubscriptionRefused) as refused:
            await stream.subscribe("anything")
        assert refused.value.code == "forbidden"


async def test_bad_frames_get_errors_and_the_socket_stays_usable(serve: Serve) -> None:
    handler = Open()
    server = StreamServer()
    server.route("/ws", handler)
    base = await serve(server)
    tagged = TaggedClient(f"{base}/ws")
    await tagged.open()
    for bad in ("not json", '{"type":"warp"}', '{"type":"sub"}', "[1,2]",
                '{"type":"hello","channels":{}}', '{"type":"msg"}'):
        assert tagged.ws is not None
        await tagged.ws.send(bad)
        error = await tagged.next_control("error")
        assert error["code"] == "bad_request" and error["message"]
        if bad == '{"type":"warp"}':
            assert "unknown frame type 'warp'" in error["message"]
    await tagged.send({"type": "msg", "data": {"ok": True}})
    await tagged.send({"type": "msg", "text": "plain"})
    messages = []
    while len(messages) < 2:
        kind, _, msg = await within(handler.events.get())
        if kind == "message":
            messages.append(msg)
    # data arrives as the JSON the tagged wrote; text as the string itself.
    assert messages[0].as_json() == {"ok": True}
    assert messages[1] == SocketMessage.Text("plain")
    await tagged.close()


async def test_a_malformed_first_frame_still_lets_the_hello_through(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws", Recorder(rooms=("chat",)))
    base = await serve(server)
    first = TaggedClient(f"{base}/ws")
    await first.open("chat")
    await first.next_control("joined")
    for n in range(3):
        await server.hub.broadcast_to_room("chat", SocketMessage.json(n))
    await within(first.pubs.get())
    await first.close()
    epoch, offset = first.channels["chat"].epoch, first.channels["chat"].received[0][0]

    async with connect(f"{base}/ws", subprotocols=["nucleus.v1"]) as ws:  # type: ignore[list-item]
        await ws.send("{not json")
        error = json.loads(await within(ws.recv()))
        assert error["code"] == "bad_request" and "must be a hello" in error["message"]
        await ws.send(json.dumps({"type": "hello", "channels": {
            "chat": {"epoch": epoch, "offset": offset}}}))
        joined = json.loads(await within(ws.recv()))
        assert joined["type"] == "joined" and joined["recovered"] is True
        replayed = [json.loads(await within(ws.recv())) for _ in range(2)]
        assert [p["data"] for p in replayed] == [1, 2]


async def test_a_ping_is_answered_at_once_even_while_the_handler_is_busy(serve: Serve) -> None:
    release = asyncio.Event()

    class Busy(Recorder):
        async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
            await release.wait()

    server = StreamServer()
    server.route("/ws", Busy())
    base = await serve(server)
    async with connect(f"{base}/ws", subprotocols=["nucleus.v1"]) as ws:  # type: ignore[list-item]
        await ws.send('{"type":"hello","channels":{}}')
        await ws.send('{"type":"msg","text":"this keeps the handler busy"}')
        await ws.send('{"type":"ping"}')
        assert json.loads(await within(ws.recv())) == {"type": "pong"}
        await ws.send('{ "type" : "ping" }')  # any spelling of it, in turn
        release.set()
        assert json.loads(await within(ws.recv())) == {"type": "pong"}


async def test_resume_replays_missed_messages_in_order_then_live(
    serve: Serve, proxy_to: ProxyTo
) -> None:
    server = StreamServer()
    server.route("/ws", Recorder(rooms=("chat",)))
    hub = server.hub
    proxy = await proxy_to(port_of(await serve(server)))
    async with client.connect(url_of(proxy), **FAST) as stream:
        watch = Watch(stream)
        chat = await stream.subscribe("chat")
        for n in range(3):
            await hub.broadcast_to_room("chat", SocketMessage.json(n))
        got = await take(chat.with_meta(), 3)
        await proxy.stop()  # the network is down: links reset, new ones refused
        await watch.until(lambda: client.State.RECONNECTING in watch.states)
        for n in range(3, 8):
            await hub.broadcast_to_room("chat", SocketMessage.json(n))
        await proxy.start()  # the hello resumes "chat", which on_connect joins
        await watch.until(lambda: watch.reopened == 1)
        await hub.broadcast_to_room("chat", SocketMessage.json(8))
        got += await take(chat.with_meta(), 6)
        assert [d for d, _ in got] == list(range(9))
        first = got[0][1].offset
        assert first is not None
        assert [m.offset for _, m in got] == list(range(first, first + 9))
        assert watch.gaps == []


async def test_replay_races_live_broadcasts_without_gap_or_duplicate(
    serve: Serve, proxy_to: ProxyTo
) -> None:
    server = StreamServer()
    server.route("/ws", Recorder(rooms=("race",)))
    server.history("race", HistoryPolicy(size=100_000, ttl=300))
    hub = server.hub
    proxy = await proxy_to(port_of(await serve(server)))
    async with client.connect(url_of(proxy), **FAST) as stream:
        watch = Watch(stream)
        received = Collector(await stream.subscribe("race"))  # consumed all along
        stop = asyncio.Event()
        sent = 0

        async def publish() -> None:
            nonlocal sent
            while not stop.is_set():
                await hub.broadcast_to_room("race", SocketMessage.json(sent))
                sent += 1
                if sent % 5 == 0:
                    await asyncio.sleep(0)

        publisher = asyncio.create_task(publish())
        for cuts in range(1, 11):
            await received.until(len(received.items) + 5)
            await proxy.stop()  # the client resubscribes while the publisher keeps going
            await proxy.start()
            await watch.until(lambda cuts=cuts: watch.reopened >= cuts)
        stop.set()
        await within(publisher)
        assert await received.until(sent, seconds=60) == list(range(sent))
        assert watch.gaps == []
        await received.aclose()


async def test_many_reconnects_under_load_lose_nothing(serve: Serve, proxy_to: ProxyTo) -> None:
    server = StreamServer()
    server.route("/ws", Recorder(rooms=("load",)))
    server.history("load", HistoryPolicy(size=2000, ttl=60))
    hub = server.hub
    proxy = await proxy_to(port_of(await serve(server)))
    streams = [await client.connect(url_of(proxy), **FAST) for _ in range(5)]
    watches = [Watch(stream) for stream in streams]
    received = [Collector(await stream.subscribe("load")) for stream in streams]
    total = 2000

    async def publish() -> None:
        for n in range(total):
            await hub.broadcast_to_room("load", SocketMessage.json(n))
            if n % 20 == 0:
                await asyncio.sleep(0)

    async def flap() -> None:
        for cuts in range(1, 21):
            await proxy.stop()  # every client at once
            await proxy.start()
            for watch in watches:
                await watch.until(lambda w=watch, c=cuts: w.reopened >= c)

    await within(asyncio.gather(publish(), flap()), 60)
    for collector, watch, stream in zip(received, watches, streams, strict=True):
        assert await collector.until(total) == list(range(total))
        assert watch.gaps == []
        await collector.aclose()
        await stream.close()


async def test_gap_is_reported_when_history_cannot_fill_it(serve: Serve) -> None:
    clock = Clock()
    server = StreamServer(backend=MemoryBackend(HistoryPolicy(size=5, ttl=60), clock=clock))
    server.route("/ws", Recorder(rooms=("r",)))
    hub = server.hub
    base = await serve(server)
    tagged = TaggedClient(f"{base}/ws")
    await tagged.open("r")
    await tagged.next_control("joined")

    async def away(publish: int, advance: float = 0.0) -> dict[str, object]:
        await tagged.drop()
        for n in range(publish):
            await hub.broadcast_to_room("r", SocketMessage.json(n))
        clock.now += advance
        await tagged.open()
        return await tagged.next_control("joined")

    assert (await away(3))["recovered"] is True           # within the window
    assert (await away(6))["recovered"] is False          # trimmed: only 5 kept
    assert (await away(1, advance=61))["recovered"] is False  # expired
    log = tagged.channels["r"]
    log.epoch = "another-epoch"
    assert (await away(1))["recovered"] is False          # history of another life
    assert log.gaps == 3
    await tagged.close()


async def test_history_size_zero_turns_recovery_off(serve: Serve, proxy_to: ProxyTo) -> None:
    server = StreamServer()
    server.route("/ws", Recorder(rooms=("r",)))
    server.history("r", HistoryPolicy(size=0))
    proxy = await proxy_to(port_of(await serve(server)))
    async with client.connect(url_of(proxy), **FAST) as stream:
        watch = Watch(stream)
        await stream.subscribe("r")
        await proxy.stop()  # the network is down: links reset, new ones refused
        await watch.until(lambda: client.State.RECONNECTING in watch.states)
        await server.hub.broadcast_to_room("r", SocketMessage.json(1))
        await proxy.start()
        await watch.until(lambda: bool(watch.gaps))
        assert watch.gaps[0].channel == "r"
