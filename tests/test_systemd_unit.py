"""
docs/deployment.md's systemd unit, run as systemd would run it: its ``ExecStart``
from its ``WorkingDirectory``, with its ``EnvironmentFile``, stopped with its
``KillSignal``, within its ``TimeoutStopSec``.

What cannot run here is swapped, and only that: the binary becomes this
interpreter's ``-m nucleus``, ``--host``/``--port`` a free local port,
``--workers`` 2 (the machine is shared), the Redis URL the test Redis under a
prefix of the test's own, ``app:server`` a notifications app that needs
``SECRET_KEY``, and the environment file's placeholder a real key. ``User=``
would need root: the test only checks that it is there.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shlex
import signal
import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from nucleus.cli import DRAIN_MARGIN
from nucleus.fortress import Fortress
from nucleus.stream import RedisBackend, StreamServer, backend_from_url

from .backends import REDIS_URL
from .helpers import within
from .test_workers import LISTENING, Served, environment

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")


def unit() -> dict[str, list[str]]:
    """The ``[Service]`` settings of the doc's unit for ``nucleus serve``."""
    block = next(block for block in re.findall(r"^```ini\n(.*?)^```", DOC, re.S | re.M)
                 if "[Service]" in block and "nucleus serve" in block)
    service = block.split("[Service]\n", 1)[1].split("\n[", 1)[0]
    settings: dict[str, list[str]] = {}
    for line in service.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def environment_file() -> dict[str, str]:
    """The variables of the environment file the doc shows, by the path the unit names."""
    path = unit()["EnvironmentFile"][0]
    block = next(block for block in re.findall(r"^```sh\n(.*?)^```", DOC, re.S | re.M)
                 if block.startswith(f"# {path} "))
    pairs = [line.partition("=") for line in block.splitlines()
             if line and not line.startswith("#")]
    return {key: value for key, _, value in pairs}


def command(redis_url: str) -> list[str]:
    """``ExecStart``, with what cannot run here swapped (see the module docstring)."""
    args = shlex.split(unit()["ExecStart"][0])
    assert args[0].endswith("/bin/nucleus") and args[1:3] == ["serve", "app:server"], args
    swap = {"--host": "127.0.0.1", "--port": "0", "--workers": "2", "--backend": redis_url}
    options = args[3:]
    for index, option in enumerate(options[:-1]):
        if option in swap:
            options[index + 1] = swap[option]
    assert set(swap) <= set(options), f"ExecStart lacks some of {sorted(swap)}: {args}"
    return [sys.executable, "-m", "nucleus", *args[1:3], *options]


def test_the_unit_says_what_the_doc_explains() -> None:
    settings = unit()
    for key in ("User", "WorkingDirectory", "EnvironmentFile", "LimitNOFILE"):
        assert settings.get(key), f"the unit sets no {key}"
    assert settings["Restart"] == ["on-failure"]
    assert settings["RestartPreventExitStatus"] == ["2"]  # configuration errors
    assert settings["KillSignal"] == ["SIGTERM"]
    assert int(settings["LimitNOFILE"][0]) >= 65536
    assert "SECRET_KEY" in environment_file()
    # The doc's Redis URL is one the server takes, with the prefix it says.
    url = shlex.split(settings["ExecStart"][0])[-1]
    backend = backend_from_url(url)
    assert isinstance(backend, RedisBackend) and backend.prefix == "chat"


def test_systemd_waits_for_the_whole_drain() -> None:
    """``TimeoutStopSec`` outlasts the supervisor's own deadline for draining workers."""
    server = StreamServer()
    drain = server.limits.close_timeout + server.shutdown_timeout + DRAIN_MARGIN
    assert float(unit()["TimeoutStopSec"][0]) > drain + 5


@pytest.fixture
def redis_url(redis_prefix: str) -> str:
    return f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={redis_prefix}"


@pytest.fixture
def working_directory(tmp_path: Path) -> Path:
    """``WorkingDirectory``: where ``app.py`` is, as ``app:server`` expects."""
    (tmp_path / "app.py").write_text("from examples.apps.notifications import server\n")
    return tmp_path


async def run_unit(working_directory: Path, redis_url: str, **env: str) -> Served:
    proc = await asyncio.create_subprocess_exec(
        *command(redis_url), cwd=working_directory, env=environment(**env),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    return Served(proc)


async def test_the_units_command_serves_and_its_kill_signal_drains(
    working_directory: Path, redis_url: str
) -> None:
    secret = secrets.token_urlsafe(48)
    variables = {**environment_file(), "SECRET_KEY": secret}  # the placeholder, replaced
    served = await run_unit(working_directory, redis_url, **variables)
    try:
        found, _ = await served.expect(LISTENING + " with 2 workers")
        address = f"127.0.0.1:{found.group(1)}"
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://{address}/healthz")).status_code == 200
        token = Fortress.issue_token("ann", secret)
        async with connect(f"ws://{address}/notifications/ws?token={token}") as ann:
            served.proc.send_signal(getattr(signal, unit()["KillSignal"][0]))
            with pytest.raises(ConnectionClosed):
                await within(ann.recv())
            assert ann.close_code == 1001
        timeout = float(unit()["TimeoutStopSec"][0])
        assert await within(served.proc.wait(), timeout) == 0
    finally:
        await served.stop()
    assert "Traceback" not in "".join(served.lines)


async def test_without_the_environment_file_it_fails_with_the_status_not_restarted(
    working_directory: Path, redis_url: str
) -> None:
    served = await run_unit(working_directory, redis_url, SECRET_KEY="")
    try:
        status = await within(served.proc.wait(), 30)
    finally:
        await served.stop()
    assert str(status) in unit()["RestartPreventExitStatus"]
    assert "SECRET_KEY" in "".join(served.lines)
