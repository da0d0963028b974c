"""
Tools for the fault tests: a private Redis, a TCP proxy we can cut, node processes.

- :class:`PrivateRedis` is a ``redis-server`` of the test's own on a free port,
  without persistence, that the test may kill, restart or ``CLIENT KILL`` without
  touching the shared one.
- :class:`TcpProxy` forwards TCP to the first upstream that answers (a load
  balancer in front of nodes, or a link to Redis); it can stop (connections
  reset, new ones refused), stall (bytes held back, like a partition) and add
  latency (a slow network), each in order.
- :class:`NodeProcess` is ``python -m nucleus serve <app> --port 0`` in a
  child process, with ``NUCLEUS_BACKEND`` set; SIGKILL it to simulate a crash.
- :class:`Cluster` owns what a test starts (in-process nodes on one key
  prefix, processes, proxies, clients, publishers) and closes it all, in
  order, at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from nucleus.stream import HistoryPolicy, RedisBackend, StreamHub, StreamServer

from .apps.chat_node import Chat
from .backends import delete_prefix, new_prefix, redis_reachable
from .counting import ROOM, Publisher
from .helpers import within
from .tagged_client import TaggedClient

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own: no persistence, ours to kill and restart (same port)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed"
        self.binary = binary
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="nucleus-redis-")

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    async def start(self) -> None:
        for _ in range(5):  # a free port may be taken between choosing and binding it
            self.port = self.port or free_port()
            self.proc = await asyncio.create_subprocess_exec(
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self._dir.name,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            if await self._answers():
                return
            await self.kill()
            self.port = 0
        raise AssertionError("could not start a private redis-server")

    async def _answers(self) -> bool:
        client = aioredis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            for _ in range(250):
                if self.proc is None or self.proc.returncode is not None:
                    return False
                try:
                    return bool(await client.ping())
                except (aioredis.ConnectionError, OSError):
                    await asyncio.sleep(0.02)
            return False
        finally:
            await client.aclose()

    async def kill(self) -> None:
        """SIGKILL: everything in memory is lost, every client is cut."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await within(self.proc.wait())
        self.proc = None

    async def restart(self) -> None:
        await self.kill()
        await self.start()

    def client(self) -> aioredis.Redis:
        return aioredis.Redis(port=self.port)

    async def aclose(self) -> None:
        await self.kill()
        self._dir.cleanup()


