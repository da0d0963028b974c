"""
examples/starlette_app.py as its docstring runs it, ``uvicorn examples.starlette_app:app``:
a real uvicorn process, its HTTP endpoints pushing, and its stop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .helpers import eventually, within
from .mounted import check_http_endpoints_push

ROOT = Path(__file__).resolve().parents[1]


async def test_uvicorn_serves_the_example_and_sigterm_closes_its_sockets() -> None:
    # A port-0 socket the child inherits (uvicorn --fd): the port is known at once.
    listener = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uvicorn", "examples.starlette_app:app",
        "--fd", str(listener.fileno()), "--log-level", "info",
        pass_fds=[listener.fileno()], cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    listener.close()
    try:
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            async def healthy() -> bool:
                try:
                    return (await http.get("/realtime/healthz")).status_code == 200
                except httpx.TransportError:
                    return False
            await eventually(healthy, 20, "the app serving")
        await check_http_endpoints_push(address)
        async with connect(f"ws://{address}/realtime/ws?user=ann") as ann:
            proc.send_signal(signal.SIGTERM)
            try:
                await within(ann.recv())
            except ConnectionClosed:
                pass
            assert ann.close_code == 1012  # uvicorn's "service restart" at shutdown
        # uvicorn drains, then ends by the signal it got (0.29 and later; exit 0
        # before): systemd counts either as a clean stop.
        assert await within(proc.wait(), 30) in (0, -signal.SIGTERM)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    log = (await proc.stderr.read()).decode()
    assert "Application shutdown complete" in log, log
    # The lifespan is wired: nothing started the server on a first request.
    assert "starting on the first request" not in log and "Traceback" not in log, log
