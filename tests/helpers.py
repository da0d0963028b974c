"""Test helpers: a recording handler, deadlines, raw TCP clients."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from nucleus.stream import SocketMessage, StreamHandler, StreamHub, WebSocket

DEADLINE = 10.0


async def within(awaitable: Any, seconds: float = DEADLINE) -> Any:
    """Await with a deadline: a hang fails the test instead of stalling it."""
    return await asyncio.wait_for(awaitable, seconds)


async def eventually(
    check: Callable[[], Awaitable[bool]], seconds: float = DEADLINE, what: str = "a condition"
) -> float:
    """Poll ``check`` until it is true; fail after ``seconds``. Returns the time it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await check():
        if loop.time() - start > seconds:
            raise AssertionError(f"{what} did not happen within {seconds}s")
        await asyncio.sleep(0.02)
    return loop.time() - start


class Recorder(StreamHandler):
    """Records every callback; joins ``rooms`` on connect; echoes into ``room`` if asked."""

    def __init__(self, rooms: tuple[str, ...] = (), broadcast_to: str | None = None) -> None:
        self.rooms = rooms
        self.broadcast_to = broadcast_to
        self.events: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue()
        self.sockets: dict[str, WebSocket] = {}
        self.connected: asyncio.Queue[WebSocket] = asyncio.Queue()
        self.disconnected: asyncio.Queue[str] = asyncio.Queue()
        self.disconnect_counts: dict[str, int] = {}
        self.on_disconnect_check: Callable[[StreamHub, str], Awaitable[None]] | None = None

    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        self.sockets[socket.id] = socket
        for room in self.rooms:
            await hub.join_room(socket.id, room)
        await self.events.put(("connect", socket.id, None))
        await self.connected.put(socket)

    async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
        await self.events.put(("message", socket.id, msg))
        if self.broadcast_to is not None:
            await hub.broadcast_to_room(self.broadcast_to, msg)

    async def on_disconnect(self, hub: StreamHub, socket_id: str) -> None:
        self.disconnect_counts[socket_id] = self.disconnect_counts.get(socket_id, 0) + 1
        if self.on_disconnect_check is not None:
            await self.on_disconnect_check(hub, socket_id)
        await self.events.put(("disconnect", socket_id, None))
        await self.disconnected.put(socket_id)


async def raw_handshake(
    port: int, path: str = "/", extra_headers: str = "", rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Open a TCP connection and do a WebSocket handshake by hand; return the response head."""
    import socket as socketlib

    sock = socketlib.socket(socketlib.AF_INET, socketlib.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
        ).encode()
    )
    head = await within(reader.readuntil(b"\r\n\r\n"))
    return reader, writer, head


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


class Clock:
    """A clock the test moves by hand: ``clock.now += 61``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def read_close_code(reader: asyncio.StreamReader) -> int:
    """Read server frames (unmasked) until a close frame; return its code."""
    while True:
        head = await reader.readexactly(2)
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        body = await reader.readexactly(length)
        if opcode == 0x8:
            return int(struct.unpack("!H", body[:2])[0])
