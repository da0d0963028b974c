"""Channels, the nucleus.v1 protocol, history and recovery, over real sockets."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest
from websockets.asyncio.client import connect

from nucleus.stream import (
    HistoryPolicy,
    MemoryBackend,
    SocketMessage,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)

from .conftest import Serve
from .helpers import Clock, Recorder, within
from .tagged_client import TaggedClient

pytestmark = pytest.mark.usefixtures("any_backend")


class Open(Recorder):
    """Allows every subscription except those starting with 'secret'."""

    async def on_subscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
        return not channel.startswith("secret")


async def test_raw_and_tagged_clients_each_get_their_format(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws", Recorder(rooms=("chat",)))
    base = await serve(server)
    tagged = TaggedClient(f"{base}/ws")
    async with connect(f"{base}/ws") as raw:
        await tagged.open("chat")
        joined = await tagged.next_control("joined")
        assert joined["channel"] == "chat" and "recovered" not in joined
        await server.hub.broadcast_to_room("chat", SocketMessage.json({"n": 1}))
        await server.hub.broadcast_to_room("chat", SocketMessage.Text("plain words"))
        await server.hub.channel("chat").broadcast("typing", {"user": "ann"})
        assert await within(raw.recv()) == '{"n":1}'
        assert await within(raw.recv()) == "plain words"
        assert json.loads(await within(raw.recv())) == {
            "channel": "chat", "event": "typing", "data": {"user": "ann"}}
        got = [await within(tagged.pubs.get()) for _ in range(3)]
        assert [(c, d) for c, _, d in got] == [
            ("chat", {"n": 1}), ("chat", "plain words"), ("chat", {"user": "ann"})]
        offsets = [o for _, o, _ in got]
        assert offsets == list(range(offsets[0], offsets[0] + 3))
        await server.hub.send_to((await server.hub.room_members("chat"))[0],
                                 SocketMessage.Text("direct"))
    await tagged.close()


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
    handler = Open()
    server.route("/ws", handler)
    base = await serve(server)
    client = TaggedClient(f"{base}/ws")
    await client.open()
    await client.send({"type": "sub", "id": 1, "channel": "news"})
    joined = await client.next_control("joined")
    assert (joined["channel"], joined["id"]) == ("news", 1)
    await client.send({"type": "sub", "id": 2, "channel": "secret-plans"})
    refused = await client.next_control("error")
    assert refused == {"type": "error", "code": "forbidden", "id": 2, "channel": "secret-plans",
                       "message": "subscription to 'secret-plans' refused"}
    # user:<id> rooms stay private even when on_subscribe says yes.
    await client.send({"type": "sub", "id": 3, "channel": "user:bob"})
    private = await client.next_control("error")
    assert private["id"] == 3 and "private user room" in private["message"]

    await server.hub.broadcast_to_room("news", SocketMessage.Text("headline"))
    assert (await within(client.pubs.get()))[2] == "headline"
    await client.send({"type": "unsub", "id": 4, "channel": "news"})
    assert (await client.next_control("left"))["id"] == 4
    assert await server.hub.room_members("news") == []
    await client.close()


async def test_default_handler_denies_subscriptions(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws", StreamHandler())
    base = await serve(server)
    client = TaggedClient(f"{base}/ws")
    await client.open("anything")
    error = await client.next_control("error")
    assert error["code"] == "forbidden" and error["channel"] == "anything"
    await client.close()


async def test_bad_frames_get_errors_and_the_socket_stays_usable(serve: Serve) -> None:
    handler = Open()
    server = StreamServer()
    server.route("/ws", handler)
    base = await serve(server)
    client = TaggedClient(f"{base}/ws")
    await client.open()
    for bad in ("not json", '{"type":"warp"}', '{"type":"sub"}', "[1,2]",
                '{"type":"hello","channels":{}}', '{"type":"msg"}'):
        assert client.ws is not None
        await client.ws.send(bad)
        error = await client.next_control("error")
        assert error["code"] == "bad_request" and error["message"]
        if bad == '{"type":"warp"}':
            assert "unknown frame type 'warp'" in error["message"]
    await client.send({"type": "msg", "data": {"ok": True}})
    await client.send({"type": "msg", "text": "plain"})
    messages = []
    while len(messages) < 2:
        kind, _, msg = await within(handler.events.get())
        if kind == "message":
            messages.append(msg)
    # data arrives as the JSON the client wrote; text as the string itself.
    assert messages[0].as_json() == {"ok": True}
    assert messages[1] == SocketMessage.Text("plain")
    await client.close()


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


async def test_resume_replays_missed_messages_in_order_then_live(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws", Recorder(rooms=("chat",)))
    hub = server.hub
    base = await serve(server)
    client = TaggedClient(f"{base}/ws")
    await client.open("chat")
    await client.next_control("joined")
    for n in range(3):
        await hub.broadcast_to_room("chat", SocketMessage.json(n))
    while len(client.channels["chat"].received) < 3:
        await within(client.pubs.get())
    await client.drop()
    for n in range(3, 8):
        await hub.broadcast_to_room("chat", SocketMessage.json(n))
    await client.open()
    joined = await client.next_control("joined")
    assert joined["recovered"] is True
    await hub.broadcast_to_room("chat", SocketMessage.json(8))
    while len(client.channels["chat"].received) < 9:
        await within(client.pubs.get())
    log = client.channels["chat"]
    assert [d for _, d in log.received] == list(range(9))
    first = log.received[0][0]
    assert [o for o, _ in log.received] == list(range(first, first + 9))
    await client.close()


async def test_replay_races_live_broadcasts_without_gap_or_duplicate(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws", Recorder(rooms=("race",)))
    hub = server.hub
    base = await serve(server)
    client = TaggedClient(f"{base}/ws")
    await client.open("race")
    await client.next_control("joined")
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
    for _ in range(10):
        while len(client.channels["race"].received) < 5:
            await within(client.pubs.get())
        await client.drop()
        await client.open()  # reconnect while the publisher keeps going
        assert (await client.next_control("joined"))["recovered"] is True
    stop.set()
    await within(publisher)
    while len(client.channels["race"].received) < sent:
        await within(client.pubs.get())
    got = client.channels["race"].received
    assert [d for _, d in got] == list(range(sent)), got
    await client.close()


async def test_many_reconnects_under_load_lose_nothing(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws", Recorder(rooms=("load",)))
    server.history("load", HistoryPolicy(size=2000, ttl=60))
    hub = server.hub
    base = await serve(server)
    clients = [TaggedClient(f"{base}/ws") for _ in range(5)]
    for client in clients:
        await client.open("load")
        await client.next_control("joined")
    total = 2000

    async def publish() -> None:
        for n in range(total):
            await hub.broadcast_to_room("load", SocketMessage.json(n))
            if n % 20 == 0:
                await asyncio.sleep(0)

    async def flap(client: TaggedClient) -> None:
        for _ in range(20):
            await client.drop()
            await client.open()
            assert (await client.next_control("joined"))["recovered"] is True

    await within(asyncio.gather(publish(), *(flap(c) for c in clients)), 60)
    for client in clients:
        while len(client.channels["load"].received) < total:
            await within(client.pubs.get())
        assert [d for _, d in client.channels["load"].received] == list(range(total))
        await client.close()


async def test_gap_is_reported_when_history_cannot_fill_it(serve: Serve) -> None:
    clock = Clock()
    server = StreamServer(backend=MemoryBackend(HistoryPolicy(size=5, ttl=60), clock=clock))
    server.route("/ws", Recorder(rooms=("r",)))
    hub = server.hub
    base = await serve(server)
    client = TaggedClient(f"{base}/ws")
    await client.open("r")
    await client.next_control("joined")

    async def away(publish: int, advance: float = 0.0) -> dict[str, object]:
        await client.drop()
        for n in range(publish):
            await hub.broadcast_to_room("r", SocketMessage.json(n))
        clock.now += advance
        await client.open()
        return await client.next_control("joined")

    assert (await away(3))["recovered"] is True           # within the window
    assert (await away(6))["recovered"] is False          # trimmed: only 5 kept
    assert (await away(1, advance=61))["recovered"] is False  # expired
    log = client.channels["r"]
    log.epoch = "another-epoch"
    assert (await away(1))["recovered"] is False          # history of another life
    assert log.gaps == 3
    await client.close()


async def test_history_size_zero_turns_recovery_off(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws", Recorder(rooms=("r",)))
    server.history("r", HistoryPolicy(size=0))
    base = await serve(server)
    client = TaggedClient(f"{base}/ws")
    await client.open("r")
    await client.next_control("joined")
    await client.drop()
    await server.hub.broadcast_to_room("r", SocketMessage.json(1))
    await client.open()
    assert (await client.next_control("joined"))["recovered"] is False
    await client.close()
