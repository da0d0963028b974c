"""
Compression on the fan-out path: 1 KB JSON messages to N subscribers.

Nucleus Stream with permessage-deflate off and on (``StreamServer(compression=...)``:
each message compressed once, the same frame for every subscriber) next to the
websockets library's ``broadcast()`` without compression and with its default
one (``serve(compression="deflate")``: each connection compresses every message
with its own compressor, keeping context between messages).

    PYTHONPATH=src python -m bench.compression                 # 1000 subscribers, 8 s each
    PYTHONPATH=src python -m bench.compression --subscribers 200 --duration 3 --repeat 3
    PYTHONPATH=src python -m bench.compression --smoke          # a few seconds, for tests

Each server runs in its own process pinned to one core (``--server-cpu``);
this process, pinned to the other (``--client-cpu``), is every client. The
subscribers offer permessage-deflate as Chromium does
(``permessage-deflate; client_max_window_bits``) and the server decides.

Figures, over the measured window after a warm-up:

- deliveries/s: messages received in full by every subscriber, times N, per second;
- bytes per delivery: WebSocket bytes (frame headers and payload, without
  TCP/IP) a subscriber received per message;
- server CPU s per million deliveries (utime+stime from ``/proc``), and this
  process's share of its core (near 100 %: the clients were the limit).

How it keeps up with a fast server in Python: one subscriber (the checker)
parses every frame, inflates it and compares it with the message sent; it
records where each message ends in its byte stream. Every other subscriber only
counts the bytes it reads. A message is complete when every subscriber has read
up to where it ends for the checker, so every subscriber must receive exactly
the checker's bytes: the run fails if one got more or fewer once drained. The
publisher keeps ``--window`` messages in flight (a message is in flight until
complete). Keepalive pings are off on both servers so that nothing but the
messages travels. Every subscriber first sends one message and waits for the
server's answer, so all are in the room before the first broadcast.

Standalone (nothing here is shared with ``python -m bench``); results go to
stdout as a Markdown table, and to ``--out`` as JSON if asked.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import re
import resource
import signal
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from websockets.frames import Frame, Opcode

REPO = Path(__file__).resolve().parents[1]
ROOM = "bench"
TAIL = b"\x00\x00\xff\xff"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: What Chromium offers: every browser page that opens a WebSocket sends this.
OFFER = "permessage-deflate; client_max_window_bits"
MESSAGE_SIZE = 1024
DRAIN_TIMEOUT = 30.0

#: name: (library, compression, label)
SERVERS: dict[str, tuple[str, bool, str]] = {
    "nucleus": ("nucleus", False, "Nucleus Stream, compression off"),
    "nucleus-deflate": ("nucleus", True, "Nucleus Stream, `compression=True`"),
    "websockets": ("websockets", False, "websockets `broadcast()`, `compression=None`"),
    "websockets-deflate": ("websockets", True,
                           "websockets `broadcast()`, default compression (`\"deflate\"`)"),
}


# -- the messages ------------------------------------------------------------------

_LABELS = ("boiler room", "north wing", "loading dock", "server hall", "roof", "lab 2")
_UNITS = ("°C", "kPa", "%RH", "ppm", "lx")
_STATUS = ("ok", "ok", "ok", "warn", "stale")


def message(seq: int) -> bytes:
    """
    A dashboard update of exactly 1024 bytes of JSON: a sequence number, a
    time, and sensor readings drawn from a generator seeded with ``seq``
    (field names repeat, values do not).
    """
    rng = random.Random(seq)
    readings: list[dict[str, Any]] = []
    doc: dict[str, Any] = {"type": "readings", "seq": seq, "ts": 1_767_225_600_000 + seq * 37,
                           "site": "plant-eu-1", "readings": readings, "note": ""}
    while True:
        readings.append({"sensor": f"s-{rng.randrange(10_000):04d}", "where": rng.choice(_LABELS),
                         "value": round(rng.uniform(-40, 120), 2), "unit": rng.choice(_UNITS),
                         "status": rng.choice(_STATUS)})
        if len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()) > MESSAGE_SIZE:
            readings.pop()
            break
    size = len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())
    doc["note"] = "." * (MESSAGE_SIZE - size)
    data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(data) == MESSAGE_SIZE
    return data


def client_frame(payload: bytes) -> bytes:
    """A final, masked client text frame (RFC 6455 §5.3)."""
    return Frame(Opcode.TEXT, payload).serialize(mask=True)


def parse_frame(buf: bytes | bytearray, at: int) -> tuple[int, int, int] | None:
    """``(first byte, payload start, payload end)`` of the server frame at ``at``, if complete."""
    if len(buf) - at < 2:
        return None
    first, length, start = buf[at], buf[at + 1] & 0x7F, at + 2
    if length == 126:
        if len(buf) - at < 4:
            return None
        length, start = int.from_bytes(buf[at + 2:at + 4], "big"), at + 4
    elif length == 127:
        if len(buf) - at < 10:
            return None
        length, start = int.from_bytes(buf[at + 2:at + 10], "big"), at + 10
    if len(buf) < start + length:
        return None
    return first, start, start + length


@dataclass
class Negotiated:
    """What the server's ``Sec-WebSocket-Extensions`` answer means for inflating."""

    deflate: bool = False
    context_takeover: bool = True
    window_bits: int = 15

    @classmethod
    def parse(cls, header: str | None) -> Negotiated:
        if not header or not header.strip().startswith("permessage-deflate"):
            return cls()
        params = [p.strip() for p in header.split(";")[1:]]
        bits = [int(p.split("=")[1]) for p in params if p.startswith("server_max_window_bits=")]
        return cls(True, "server_no_context_takeover" not in params, bits[0] if bits else 15)


