"""
Many processes, one cluster: real ``nucleus serve`` processes on Redis, real
WebSocket clients (``tests/apps/cluster.py`` puts every hub operation in their
hands).

- Three servers on three ports: every cross-node operation, seen by clients.
- ``--workers 2`` on one port: connections land on both workers, broadcasts
  cross them, a SIGKILLed worker is replaced, SIGTERM drains every socket
  with 1001 and exits 0, and workers whose supervisor died drain by themselves.
- Configuration errors: one line on stderr, exit status 2.

Nothing sleeps for a fixed time: tests wait for log lines, messages and
closes with deadlines, and poll the cluster's state only where it converges
in another process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from nucleus.stream import StreamServer

from .backends import REDIS_URL
from .helpers import within

ROOT = Path(__file__).resolve().parents[1]
APP = "tests.apps.cluster:server"
LISTENING = r"listening on ws://[\d.]+:(\d+)"
STARTUP_DEADLINE = 20.0


# processes


class Served:
    """A ``python -m nucleus serve ...`` process; its stderr lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.port = 0
        self._eof = False
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode())
            self._changed.set()
        self._eof = True
        self._changed.set()

    async def expect(self, pattern: str, start: int = 0) -> tuple[re.Match[str], int]:
        """The first stderr line from index ``start`` matching ``pattern``, and its index."""
        async def find() -> tuple[re.Match[str], int]:
            index = start
            while True:
                while index < len(self.lines):
                    found = re.search(pattern, self.lines[index])
                    if found:
                        return found, index
                    index += 1
                if self._eof:
                    raise AssertionError(f"no line matches {pattern!r}:\n" + "".join(self.lines))
                self._changed.clear()
                await self._changed.wait()

        return await within(find(), STARTUP_DEADLINE)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader


Spawn = Callable[..., Awaitable[Served]]


def environment(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("NUCLEUS_BACKEND", "NUCLEUS_WORKERS")}
    return {**base, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "PYTHONUNBUFFERED": "1",
            **env}


async def run_nucleus(*args: str, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nucleus", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=environment(**env), cwd=ROOT,
    )


@pytest.fixture
async def nucleus() -> AsyncIterator[Spawn]:
    """Start ``nucleus serve APP ARGS --port 0``; wait until it listens. Stopped afterwards."""
    served: list[Served] = []

    async def start(*args: str, **env: str) -> Served:
        child = Served(await run_nucleus("serve", APP, "--port", "0", *args, **env))
        served.append(child)
        found, _ = await child.expect(LISTENING)
        child.port = int(found.group(1))
        return child

    yield start
    # SIGTERM first: a drained worker unregisters its node before the keys are deleted.
    await asyncio.gather(*(child.stop() for child in served))


@pytest.fixture
def redis_url(redis_prefix: str) -> str:
    """The test Redis, under the test's own key prefix (deleted after the servers stop)."""
    return f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={redis_prefix}"


# clients


class Client:
    """A raw WebSocket client of the cluster app: commands, answers, and what else arrives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pushes: list[dict[str, Any]] = []
        self.id = ""
        self.pid = 0

    async def _next(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(await within(self.ws.recv()))
        return message

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        await self.ws.send(json.dumps({"op": op, **args}))
        while True:
            message = await self._next()
            if "re" in message:
                assert message["re"] == op, message
                return message
            self.pushes.append(message)

    async def ok(self, op: str, **args: Any) -> Any:
        answer = await self.call(op, **args)
        assert "ok" in answer, answer
        return answer["ok"]

    async def push(self) -> dict[str, Any]:
        """The next message the hub sent this socket on another's behalf."""
        if self.pushes:
            return self.pushes.pop(0)
        message = await self._next()
        assert "re" not in message, message
        return message

    async def closed(self) -> tuple[int | None, str | None]:
        await within(self.ws.wait_closed())
        return self.ws.close_code, self.ws.close_reason


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    opened: list[Client] = []

    async def open_client(port: int, user: str | None = None) -> Client:
        query = f"?user={user}" if user else ""
        client = Client(await within(connect(f"ws://127.0.0.1:{port}/ws{query}")))
        opened.append(client)
        me = await client.ok("whoami")
        assert me["user"] == user
        client.id, client.pid = me["id"], me["pid"]
        return client

    yield open_client
    await asyncio.gather(*(client.ws.close() for client in opened))


