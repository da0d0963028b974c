"""
permessage-deflate (RFC 7692) on the native door: negotiation, one compressed
frame per broadcast shared by every peer that negotiated it, the size
threshold, the route override, and inflated-size limits (zip bombs).

Chromium's side is in ``tests/test_browser_compression.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import Opcode

from nucleus.stream import ConfigError, SocketMessage, StreamServer, _wire
from nucleus.stream._wire import Outgoing, deflate_key, frame_size

from .conftest import Serve, UvicornRunner
from .helpers import Recorder, port_of, raw_handshake, read_close_code, within
from .tagged_client import TaggedClient

TAIL = b"\x00\x00\xff\xff"
OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def json_message(n: int, size: int = 1024) -> str:
    """A JSON document of about ``size`` bytes, different for each ``n``."""
    rows = []
    while sum(map(len, rows)) < size - 40:
        i = len(rows)
        rows.append(json.dumps({"symbol": f"SYM{i:03d}", "price": round(100 + n * 0.37 + i, 2),
                                "volume": (n * 7919 + i * 104729) % 100000, "open": True}))
    return '{"seq":' + str(n) + ',"rows":[' + ",".join(rows) + "]}"


def inflate(body: bytes, window_bits: int = 15) -> bytes:
    return zlib.decompressobj(-window_bits).decompress(body + TAIL)


def inflate_in_steps(body: bytes, window_bits: int) -> bytes:
    """
    Inflate 100 bytes at a time, so that back references are resolved from
    the LZ77 window alone, as a receiver with that window size does.
    """
    inflater = zlib.decompressobj(-window_bits)
    out, data = [], body + TAIL
    while data:
        out.append(inflater.decompress(data, 100))
        data = inflater.unconsumed_tail
    return b"".join(out)


def split_frame(frame: bytes) -> tuple[int, bytes]:
    """An unmasked frame's first byte and payload; the frame must be exactly one."""
    length, at = frame[1] & 0x7F, 2
    if length == 126:
        (length,), at = struct.unpack("!H", frame[2:4]), 4
    elif length == 127:
        (length,), at = struct.unpack("!Q", frame[2:10]), 10
    assert len(frame) == at + length
    return frame[0], frame[at:]


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next server frame: its first byte (FIN, RSV1, opcode) and its payload."""
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return head[0], await reader.readexactly(length)


def masked(first: int, payload: bytes) -> bytes:
    """A client frame (masked, RSV bits as given in ``first``), built by hand."""
    mask = os.urandom(4)
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    size = len(payload)
    if size < 126:
        head = bytes((first, 0x80 | size))
    elif size < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    return head + mask + data


@pytest.fixture
def deflate_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every compression the server does (the window bits of each)."""
    calls: list[int] = []
    real = _wire.deflate

    def counting(data: bytes, window_bits: int) -> bytes:
        calls.append(window_bits)
        return real(data, window_bits)

    monkeypatch.setattr(_wire, "deflate", counting)
    return calls


# -- the compressed frame, alone --------------------------------------------------


@pytest.mark.parametrize("tagged", [False, True])
@pytest.mark.parametrize("message", [SocketMessage.Text(json_message(1)),
                                     SocketMessage.Binary(json_message(2).encode())])
def test_deflated_frame_is_the_payload_compressed_with_rsv1(
    tagged: bool, message: SocketMessage
) -> None:
    out = Outgoing(message, "room", 7)
    plain = out.tagged_frame if tagged else out.raw_frame
    first, body = split_frame(out.deflated_frame(deflate_key(tagged, 15)))
    plain_first, payload = split_frame(plain)
    assert first == plain_first | 0x40  # FIN and opcode as the plain frame, plus RSV1
    assert inflate(body) == payload
    assert len(body) < len(payload) / 3  # repetitive JSON: it really is compressed


