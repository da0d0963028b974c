"""Mounted in FastAPI under a real uvicorn: the lifespan, HTTP endpoints pushing, and checks."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect

from examples import fastapi_app
from nucleus.stream import StreamHandler, StreamHub, StreamServer

from .conftest import UvicornRunner
from .helpers import within
from .mounted import check_http_endpoints_push, in_uvicorn

ROOT = Path(__file__).resolve().parents[1]


async def test_http_endpoints_push_to_rooms_and_users() -> None:
    async with in_uvicorn(fastapi_app.app) as address:
        await check_http_endpoints_push(address)


async def test_the_lifespan_starts_hooks_and_tasks_before_any_connection() -> None:
    server = StreamServer()
    server.route("/ws", StreamHandler())
    started, ticking = asyncio.Event(), asyncio.Event()

    @server.on_startup
    async def ready() -> None:
        started.set()

    @server.background
    async def tick(hub: StreamHub) -> None:
        ticking.set()
        await asyncio.Event().wait()

    app = FastAPI(lifespan=server.lifespan)
    app.mount("/realtime", server)
    runner = UvicornRunner(app)  # type: ignore[arg-type]
    await runner.start()
    try:
        await within(started.wait())
        await within(ticking.wait())
    finally:
        await runner.stop()
    assert not server._started  # the app's shutdown stopped it


async def test_a_missing_secret_key_fails_the_apps_start() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uvicorn", "tests.apps.fastapi_auth:app", "--port", "0",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await within(proc.communicate(), 30)
    assert proc.returncode == 3, err  # uvicorn's "startup failed"
    assert b"SECRET_KEY is not set" in err and b"Application startup failed" in err


async def test_without_a_lifespan_the_first_request_starts_it_and_says_how_to_wire_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = StreamServer()
    server.route("/ws", StreamHandler())
    app = FastAPI()
    app.mount("/realtime", server)
    runner = UvicornRunner(app)  # type: ignore[arg-type]
    await runner.start()
    try:
        with caplog.at_level(logging.WARNING, "nucleus.stream"):
            async with connect(f"ws://127.0.0.1:{runner.port}/realtime/ws"):
                pass
        assert "lifespan=server.lifespan" in caplog.text
    finally:
        await runner.stop()
        await server.aclose()
