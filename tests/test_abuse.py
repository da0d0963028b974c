"""
The abuse suite: hostile clients over real sockets.

For every case: the expected refusal or close code, a canary client in the
same room still gets every broadcast in order, and the server's bookkeeping
(sockets, rooms, users, rate-limit buckets, per-address counters, handler
tasks) returns to its baseline afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode

from nucleus.fortress import Fortress
from nucleus.stream import ConfigError, SocketMessage, StreamServer
from nucleus.stream._ratelimit import RateLimit

from .conftest import Serve
from .helpers import Recorder, port_of, raw_handshake, read_close_code, within

SECRET = "s" * 32
ORIGIN = "https://app.example"


@dataclass(frozen=True)
class ChatLine:
    user: str
    text: str


class Arena:
    """A server with one room shared by a canary and every route's sockets."""

    def __init__(self, **server_options: object) -> None:
        self.handler = Recorder(rooms=("room",))
        self.server = StreamServer(max_message_size=64 * 1024, handshake_timeout=0.5,
                                   close_timeout=0.5, **server_options)  # type: ignore[arg-type]
        self.server.route("/ws", self.handler, rate_limit=RateLimit(
            rate=20, burst=20, per_user_rate=None, per_user_burst=None,
            strikes=10, strike_window=10))
        self.server.route("/auth", self.handler, auth=Fortress.query_token(SECRET),
                          rate_limit=RateLimit(rate=100, burst=100, per_user_rate=30,
                                               per_user_burst=30, strikes=1000))
        self.server.route("/origin", self.handler, origins=[ORIGIN])
        self.server.route("/model", self.handler, message_model=ChatLine)
        self.base = ""
        self.canary: ClientConnection | None = None

    async def start(self, serve: Serve) -> None:
        self.base = await serve(self.server)
        self.canary = await connect(f"{self.base}/ws")
        await within(self.handler.connected.get())

    async def broadcasting(self, abuse: Awaitable[object], count: int = 300) -> None:
        """Run ``abuse`` while broadcasting ``count`` messages; the canary must get all."""
        assert self.canary is not None

        async def publish() -> None:
            for n in range(count):
                await self.server.hub.broadcast_to_room("room", SocketMessage.Text(str(n)))
                if n % 10 == 0:
                    await asyncio.sleep(0)

        await within(asyncio.gather(publish(), abuse), 30)
        got = [int(str(await within(self.canary.recv()))) for _ in range(count)]
        assert got == list(range(count))

    async def settled(self) -> None:
        """Every abusive socket is gone and nothing of it is left behind."""
        hub = self.server.hub
        while await hub.connection_count() > 1:  # the canary
            await within(self.handler.disconnected.get())
        await within(self.server._owner.wait_idle())
        assert await hub.room_members("room") == [next(iter(hub._registry._sockets))]
        assert hub._registry.users() == []
        for route in self.server.routes.values():
            if route.limiter is not None:
                assert route.limiter.socket_count <= 1 and route.limiter.user_count == 0
        guard = self.server.door.guard
        assert sum(guard._counts.values()) == (1 if guard.enabled else 0)  # the canary


@pytest.fixture
async def arena(serve: Serve) -> AsyncIterator[Arena]:
    arena = Arena()
    await arena.start(serve)
    yield arena
    if arena.canary is not None:
        await arena.canary.close()


async def refused_status(url: str, **options: object) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, **options):  # type: ignore[arg-type]
            pass
    return refused.value.response.status_code