def test_deflated_frame_is_built_once_per_format_and_window(deflate_calls: list[int]) -> None:
    out = Outgoing(SocketMessage.Text(json_message(3)), "room", 1)
    keys = [deflate_key(False, 15), deflate_key(True, 15), deflate_key(False, 9)]
    first = [out.deflated_frame(key) for key in keys]
    again = [out.deflated_frame(key) for key in keys * 100]
    assert all(a is first[i % 3] for i, a in enumerate(again))  # the same bytes object
    assert deflate_calls == [15, 15, 9]
    assert len(set(first)) == 3


def test_a_smaller_window_is_honoured() -> None:
    # Repeats 2000 bytes apart: a 32 KiB window refers back across them, which
    # a peer that asked for server_max_window_bits=9 (512 bytes) cannot inflate.
    chunk = os.urandom(1000).hex()
    out = Outgoing(SocketMessage.Text(chunk + chunk))
    _, narrow = split_frame(out.deflated_frame(deflate_key(False, 9)))
    _, wide = split_frame(out.deflated_frame(deflate_key(False, 15)))
    assert inflate_in_steps(narrow, 9) == (chunk + chunk).encode()
    assert inflate_in_steps(wide, 15) == (chunk + chunk).encode()
    with pytest.raises(zlib.error, match="too far back"):
        inflate_in_steps(wide, 9)


@pytest.mark.parametrize("threshold", [0, 1, 125, 126, 127, 512, 65535, 65536, 70000])
def test_frame_size_orders_frames_as_their_payloads(threshold: int) -> None:
    # The native door compares frame lengths against frame_size(threshold).
    for size in (threshold - 1, threshold, threshold + 1):
        if size < 0:
            continue
        frame = Outgoing(SocketMessage.Binary(b"x" * size)).raw_frame
        assert len(frame) == frame_size(size)
        assert (len(frame) >= frame_size(threshold)) == (size >= threshold)


def test_configuration_is_inherited_and_overridden() -> None:
    server = StreamServer(compression=True, compression_threshold=100)
    handler = Recorder()
    inherit = server.route("/a", handler)
    off = server.route("/b", handler, compression=False)
    small = server.route("/c", handler, compression_threshold=0)
    assert (inherit.compression, inherit.compression_threshold) == (True, 100)
    assert (off.compression, small.compression_threshold) == (False, 0)
    plain = StreamServer()
    assert (plain.route("/a", handler).compression, plain.compression_threshold) == (False, 512)
    assert plain.route("/b", handler, compression=True).compression
    with pytest.raises(ConfigError, match="compression_threshold"):
        StreamServer(compression_threshold=-1)
    with pytest.raises(ConfigError, match="compression_threshold"):
        server.route("/d", handler, compression_threshold=-1)


# -- real sockets ------------------------------------------------------------------


class Room:
    """A native server whose route ``/ws`` puts every socket in one room."""

    def __init__(self, **options: Any) -> None:
        self.handler = Recorder(rooms=("room",))
        route_options = options.pop("route", {})
        self.server = StreamServer(**options)
        self.server.route("/ws", self.handler, **route_options)
        self.url = ""

    async def start(self, serve: Serve) -> None:
        self.url = await serve(self.server) + "/ws"

    async def joined(self, count: int) -> None:
        for _ in range(count):
            await within(self.handler.connected.get())

    async def broadcast(self, text: str) -> None:
        await self.server.hub.broadcast_to_room("room", SocketMessage.Text(text))

    def connection_of(self, index: int) -> Any:
        """The native connection of the ``index``-th socket that connected."""
        socket = list(self.handler.sockets.values())[index]
        return socket._conn


@pytest.fixture
async def clients() -> AsyncIterator[list[ClientConnection]]:
    opened: list[ClientConnection] = []
    yield opened
    for ws in opened:
        await ws.close()


async def test_a_compressing_client_negotiates_and_decodes_broadcasts(
    serve_native: Serve, clients: list[ClientConnection], deflate_calls: list[int]
) -> None:
    room = Room(compression=True)
    await room.start(serve_native)
    ws = await connect(room.url)  # websockets offers permessage-deflate by default
    clients.append(ws)
    await room.joined(1)
    extensions = ws.response.headers["Sec-WebSocket-Extensions"]
    assert extensions == "permessage-deflate; server_no_context_takeover; " \
                         "client_no_context_takeover"
    sent = [json_message(n) for n in range(20)]
    for text in sent:
        await room.broadcast(text)
    assert [await within(ws.recv()) for _ in sent] == sent
    assert deflate_calls == [15] * len(sent)