async def eventually(probe: Callable[[], Awaitable[Any]], expected: Any) -> None:
    """Poll ``probe`` until it returns ``expected`` (state converging in other processes)."""
    async def converge() -> None:
        while (got := await probe()) != expected:
            last[0] = got
            await asyncio.sleep(0.02)

    last: list[Any] = [None]
    try:
        await within(converge(), 10)
    except TimeoutError:
        raise AssertionError(f"expected {expected!r}, still {last[0]!r}") from None


# three processes, three ports


async def test_broadcasts_and_direct_messages_reach_every_node(
    redis_url: str, nucleus: Spawn, clients: Callable[..., Awaitable[Client]]
) -> None:
    a, b, c = await asyncio.gather(*(nucleus("--backend", redis_url) for _ in range(3)))
    assert len({a.port, b.port, c.port}) == 3
    ann_a = await clients(a.port, "ann")
    bob_b = await clients(b.port, "bob")
    ann_b = await clients(b.port, "ann")  # a second tab of ann's, on another node
    ann_c = await clients(c.port, "ann")
    anon_c = await clients(c.port)
    assert len({ann_a.pid, bob_b.pid, ann_c.pid}) == 3
    members = [ann_a, bob_b, ann_c]
    for client in members:
        await client.ok("join", room="lobby")

    # A room broadcast from node A reaches its members on A, B and C.
    await ann_a.ok("broadcast", room="lobby", text="hi")
    for client in members:
        assert await client.push() == {"room": "lobby", "text": "hi"}

    # So does a channel event published on node B.
    await bob_b.ok("channel", room="lobby", event="news", data={"n": 1})
    for client in members:
        assert await client.push() == {"channel": "lobby", "event": "news", "data": {"n": 1}}

    # send_to a socket on another node; an id open nowhere is SocketNotFound.
    await ann_a.ok("send_to", id=anon_c.id, text="psst")
    assert await anon_c.push() == {"direct": "psst"}  # and none of the lobby's traffic
    assert await anon_c.call("send_to", id="no-such-socket", text="x") == {
        "re": "send_to", "error": "SocketNotFound"}

    # send_to_user reaches every tab of the user, on every node, and nobody else.
    await bob_b.ok("send_to_user", user="ann", text="hello")
    for tab in (ann_a, ann_b, ann_c):
        assert await tab.push() == {"user": "hello"}
    await ann_c.ok("send_to", id=bob_b.id, text="end")
    assert await bob_b.push() == {"direct": "end"}
    await ann_c.ok("send_to", id=anon_c.id, text="end")
    assert await anon_c.push() == {"direct": "end"}


async def test_disconnect_and_identify_reach_every_node(
    redis_url: str, nucleus: Spawn, clients: Callable[..., Awaitable[Client]]
) -> None:
    a, b, c = await asyncio.gather(*(nucleus("--backend", redis_url) for _ in range(3)))
    admin = await clients(a.port)
    carol_b = await clients(b.port, "carol")
    dave_b = await clients(b.port, "dave")
    dave_c = await clients(c.port, "dave")
    anon_c = await clients(c.port)
    assert await admin.ok("online_users") == ["carol", "dave"]

    # identify a socket of node C from node A: node C applies it when Redis
    # delivers the request, just after the call returns.
    await admin.ok("identify", id=anon_c.id, user="erin")

    async def whoami() -> Any:
        return (await anon_c.ok("whoami"))["user"]

    await eventually(whoami, "erin")
    await eventually(lambda: admin.ok("online_users"), ["carol", "dave", "erin"])

    # disconnect one socket of node B from node A, with the code asked.
    await admin.ok("disconnect", id=carol_b.id, code=4001, reason="bye")
    assert await carol_b.closed() == (4001, "bye")

    # disconnect_user closes the user's sockets on B and on C, and counts them.
    assert await admin.ok("disconnect_user", user="dave", code=4002) == 2
    assert await dave_b.closed() == (4002, "")
    assert await dave_c.closed() == (4002, "")

    await eventually(lambda: admin.ok("online_users"), ["erin"])
    assert await anon_c.ok("connection_count") == 2