def alg_none_token(user: str) -> str:
    def b64(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': user, 'exp': 2**40})}."


async def test_bad_tokens_are_refused_with_401_before_any_socket(arena: Arena) -> None:
    good = Fortress.issue_token("alice", SECRET)
    header, payload, signature = good.split(".")
    bad_tokens = {
        "garbage": "not-a-token",
        "expired": Fortress.issue_token("alice", SECRET, expires_in=1, now=lambda: 0.0),
        "forged": Fortress.issue_token("alice", "x" * 32),
        "tampered": f"{header}.{payload[:-2]}AA.{signature}",
        "alg_none": alg_none_token("alice"),
    }

    async def abuse() -> None:
        assert await refused_status(f"{arena.base}/auth") == 401
        for token in bad_tokens.values():
            assert await refused_status(f"{arena.base}/auth?token={token}") == 401

    await arena.broadcasting(abuse())
    assert await arena.server.hub.connection_count() == 1  # no on_connect ran: only the canary
    async with connect(f"{arena.base}/auth", subprotocols=[  # type: ignore[list-item]
            "nucleus.v1", f"nucleus.token.{good}"]) as ok:
        assert ok.subprotocol == "nucleus.v1"
        await ok.send('{"type":"hello","channels":{}}')
        socket = await within(arena.handler.connected.get())
        assert socket.user_id == "alice"
    await arena.settled()


async def test_missing_secret_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    server = StreamServer()
    server.route("/ws", Recorder(), auth=Fortress.query_token())
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        await server.start("127.0.0.1", 0)


def token_in(token: str, record: logging.LogRecord) -> bool:
    return token in record.getMessage()


async def test_tokens_never_reach_our_logs(
    serve_native: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = StreamServer()
    server.route("/auth", Recorder(), auth=Fortress.query_token(SECRET))
    base = await serve_native(server)
    caplog.set_level(logging.DEBUG)
    good = Fortress.issue_token("alice", SECRET)
    bad = Fortress.issue_token("alice", "y" * 32)
    for token in (good, bad):
        try:
            async with connect(f"{base}/auth?token={token}"):
                pass
        except InvalidStatus:
            pass
    # Everything logged in the process but the test's own client library.
    client_side = [r for r in caplog.records if r.name.startswith("websockets.client")]
    server_side = [r for r in caplog.records if r not in client_side]
    text = "\n".join(record.getMessage() for record in server_side)
    # The client library logs its request line: proof that the capture works.
    assert any(token_in(good, r) for r in client_side)
    for token in (good, bad, SECRET):
        assert token not in text


@pytest.mark.parametrize("origin", ["https://evil.example", "https://app.example.com.evil",
                                    "http://app.example", "null", None])
async def test_wrong_origins_get_403(arena: Arena, origin: str | None) -> None:
    async def abuse() -> None:
        assert await refused_status(f"{arena.base}/origin", origin=origin) == 403

    await arena.broadcasting(abuse())
    for allowed in (ORIGIN, "https://APP.example:443"):
        async with connect(f"{arena.base}/origin", origin=allowed):  # type: ignore[arg-type]
            await within(arena.handler.connected.get())
    await arena.settled()


async def test_a_message_flood_is_rejected_then_closed_with_4029(arena: Arena) -> None:
    async def abuse() -> None:
        async with connect(f"{arena.base}/ws") as flooder:
            errors = 0
            for n in range(200):
                await flooder.send(f"flood {n}")
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    frame = json.loads(await within(flooder.recv()))
                    if isinstance(frame, dict) and frame.get("code") == "rate_limited":
                        errors += 1
            assert errors == 9  # strikes=10: nine answered, the tenth closes
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4029
            assert "back off" in closed.value.rcvd.reason

    await arena.broadcasting(abuse())
    await arena.settled()
    handled = [e for e in arena.handler.events._queue if e[0] == "message"]  # type: ignore[attr-defined]
    assert len(handled) <= 21  # the burst, never the flood


async def test_one_user_flooding_from_many_sockets_shares_one_budget(arena: Arena) -> None:
    token = Fortress.issue_token("mallory", SECRET)
    outcomes: asyncio.Queue[str] = asyncio.Queue()

    async def read_errors(ws: ClientConnection) -> None:
        async for frame in ws:
            if str(frame).startswith('{"type":"error"'):
                assert json.loads(frame)["code"] == "rate_limited"
                await outcomes.put("rejected")

    async def count_handled(ids: set[str]) -> None:
        while True:
            kind, socket_id, _ = await arena.handler.events.get()
            if kind == "message" and socket_id in ids:
                await outcomes.put("handled")

    async def abuse() -> None:
        sockets = [await connect(f"{arena.base}/auth?token={token}") for _ in range(3)]
        ids = {(await within(arena.handler.connected.get())).id for _ in sockets}
        tasks = [asyncio.create_task(read_errors(ws)) for ws in sockets]
        tasks.append(asyncio.create_task(count_handled(ids)))
        for ws in sockets:
            for n in range(20):  # 60 in all: each socket stays within its own 100
                await ws.send(f"m{n}")
        seen = [await within(outcomes.get()) for _ in range(60)]
        # The user's shared budget (30) let about 30 through and refused the rest.
        assert 30 <= seen.count("handled") < 45 and seen.count("rejected") >= 15
        for task in tasks:
            task.cancel()
        for ws in sockets:
            await ws.close()

    await arena.broadcasting(abuse())
    await arena.settled()


async def test_connection_caps_per_address(serve: Serve) -> None:
    arena = Arena(max_connections_per_ip=4)
    await arena.start(serve)  # the canary is the first of the four

    async def abuse() -> None:
        # max_queue=None: these never read, and must still be able to close.
        extra = [await connect(f"{arena.base}/ws", max_queue=None) for _ in range(3)]
        assert await refused_status(f"{arena.base}/ws") == 429
        await extra[0].close()
        await within(arena.handler.disconnected.get())
        extra[0] = await connect(f"{arena.base}/ws", max_queue=None)  # a freed place is usable
        for ws in extra:
            await ws.close()

    await arena.broadcasting(abuse())
    await arena.settled()
    assert arena.canary is not None
    await arena.canary.close()


async def test_handshake_rate_per_address(serve: Serve) -> None:
    arena = Arena(max_handshakes_per_ip=5)
    await arena.start(serve)
    statuses: list[int] = []

    async def abuse() -> None:
        for _ in range(20):
            try:
                async with connect(f"{arena.base}/ws", max_queue=None):
                    statuses.append(101)
            except InvalidStatus as exc:
                statuses.append(exc.response.status_code)

    await arena.broadcasting(abuse())
    assert 429 in statuses and statuses.count(101) <= 6
    await arena.settled()
    assert arena.canary is not None
    await arena.canary.close()


@pytest.mark.parametrize("trusted", [True, False])
async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    serve_native: Serve, trusted: bool
) -> None:
    server = StreamServer(max_connections_per_ip=1,
                          trusted_proxies=["127.0.0.1"] if trusted else [])
    server.route("/ws", Recorder())
    base = await serve_native(server)
    async with connect(f"{base}/ws", additional_headers={"X-Forwarded-For": "203.0.113.1"}):
        second = {"X-Forwarded-For": "203.0.113.2"}
        if trusted:  # two different clients behind the proxy
            async with connect(f"{base}/ws", additional_headers=second):
                pass
        else:  # the header is ignored: both are 127.0.0.1, the cap is 1
            assert await refused_status(f"{base}/ws", additional_headers=second) == 429


async def test_invalid_and_malformed_payloads_get_clear_errors(arena: Arena) -> None:
    async def abuse() -> None:
        async with connect(f"{arena.base}/model") as client:
            for bad, needle in (("{not json", "malformed JSON"),
                                ('{"user": "ann"}', "text"),
                                ('{"user": 5, "text": "x"}', "$.user")):
                await client.send(bad)
                while not isinstance(error := json.loads(await within(client.recv())), dict):
                    pass  # the room's broadcasts
                assert error["type"] == "error" and error["code"] == "invalid"
                assert needle in error["message"]
            await client.send('{"user": "ann", "text": "fine"}')
            socket = await within(arena.handler.connected.get())
            while (event := await within(arena.handler.events.get()))[1] != socket.id or \
                    event[0] != "message":
                pass
            assert event[2].as_json() == {"user": "ann", "text": "fine"}

    await arena.broadcasting(abuse())
    await arena.settled()


# Protocol-level abuse: the native front door's own handling (under uvicorn these
# cases are uvicorn's, see docs/security.md).


def client_frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=True)


