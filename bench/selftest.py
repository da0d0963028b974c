"""
``python -m bench.selftest``: check the load generator against awkward framing.

A small raw RFC 6455 server (asyncio streams, no library) serves the bench
contract but frames deliveries in four ways, one per subscriber in turn:
plainly; split into a few TCP writes; fragmented (§5.4) with a ping between
fragments; and with a needless 64-bit length after a ping. It checks that every
client frame is masked and that every pong echoes its ping. Payload sizes of
100, 300 and 65,536 bytes cover 7-, 16- and 64-bit lengths; a handshakes run
and an opens run cover the closing handshake. Ends with a "N passed, N failed" line.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import BenchError
from .loadgen import Loadgen, build
from .system import free_port

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_PING_PAYLOADS = (b"mid", b"hello")


def _frame(opcode: int, payload: bytes, *, fin: bool = True, force64: bool = False) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if force64 or n >= 65536:
        return bytes([first, 127]) + struct.pack("!Q", n) + payload
    if n >= 126:
        return bytes([first, 126]) + struct.pack("!H", n) + payload
    return bytes([first, n]) + payload


class AwkwardServer:
    """The bench contract with awkward server framing; counts protocol faults."""

    def __init__(self) -> None:
        self.faults: list[str] = []
        self.pongs = 0
        self._subscribers: list[tuple[int, asyncio.StreamWriter]] = []
        self._handlers: dict[asyncio.Task[object], asyncio.StreamWriter] = {}

    async def aclose(self) -> None:
        """Close every connection still open and wait for its handler to finish."""
        for writer in self._handlers.values():
            writer.close()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=10)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers[task] = writer
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            lines = head.split("\r\n")
            path = lines[0].split()[1]
            key = next(
                line.split(":", 1)[1].strip()
                for line in lines
                if line.lower().startswith("sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
            )
            if path == "/sub":
                self._subscribers.append((len(self._subscribers) % 4, writer))
            while True:
                opcode, data = await self._read_frame(reader)
                if opcode == 0xA:
                    self.pongs += 1
                    if data not in _PING_PAYLOADS:
                        self.faults.append(f"pong with payload {data!r}")
                elif opcode == 0x8:
                    writer.write(_frame(0x8, data))
                    await writer.drain()
                    return
                elif opcode == 0x1 and path == "/pub":
                    await asyncio.gather(
                        *(
                            self._deliver(style, sub, data)
                            for style, sub in list(self._subscribers)
                        ),
                        return_exceptions=True,  # a subscriber gone at the end is not a fault
                    )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._handlers.pop(task, None)
            writer.close()

    async def _read_frame(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        first, second = await reader.readexactly(2)
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await reader.readexactly(8))
        if not second & 0x80:
            self.faults.append("unmasked client frame")
            return first & 0x0F, await reader.readexactly(n)
        mask = await reader.readexactly(4)
        data = bytearray(await reader.readexactly(n))
        for i in range(n):
            data[i] ^= mask[i % 4]
        return first & 0x0F, bytes(data)

    async def _deliver(self, style: int, writer: asyncio.StreamWriter, payload: bytes) -> None:
        if style == 0:
            writer.write(_frame(0x1, payload))
        elif style == 1:  # a few TCP writes, each splitting the frame anywhere
            data = _frame(0x1, payload)
            step = max(1, len(data) // 7)
            for start in range(0, len(data), step):
                writer.write(data[start : start + step])
                await writer.drain()
                await asyncio.sleep(0.0005)
        elif style == 2:  # fragments with a control frame in between
            writer.write(
                _frame(0x1, payload[:10], fin=False)
                + _frame(0x9, b"mid")
                + _frame(0x0, payload[10:50], fin=False)
            )
            await writer.drain()
            await asyncio.sleep(0.001)
            writer.write(_frame(0x0, payload[50:]))
        else:
            writer.write(_frame(0x9, b"hello") + _frame(0x1, payload, force64=True))
        await writer.drain()


@contextmanager
def _serving(server: AwkwardServer, port: int) -> Iterator[None]:
    """Serve on 127.0.0.1:``port`` from a thread with its own event loop."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with await asyncio.start_server(server.handle, "127.0.0.1", port):
            started.set()
            await stop.wait()
            await server.aclose()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not started.wait(10):
        raise BenchError("self-test server did not start")
    try:
        yield
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def main() -> int:
    loadgen = Loadgen(build(), cpu=None)
    cases: list[tuple[str, str, dict[str, object]]] = [
        (f"latency, {size}-byte messages", "latency", {"size": size}) for size in (100, 300, 65536)
    ]
    cases.append(("handshakes and closing", "handshakes", {}))
    cases.append(("rounds of connections held open, then closed", "opens", {}))
    passed = failed = 0
    for name, mode, extra in cases:
        server = AwkwardServer()
        port = free_port()
        options: dict[str, object] = {"subscribers": 8, "rate": 50, "warmup": 0.2, "duration": 1}
        if mode == "handshakes":
            options = {"concurrency": 4, "warmup": 0.2, "duration": 1}
        elif mode == "opens":
            options = {"subscribers": 50, "connect_concurrency": 8, "warmup": 0.2, "duration": 1}
        options.update(extra)
        problems: list[str] = []
        try:
            with _serving(server, port):
                result = loadgen.run(mode, port, options, timeout=60, on_progress=lambda _: None)
        except BenchError as exc:
            problems.append(str(exc))
        else:
            check = result.get("check", {})
            if mode == "latency" and not check.get("ok"):
                problems.append(f"delivery check failed: {check}")
            if mode == "latency" and server.pongs == 0:
                problems.append("no pongs came back")
            if mode == "opens" and result["handshakes"] != 50 * result["rounds"]:
                problems.append(f"{result['handshakes']} handshakes in {result['rounds']} rounds")
            if mode in ("handshakes", "opens") and (result["errors"] or not result["handshakes"]):
                problems.append(f"{result['errors']} errors, {result['handshakes']} handshakes")
            problems += server.faults
        status = "ok" if not problems else "FAILED: " + "; ".join(problems[:3])
        print(f"{name}: {status}")
        passed += not problems
        failed += bool(problems)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