async def test_clients_with_and_without_compression_share_one_frame_per_message(
    serve_native: Serve, clients: list[ClientConnection], deflate_calls: list[int]
) -> None:
    room = Room(compression=True)
    await room.start(serve_native)
    deflating = [await connect(room.url) for _ in range(3)]
    plain = [await connect(room.url, compression=None) for _ in range(2)]
    narrow = await connect(room.url, extensions=[
        ClientPerMessageDeflateFactory(server_max_window_bits=9)], compression=None)
    clients.extend([*deflating, *plain, narrow])
    tagged = [TaggedClient(room.url) for _ in range(2)]
    for client in tagged:
        await client.open()
    await room.joined(8)

    sent = [json_message(n) for n in range(10)]
    for text in sent:
        await room.broadcast(text)
    for ws in [*deflating, *plain, narrow]:
        assert [await within(ws.recv()) for _ in sent] == sent
    for client in tagged:
        got = [await within(client.pubs.get()) for _ in sent]
        assert [data for _, _, data in got] == [json.loads(text) for text in sent]
        assert client.ws is not None
        await client.ws.close()

    # Once per message and kind of peer: raw (window 15), raw (window 9), tagged.
    assert sorted(deflate_calls) == sorted([15, 9, 15] * len(sent))
    windows = {room.connection_of(i)._deflate for i in range(8)}
    assert windows == {0, deflate_key(False, 15), deflate_key(False, 9), deflate_key(True, 15)}


async def test_small_messages_go_uncompressed_and_big_ones_compressed(
    serve_native: Serve, deflate_calls: list[int]
) -> None:
    room = Room(compression=True, compression_threshold=600)
    await room.start(serve_native)
    reader, writer, head = await raw_handshake(port_of(room.url), "/ws", OFFER)
    assert b"permessage-deflate" in head
    await room.joined(1)
    small, at_threshold, big = "s" * 599, "t" * 600, json_message(0, 4096)
    for text in (small, at_threshold, big):
        await room.broadcast(text)
    frames = [await within(read_frame(reader)) for _ in range(3)]
    writer.close()

    assert frames[0] == (0x81, small.encode())  # FIN, RSV1 clear, text
    for (first, body), text in zip(frames[1:], (at_threshold, big), strict=True):
        assert first == 0xC1  # FIN, RSV1, text
        assert inflate(body) == text.encode()
    assert len(frames[2][1]) < len(big) / 3
    assert deflate_calls == [15, 15]


async def test_a_route_overrides_the_server_setting(
    serve_native: Serve, clients: list[ClientConnection]
) -> None:
    everywhere = StreamServer(compression=True)
    everywhere.route("/on", Recorder())
    everywhere.route("/off", Recorder(), compression=False)
    nowhere = StreamServer()
    nowhere.route("/off", Recorder())
    tiny = Recorder(rooms=("room",))
    nowhere.route("/on", tiny, compression=True, compression_threshold=0)
    for app in (everywhere, nowhere):
        base = await serve_native(app)
        on, off = await connect(base + "/on"), await connect(base + "/off")
        clients.extend([on, off])
        assert "permessage-deflate" in on.response.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in off.response.headers

    # The route's own threshold (0): even a 5-byte message goes out compressed.
    await within(tiny.connected.get())
    reader, writer, head = await raw_handshake(port_of(base), "/on", OFFER)
    assert b"permessage-deflate" in head
    await within(tiny.connected.get())
    await nowhere.hub.broadcast_to_room("room", SocketMessage.Text("hello"))
    first, body = await within(read_frame(reader))
    writer.close()
    assert first == 0xC1 and inflate(body) == b"hello"
    assert await within(clients[2].recv()) == "hello"