def compressed_frame(deflated: bytes) -> bytes:
    """A masked text frame with RSV1 set, by hand: websockets refuses to build one."""
    assert len(deflated) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(deflated))
    return bytes([0x80 | 0x40 | Opcode.TEXT, 0x80 | len(deflated)]) + mask + masked


async def raw_abuse(arena: Arena, frames: Callable[[], list[bytes]], code: int) -> None:
    reader, writer, head = await raw_handshake(port_of(arena.base), "/ws")
    assert head.startswith(b"HTTP/1.1 101")
    await within(arena.handler.connected.get())
    writer.writelines(frames())
    assert await within(read_close_code(reader)) == code
    writer.close()


@pytest.fixture
async def native_arena(serve_native: Serve) -> AsyncIterator[Arena]:
    arena = Arena()
    await arena.start(serve_native)
    yield arena
    if arena.canary is not None:
        await arena.canary.close()


async def test_oversized_message_closes_1009(native_arena: Arena) -> None:
    frames = lambda: [client_frame(Opcode.BINARY, os.urandom(64 * 1024 + 1))]  # noqa: E731
    await native_arena.broadcasting(raw_abuse(native_arena, frames, 1009))
    await native_arena.settled()


async def test_a_flood_of_tiny_fragments_closes_1009(native_arena: Arena) -> None:
    def frames() -> list[bytes]:
        first = [client_frame(Opcode.TEXT, b"x", fin=False)]
        return first + [client_frame(Opcode.CONT, b"x", fin=False) for _ in range(70_000)]

    await native_arena.broadcasting(raw_abuse(native_arena, frames, 1009))
    await native_arena.settled()


