"""
The native door's opening handshake over real sockets: the fast path and
websockets' full parser answer alike, bad requests get a clear answer, a
storm past ``max_pending_handshakes`` is answered 503 rather than queued, and
a closed connection is freed at once (no work left for the cycle collector).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import os
import sys
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect

from nucleus.stream import (
    ConfigError,
    SocketMessage,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)
from nucleus.stream._native import NativeConnection
from nucleus.stream._session import Session

from .conftest import Serve
from .helpers import Recorder, eventually, port_of, within


def upgrade_request(path: str = "/ws", *extra: str, version: str = "HTTP/1.1") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} {version}", "Host: x", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def exchange(
    port: int, *chunks: bytes
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """Send ``chunks`` (one write each); return the response head, or all until EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0.01)
    try:
        head = await within(reader.readuntil(b"\r\n\r\n"))
    except asyncio.IncompleteReadError as exc:
        head = exc.partial
    return head, reader, writer


def status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1]) if head else 0


def without_date(head: bytes) -> list[bytes]:
    return [line for line in head.split(b"\r\n") if not line.startswith(b"Date: ")]


@pytest.fixture
async def echo(serve_native: Serve) -> AsyncIterator[tuple[StreamServer, Recorder, int]]:
    handler = Recorder(rooms=("room",))
    server = StreamServer()
    server.route("/ws", handler)
    yield server, handler, port_of(await serve_native(server))


async def test_the_fast_path_and_the_full_parser_answer_alike(
    echo: tuple[StreamServer, Recorder, int],
) -> None:
    _, _, port = echo
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    ordinary = upgrade_request("/ws", "Sec-WebSocket-Protocol: nucleus.v1")
    ordinary = ordinary.replace(ordinary.split(b"Key: ")[1].split(b"\r\n")[0], key.encode())
    # Over 4 KiB of head: websockets' parser reads it.
    unusual = ordinary.replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"p" * 5000 + b"\r\n\r\n")
    answers = []
    for request in (ordinary, unusual):
        head, _, writer = await exchange(port, request)
        answers.append(head)
        writer.close()
    assert status(answers[0]) == 101
    assert b"Sec-WebSocket-Protocol: nucleus.v1" in answers[0]
    assert without_date(answers[0]) == without_date(answers[1])
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in answers[0]


async def test_a_head_in_pieces_is_upgraded_and_frames_flow(
    echo: tuple[StreamServer, Recorder, int],
) -> None:
    server, handler, port = echo
    request = upgrade_request()
    head, reader, writer = await exchange(port, request[:5], request[5:40], request[40:])
    assert status(head) == 101
    await within(handler.connected.get())
    await server.hub.broadcast_to_room("room", SocketMessage.Text("hi"))
    assert await within(reader.readexactly(4)) == b"\x81\x02hi"
    writer.close()


async def test_a_request_followed_by_a_frame_at_once_is_still_served(
    echo: tuple[StreamServer, Recorder, int],
) -> None:
    _, handler, port = echo
    frame = b"\x81\x82abcd" + bytes(a ^ b for a, b in zip(b"yo", b"ab", strict=True))
    head, _, writer = await exchange(port, upgrade_request() + frame)
    assert status(head) == 101
    socket = await within(handler.connected.get())
    assert await within(handler.events.get()) == ("connect", socket.id, None)
    assert await within(handler.events.get()) == ("message", socket.id, SocketMessage.Text("yo"))
    writer.close()


