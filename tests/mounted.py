"""
What the example apps that mount a StreamServer promise (examples/fastapi_app.py,
examples/starlette_app.py), checked against one being served.

Both answer the same HTTP calls: ``POST /rooms/{room}`` broadcasts the JSON body
to a room, ``POST /users/{user}/notify`` sends it to every socket of one user,
``GET /online`` lists the users; the stream is mounted at ``/realtime``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from websockets.asyncio.client import connect

from .conftest import UvicornRunner
from .helpers import eventually, within


@asynccontextmanager
async def in_uvicorn(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with an in-process uvicorn; yields ``host:port``."""
    runner = UvicornRunner(app)
    await runner.start()
    try:
        yield f"127.0.0.1:{runner.port}"
    finally:
        await runner.stop()


async def check_http_endpoints_push(address: str) -> None:
    """The HTTP endpoints reach the room and the user they name, and nobody else."""
    async with (
        httpx.AsyncClient(base_url=f"http://{address}") as http,
        connect(f"ws://{address}/realtime/ws?user=ann") as ann,
        connect(f"ws://{address}/realtime/ws?user=bob") as bob,
    ):
        async def both_online() -> bool:
            return bool((await http.get("/online")).json() == ["ann", "bob"])
        await eventually(both_online, what="ann and bob online")
        response = await http.post("/rooms/lobby", json={"text": "hello"})
        assert response.status_code == 200 and response.json()["offset"] >= 1
        for ws in (ann, bob):
            assert json.loads(await within(ws.recv())) == {"text": "hello"}
        response = await http.post("/users/bob/notify", json={"kind": "mention"})
        assert response.status_code == 200 and response.json() == {"sent": True}
        assert json.loads(await within(bob.recv())) == {"kind": "mention"}
        # ann got nothing: the next thing she hears is the next broadcast.
        await http.post("/rooms/lobby", json={"text": "again"})
        assert json.loads(await within(ann.recv())) == {"text": "again"}
        client_js = await http.get("/realtime/nucleus/stream.js")
        assert client_js.status_code == 200 and b"export function connect" in client_js.content
        assert (await http.get("/realtime/healthz")).json() == {"status": "ok"}
