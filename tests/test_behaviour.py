"""
The behaviour suite: real clients over real sockets, against both front doors.

Every test here runs twice, once through the native server and once through
the ASGI adapter under uvicorn (see ``conftest.serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nucleus.stream import (
    MemoryBackend,
    SocketMessage,
    SocketNotFound,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)

from .conftest import Serve
from .helpers import Clock, Recorder, eventually, within

pytestmark = pytest.mark.usefixtures("any_backend")


async def test_plain_client_gets_exactly_what_the_handler_sends(serve: Serve) -> None:
    server = StreamServer()
    handler = Recorder(rooms=("general",), broadcast_to="general")
    server.route("/ws/chat", handler)
    base = await serve(server)
    async with connect(f"{base}/ws/chat") as alice, connect(f"{base}/ws/chat") as bob:
        # Both in the room (on_connect awaits the backend) before anyone speaks.
        for _ in range(2):
            await within(handler.connected.get())
        payload = json.dumps({"type": "join", "room": "général", "emoji": "🚀"})
        await alice.send(payload)
        for client in (alice, bob):
            got = await within(client.recv())
            assert isinstance(got, str) and got == payload
        blob = bytes(range(256)) * 3
        await bob.send(blob)
        for client in (alice, bob):
            got = await within(client.recv())
            assert isinstance(got, bytes) and got == blob


async def test_unknown_path_is_refused_with_404(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws/chat", Recorder())
    base = await serve(server)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{base}/ws/nope"):
            pass
    assert refused.value.response.status_code == 404


async def test_plain_http_to_a_websocket_route_gets_426(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws/chat", Recorder())
    base = await serve(server)
    async with httpx.AsyncClient() as http:
        response = await within(http.get(base.replace("ws://", "http://") + "/ws/chat"))
    assert response.status_code == 426
    assert response.headers["upgrade"].lower() == "websocket"


class SlowConnect(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        self.entered.set()
        await self.release.wait()
        await super().on_connect(hub, socket)


async def test_on_connect_finishes_before_messages_which_arrive_in_order(serve: Serve) -> None:
    handler = SlowConnect()
    server = StreamServer()
    server.route("/ws", handler)
    base = await serve(server)
    async with connect(f"{base}/ws") as client:
        await within(handler.entered.wait())
        for i in range(200):
            await client.send(f"m{i}")
        handler.release.set()
        kinds = [await within(handler.events.get()) for _ in range(201)]
    assert kinds[0][0] == "connect"
    assert [msg.text for kind, _, msg in kinds[1:]] == [f"m{i}" for i in range(200)]


async def test_what_a_socket_sent_before_on_connect_refused_it_is_never_handled(
    serve: Serve,
) -> None:
    class Refuses(SlowConnect):
        async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
            self.entered.set()
            await self.release.wait()
            await hub.disconnect(socket.id)  # the guide's refusal: 1008

    handler = Refuses()
    server = StreamServer()
    server.route("/ws", handler)
    base = await serve(server)

    async def all_received() -> bool:
        assert server.metrics is not None
        text = server.metrics.render().decode()
        return any(s.name == "nucleus_messages_in_total" and s.value == 3
                   for family in text_string_to_metric_families(text) for s in family.samples)

    async with connect(f"{base}/ws") as client:
        await within(handler.entered.wait())
        for i in range(3):
            await client.send(f"sent before the refusal {i}")
        await eventually(all_received, what="the server reading the three messages")
        handler.release.set()
        with pytest.raises(ConnectionClosed) as closed:
            await within(client.recv())
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    kind, _, _ = await within(handler.events.get())
    assert kind == "disconnect"  # and no "message" before it
    assert handler.events.empty()


async def test_state_is_gone_before_on_disconnect_which_runs_once(serve: Serve) -> None:
    handler = Recorder(rooms=("a", "b"))
    seen: list[tuple[bool, list[str], list[str]]] = []

    async def check(hub: StreamHub, socket_id: str) -> None:
        try:
            await hub.rooms_of(socket_id)
            known = True
        except SocketNotFound:
            known = False
        seen.append((known, await hub.room_members("a"), await hub.online_users()))

    handler.on_disconnect_check = check

    server = StreamServer()
    server.route("/ws", handler)
    base = await serve(server)
    async with connect(f"{base}/ws") as client:
        socket = await within(handler.connected.get())
        await server.hub.identify(socket.id, "alice")
        assert await server.hub.online_users() == ["alice"]
        await client.send("hi")
        await within(handler.events.get())  # connect
        await within(handler.events.get())  # message
    gone = await within(handler.disconnected.get())
    assert gone == socket.id
    assert seen == [(False, [], [])]
    assert await server.hub.online_users() == []
    assert handler.disconnect_counts == {socket.id: 1}


@pytest.mark.parametrize("ending", ["client_close", "network_drop", "server_disconnect",
                                    "server_close_socket"])
async def test_on_disconnect_runs_exactly_once_however_it_ends(serve: Serve, ending: str) -> None:
    handler = Recorder(rooms=("room",))
    server = StreamServer()
    server.route("/ws", handler)
    base = await serve(server)
    client = await connect(f"{base}/ws")
    socket = await within(handler.connected.get())
    if ending == "client_close":
        await client.close()
    elif ending == "network_drop":
        client.transport.abort()
    elif ending == "server_disconnect":
        await server.hub.disconnect(socket.id, 4000, "bye")
        with pytest.raises(ConnectionClosed) as closed:
            await within(client.recv())
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    else:
        await socket.close(1000)
    assert await within(handler.disconnected.get()) == socket.id
    await client.close()
    # Nothing else will come: one more connection proves the queue is in order.
    async with connect(f"{base}/ws"):
        other = await within(handler.connected.get())
    assert await within(handler.disconnected.get()) == other.id
    assert handler.disconnect_counts == {socket.id: 1, other.id: 1}
    assert server.hub._is_empty()


@pytest.mark.timeout(300)  # 10,000 cycles; its own deadline is 240 s
async def test_many_connect_disconnect_cycles_leave_nothing_behind(
    serve: Serve, front_door: str, any_backend: str
) -> None:
    class Busy(StreamHandler):
        def __init__(self) -> None:
            self.disconnects = 0
            self.all_done = asyncio.Event()
            self.total = 0

        async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
            await hub.identify(socket.id, f"user{int(socket.query['n']) % 7}")
            await hub.join_room(socket.id, "lobby")
            await hub.join_room(socket.id, f"room{socket.query['n']}")

        async def on_disconnect(self, hub: StreamHub, socket_id: str) -> None:
            self.disconnects += 1
            if self.disconnects == self.total:
                self.all_done.set()

    handler = Busy()
    handler.total = cycles = 10_000
    clock = Clock()
    server = StreamServer(backend=MemoryBackend(clock=clock)) if any_backend == "memory" \
        else StreamServer()
    server.route("/ws", handler)
    base = await serve(server)
    limit = asyncio.Semaphore(64)

    async def cycle(n: int) -> None:
        async with limit, connect(f"{base}/ws?n={n}", ping_interval=None) as client:
            await client.send("x")
            if n % 3 == 0:
                client.transport.abort()

    await within(asyncio.gather(*(cycle(n) for n in range(cycles))), 240)
    await within(handler.all_done.wait(), 60)
    assert handler.disconnects == cycles
    assert await server.hub.connection_count() == 0
    assert server.hub._is_empty()
    assert await server.hub.online_users() == []
    assert await server.hub.room_members("lobby") == []
    assert await server.hub.room_users("lobby") == []
    if any_backend != "memory":
        return  # the Redis index is checked above; its histories expire by TTL
    # Room positions are kept for the history window so clients can resume;
    # after it, the housekeeping sweep leaves nothing.
    backend = server.hub.backend
    assert isinstance(backend, MemoryBackend)
    clock.now += backend.default_policy.ttl + 1
    await backend.housekeeping()
    assert backend.room_logs() == 0


async def test_handler_exception_is_logged_and_closes_nothing(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    class Fragile(StreamHandler):
        async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
            await hub.join_room(socket.id, "r")

        async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
            if msg == SocketMessage.Text("boom"):
                raise RuntimeError("handler bug")
            await hub.broadcast_to_room("r", msg)

    server = StreamServer()
    server.route("/ws/fragile", Fragile())
    base = await serve(server)
    caplog.set_level(logging.ERROR, logger="nucleus.stream")
    async with connect(f"{base}/ws/fragile") as a, connect(f"{base}/ws/fragile") as b:
        await a.send("boom")
        await a.send("still here")
        assert await within(a.recv()) == "still here"
        assert await within(b.recv()) == "still here"
    failures = [r for r in caplog.records if "on_message failed" in r.getMessage()]
    assert len(failures) == 1
    assert "/ws/fragile" in failures[0].getMessage()
    assert failures[0].exc_info is not None


async def test_oversized_message_closes_with_1009(serve: Serve) -> None:
    handler = Recorder()
    server = StreamServer(max_message_size=1000)
    server.route("/ws", handler)
    base = await serve(server)
    async with connect(f"{base}/ws") as client:
        await client.send("x" * 1000)  # at the limit: fine
        event = await within(handler.events.get())
        while event[0] != "message":
            event = await within(handler.events.get())
        await client.send("x" * 1001)
        with pytest.raises(ConnectionClosed) as closed:
            await within(client.recv())
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_hub_addresses_sockets_users_and_rooms(serve: Serve) -> None:
    handler = Recorder()
    server = StreamServer()
    server.route("/ws", handler)
    hub = server.hub
    base = await serve(server)
    async with contextlib.AsyncExitStack() as stack:
        # One at a time: under a backend that suspends, on_connect may finish out of order.
        phone = await stack.enter_async_context(connect(f"{base}/ws"))
        s_phone = await within(handler.connected.get())
        laptop = await stack.enter_async_context(connect(f"{base}/ws"))
        s_laptop = await within(handler.connected.get())
        other = await stack.enter_async_context(connect(f"{base}/ws"))
        s_other = await within(handler.connected.get())
        await hub.identify(s_phone.id, "alice")
        await hub.identify(s_laptop.id, "alice")
        await hub.identify(s_other.id, "bob")
        assert s_phone.user_id == "alice"
        assert await hub.online_users() == ["alice", "bob"]
        assert await hub.connection_count() == 3

        await hub.send_to_user("alice", SocketMessage.json({"n": 1}))
        assert json.loads(await within(phone.recv())) == {"n": 1}
        assert json.loads(await within(laptop.recv())) == {"n": 1}

        await hub.send_to(s_other.id, SocketMessage.Text("just bob"))
        assert await within(other.recv()) == "just bob"

        await hub.join_room(s_phone.id, "team")
        await hub.join_room(s_other.id, "team")
        assert sorted(await hub.room_members("team")) == sorted([s_phone.id, s_other.id])
        assert await hub.rooms_of(s_phone.id) == frozenset({"team"})
        await hub.broadcast_to_room("team", SocketMessage.Text("to team"), exclude=s_phone.id)
        assert await within(other.recv()) == "to team"
        await hub.leave_room(s_other.id, "team")
        await hub.broadcast_to_room("team", SocketMessage.Text("second"))
        assert await within(phone.recv()) == "second"
        # Nobody else got anything: a direct message arrives first.
        await hub.send_to(s_other.id, SocketMessage.Text("marker"))
        assert await within(other.recv()) == "marker"
        await hub.send_to(s_laptop.id, SocketMessage.Text("marker"))
        assert await within(laptop.recv()) == "marker"

        with pytest.raises(SocketNotFound, match="no open socket"):
            await hub.send_to("nope", SocketMessage.Text("x"))