@pytest.mark.parametrize(("request_bytes", "expected"), [
    (upgrade_request().replace(b"GET", b"POST"), 405),
    (upgrade_request().replace(b"Version: 13", b"Version: 8"), 400),
    (upgrade_request().replace(b"Sec-WebSocket-Key", b"X-Key"), 400),
    (upgrade_request("/ws", "Sec-WebSocket-Protocol: a b"), 400),
    (upgrade_request().replace(b"Connection: Upgrade", b"Connection: keep-alive"), 426),
    (upgrade_request().replace(b"Upgrade: websocket", b"Upgrade: h2c"), 426),
    (upgrade_request("/nowhere"), 404),
    (upgrade_request(version="HTTP/1.0"), 505),
    (upgrade_request("/ws", "Content-Length: 5") + b"hello", 0),
    (b"HELLO\r\n\r\n", 0),
])
async def test_bad_requests_get_a_clear_answer_and_the_connection_closes(
    echo: tuple[StreamServer, Recorder, int], request_bytes: bytes, expected: int
) -> None:
    _, _, port = echo
    head, reader, writer = await exchange(port, request_bytes)
    assert status(head) == expected  # 0: websockets closes without an answer
    await within(reader.read())  # then the server closes the connection
    writer.close()


async def test_past_the_pending_handshake_limit_requests_get_503_then_are_served_again(
    serve_native: Serve,
) -> None:
    handler = Recorder()
    server = StreamServer(max_pending_handshakes=3)
    server.route("/ws", handler)
    port = port_of(await serve_native(server))
    # Three connections that have not sent their request yet hold every place.
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    head, reader, writer = await exchange(port, upgrade_request())
    assert status(head) == 503 and b"Retry-After: 1\r\n" in head
    assert b"try again" in await within(reader.read())
    writer.close()
    assert server.metrics is not None and b'status="503"' in server.metrics.render()
    for _, idle_writer in idle:
        idle_writer.close()
    native = server._native
    assert native is not None

    async def no_pending() -> bool:
        return native.handshaking == 0

    await eventually(no_pending, what="the idle connections' places freed")
    # Upgraded connections are no longer pending: more of them than the limit stay open.
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(5):
            ws = await stack.enter_async_context(connect(f"ws://127.0.0.1:{port}/ws"))
            await within(handler.connected.get())
            assert ws.response is not None and ws.response.status_code == 101
        assert native.handshaking == 0



def test_the_limits_are_checked() -> None:
    with pytest.raises(ConfigError, match="max_pending_handshakes"):
        StreamServer(max_pending_handshakes=0)
    with pytest.raises(ConfigError, match="backlog"):
        StreamServer(backlog=0)


class Joiner(StreamHandler):
    """Joins a room and keeps nothing: its sockets are the server's alone."""

    def __init__(self) -> None:
        self.gone = 0

    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        await hub.join_room(socket.id, "room")

    async def on_disconnect(self, hub: StreamHub, socket_id: str) -> None:
        self.gone += 1


async def test_a_closed_connection_is_freed_without_the_cycle_collector(
    serve_native: Serve,
) -> None:
    handler = Joiner()
    server = StreamServer()
    server.route("/ws", handler)
    port = port_of(await serve_native(server))

    async def all_gone() -> bool:
        return handler.gone == 20

    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            head, reader, writer = await exchange(port, upgrade_request())
            assert status(head) == 101
            writer.write(b"\x88\x80abcd")  # close, masked, empty
            await within(reader.read())
            writer.close()
        await eventually(all_gone, what="every on_disconnect")
        left = [o for o in gc.get_objects() if isinstance(o, NativeConnection | Session)]
    finally:
        gc.enable()
    assert left == []


FREEZE_CHECK = """
import asyncio, gc
from nucleus.stream import StreamServer
server = StreamServer()

@server.background
async def report(hub):
    while server._native is None or gc.get_freeze_count() == 0:
        await asyncio.sleep(0.01)
    print("frozen", gc.get_freeze_count() > 1000, gc.get_threshold()[0], flush=True)
    server.stop()

server.run(port=0)
"""


async def test_run_tunes_the_collector_once_it_listens() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FREEZE_CHECK, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ, "NUCLEUS_LOG_LEVEL": "warning"})
    output, _ = await within(proc.communicate(), 30)
    assert proc.returncode == 0, output.decode()
    assert output.decode().strip().endswith("frozen True 7000")


async def test_a_server_started_by_hand_leaves_the_collector_alone(serve_native: Serve) -> None:
    before = gc.get_freeze_count(), gc.get_threshold()
    await serve_native(StreamServer())
    assert (gc.get_freeze_count(), gc.get_threshold()) == before
