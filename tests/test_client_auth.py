"""
nucleus.client's tokens and endings: refresh before exp, refused tokens, close
codes acted on as the browser client does, and servers that misbehave
(played by a scripted websockets server).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from nucleus.client import (
    RequestFailed,
    State,
    Stream,
    StreamClosed,
    SubscriptionRefused,
    connect,
)
from nucleus.fortress import Fortress, TokenAuth
from nucleus.stream import HandshakeRequest, StreamServer

from .apps.channels import Open
from .conftest import Serve
from .helpers import eventually, within
from .stream_watch import FAST, Watch, take

SECRET = "c" * 32


class CountingAuth:
    """``Fortress.query_token`` that counts the handshakes it judged."""

    def __init__(self) -> None:
        self.auth: TokenAuth = Fortress.query_token(SECRET)
        self.verify = self.auth.verify  # what in-band refreshes use
        self.handshakes = 0

    async def __call__(self, request: HandshakeRequest) -> Any:
        self.handshakes += 1
        return await self.auth(request)


async def auth_server(serve: Serve) -> tuple[StreamServer, Open, CountingAuth, str]:
    handler, auth = Open(), CountingAuth()
    server = StreamServer()
    server.route("/ws", handler, auth=auth)
    return server, handler, auth, f"{await serve(server)}/ws"


def token(user: str = "ann", expires_in: float = 3600, secret: str = SECRET) -> str:
    return Fortress.issue_token(user, secret, expires_in=expires_in)


@pytest.mark.parametrize("token_in", ["protocol", "header", "query"])
async def test_the_token_travels_where_token_in_says(
    serve_native: Serve, token_in: Any
) -> None:
    _, handler, _, url = await auth_server(serve_native)
    async with connect(url, token=token(), token_in=token_in):
        socket = await within(handler.connected.get())
    assert socket.user_id == "ann"
    assert ("token" in socket.query) is (token_in == "query")


async def test_get_token_renews_the_token_in_band_before_it_expires(
    serve_native: Serve,
) -> None:
    _, handler, auth, url = await auth_server(serve_native)
    issued: list[str] = []
    first_exp: float | None = None
    fresh = asyncio.Event()

    def get_token() -> str:
        nonlocal first_exp
        issued.append(token(expires_in=2))
        claims = Fortress.decode(issued[-1], SECRET)
        assert claims is not None
        if first_exp is None:
            first_exp = claims.expires_at
        elif time.time() > first_exp:
            fresh.set()  # issued after the first token expired
        return issued[-1]

    async with connect(url, get_token=get_token, **FAST) as stream:
        watch = Watch(stream)
        socket = await within(handler.connected.get())
        await within(fresh.wait())
        # The server would have closed with 4001 at the first token's exp: the same
        # socket is still served, and nothing reconnected.
        assert (await stream.request("still there"))["user"] == "ann"
        assert socket.is_open and watch.states == [] and watch.errors == []
        assert auth.handshakes == 1 and len(issued) >= 3


async def test_an_expired_token_without_get_token_ends_the_stream(serve_native: Serve) -> None:
    _, _, auth, url = await auth_server(serve_native)
    stream = await connect(url, token=token(expires_in=1), **FAST)
    with pytest.raises(StreamClosed) as ended:
        await within(stream.wait_closed())
    assert ended.value.code == "token_expired" and stream.state is State.CLOSED
    assert auth.handshakes == 1


async def test_a_refused_token_stops_reconnecting(serve: Serve) -> None:
    _, _, auth, url = await auth_server(serve)
    forged = token(secret="f" * 32)
    with pytest.raises(StreamClosed) as refused:
        await within(connect(url, token=forged, **FAST))
    assert refused.value.code == "unauthorized" and auth.handshakes == 1

    calls = 0

    def get_forged() -> str:
        nonlocal calls
        calls += 1
        return forged

    with pytest.raises(StreamClosed) as refused:
        await within(connect(url, get_token=get_forged, **FAST))
    # Once more with a fresh token, then never again.
    assert refused.value.code == "unauthorized" and calls == 2 and auth.handshakes == 3


async def test_a_refused_token_is_retried_once_with_a_fresh_one(serve_native: Serve) -> None:
    _, handler, auth, url = await auth_server(serve_native)
    tokens = iter([token(secret="f" * 32), token("bo")])

    async def get_token() -> str:  # async works too
        return next(tokens)

    async with connect(url, get_token=get_token, **FAST):
        assert (await within(handler.connected.get())).user_id == "bo"
    assert auth.handshakes == 2


# A scripted server: the server's side of each connection, played from a script.

Script = Callable[[ServerConnection], Awaitable[None]]


class Scripted:
    def __init__(self, *scripts: Script, subprotocols: tuple[str, ...] = ("nucleus.v1",),
                 status: HTTPStatus | None = None) -> None:
        self.scripts = scripts
        self.subprotocols = subprotocols
        self.status = status
        self.connections = 0
        self.server: Server | None = None

    async def start(self) -> str:
        self.server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._refuse,
            subprotocols=list(self.subprotocols) or None)  # type: ignore[arg-type]
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws"

    def _refuse(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.status is None:
            return None
        self.connections += 1
        return connection.respond(self.status, "refused\n")

    async def _handle(self, ws: ServerConnection) -> None:
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        await script(ws)


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Awaitable[tuple[Scripted, str]]]]:
    started: list[Scripted] = []

    async def start(*scripts: Script, **options: Any) -> tuple[Scripted, str]:
        started.append(Scripted(*scripts, **options))
        return started[-1], await started[-1].start()

    yield start
    for server in started:
        if server.server is not None:
            server.server.close()
            await server.server.wait_closed()


async def stay(ws: ServerConnection) -> None:
    async for _ in ws:
        pass


@pytest.mark.parametrize(("code", "renewable", "final", "error"), [
    (1000, False, True, None),
    (1008, True, True, "policy_violation"),
    (4003, True, True, "token_revoked"),
    (4001, False, True, "token_expired"),
    (4001, True, False, None),
    (1001, False, False, None),
    (1012, False, False, None),
    (1009, False, False, "message_too_big"),
    (1011, False, False, None),
    (1013, False, False, None),
    (4029, False, False, "rate_limited"),
])
async def test_close_codes_end_or_retry_as_the_browser_client_does(
    scripted: Any, code: int, renewable: bool, final: bool, error: str | None
) -> None:
    go = asyncio.Event()

    async def close_after_hello(ws: ServerConnection) -> None:
        await ws.recv()
        await go.wait()
        await ws.close(code, "by the script")

    server, url = await scripted(close_after_hello, stay)
    get_token = (lambda: token()) if renewable else None
    stream = await connect(url, get_token=get_token, **FAST)
    watch = Watch(stream)
    go.set()
    if final:
        if error is None:
            await within(stream.wait_closed())
        else:
            with pytest.raises(StreamClosed) as ended:
                await within(stream.wait_closed())
            assert ended.value.code == error
        assert server.connections == 1 and watch.states == [State.CLOSED]
    else:
        await watch.until(lambda: watch.reopened == 1)
        assert server.connections == 2 and watch.states == [State.RECONNECTING, State.OPEN]
        await stream.close()
    assert watch.codes == ([error] if error else [])


async def test_an_http_refusal_without_get_token_is_final(scripted: Any) -> None:
    for status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
        server, url = await scripted(stay, status=status)
        with pytest.raises(StreamClosed) as refused:
            await within(connect(url, **FAST))
        assert refused.value.code == "unauthorized" and str(status.value) in refused.value.message
        assert server.connections == 1


async def test_other_http_refusals_are_retried(scripted: Any) -> None:
    server, url = await scripted(stay, status=HTTPStatus.SERVICE_UNAVAILABLE)
    opening = asyncio.create_task(_open(url))

    async def retried() -> bool:
        return server.connections >= 3

    await eventually(retried)
    server.status = None  # the server is back
    stream = await within(opening)
    assert stream.state is State.OPEN
    await stream.close()


async def _open(url: str) -> Stream:
    return await connect(url, **FAST)


async def test_bad_server_frames_are_reported_and_never_break_the_stream(scripted: Any) -> None:
    async def misbehave(ws: ServerConnection) -> None:
        await ws.recv()  # hello
        sub = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "joined", "channel": "chat", "epoch": "e",
                                  "offset": 0, "id": sub["id"]}))
        for bad in ("not json", "[1]", '{"no": "type"}', '{"type": "joined", "channel": 5}',
                    '{"type": "pub", "channel": "chat", "offset": "x", "data": 1}',
                    '{"type": "reply", "id": "x"}', b"\x00\x00", b"\x00\x00\x00\xff{}"):
            await ws.send(bad)
        await ws.send('{"type": "from_the_future", "x": 1}')  # unknown: ignored quietly
        await ws.send('{"type": "pub", "channel": "chat", "offset": 1, "data": "fine"}')
        await ws.send('{"type": "msg", "text": "direct"}')
        await stay(ws)

    _, url = await scripted(misbehave)
    async with connect(url, **FAST) as stream:
        watch = Watch(stream)
        direct = stream.messages()
        chat = await stream.subscribe("chat")
        assert await take(chat, 1) == ["fine"]
        assert await take(direct, 1) == ["direct"]
        assert watch.codes == ["bad_frame"] * 8 and stream.state is State.OPEN


async def test_a_server_without_the_subprotocol_gets_raw_messages(
    scripted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(f"echo: {message}")
            await ws.send('{"a": 1}')

    _, url = await scripted(echo, subprotocols=())
    async with connect(url, **FAST) as stream:
        direct = stream.messages()
        await stream.send("hi")  # no envelope
        assert await take(direct, 2) == ["echo: hi", {"a": 1}]
        with pytest.raises(RequestFailed) as offline:
            await stream.request("q")
        assert offline.value.code == "offline"
        with pytest.raises(SubscriptionRefused) as no_channels:
            await stream.subscribe("chat")
        assert no_channels.value.code == "unsupported_protocol"
    assert "unsupported_protocol" in caplog.text



async def test_get_token_failures_are_retried_and_unusable_tokens_are_final(
    scripted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server, url = await scripted(stay)
    answers: list[Any] = [RuntimeError("vault down"), "a.b.c"]

    def get_token() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    async with connect(url, get_token=get_token, **FAST) as stream:
        assert stream.state is State.OPEN and server.connections == 1
    assert "token_unavailable" in caplog.text and "vault down" in caplog.text

    with pytest.raises(StreamClosed) as unusable:
        await within(connect(url, get_token=lambda: "not a subprotocol", **FAST))
    assert unusable.value.code == "connect_failed" and server.connections == 1


def expiring_at(exp: float) -> str:
    """A JWT-shaped token with this ``exp`` (the client only decodes it to time refreshes)."""
    claims = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJIUzI1NiJ9.{claims}.c2ln"


async def test_a_refused_refresh_is_tried_again_before_the_held_token_expires(
    scripted: Any,
) -> None:
    refreshes: list[dict[str, Any]] = []
    answered = asyncio.Event()

    async def refuse_the_first_refresh(ws: ServerConnection) -> None:
        await ws.recv()  # hello
        async for text in ws:
            frame = json.loads(text)
            if frame["type"] != "refresh":
                continue
            refreshes.append(frame)
            if len(refreshes) == 1:
                await ws.send(json.dumps({"type": "error", "code": "unauthorized",
                                          "message": "token refused", "id": frame["id"]}))
            else:
                await ws.send(json.dumps({"type": "refreshed", "id": frame["id"]}))
                answered.set()

    _, url = await scripted(refuse_the_first_refresh)
    tokens = iter([expiring_at(time.time() + 2.4), "refused.by.server",
                   expiring_at(time.time() + 3600)])
    async with connect(url, get_token=lambda: next(tokens), **FAST) as stream:
        watch = Watch(stream)
        # First refresh half-way through the held token's life (1.2 s), refused; the
        # next a quarter of what is left later, at least 1 s, before it expires.
        await within(answered.wait())
        assert [f["token"] for f in refreshes] == ["refused.by.server", refreshes[1]["token"]]
        assert refreshes[1]["token"] != "refused.by.server"
        assert watch.codes == ["unauthorized"] and stream.state is State.OPEN