async def test_cluster_wide_queries_are_exact_on_every_node(
    redis_url: str, nucleus: Spawn, clients: Callable[..., Awaitable[Client]]
) -> None:
    nodes = await asyncio.gather(*(nucleus("--backend", redis_url) for _ in range(3)))
    a, b, c = (node.port for node in nodes)
    ann_a1, ann_a2 = await clients(a, "ann"), await clients(a, "ann")
    bob_b, anon_b = await clients(b, "bob"), await clients(b)
    ann_c, cid_c = await clients(c, "ann"), await clients(c, "cid")  # ann: a tab on A and C
    for client, rooms in [(ann_a1, ["r1", "r2"]), (bob_b, ["r1"]), (ann_c, ["r1"]),
                          (anon_b, ["r2"]), (cid_c, ["r2"])]:
        for room in rooms:
            await client.ok("join", room=room)
    askers = [ann_a2, anon_b, cid_c]  # one on each node: every node answers the same

    for asker in askers:
        assert await asker.ok("online_users") == ["ann", "bob", "cid"]
        assert await asker.ok("connection_count") == 6
        assert await asker.ok("room_members", room="r1") == sorted(
            [ann_a1.id, bob_b.id, ann_c.id])
        assert await asker.ok("room_members", room="r2") == sorted(
            [ann_a1.id, anon_b.id, cid_c.id])
        assert await asker.ok("room_users", room="r1") == ["ann", "bob"]  # ann counts once
        assert await asker.ok("room_users", room="r2") == ["ann", "cid"]  # anon_b has no user
        assert await asker.ok("rooms_of", id=ann_a1.id) == ["r1", "r2"]
        assert await asker.ok("rooms_of", id=ann_c.id) == ["r1"]
        assert await asker.call("rooms_of", id="no-such-socket") == {
            "re": "rooms_of", "error": "SocketNotFound"}

    # ann leaves C: still in r1 and online through her tab on A.
    await ann_c.ws.close()
    await eventually(lambda: cid_c.ok("room_members", room="r1"), sorted([ann_a1.id, bob_b.id]))
    assert await cid_c.ok("room_users", room="r1") == ["ann", "bob"]
    assert await cid_c.ok("online_users") == ["ann", "bob", "cid"]
    assert await cid_c.ok("connection_count") == 5
    # ... and offline once her last socket, on A, closes.
    await ann_a1.ws.close()
    await ann_a2.ws.close()
    await eventually(lambda: anon_b.ok("online_users"), ["bob", "cid"])
    assert await anon_b.ok("room_users", room="r1") == ["bob"]
    assert await anon_b.ok("room_users", room="r2") == ["cid"]
    assert await anon_b.ok("connection_count") == 3


# one port, --workers 2


async def worker_pids(server: Served, workers: int) -> set[int]:
    found = await asyncio.gather(*(server.expect(rf"worker {n} \(pid (\d+)\) serving")
                                   for n in range(1, workers + 1)))
    return {int(match.group(1)) for match, _ in found}


async def spread(
    clients: Callable[..., Awaitable[Client]], port: int, pids: set[int]
) -> dict[int, list[Client]]:
    """Connect until every pid in ``pids`` serves at least one client (the kernel picks)."""
    by_pid: dict[int, list[Client]] = {}
    for _ in range(64):  # all on one of two workers 64 times: p = 2**-63
        client = await clients(port)
        by_pid.setdefault(client.pid, []).append(client)
        if pids <= by_pid.keys():
            return by_pid
    raise AssertionError(f"connections only reached {sorted(by_pid)}, not all of {sorted(pids)}")