async def test_a_compressed_frame_without_compression_closes_1002(native_arena: Arena) -> None:
    # We never negotiate permessage-deflate, so RSV1 is a protocol error (RFC 6455 §5.2):
    # no inflation happens, however far the payload would inflate.
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = bomb.compress(b"\0" * 10_000_000) + bomb.flush()  # inflates 100,000 times
    frames = lambda: [compressed_frame(deflated[:120])]  # noqa: E731
    await native_arena.broadcasting(raw_abuse(native_arena, frames, 1002))
    await native_arena.settled()


@pytest.mark.parametrize("fragmented", [False, True])
async def test_invalid_utf8_closes_1007(native_arena: Arena, fragmented: bool) -> None:
    bad = "café".encode()[:-1] + b"\xff"

    def frames() -> list[bytes]:
        if not fragmented:
            return [client_frame(Opcode.TEXT, bad)]
        return [client_frame(Opcode.TEXT, bad[:3], fin=False),
                client_frame(Opcode.CONT, bad[3:])]

    await native_arena.broadcasting(raw_abuse(native_arena, frames, 1007))
    await native_arena.settled()


async def test_slow_loris_handshake_is_cut_off(native_arena: Arena) -> None:
    async def abuse() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(native_arena.base))
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # ...and never the rest
        assert await within(reader.read(), 5) == b""  # closed after handshake_timeout
        writer.close()

    await native_arena.broadcasting(abuse())
    await native_arena.settled()


@pytest.mark.parametrize(("request_head", "status"), [
    (b"GET /ws?" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n", b"414"),
    (b"GET /ws HTTP/1.1\r\nX-Big: " + b"b" * 10_000 + b"\r\n\r\n", b"431"),
    (b"GET /ws HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 200 + b"\r\n", b"431"),
])
async def test_oversized_request_lines_and_headers(
    native_arena: Arena, request_head: bytes, status: bytes
) -> None:
    async def abuse() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(native_arena.base))
        writer.write(request_head)
        response = await within(reader.read())
        assert response.split(b" ")[1] == status
        writer.close()

    await native_arena.broadcasting(abuse())
    await native_arena.settled()


async def test_a_peer_that_never_answers_our_close_is_cut_off(native_arena: Arena) -> None:
    async def abuse() -> None:
        reader, writer, _ = await raw_handshake(port_of(native_arena.base), "/ws")
        socket = await within(native_arena.handler.connected.get())
        await native_arena.server.hub.disconnect(socket.id, 1000)
        assert await within(read_close_code(reader)) == 1000
        # We never answer the close frame: the server aborts after close_timeout.
        assert await within(native_arena.handler.disconnected.get(), 5) == socket.id
        writer.close()

    await native_arena.broadcasting(abuse())
    await native_arena.settled()
