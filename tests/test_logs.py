"""What `nucleus serve` logs: one line per connection event, text or JSON, never a token."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect

from nucleus.fortress import Fortress

from .helpers import eventually, within
from .test_workers import LISTENING, ROOT, Served, environment, run_nucleus

APP = "tests.apps.cluster:server"
SECRET = "a-test-secret-of-at-least-thirty-two-bytes!"


@pytest.fixture
async def served() -> AsyncIterator[list[Served]]:
    children: list[Served] = []
    yield children
    for child in children:
        await child.stop()


async def test_json_lines_name_the_socket_user_route_and_address_never_the_token(
    served: list[Served],
) -> None:
    child = Served(await run_nucleus("serve", APP, "--port", "0", "--log-format", "json"))
    served.append(child)
    found, _ = await child.expect(LISTENING)
    port = int(found.group(1))
    token = Fortress.issue_token("ann", SECRET)
    async with connect(f"ws://127.0.0.1:{port}/ws?token={token}&user=ann") as ws:
        local = ws.local_address
        _, opened = await child.expect(r'"connection opened"')
    _, closed = await child.expect(r'"connection closed"', opened)
    entry = json.loads(child.lines[opened])
    assert entry["level"] == "info" and entry["logger"] == "nucleus.stream"
    assert entry["route"] == "/ws" and entry["remote"] == f"{local[0]}:{local[1]}"
    assert json.loads(child.lines[closed])["socket"] == entry["socket"]
    assert json.loads(child.lines[closed])["user"] == "ann"  # identified after opening
    assert all(json.loads(line) for line in child.lines)  # every line is one JSON object
    assert token not in "".join(child.lines)


async def test_a_warning_level_keeps_connection_events_out(served: list[Served]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child = Served(await run_nucleus("serve", APP, "--port", str(port),
                                     NUCLEUS_LOG_LEVEL="warning"))
    served.append(child)

    async def answers() -> bool:
        try:
            async with connect(f"ws://127.0.0.1:{port}/ws"):
                return True
        except OSError:
            return False
    await eventually(answers)
    await child.stop()
    assert not any("connection" in line for line in child.lines), child.lines


async def test_version_and_bad_log_options() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nucleus", "--version", stdout=asyncio.subprocess.PIPE,
        env=environment(), cwd=ROOT)
    out, _ = await within(proc.communicate())
    assert proc.returncode == 0 and out.decode().startswith("nucleus-stream ")
    for args in (["--log-level", "loud"], ["--log-format", "xml"]):
        proc = await run_nucleus("serve", APP, *args)
        assert proc.stderr is not None
        err = (await within(proc.stderr.read())).decode()
        assert await within(proc.wait()) == 2 and err.count("\n") == 1, err