async def test_workers_share_a_port_and_a_killed_worker_is_replaced(
    redis_url: str, nucleus: Spawn, clients: Callable[..., Awaitable[Client]]
) -> None:
    server = await nucleus("--workers", "2", "--backend", redis_url)
    assert "with 2 workers" in server.lines[-1]
    pids = await worker_pids(server, 2)
    assert len(pids) == 2 and server.proc.pid not in pids
    by_pid = await spread(clients, server.port, pids)
    assert set(by_pid) == pids
    everyone = [client for group in by_pid.values() for client in group]
    for client in everyone:
        await client.ok("join", room="all")
    await everyone[0].ok("broadcast", room="all", text="across workers")
    for client in everyone:
        assert await client.push() == {"room": "all", "text": "across workers"}

    victim, survivor = sorted(pids)
    mark = len(server.lines)
    os.kill(victim, signal.SIGKILL)
    _, died = await server.expect(rf"worker \d \(pid {victim}\) died \(killed by SIGKILL\)",
                                  mark)
    found, _ = await server.expect(r"worker \d \(pid (\d+)\) serving", died)
    replacement = int(found.group(1))
    assert replacement not in pids
    for client in by_pid[victim]:
        assert (await client.closed())[0] == 1006  # no close frame: the process is gone

    # The server keeps serving on the same port, over the new worker and the old one.
    by_pid = await spread(clients, server.port, {replacement, survivor})
    fresh = [by_pid[replacement][0], by_pid[survivor][0]]
    for client in fresh:
        await client.ok("join", room="after")
    await fresh[0].ok("broadcast", room="after", text="still here")
    for client in fresh:
        assert await client.push() == {"room": "after", "text": "still here"}
    assert server.proc.returncode is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_stop_signal_drains_every_worker_with_1001_and_exits_0(
    redis_url: str, nucleus: Spawn, clients: Callable[..., Awaitable[Client]], sig: int
) -> None:
    # Configured by the environment this time: NUCLEUS_WORKERS and NUCLEUS_BACKEND.
    server = await nucleus(NUCLEUS_WORKERS="2", NUCLEUS_BACKEND=redis_url)
    pids = await worker_pids(server, 2)
    by_pid = await spread(clients, server.port, pids)
    server.proc.send_signal(sig)
    for group in by_pid.values():
        for client in group:
            assert await client.closed() == (1001, "going away")
    assert await within(server.proc.wait(), 30) == 0
    await server.stop()
    log = "".join(server.lines)
    for pid in pids:
        assert re.search(rf"worker \d \(pid {pid}\) stopped: exit status 0", log), log
    assert "Traceback" not in log


