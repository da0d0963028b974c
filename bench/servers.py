"""
The servers under test: what each needs, how to start it pinned, how to stop it.

Every server serves the same contract (``bench/README.md``): subscribers on
``/sub`` share one room, text messages on ``/pub`` are broadcast verbatim to
them. Socket.IO servers speak the ``socketio`` dialect instead, with the
publisher marked by ``role=pub`` in its query string.

Servers that use Redis (``nucleus-redis``, ``nucleus-workers-N``) get the
database of ``--redis``; their keys are removed when the server stops.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

from .broker import RedisLink, local_redis_pid
from .errors import BrokerError, ServerUnavailable
from .loadgen import BUILD_DIR
from .system import descendants, free_port, pinned, process_start, rss_kib, wait_for_port

__all__ = ["MEASURES", "SERVERS", "ServerProcess", "ServerSpec", "prepare", "shown_url"]

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SERVERS_DIR = BENCH_DIR / "servers"
NODE_DIR = SERVERS_DIR / "node"
LOG_DIR = BUILD_DIR / "logs"

MEASURES = ("idle", "fanout", "serial", "latency", "handshakes", "opens")
"""What the runner measures, in this order; ``ServerSpec.measures`` picks from it."""


@dataclass(frozen=True)
class ServerSpec:
    name: str
    label: str
    dialect: Literal["raw", "socketio"]
    argv: tuple[str, ...]
    """
    Command line without ``--port``; for Redis, ``{redis}`` becomes the URL,
    ``{prefix}`` a key prefix of this process's own and ``{redis?prefix}`` the
    URL with that prefix (``redis://...?prefix=...``).
    """
    python_modules: tuple[str, ...] = ()
    """Modules that must import in the server's interpreter."""
    node: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    redis: bool = False
    """Uses the Redis of ``--redis``: it must answer, and its CPU time is reported too."""
    measures: tuple[str, ...] = MEASURES
    all_cores: bool = False
    """Runs on every core the benchmark uses, not only the server's (several processes)."""
    serve_options: tuple[str, ...] = ()
    """Options ``python -m nucleus serve --help`` must list, else "not available"."""


_PY = sys.executable
# Another checkout's Nucleus can be measured with the same harness.
_SRC = os.environ.get("BENCH_NUCLEUS_SRC", str(REPO / "src"))
# No log line per connection while measuring (the peers log none either).
_QUIET = {"NUCLEUS_LOG_LEVEL": "warning"}


def _nucleus_serve(workers: int) -> ServerSpec:
    """``nucleus serve`` with ``workers`` processes on one port, joined by Redis."""
    return ServerSpec(
        f"nucleus-workers-{workers}",
        f"nucleus serve --workers {workers} (Redis)",
        "raw",
        (
            _PY, "-m", "nucleus", "serve", "nucleus_server:server", "--host", "127.0.0.1",
            "--workers", str(workers), "--backend", "{redis?prefix}",
        ),
        python_modules=("nucleus.stream", "redis"),
        env={"PYTHONPATH": os.pathsep.join((_SRC, str(SERVERS_DIR))), **_QUIET},
        redis=True,
        measures=("fanout", "serial", "handshakes", "opens"),
        all_cores=True,
        serve_options=("--workers", "--backend"),
    )


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            "nucleus",
            "Nucleus Stream",
            "raw",
            (_PY, str(SERVERS_DIR / "nucleus_server.py"), "--backend", "memory"),
            python_modules=("nucleus.stream",),
            env={"PYTHONPATH": _SRC, **_QUIET},
        ),
        ServerSpec(
            "nucleus-redis",
            "Nucleus Stream, Redis backend",
            "raw",
            (
                _PY, str(SERVERS_DIR / "nucleus_server.py"),
                "--backend", "{redis}", "--prefix", "{prefix}",
            ),
            python_modules=("nucleus.stream", "redis"),
            env={"PYTHONPATH": _SRC, **_QUIET},
            redis=True,
        ),
        _nucleus_serve(1),
        _nucleus_serve(2),
        ServerSpec(
            "websockets",
            "websockets broadcast()",
            "raw",
            (_PY, str(SERVERS_DIR / "websockets_server.py")),
            python_modules=("websockets", "uvloop"),
        ),
        ServerSpec(
            "socketio",
            "python-socketio + uvicorn",
            "socketio",
            (_PY, str(SERVERS_DIR / "socketio_server.py")),
            python_modules=("socketio", "uvicorn"),
        ),
        ServerSpec(
            "node-ws",
            "Node ws",
            "raw",
            ("node", str(NODE_DIR / "ws_server.mjs")),
            node=True,
        ),
        ServerSpec(
            "node-socketio",
            "Node Socket.IO",
            "socketio",
            ("node", str(NODE_DIR / "socketio_server.mjs")),
            node=True,
        ),
        ServerSpec(
            "socketify",
            "socketify (uWebSockets)",
            "raw",
            (_PY, str(SERVERS_DIR / "socketify_server.py")),
            python_modules=("socketify",),
        ),
    )
}


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@functools.cache
def _node_modules() -> None:
    """Install the Node peers' packages into ``servers/node/node_modules`` once."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise ServerUnavailable("not installable: node and npm are not on PATH")
    stamp = NODE_DIR / "node_modules" / ".package-lock.json"
    manifest = NODE_DIR / "package.json"
    if stamp.exists() and stamp.stat().st_mtime >= manifest.stat().st_mtime:
        return
    lock = NODE_DIR / "package-lock.json"
    argv = [
        "npm",
        "ci" if lock.exists() else "install",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
    ]
    try:
        done = subprocess.run(
            argv, cwd=NODE_DIR, capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerUnavailable(f"not installable: {' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        raise ServerUnavailable(f"not installable: {' '.join(argv)} failed:\n{_tail(done.stderr)}")


@functools.cache
def _python_modules(modules: tuple[str, ...], pythonpath: str | None) -> None:
    """Import ``modules`` in a child interpreter: a broken native library cannot crash us."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    done = subprocess.run(
        [_PY, "-c", code, *modules],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise ServerUnavailable(
            f"not importable ({', '.join(modules)}); pip install -r bench/requirements.txt\n"
            + _tail(done.stderr, 4)
        )


