"""Keepalive and slow consumers, over real sockets."""

from __future__ import annotations

import asyncio
import logging

from websockets.asyncio.client import connect

from nucleus.stream import SocketMessage, StreamServer

from .conftest import Serve
from .helpers import Recorder, port_of, raw_handshake, read_close_code, within


class _Signal(logging.Handler):
    """Sets an event when a log record containing ``needle`` is emitted."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.set()


async def test_keepalive_drops_a_peer_that_stops_answering_pings(serve_native: Serve) -> None:
    handler = Recorder()
    server = StreamServer(ping_interval=0.2, ping_timeout=0.3)
    server.route("/ws", handler)
    base = await serve_native(server)
    async with connect(f"{base}/ws", ping_interval=None) as healthy:
        healthy_socket = await within(handler.connected.get())
        # A peer that completes the handshake, then never reads or answers again.
        _reader, writer, head = await raw_handshake(port_of(base), "/ws")
        assert head.startswith(b"HTTP/1.1 101")
        dead_socket = await within(handler.connected.get())
        gone = await within(handler.disconnected.get(), 5)
        assert gone == dead_socket.id
        # The healthy client answered the same pings and is still served.
        assert await server.hub.connection_count() == 1
        await server.hub.send_to(healthy_socket.id, SocketMessage.Text("still here"))
        assert await within(healthy.recv()) == "still here"
        writer.close()


async def test_slow_consumer_is_closed_with_1013_and_others_get_everything(
    serve: Serve,
) -> None:
    handler = Recorder(rooms=("feed",))
    server = StreamServer(max_send_queue=64 * 1024, close_timeout=30)
    server.route("/ws", handler)
    base = await serve(server)
    signal = _Signal("closing slow consumer")
    logging.getLogger("nucleus.stream").addHandler(signal)
    try:
        async with connect(f"{base}/ws", max_size=None, max_queue=None) as canary:
            await within(handler.connected.get())
            reader, writer, head = await raw_handshake(port_of(base), "/ws", rcvbuf=4096)
            assert head.startswith(b"HTTP/1.1 101")
            slow = await within(handler.connected.get())

            count, payload = 20_000, "x" * 1000
            received: list[int] = []

            async def read_canary() -> None:
                while len(received) < count:
                    received.append(int(str(await canary.recv()).split(":")[0]))

            reading = asyncio.create_task(read_canary())
            for n in range(count):
                await server.hub.broadcast_to_room("feed", SocketMessage.Text(f"{n}:{payload}"))
                if n % 50 == 0:
                    await asyncio.sleep(0)  # let the loop flush, as any real publisher does
            await within(signal.seen.wait(), 30)
            await within(reading, 60)
            assert received == list(range(count))

            # The slow client reads at last: its stream ends with a 1013 close frame.
            assert await within(read_close_code(reader), 30) == 1013
            writer.close()  # end the TCP connection as a client does after a close frame
            assert await within(handler.disconnected.get(), 30) == slow.id
            assert slow.id not in await server.hub.room_members("feed")
            assert server.metrics is not None  # /metrics counts it
            assert server.metrics.slow_consumers._value.get() == 1
    finally:
        logging.getLogger("nucleus.stream").removeHandler(signal)


async def test_closing_a_socket_whose_peer_already_left_is_quiet(serve_native: Serve) -> None:
    handler = Recorder()
    server = StreamServer()
    server.route("/ws", handler)
    base = await serve_native(server)
    _reader, writer, _ = await raw_handshake(port_of(base), "/ws")
    socket = await within(handler.connected.get())
    assert server._native is not None
    (conn,) = server._native.connections
    # asyncio reports the peer's FIN before connection_lost: a shutdown (or the
    # app) closing the socket in between must not fail on a finished protocol.
    conn.eof_received()
    assert not socket.is_open
    await socket.close(1001)
    writer.close()
    assert await within(handler.disconnected.get()) == socket.id