def process_ended(pid: int) -> bool:
    """True once ``pid`` has exited (gone, or a zombie nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_workers_drain_by_themselves_when_the_supervisor_is_killed(
    redis_url: str, nucleus: Spawn, clients: Callable[..., Awaitable[Client]]
) -> None:
    server = await nucleus("--workers", "2", "--backend", redis_url)
    pids = await worker_pids(server, 2)
    by_pid = await spread(clients, server.port, pids)
    server.proc.kill()
    for group in by_pid.values():
        for client in group:
            assert await client.closed() == (1001, "going away")

    async def ended() -> bool:
        return all(process_ended(pid) for pid in pids)

    await eventually(ended, True)


async def test_workers_that_cannot_start_stop_the_server_instead_of_looping(
    redis_url: str
) -> None:
    proc = await run_nucleus("serve", "tests.apps.cluster:broken", "--port", "0",
                             "--workers", "2", "--backend", redis_url)
    assert proc.stderr is not None
    err = (await within(proc.stderr.read(), STARTUP_DEADLINE)).decode()
    assert await within(proc.wait()) == 2, err  # the worker's ConfigError: exit status 2
    assert "nucleus serve: error: the test app refuses to start" in err
    assert "failed to start" in err and "restarting" not in err, err


# configuration errors


async def one_line_failure(*args: str, **env: str) -> str:
    proc = await run_nucleus(*args, **env)
    assert proc.stderr is not None
    err = (await within(proc.stderr.read(), STARTUP_DEADLINE)).decode()
    assert await within(proc.wait()) == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("how", ["flag", "environment"])
async def test_many_workers_on_the_memory_backend_are_refused(how: str) -> None:
    if how == "flag":
        err = await one_line_failure("serve", APP, "--workers", "2", "--port", "0")
    else:
        err = await one_line_failure("serve", APP, "--port", "0", NUCLEUS_WORKERS="3")
    assert "--backend" in err and "memory" in err


@pytest.mark.parametrize(("args", "env", "says"), [
    (["--workers", "0"], {}, "--workers"),
    (["--workers", "two"], {}, "--workers"),
    ([], {"NUCLEUS_WORKERS": "lots"}, "NUCLEUS_WORKERS"),
    (["--port", "70000"], {}, "--port"),
    (["--port", "http"], {}, "--port"),
    (["--backend", "kafka://broker"], {}, "unknown backend"),
    (["--backend", "redis://127.0.0.1:6379/15?prefix="], {}, "prefix"),
    (["--host", "192.0.2.1", "--workers", "2", "--backend", "redis://x"], {},
     "cannot listen on 192.0.2.1"),
    (["--frobnicate"], {}, "unrecognized"),
])
async def test_bad_options_are_one_line_and_exit_2(
    args: list[str], env: dict[str, str], says: str
) -> None:
    err = await one_line_failure("serve", APP, "--port", "0", *args, **env)
    assert re.match(r"nucleus( serve)?: error: ", err) and says in err, err


async def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = await one_line_failure("serve", APP, "--port", str(port))
    assert f"cannot listen on 127.0.0.1:{port}" in err, err


@pytest.mark.parametrize("spec", ["tests.apps.cluster:nothing", "tests.apps.nothing:server",
                                  "no-colon", "tests.apps.cluster:Cluster"])
async def test_an_app_that_cannot_be_found_is_one_line_and_exit_2(spec: str) -> None:
    err = await one_line_failure("serve", spec)
    assert err.startswith("nucleus serve: error:"), err


async def test_every_serve_option_has_help_and_shows_its_default() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nucleus", "serve", "--help", stdout=asyncio.subprocess.PIPE,
        env=environment(COLUMNS="200"), cwd=ROOT)
    out, _ = await within(proc.communicate())
    assert proc.returncode == 0
    options = out.decode().partition("options:")[2]
    helps = {found.group(1): found.group(2)
             for found in re.finditer(r"^  (?:-\w, )?(--[\w-]+).*?  (\S.*)$", options, re.M)}
    assert set(helps) == {"--help", "--host", "--port", "--workers", "--backend", "--reuse-port"}
    for option, text in helps.items():
        assert option == "--help" or "(default:" in text, (option, text)


# SO_REUSEPORT in one process


async def test_reuse_port_lets_servers_share_a_port() -> None:
    first, second, third = StreamServer(), StreamServer(), StreamServer()
    _, port = await first.start("127.0.0.1", 0, reuse_port=True)
    try:
        assert (await second.start("127.0.0.1", port, reuse_port=True))[1] == port
        with pytest.raises(OSError):
            await third.start("127.0.0.1", port)  # without it, the port is taken
    finally:
        await first.aclose()
        await second.aclose()
        await third.aclose()


def test_the_supervisor_holds_its_port_without_taking_connections() -> None:
    from nucleus._supervisor import reserve_port

    held = reserve_port("127.0.0.1", 0)
    try:
        port = held.getsockname()[1]
        probe = socket.socket()
        with pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", port))  # bound, not listening: no connection
        probe.close()
    finally:
        held.close()
