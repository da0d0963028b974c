"""
Shared fixtures: a real server on a real port, behind either front door.

``serve`` starts a :class:`StreamServer` on 127.0.0.1 port 0 through the
front door of the test's parameter (``native`` or ``asgi`` under uvicorn) and
returns its base ``ws://`` URL; everything is torn down after the test.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvicorn
import uvloop

from nucleus.stream import StreamServer

from .cluster import TcpProxy

Serve = Callable[[StreamServer], Awaitable[str]]
ProxyTo = Callable[[int], Awaitable[TcpProxy]]

FRONT_DOORS = ["native", "asgi"]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run the tests on uvloop, as ``StreamServer.run()`` does in production."""
    return {"uvloop": uvloop.new_event_loop}


class UvicornRunner:
    """An in-process uvicorn on a pre-bound port-0 socket (so the port is known at once)."""

    def __init__(self, app: StreamServer, **options: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)  # connections wait in the backlog until uvicorn accepts
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app, lifespan="on", log_level="warning", ws="websockets-sansio",
            ws_max_size=16 * 2**20, **options,
        )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.server.serve([self.sock]))

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)


@pytest.fixture(params=FRONT_DOORS)
def front_door(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def serve(front_door: str) -> AsyncIterator[Serve]:
    started: list[Callable[[], Awaitable[None]]] = []

    async def start(app: StreamServer) -> str:
        if front_door == "native":
            host, port = await app.start("127.0.0.1", 0)
            started.append(app.aclose)
            return f"ws://{host}:{port}"
        runner = UvicornRunner(app)
        await runner.start()
        started.append(runner.stop)
        return f"ws://127.0.0.1:{runner.port}"

    yield start
    for stop in reversed(started):
        await stop()


@pytest.fixture
async def serve_native() -> AsyncIterator[Serve]:
    apps: list[StreamServer] = []

    async def start(app: StreamServer) -> str:
        host, port = await app.start("127.0.0.1", 0)
        apps.append(app)
        return f"ws://{host}:{port}"

    yield start
    for app in apps:
        await app.aclose()


@pytest.fixture
async def proxy_to() -> AsyncIterator[Callable[[int], Awaitable[TcpProxy]]]:
    """
    Start TCP relays to a local port (``cluster.TcpProxy``): a network a test
    can break (``stop()``/``start()``, ``stall()``/``resume()``).
    """
    proxies: list[TcpProxy] = []

    async def start(port: int) -> TcpProxy:
        proxies.append(TcpProxy(("127.0.0.1", port)))
        await proxies[-1].start()
        return proxies[-1]

    yield start
    for proxy in proxies:
        await proxy.aclose()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of the test's own on the test Redis, deleted afterwards."""
    from .backends import delete_prefix, new_prefix, require_redis

    require_redis()
    prefix = new_prefix()
    yield prefix
    await delete_prefix(prefix)


BACKENDS = ["memory", "yielding", "redis"]


@pytest.fixture(params=BACKENDS)
async def any_backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """
    Run the test with ``StreamServer()``'s default backend being each of: the
    memory one, the memory one suspending at every await, and Redis.
    """
    from nucleus.stream import _server

    from .backends import YieldingBackend, delete_prefix, new_prefix, redis_backend, require_redis

    kind = str(request.param)
    prefix = new_prefix()
    if kind == "yielding":
        monkeypatch.setattr(_server, "backend_from_url", lambda url=None: YieldingBackend())
    elif kind == "redis":
        require_redis()
        monkeypatch.setattr(_server, "backend_from_url", lambda url=None: redis_backend(prefix))
    yield kind
    if kind == "redis":
        await delete_prefix(prefix)


@pytest.fixture
async def cluster() -> AsyncIterator[Any]:
    """Nodes, processes, proxies and clients of a fault test, closed at the end."""
    from .cluster import Cluster

    owned = Cluster()
    try:
        yield owned
    finally:
        await owned.aclose()


@pytest.fixture
async def private_redis() -> AsyncIterator[Any]:
    """A redis-server of the test's own (no persistence): kill it, restart it."""
    from .cluster import PrivateRedis

    server = PrivateRedis()
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()
