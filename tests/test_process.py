"""The ``nucleus`` command as a real process: serving, demo page, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from .helpers import within

ROOT = Path(__file__).resolve().parents[1]


class Process:
    """A ``python -m nucleus ...`` child; ``port`` is read from its startup log line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stderr: list[str] = []
        self.port = 0

    async def wait_listening(self) -> None:
        assert self.proc.stderr is not None
        while True:
            line = (await within(self.proc.stderr.readline(), 20)).decode()
            if not line:
                raise AssertionError("server exited early:\n" + "".join(self.stderr))
            self.stderr.append(line)
            found = re.search(r"listening on ws://[\d.]+:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                return


@pytest.fixture
async def spawn() -> AsyncIterator[object]:
    procs: list[Process] = []

    async def start(*args: str) -> Process:
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
               "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nucleus", *args, "--port", "0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
        )
        child = Process(proc)
        procs.append(child)
        await child.wait_listening()
        return child

    yield start
    for child in procs:
        if child.proc.returncode is None:
            child.proc.kill()
            await child.proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_closes_every_socket_with_1001_and_exits_0(spawn, sig: int) -> None:  # type: ignore[no-untyped-def]
    child = await spawn("serve", "examples.chat_room:server")
    url = f"ws://127.0.0.1:{child.port}/ws/chat"
    clients = [await connect(url) for _ in range(3)]
    # The room works before the signal.
    await clients[0].send("before")
    for client in clients:
        assert '"text":"before"' in await within(client.recv())
    child.proc.send_signal(sig)
    for client in clients:
        with pytest.raises(ConnectionClosed) as closed:
            await within(client.recv())
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "going away")
    assert await within(child.proc.wait(), 15) == 0
    assert child.proc.stdout is not None
    out = (await child.proc.stdout.read()).decode()
    assert out.count("Client disconnected:") == 3


async def test_serve_refuses_a_bad_app_spec_clearly() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nucleus", "serve", "examples.chat_room:nothing",
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        cwd=ROOT,
    )
    _, err = await within(proc.communicate(), 20)
    assert proc.returncode != 0
    assert "has no attribute 'nothing'" in err.decode()


async def test_demo_serves_every_app_from_one_command(spawn) -> None:  # type: ignore[no-untyped-def]
    child = await spawn("demo")
    base = f"127.0.0.1:{child.port}"
    async with httpx.AsyncClient() as http:
        landing = await within(http.get(f"http://{base}/"))
        assert landing.status_code == 200 and "text/html" in landing.headers["content-type"]
        for app in ("chat", "notifications", "dashboard", "auth"):
            assert f'href="{app}/"' in landing.text
            assert (await within(http.get(f"http://{base}/{app}/"))).status_code == 200
        # No SECRET_KEY given: the demo signs tokens with a secret of its own.
        token = (await within(http.get(f"http://{base}/auth/token?user=ann"))).json()["token"]
    chat = f"ws://{base}/chat/ws?name=ann"
    hello = '{"type":"hello","channels":{"chat:lobby":{}}}'
    async with connect(chat, subprotocols=[Subprotocol("nucleus.v1")]) as ann:
        await ann.send(hello)
        assert '"type":"joined"' in await within(ann.recv())
        await ann.send('{"type":"msg","data":{"type":"say","room":"lobby","text":"hi"}}')
        got = await within(ann.recv())
        assert '"user":"ann"' in got and '"text":"hi"' in got and '"offset":1' in got
    protocols = [Subprotocol("nucleus.v1"), Subprotocol(f"nucleus.token.{token}")]
    async with connect(f"ws://{base}/auth/ws", subprotocols=protocols) as signed_in:
        await signed_in.send('{"type":"hello","channels":{}}')
        assert '"channel":"user:ann"' in await within(signed_in.recv())
    child.proc.send_signal(signal.SIGTERM)
    assert await within(child.proc.wait(), 15) == 0


async def test_an_example_app_runs_with_one_command(spawn) -> None:  # type: ignore[no-untyped-def]
    child = await spawn("serve", "examples.apps.dashboard:server")
    async with httpx.AsyncClient() as http:
        home = await within(http.get(f"http://127.0.0.1:{child.port}/"))
        assert home.status_code == 302 and home.headers["location"] == "dashboard/"
        page = await within(http.get(f"http://127.0.0.1:{child.port}/dashboard/"))
        assert page.status_code == 200 and "charts.js" in page.text
    child.proc.send_signal(signal.SIGTERM)
    assert await within(child.proc.wait(), 15) == 0


async def test_an_example_with_tokens_needs_a_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nucleus", "serve", "examples.apps.notifications:server",
        "--port", "0", stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT)
    _, err = await within(proc.communicate(), 20)
    assert proc.returncode == 2
    assert err.decode().count("\n") == 1 and "SECRET_KEY is not set" in err.decode()
