"""
The servers under test: what each needs, how to start it pinned, how to stop it.

Every server serves the same contract (``bench/README.md``): subscribers on
``/sub`` share one room, text messages on ``/pub`` are broadcast verbatim to
them. Socket.IO servers speak the ``socketio`` dialect instead, with the
publisher marked by ``role=pub`` in its query string.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from .errors import ServerUnavailable
from .loadgen import BUILD_DIR
from .system import free_port, pinned, rss_kib, wait_for_port

__all__ = ["SERVERS", "ServerProcess", "ServerSpec", "prepare"]

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SERVERS_DIR = BENCH_DIR / "servers"
NODE_DIR = SERVERS_DIR / "node"
LOG_DIR = BUILD_DIR / "logs"


@dataclass(frozen=True)
class ServerSpec:
    name: str
    label: str
    dialect: Literal["raw", "socketio"]
    argv: tuple[str, ...]
    """Command line without ``--port``; ``{backend}`` is replaced by the backend option."""
    python_modules: tuple[str, ...] = ()
    """Modules that must import in the server's interpreter."""
    node: bool = False
    env: Mapping[str, str] = field(default_factory=dict)


_PY = sys.executable

SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            "nucleus",
            "Nucleus Stream",
            "raw",
            (_PY, str(SERVERS_DIR / "nucleus_server.py"), "--backend", "{backend}"),
            python_modules=("nucleus.stream",),
            env={"PYTHONPATH": str(REPO / "src")},
        ),
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


def prepare(spec: ServerSpec) -> None:
    """Check that ``spec`` can start, installing Node packages on demand.

    Raises :class:`ServerUnavailable` with the reason when it can't.
    """
    if spec.node:
        _node_modules()
    if spec.python_modules:
        _python_modules(spec.python_modules, spec.env.get("PYTHONPATH"))


class ServerProcess:
    """One server process pinned to ``cpu``, listening on a fresh port; a context manager.

    Entering starts it and waits until its port accepts connections (raising
    :class:`ServerUnavailable` with the end of its log if it exits or never
    listens); leaving sends SIGTERM, then SIGKILL after ``stop_timeout``.
    """

    def __init__(
        self,
        spec: ServerSpec,
        *,
        cpu: int,
        backend: str,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.spec = spec
        self.port = 0
        self.version = ""
        self._cpu = cpu
        self._backend = backend
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path = LOG_DIR / f"{spec.name}.log"

    @property
    def pid(self) -> int:
        assert self._proc is not None, "server not started"
        return self._proc.pid

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def __enter__(self) -> ServerProcess:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        argv = [arg.replace("{backend}", self._backend) for arg in self.spec.argv] + [
            "--port",
            str(self.port),
        ]
        env = {**os.environ, **self.spec.env}
        with self.log_path.open("wb") as log, pinned({self._cpu}):
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
        first_line = self.log_path.read_text(errors="replace").partition("\n")[0]
        self.version = first_line.strip()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the stop timeout; idempotent."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(self._stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 12) -> str:
        return _tail(self.log_path.read_text(errors="replace"), lines)