class TcpProxy:
    """
    Forwards each accepted connection to the first of ``upstreams`` that accepts.

    ``stop()`` resets every connection and refuses new ones until ``start()``
    (on the same port); ``stall()`` holds every byte back, as a network
    partition does, until ``resume()``; ``latency`` delays each chunk in each
    direction (order is kept).
    """

    def __init__(self, *upstreams: tuple[str, int], latency: float = 0.0) -> None:
        self.upstreams = list(upstreams)
        self.latency = latency
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and reset the open ones."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for pipe in list(self._pipes):
            pipe.cancel()
        await within(asyncio.gather(*self._pipes, return_exceptions=True))
        if server is not None:
            await within(server.wait_closed())  # every connection is gone now

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        try:
            await self._flowing.wait()
            for host, port in self.upstreams:
                try:
                    up_reader, up_writer = await asyncio.open_connection(host, port)
                    break
                except OSError:
                    continue
            else:
                return
            self._writers.add(up_writer)
            try:
                async with asyncio.TaskGroup() as group:
                    for task in (group.create_task(self._pump(reader, up_writer)),
                                 group.create_task(self._pump(up_reader, writer))):
                        self._pipes.add(task)
                        task.add_done_callback(self._pipes.discard)
            except* (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                up_writer.transport.abort()
                self._writers.discard(up_writer)
        finally:
            writer.transport.abort()
            self._writers.discard(writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, data = await chunks.get()
                if not data:  # the sender finished: pass its FIN on
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                await self._flowing.wait()
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(forward())
        try:
            while data := await reader.read(65536):
                chunks.put_nowait((loop.time() + self.latency, data))
            chunks.put_nowait((loop.time() + self.latency, b""))
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender

    async def aclose(self) -> None:
        self.resume()
        await self.stop()


class NodeProcess:
    """A server process: ``python -m nucleus serve <app>`` with a backend URL."""

    def __init__(self, app: str, backend: str, port: int = 0) -> None:
        self.app = app
        self.backend = backend
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
               "PYTHONUNBUFFERED": "1", "NUCLEUS_BACKEND": self.backend}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nucleus", "serve", self.app, "--port", str(self.port),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT)
        assert self.proc.stderr is not None
        while True:
            line = (await within(self.proc.stderr.readline(), 20)).decode()
            if not line:
                raise AssertionError(f"{self.app} exited early:\n" + "".join(self.log))
            self.log.append(line)
            found = re.search(r"listening on ws://[\d.]+:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                break
        self._drain = asyncio.ensure_future(self._read_log(self.proc.stderr))

    async def _read_log(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.log.append(line.decode())

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no close frames; the kernel resets its sockets."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await within(self.proc.wait())

    async def aclose(self) -> None:
        await self.kill()
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)


@dataclass
class Node:
    """A node in this process (so that its logs can be read): a server on a RedisBackend."""

    server: StreamServer
    backend: RedisBackend
    url: str

    @property
    def hub(self) -> StreamHub:
        return self.server.hub


class Cluster:
    """What a fault test starts, on one key prefix; closed in order at the end."""

    def __init__(self) -> None:
        self.prefix = new_prefix()
        self.servers: list[StreamServer] = []
        self.clients: list[TaggedClient] = []
        self.publishers: list[Publisher] = []
        self.processes: list[NodeProcess] = []
        self.proxies: list[TcpProxy] = []

    async def node(self, redis_url: str, history: int = 1000, **options: Any) -> Node:
        """A chat node (tests.apps.chat_node) keeping ``history`` messages per room."""
        options.setdefault("presence_timeout", 2.0)
        options.setdefault("probe_interval", 0.25)
        options.setdefault("timeout", 1.0)
        backend = RedisBackend(redis_url, prefix=self.prefix, **options)
        server = StreamServer(backend=backend)
        server.route("/ws", Chat(), rate_limit=None)
        server.history("*", HistoryPolicy(size=history, ttl=300))
        return Node(server, backend, await self.serve(server))

    async def serve(self, server: StreamServer) -> str:
        """Start ``server`` (any backend); its WebSocket URL."""
        self.servers.append(server)
        host, port = await server.start("127.0.0.1", 0)
        return f"ws://{host}:{port}/ws"

    async def spawn(self, app: str, backend: str, count: int) -> list[NodeProcess]:
        """``count`` node processes serving ``app``, started concurrently."""
        started = [NodeProcess(app, backend) for _ in range(count)]
        self.processes.extend(started)
        await asyncio.gather(*(node.start() for node in started))
        return started

    async def proxy(self, *upstreams: tuple[str, int], latency: float = 0.0) -> TcpProxy:
        proxy = TcpProxy(*upstreams, latency=latency)
        self.proxies.append(proxy)
        await proxy.start()
        return proxy

    async def client(self, url: str, user: str | None = None, room: str = ROOM) -> TaggedClient:
        """A library client subscribed to ``room`` (its ``joined`` received)."""
        client = TaggedClient(f"{url}?user={user}" if user else url)
        self.clients.append(client)
        await client.open(room)
        joined = await client.next_control("joined")
        assert joined["channel"] == room
        return client

    def publisher(self, hub: StreamHub) -> Publisher:
        publisher = Publisher(hub)
        self.publishers.append(publisher)
        publisher.start()
        return publisher

    async def aclose(self) -> None:
        for publisher in self.publishers:
            await publisher.stop()
        for client in self.clients:
            if client.ws is not None:
                client.ws.transport.abort()
            await client.wait_closed()
        for server in self.servers:
            await server.aclose()
        for process in self.processes:
            await process.aclose()
        for proxy in self.proxies:
            await proxy.aclose()
        if redis_reachable():
            await delete_prefix(self.prefix)  # what nodes on the shared Redis left


def host_port_db(url: str) -> tuple[str, int, str]:
    """``redis://host:port/db`` -> (host, port, db)."""
    location, _, db = url.split("//", 1)[1].partition("/")
    host, _, port = location.rpartition(":")
    return host, int(port), db or "0"