@functools.cache
def _serve_options(pythonpath: str) -> str:
    """What ``python -m nucleus serve --help`` says (empty if it fails)."""
    done = subprocess.run(
        [_PY, "-m", "nucleus", "serve", "--help"],
        env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout if done.returncode == 0 else ""


def shown_url(url: str) -> str:
    """``url`` for messages and results: a password in it is masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _check_redis(url: str) -> None:
    try:
        with RedisLink(url) as link:
            link.command("PING")
    except BrokerError as exc:
        raise ServerUnavailable(f"needs Redis at {shown_url(url)} (--redis): {exc}") from None


def prepare(spec: ServerSpec, redis_url: str) -> None:
    """Check that ``spec`` can start, installing Node packages on demand.

    Raises :class:`ServerUnavailable` with the reason when it can't.
    """
    if spec.node:
        _node_modules()
    if spec.python_modules:
        _python_modules(spec.python_modules, spec.env.get("PYTHONPATH"))
    if spec.serve_options:
        usage = _serve_options(spec.env.get("PYTHONPATH", _SRC))
        missing = [option for option in spec.serve_options if option not in usage.split()]
        if missing:
            raise ServerUnavailable(
                f"`python -m nucleus serve` has no {' or '.join(missing)} option yet"
            )
    if spec.redis:
        _check_redis(redis_url)


_prefixes = itertools.count(1)


class ServerProcess:
    """One server process pinned to ``cpus``, listening on a fresh port (or on ``port``,
    to restart a server where its clients will look for it); a context manager.

    Entering starts it and waits until its port accepts connections (raising
    :class:`ServerUnavailable` with the end of its log if it exits or never
    listens); leaving sends SIGTERM, then SIGKILL after ``stop_timeout``, and
    removes the Redis keys it used.
    """

    def __init__(
        self,
        spec: ServerSpec,
        *,
        cpus: set[int],
        redis_url: str,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        port: int = 0,
    ) -> None:
        self.spec = spec
        self.port = 0
        self._fixed_port = port
        self.version = ""
        self._cpus = cpus
        self._redis_url = redis_url
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = LOG_DIR / f"{spec.name}.log"
        #: The key prefix of this process's Redis state (None without Redis).
        self.redis_prefix: str | None = None
        #: The local redis-server's pid, if there is one to read CPU time from.
        self.broker_pids: list[int] = []

    @property
    def pid(self) -> int:
        assert self._proc is not None, "server not started"
        return self._proc.pid

    def pids(self) -> list[int]:
        """The server's process and every process it started (workers)."""
        return [self.pid, *descendants(self.pid)]

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def _claim_redis(self) -> None:
        """Pick this process's key prefix and find the local redis-server, if any."""
        try:
            with RedisLink(self._redis_url) as link:
                pid = local_redis_pid(link)
        except BrokerError as exc:
            raise ServerUnavailable(f"needs Redis at {shown_url(self._redis_url)}: {exc}") from None
        self.redis_prefix = f"nucleus-bench-{os.getpid()}-{next(_prefixes)}"
        self.broker_pids = [pid] if pid is not None else []

    def _release_redis(self) -> None:
        if self.redis_prefix is None:
            return
        try:
            with RedisLink(self._redis_url) as link:
                link.delete_prefix(self.redis_prefix)
        except BrokerError as exc:
            print(f"warning: could not remove {self.redis_prefix}:* keys: {exc}", file=sys.stderr)
        self.redis_prefix = None

    def __enter__(self) -> ServerProcess:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.port = self._fixed_port or free_port()
        if self.spec.redis:
            self._claim_redis()
        url, prefix = self._redis_url, self.redis_prefix or ""
        with_prefix = f"{url}{'&' if '?' in url else '?'}prefix={prefix}"
        fill = {"{redis}": url, "{prefix}": prefix, "{redis?prefix}": with_prefix}
        argv = [fill.get(arg, arg) for arg in self.spec.argv] + ["--port", str(self.port)]
        env = {**os.environ, **self.spec.env}
        with self.log_path.open("wb") as log, pinned(self._cpus):
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        proc = self._proc
        if not wait_for_port(
            self.port, timeout=self._startup_timeout, alive=lambda: proc.poll() is None
        ):
            self.stop()
            log_text = self.log_path.read_text(errors="replace")
            how = (
                f"exited with status {proc.returncode}"
                if proc.returncode
                else "did not listen in time"
            )
            tail = _tail(log_text)
            last = tail.splitlines()[-1] if tail else "(no output)"
            raise ServerUnavailable(f"{self.spec.name} {how}: {last}\n{tail}")
        if self.spec.all_cores:
            self._settle()
        first_line = self.log_path.read_text(errors="replace").partition("\n")[0]
        self.version = first_line.strip()
        return self

    def _settle(self, quiet: float = 0.5, timeout: float = 10.0) -> None:
        """Wait until the server has stopped starting processes (its workers)."""
        deadline = time.monotonic() + timeout
        seen, since = self.pids(), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet:
            time.sleep(0.1)
            now = self.pids()
            if now != seen:
                seen, since = now, time.monotonic()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the stop timeout, then the Redis keys; idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            workers = [(pid, process_start(pid)) for pid in descendants(proc.pid)]
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                # A supervisor killed before its workers leaves them behind.
                for pid, started in workers:
                    if started is not None and process_start(pid) == started:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
        self._release_redis()

    def log_tail(self, lines: int = 12) -> str:
        return _tail(self.log_path.read_text(errors="replace"), lines)