async def test_the_protocols_own_frames_do_not_touch_the_shared_compression(
    serve_native: Serve, clients: list[ClientConnection]
) -> None:
    # Pings, pongs and closes are control frames, which permessage-deflate
    # never compresses; and data frames never pass through the protocol's
    # compressor (it would hold per-socket zlib state).
    room = Room(compression=True, ping_interval=0.05, ping_timeout=5)
    await room.start(serve_native)
    ws = await connect(room.url, ping_interval=None)
    clients.append(ws)
    await room.joined(1)
    conn = room.connection_of(0)
    (extension,) = conn._proto.extensions
    assert isinstance(extension, PerMessageDeflate)
    assert extension.local_no_context_takeover and extension.remote_no_context_takeover
    for n in range(3):
        await room.broadcast(json_message(n))
        assert await within(ws.recv()) == json_message(n)
        await within(await ws.ping(b"from the client"))
        await ws.send(json_message(n))  # compressed by the client
        event = await within(room.handler.events.get())
        while event[0] != "message":
            event = await within(room.handler.events.get())
        assert event[2] == SocketMessage.Text(json_message(n))
    assert not hasattr(extension, "encoder")  # never created: nothing was encoded by it
    assert not hasattr(extension, "decoder")  # one per inbound message, freed at its end
    await ws.close()
    assert ws.close_code == 1000


@pytest.mark.parametrize("fragmented", [False, True])
async def test_a_zip_bomb_is_closed_with_1009_without_inflating_it(
    serve_native: Serve, fragmented: bool
) -> None:
    room = Room(compression=True, max_message_size=64 * 1024)
    await room.start(serve_native)
    canary = await connect(room.url)
    reader, writer, head = await raw_handshake(port_of(room.url), "/ws", OFFER)
    assert b"permessage-deflate" in head
    await room.joined(2)

    # 50 MB of zeros deflate to about 50 KB: under the 64 KiB limit on the
    # wire, 800 times over it once inflated.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(b"\0" * 50_000_000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb[:-4]
    assert len(bomb) < 64 * 1024
    if fragmented:
        half = len(bomb) // 2
        frames = [masked(0x40 | Opcode.TEXT, bomb[:half]), masked(0x80 | Opcode.CONT, bomb[half:])]
    else:
        frames = [masked(0xC0 | Opcode.TEXT, bomb)]

    tracemalloc.start()
    try:
        writer.writelines(frames)
        assert await within(read_close_code(reader)) == 1009
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    writer.close()
    assert peak < 4 * 2**20, f"{peak} bytes allocated: the message was inflated"

    # The room goes on.
    await room.broadcast(json_message(1))
    assert await within(canary.recv()) == json_message(1)
    await canary.close()


async def test_compressed_messages_within_the_limit_are_received(serve_native: Serve) -> None:
    room = Room(compression=True, max_message_size=64 * 1024)
    await room.start(serve_native)
    _, writer, _ = await raw_handshake(port_of(room.url), "/ws", OFFER)
    await room.joined(1)
    text = json_message(5, 60_000)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = (compressor.compress(text.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    writer.write(masked(0xC0 | Opcode.TEXT, body))
    event = await within(room.handler.events.get())
    while event[0] != "message":
        event = await within(room.handler.events.get())
    assert event[2] == SocketMessage.Text(text)
    writer.close()


async def test_the_asgi_door_leaves_compression_to_the_asgi_server(
    clients: list[ClientConnection],
) -> None:
    # uvicorn negotiates permessage-deflate itself (--ws-per-message-deflate,
    # on by default); StreamServer(compression=...) cannot change what it does.
    results: dict[tuple[bool, bool], bool] = {}
    for ours in (False, True):
        for uvicorns in (False, True):
            app = StreamServer(compression=ours)
            app.route("/ws", Recorder())
            runner = UvicornRunner(app, ws_per_message_deflate=uvicorns)
            await runner.start()
            try:
                ws = await connect(f"ws://127.0.0.1:{runner.port}/ws")
                results[ours, uvicorns] = "Sec-WebSocket-Extensions" in ws.response.headers
                await ws.close()
            finally:
                await runner.stop()
    assert results == {(False, False): False, (True, False): False,
                       (False, True): True, (True, True): True}