# -- the clients --------------------------------------------------------------------


class Failure(Exception):
    """The run cannot be trusted: say why."""


class Subscriber(asyncio.Protocol):
    """
    Handshake, one message out and its answer back, then count bytes (the
    checker parses and verifies everything instead).
    """

    def __init__(self, run: Run, checker: bool) -> None:
        self.run = run
        self.checker = checker
        self.n = 0  # bytes received after the server's answer
        self.buf = bytearray()
        self.at = 0
        self.phase = "handshake"
        self.negotiated = Negotiated()
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.transport: asyncio.Transport | None = None
        self.ready = run.loop.create_future()
        self.inflater: Any = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.write((
            f"GET /sub HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: {OFFER}\r\n\r\n"
        ).encode())

    def data_received(self, data: bytes) -> None:
        run = self.run
        if self.phase == "count":  # the hot path: most subscribers, most of the time
            self.n += len(data)
            if not run.check_pending:
                run.check_pending = True
                run.loop.call_soon(run.check)
            return
        try:
            self.buf += data
            if self.phase == "verify":
                self.n += len(data)
            elif self.phase == "handshake":
                self._handshake()
            if self.phase == "answer":
                self._answer()  # sets n to what came after the answer
            if self.phase == "verify" and self.buf:
                self._verify()
                if not run.check_pending:
                    run.check_pending = True
                    run.loop.call_soon(run.check)
        except Failure as exc:
            run.fail(str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.run.stopping:
            self.run.fail(f"a subscriber's connection was lost ({exc or 'closed by the server'})")
        if not self.ready.done():
            self.ready.set_exception(Failure("connection lost during setup"))

    def _handshake(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].decode("latin-1")
        del self.buf[:end + 4]
        if not head.startswith("HTTP/1.1 101"):
            raise Failure(f"upgrade refused: {head.splitlines()[0]!r}")
        headers = {}
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(self.key.encode() + GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise Failure("wrong Sec-WebSocket-Accept")
        self.negotiated = Negotiated.parse(headers.get("sec-websocket-extensions"))
        if self.negotiated.deflate and self.negotiated.context_takeover:
            self.inflater = zlib.decompressobj(-self.negotiated.window_bits)
        assert self.transport is not None
        self.transport.write(client_frame(b"hello"))
        self.phase = "answer"

    def _answer(self) -> None:
        frame = parse_frame(self.buf, 0)
        if frame is None:
            return
        first, start, end = frame
        self._payload(first, bytes(self.buf[start:end]))  # keeps a shared inflater in step
        self.n = len(self.buf) - end
        del self.buf[:end]
        self.phase = "verify" if self.checker else "count"
        if not self.checker and self.buf:
            raise Failure("data before the first broadcast")
        self.ready.set_result(None)

    def _payload(self, first: int, data: bytes) -> bytes:
        if not first & 0x40:
            return data
        if self.inflater is not None:  # context takeover: one stream across messages
            return bytes(self.inflater.decompress(data + TAIL))
        return zlib.decompressobj(-self.negotiated.window_bits).decompress(data + TAIL)

    def _verify(self) -> None:
        run, buf = self.run, self.buf
        at = self.at
        while (frame := parse_frame(buf, at)) is not None:
            first, start, end = frame
            if first & 0x0F != 0x1 or not first & 0x80:
                raise Failure(f"unexpected frame (first byte {first:#04x})")
            seq = len(run.ends)
            if seq >= len(run.messages):
                raise Failure("more messages than were sent")
            if self._payload(first, bytes(buf[start:end])) != run.messages[seq]:
                raise Failure(f"message {seq} arrived altered")
            run.compressed += 1 if first & 0x40 else 0
            run.ends.append((run.ends[-1] if run.ends else 0) + end - at)
            at = end
        if at > 65536:
            del buf[:at]
            at = 0
        self.at = at


class Publisher(asyncio.Protocol):
    def __init__(self, run: Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.ready = run.loop.create_future()
        self.head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((
            f"GET /pub HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        if not self.ready.done():
            self.head += data
            if b"\r\n\r\n" in self.head:
                if self.head.startswith(b"HTTP/1.1 101"):
                    self.ready.set_result(None)
                else:
                    self.ready.set_exception(Failure("the publisher's upgrade was refused"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.run.stopping:
            self.run.fail(f"the publisher's connection was lost ({exc or 'closed'})")


@dataclass
class Result:
    server: str
    label: str
    subscribers: int
    negotiated: str
    deliveries_per_s: float
    bytes_per_delivery: float
    payload_bytes: int
    compressed_share: float
    server_cpu_s_per_million: float
    server_core_share: float
    client_core_share: float
    other_load: float
    messages: int
    checks: dict[str, Any] = field(default_factory=dict)


class Run:
    """One server, one subscriber count: set up, publish, measure, drain, check."""

    def __init__(self, port: int, subscribers: int, window: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.port = port
        self.count = subscribers
        self.window = window
        self.subs: list[Subscriber] = []
        self.messages: list[bytes] = []
        self.frames: list[bytes] = []
        self.ends: list[int] = []  # where each message ends in every subscriber's stream
        self.completed = 0
        self.compressed = 0
        self.check_pending = False
        self.publishing = False
        self.stopping = False
        self.failure: str | None = None
        self.failed = self.loop.create_future()
        self.publisher: Publisher | None = None

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            if not self.failed.done():
                self.failed.set_result(None)

    def check(self) -> None:
        self.check_pending = False
        ends, done = self.ends, self.completed
        if done >= len(ends):
            return
        low = min(sub.n for sub in self.subs)
        while done < len(ends) and ends[done] <= low:
            done += 1
        if done != self.completed:
            self.completed = done
            self.publish()

    def publish(self) -> None:
        if not self.publishing or self.publisher is None or self.publisher.transport is None:
            return
        limit = self.completed + self.window
        out = []
        while len(self.messages) < limit:
            seq = len(self.messages)
            self.messages.append(message(seq))
            out.append(client_frame(self.messages[seq]))
        if out:
            self.publisher.transport.writelines(out)

    async def setup(self) -> None:
        """Connect every subscriber (64 handshakes at a time), then the publisher."""
        slots = asyncio.Semaphore(64)
        async with asyncio.TaskGroup() as group:  # one failure cancels the rest
            for index in range(self.count):
                sub = Subscriber(self, checker=index == 0)
                self.subs.append(sub)
                group.create_task(self._connect(sub, slots))
        _, publisher = await self.loop.create_connection(
            lambda: Publisher(self), "127.0.0.1", self.port)
        await asyncio.wait_for(publisher.ready, 30)
        self.publisher = publisher

    async def _connect(self, sub: Subscriber, slots: asyncio.Semaphore) -> None:
        async with slots:
            await self.loop.create_connection(lambda: sub, "127.0.0.1", self.port)
            await asyncio.wait_for(sub.ready, 60)

    async def drain(self) -> None:
        """Stop publishing; wait until every message sent has reached every subscriber."""
        self.publishing = False
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                while self.completed < len(self.messages) and self.failure is None:
                    self.check()
                    await asyncio.sleep(0.01)
        except TimeoutError:
            missing = len(self.messages) - self.completed
            raise Failure(f"{missing} messages never reached every subscriber") from None

    def close(self) -> None:
        self.stopping = True
        for sub in self.subs:
            if sub.transport is not None:
                sub.transport.abort()
        if self.publisher is not None and self.publisher.transport is not None:
            self.publisher.transport.abort()


def core_busy() -> tuple[float, float]:
    """Seconds every core has been busy and has existed, summed (from /proc/stat)."""
    busy = total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, line.split()[1:9])
            busy += (user + nice + system + irq + softirq + steal) / tick
            total += (user + nice + system + idle + iowait + irq + softirq + steal) / tick
    return busy, total


async def wait_quiet(patience: float) -> float:
    """Wait (at most ``patience`` s) until the machine is idle; return its load when done."""
    deadline = time.monotonic() + patience
    while True:
        b0, t0 = core_busy()
        await asyncio.sleep(0.5)
        b1, t1 = core_busy()
        load = (b1 - b0) / max(t1 - t0, 1e-9)
        if load < 0.10 or time.monotonic() > deadline:
            return load


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(name: str, server_pid: int, port: int, args: argparse.Namespace) -> Result:
    run = Run(port, args.subscribers, args.window)
    try:
        await asyncio.wait_for(run.setup(), 120)
        if run.failure:
            raise Failure(run.failure)
        run.publishing = True
        run.publish()
        await asyncio.wait([run.failed], timeout=args.warmup)
        t0, c0, s0, o0 = time.monotonic(), run.completed, process_cpu(server_pid), own_cpu()
        busy0, _ = core_busy()
        await asyncio.wait([run.failed], timeout=args.duration)
        t1, c1, s1, o1 = time.monotonic(), run.completed, process_cpu(server_pid), own_cpu()
        busy1, _ = core_busy()
        if run.failure is None:
            await run.drain()
        if run.failure:
            raise Failure(run.failure)
        expected = run.ends[-1]
        wrong = [sub.n for sub in run.subs if sub.n != expected]
        if wrong:
            raise Failure(f"{len(wrong)} subscribers received other bytes than the checker "
                          f"({sorted(set(wrong))[:5]} against {expected})")
        if c1 <= c0:
            raise Failure("no message completed in the measured window")
        elapsed, messages = t1 - t0, c1 - c0
        deliveries = messages * args.subscribers
        wire = run.ends[c1 - 1] - (run.ends[c0 - 1] if c0 else 0)
        negotiated = run.subs[0].negotiated
        return Result(
            server=name,
            label=SERVERS[name][2],
            subscribers=args.subscribers,
            negotiated=("none" if not negotiated.deflate else
                        f"deflate, window {negotiated.window_bits}, "
                        + ("context takeover" if negotiated.context_takeover
                           else "no context takeover")),
            deliveries_per_s=deliveries / elapsed,
            bytes_per_delivery=wire / messages,
            payload_bytes=MESSAGE_SIZE,
            compressed_share=run.compressed / len(run.ends),
            server_cpu_s_per_million=(s1 - s0) / deliveries * 1e6,
            server_core_share=(s1 - s0) / elapsed,
            client_core_share=(o1 - o0) / elapsed,
            other_load=max(0.0, (busy1 - busy0) - (s1 - s0) - (o1 - o0)) / elapsed,
            messages=len(run.messages),
            checks={"verified_messages": len(run.ends), "subscribers_equal": True},
        )
    finally:
        run.close()


# -- the servers (each in its own process) --------------------------------------------


async def serve_nucleus(compression: bool) -> None:
    from nucleus.stream import SocketMessage, StreamHandler, StreamHub, StreamServer, WebSocket

    class Sub(StreamHandler):
        async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
            await hub.join_room(socket.id, ROOM)

        async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
            await socket.send(SocketMessage.Text("ready"))  # on_connect has finished: joined

    class Pub(StreamHandler):
        async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
            await hub.broadcast_to_room(ROOM, msg)

    server = StreamServer(compression=compression, ping_interval=None, serve_client=False)
    server.route("/sub", Sub())
    server.route("/pub", Pub(), rate_limit=None)
    _, port = await server.start("127.0.0.1", 0)
    print(f"port {port}", flush=True)
    await _until_signal()
    await server.aclose()


async def serve_websockets(compression: bool) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.exceptions import ConnectionClosed

    subscribers: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request else ""
        try:
            if path == "/sub":
                subscribers.add(ws)
                async for _ in ws:
                    await ws.send("ready")
            elif path == "/pub":
                async for data in ws:
                    broadcast(subscribers, data)
        except ConnectionClosed:
            pass  # the harness aborts its connections when a run ends
        finally:
            subscribers.discard(ws)

    async with serve(handler, "127.0.0.1", 0, backlog=1024, ping_interval=None,
                     compression="deflate" if compression else None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"port {port}", flush=True)
        await _until_signal()


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def serve_main(name: str) -> None:
    import uvloop

    library, compression = SERVERS[name][:2]
    serve = serve_nucleus if library == "nucleus" else serve_websockets
    uvloop.run(serve(compression))


# -- the harness -------------------------------------------------------------------------


async def one(name: str, args: argparse.Namespace) -> Result:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH")]))}
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {args.server_cpu})  # the child inherits it
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.compression", "serve", name,
            cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE)
    finally:
        os.sched_setaffinity(0, saved)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.fullmatch(r"port (\d+)\n", line)
        if match is None:
            raise Failure(f"the {name} server did not start: {line!r}")
        return await measure(name, proc.pid, int(match.group(1)), args)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def median_result(results: list[Result]) -> Result:
    chosen = sorted(results, key=lambda r: r.deliveries_per_s)[len(results) // 2]
    chosen.checks["repeats_deliveries_per_s"] = [round(r.deliveries_per_s) for r in results]
    return chosen


def table(results: list[Result]) -> str:
    lines = [
        "| server | negotiated | deliveries/s | bytes per delivery | of 1024-byte payload "
        "| server CPU s per M deliveries | client core |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        noisy = " ~" if r.other_load > 0.15 else ""
        lines.append(
            f"| {r.label} | {r.negotiated} | {r.deliveries_per_s / 1000:,.0f} k{noisy} "
            f"| {r.bytes_per_delivery:,.0f} | {r.bytes_per_delivery / r.payload_bytes:.0%} "
            f"| {r.server_cpu_s_per_million:.2f} | {r.client_core_share:.0%} |")
    if any(r.other_load > 0.15 for r in results):
        lines.append("\n~ other processes used more than 15 % of a core during the window")
    return "\n".join(lines)


async def harness(args: argparse.Namespace) -> tuple[list[Result], bool]:
    """Every server in turn; the results, and whether one failed."""
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.subscribers + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    os.sched_setaffinity(0, {args.client_cpu})
    results, failed = [], False
    for name in names:
        runs = []
        for attempt in range(args.repeat):
            load = await wait_quiet(args.quiet_wait)
            if load >= 0.10:
                print(f"{name}: the machine is busy ({load:.0%} of its cores) after waiting "
                      f"{args.quiet_wait:g} s; measuring anyway", file=sys.stderr)
            try:
                result = await one(name, args)
            except (Failure, OSError, TimeoutError, ExceptionGroup) as exc:
                print(f"{name}: FAILED: {exc}", file=sys.stderr)
                failed = True
                break
            print(f"{name} ({attempt + 1}/{args.repeat}): "
                  f"{result.deliveries_per_s / 1000:,.1f} k deliveries/s, "
                  f"{result.bytes_per_delivery:,.0f} B per delivery, "
                  f"client core {result.client_core_share:.0%}, "
                  f"other load {result.other_load:.0%} of a core", file=sys.stderr, flush=True)
            runs.append(result)
        if runs:
            results.append(median_result(runs))
    return results, failed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        serve_main(argv[1])
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.compression", description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated, from {', '.join(SERVERS)} (default: all)")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=int, default=32, help="messages in flight")
    parser.add_argument("--repeat", type=int, default=1, help="runs per server; the median")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--smoke", action="store_true",
                        help="20 subscribers, 0.5 s: checks that it all works, measures nothing")
    parser.add_argument("--quiet-wait", type=float, default=120.0,
                        help="wait up to this long for an idle machine before each run")
    parser.add_argument("--out", help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if args.smoke:
        args.subscribers, args.duration, args.warmup, args.quiet_wait = 20, 0.5, 0.25, 0.0
    unknown = [n for n in args.servers.split(",") if n.strip() and n.strip() not in SERVERS]
    if unknown:
        parser.error(f"unknown servers: {', '.join(unknown)} (known: {', '.join(SERVERS)})")
    import uvloop

    results, failed = uvloop.run(harness(args))
    print(f"\n{args.subscribers} subscribers, 1024-byte JSON messages, {args.window} in flight, "
          f"{args.duration:g} s windows, median of {args.repeat}:\n")
    print(table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"args": vars(args), "results": [asdict(r) for r in results]}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
