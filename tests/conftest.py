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

Serve = Callable[[StreamServer], Awaitable[str]]

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
