"""
``nucleus serve --workers N``: N worker processes on one port, and the supervisor keeping them.

Each worker imports the app itself, builds its own :class:`StreamServer` and
listens with SO_REUSEPORT, so the kernel spreads new connections over the
workers; rooms, users and history are shared through the backend (Redis). The
supervisor holds no client socket and knows nothing of the hub: it starts the
workers, restarts one that dies, and on SIGTERM or SIGINT asks each to drain
(close every socket with 1001, exit 0), then exits 0.

How workers start: multiprocessing's *spawn* method, as uvicorn does. A spawned
worker is a fresh interpreter: it inherits no event loop, uvloop state, thread,
Redis connection or lock from the supervisor, which a *fork* would copy
(forking a process with threads can deadlock the child, and CPython 3.12 warns
about it). Re-executing ``python -m nucleus serve`` would isolate workers as
well, but spawn also gives each worker a pipe to the supervisor for free: the
worker reports on it when it listens, and sees it close if the supervisor dies
(SIGKILL included), then drains and exits instead of living on as an orphan.

The port: the supervisor first binds it with SO_REUSEPORT but never listens on
it, so it gets no connection. That turns port 0 into a real port, reports
"address in use" before any worker starts, and keeps the port for a restarted
worker even if every worker has died.

Decisions are pure: :class:`Supervision` takes what happened (a worker
started, became ready, exited; a stop was asked; time passed) with the time,
and answers with actions (:class:`Spawn`, :class:`Terminate`, :class:`Kill`,
:class:`Exit`). :func:`supervise` is the only code here that does I/O.

Restarts: a worker that exits while the server runs is restarted, at once the
first time, then after a delay doubling from ``Backoff.first`` up to
``Backoff.maximum`` while it keeps dying within ``Backoff.stable`` seconds of
starting to serve: a crash loop waits, it never spins. A worker that fails
before it ever served (an app that cannot start) stops the whole server: that
is a configuration to fix, not a crash to retry. Stopping waits at most
``graceful_timeout`` for the workers, then kills the rest; a second SIGTERM or
SIGINT kills them at once.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from enum import Enum
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from ._loader import load_app
from ._logs import configure as configure_logging
from .stream import ConfigError, StreamError, StreamServer

__all__ = [
    "Backoff",
    "Exit",
    "Kill",
    "Spawn",
    "Supervision",
    "Terminate",
    "WorkerConfig",
    "supervise",
]

logger = logging.getLogger("nucleus.supervisor")

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

LOG_FORMAT = "%(levelname)s %(name)s [%(process)d]: %(message)s"


# decisions


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start a worker in ``slot``."""

    slot: int


@dataclass(frozen=True, slots=True)
class Terminate:
    """Ask the worker in ``slot`` to drain and exit (SIGTERM)."""

    slot: int


@dataclass(frozen=True, slots=True)
class Kill:
    """End the worker in ``slot`` now (SIGKILL)."""

    slot: int


@dataclass(frozen=True, slots=True)
class Exit:
    """Every worker is gone: the supervisor exits with ``status``."""

    status: int


Action = Spawn | Terminate | Kill | Exit


@dataclass(frozen=True, slots=True)
class Backoff:
    """When to restart a worker that keeps dying (seconds)."""

    #: The delay before the second quick restart in a row (the first is immediate).
    first: float = 0.5
    #: The longest delay.
    maximum: float = 30.0
    #: A worker that served this long before dying is restarted at once again.
    stable: float = 10.0

    def delay(self, failures: int) -> float:
        """The delay before restart number ``failures`` of a run of quick failures."""
        if failures <= 1:
            return 0.0
        return float(min(self.maximum, self.first * 2 ** (failures - 2)))


class Phase(Enum):
    BOOTING = "booting"  # some slot has never served yet
    RUNNING = "running"
    STOPPING = "stopping"


@dataclass
class _Slot:
    pid: int | None = None
    ready_at: float | None = None
    served: bool = False  # a worker of this slot has served at least once
    failures: int = 0
    restart_at: float | None = None


class Supervision:
    """
    The supervisor's decisions, without I/O: feed it events with the current
    time and carry out the actions it returns, in order. Call :meth:`tick` by
    :meth:`deadline` at the latest.
    """

    def __init__(
        self, workers: int, graceful_timeout: float, backoff: Backoff | None = None
    ) -> None:
        if workers < 1:
            raise ConfigError(f"at least one worker, got {workers}")
        self.workers = workers
        self.graceful_timeout = graceful_timeout
        self.backoff = backoff or Backoff()
        self.phase = Phase.BOOTING
        #: The exit status once stopping: 0 for a requested stop.
        self.status = 0
        self._slots = [_Slot() for _ in range(workers)]
        self._stop_deadline: float | None = None
        self._killed = False

    def start(self) -> list[Action]:
        return [Spawn(slot) for slot in range(self.workers)]

    def spawned(self, slot: int, pid: int) -> None:
        state = self._slots[slot]
        state.pid, state.ready_at, state.restart_at = pid, None, None

    def ready(self, slot: int, now: float) -> bool:
        """The worker listens. True when this makes every worker serve for the first time."""
        state = self._slots[slot]
        if state.pid is None:
            return False
        state.ready_at, state.served = now, True
        if self.phase is Phase.BOOTING and all(s.served for s in self._slots):
            self.phase = Phase.RUNNING
            return True
        return False

    def exited(self, slot: int, status: int, now: float) -> list[Action]:
        """The worker in ``slot`` has exited with ``status`` (negative: killed by that signal)."""
        state = self._slots[slot]
        ready_at, state.pid, state.ready_at = state.ready_at, None, None
        if self.phase is Phase.STOPPING:
            return self._exit_if_done()
        if not state.served:
            # The app cannot start: restarting would only loop. Stop everything.
            return self._begin_stop(now, status if status > 0 else 1)
        if ready_at is not None and now - ready_at >= self.backoff.stable:
            state.failures = 0
        state.failures += 1
        delay = self.backoff.delay(state.failures)
        if delay <= 0:
            return [Spawn(slot)]
        state.restart_at = now + delay
        return []

    def restart_at(self, slot: int) -> float | None:
        """When the worker of ``slot`` is due to restart, if it waits for one."""
        return self._slots[slot].restart_at

    def stop(self, now: float) -> list[Action]:
        """A stop is asked (SIGTERM, SIGINT): drain every worker; asked again, kill them."""
        if self.phase is Phase.STOPPING:
            return self._kill_all()
        return self._begin_stop(now, 0)

    def tick(self, now: float) -> list[Action]:
        """Time passed: restarts that are due, or kills when draining took too long."""
        if self.phase is Phase.STOPPING:
            if self._stop_deadline is not None and now >= self._stop_deadline:
                return self._kill_all()
            return []
        due: list[Action] = []
        for slot, state in enumerate(self._slots):
            if state.restart_at is not None and now >= state.restart_at:
                state.restart_at = None
                due.append(Spawn(slot))
        return due

    def deadline(self) -> float | None:
        """The time by which :meth:`tick` must be called, if any."""
        if self.phase is Phase.STOPPING:
            return None if self._killed else self._stop_deadline
        times = [s.restart_at for s in self._slots if s.restart_at is not None]
        return min(times) if times else None

    def _running(self) -> list[int]:
        return [slot for slot, state in enumerate(self._slots) if state.pid is not None]

    def _begin_stop(self, now: float, status: int) -> list[Action]:
        self.phase, self.status = Phase.STOPPING, status
        self._stop_deadline = now + self.graceful_timeout
        for state in self._slots:
            state.restart_at = None
        actions: list[Action] = [Terminate(slot) for slot in self._running()]
        return actions + self._exit_if_done()

    def _kill_all(self) -> list[Action]:
        self._killed = True
        return [Kill(slot) for slot in self._running()]

    def _exit_if_done(self) -> list[Action]:
        return [] if self._running() else [Exit(self.status)]


# the worker process


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What each worker serves: the app by name (each imports it), where, on which backend."""

    app: str
    host: str
    port: int
    backend: str | None = None

    def load(self) -> StreamServer:
        app = load_app(self.app)
        if self.backend is not None:
            app.use_backend(self.backend)
        return app


def _worker(config: WorkerConfig, conn: Connection) -> None:
    """A worker's main: serve ``config`` until SIGTERM/SIGINT or the supervisor is gone."""
    # Held until the event loop handles them: a stop that arrives while the
    # app is still importing is then a drain, not a traceback.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    configure_logging()
    try:
        app = config.load()
        _run(_serve(app, config, conn))
    except StreamError as exc:
        print(f"nucleus serve: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2 if isinstance(exc, ConfigError) else 1)


async def _serve(app: StreamServer, config: WorkerConfig, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def orphaned() -> None:
        # The supervisor never writes: the pipe turns readable when it closes.
        loop.remove_reader(conn.fileno())
        if not stop.is_set():
            logger.warning("the supervisor is gone; draining")
            stop.set()

    loop.add_reader(conn.fileno(), orphaned)
    app._freeze_after_start = True  # a worker process is the server's, as under run()
    try:
        bound = await app.start(config.host, config.port, reuse_port=True)
        try:
            conn.send(bound)  # ready
        except OSError:
            orphaned()
        await stop.wait()
    finally:
        loop.remove_reader(conn.fileno())
        await app.aclose()


def _run(main: Any) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it installs
        asyncio.run(main)
    else:
        uvloop.run(main)


# the supervisor process


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind ``host:port`` with SO_REUSEPORT without listening: the workers' port, held."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


class _Workers:
    """The processes behind the slots: spawn, signal, and what to wait on."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.context = multiprocessing.get_context("spawn")
        self.procs: dict[int, BaseProcess] = {}
        self.pipes: dict[int, Connection] = {}

    def spawn(self, slot: int) -> int:
        mine, theirs = self.context.Pipe()
        proc = self.context.Process(
            target=_worker, args=(self.config, theirs), name=f"nucleus worker {slot + 1}")
        proc.start()
        theirs.close()  # only the worker holds its end: its death closes the pipe
        self.procs[slot], self.pipes[slot] = proc, mine
        assert proc.pid is not None
        return proc.pid

    def send(self, slot: int, sig: int) -> None:
        proc = self.procs.get(slot)
        if proc is not None and proc.pid is not None:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass  # already gone; its sentinel reports it

    def reap(self, slot: int) -> int:
        proc = self.procs.pop(slot)
        proc.join()
        pipe = self.pipes.pop(slot, None)
        if pipe is not None:
            pipe.close()
        status = proc.exitcode
        proc.close()
        return status if status is not None else 1

    def kill_all(self) -> None:
        for slot in list(self.procs):
            self.send(slot, signal.SIGKILL)
            self.reap(slot)


def supervise(
    config: WorkerConfig,
    workers: int,
    *,
    graceful_timeout: float = 30.0,
    backoff: Backoff | None = None,
) -> int:
    """
    Serve ``config`` with ``workers`` processes on one port until SIGTERM or
    SIGINT; return the exit status (0 after a requested stop). Raises
    :class:`ConfigError` if the port cannot be had.
    """
    configure_logging()
    held = reserve_port(config.host, config.port)
    host, port = held.getsockname()[:2]
    config = WorkerConfig(config.app, config.host, port, config.backend)
    machine = Supervision(workers, graceful_timeout, backoff)
    procs = _Workers(config)
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    # The handlers do nothing: the wakeup fd carries each signal's number to wait().
    previous_wakeup = signal.set_wakeup_fd(wake_w.fileno())
    previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in STOP_SIGNALS}
    try:
        actions = machine.start()
        while True:
            for action in actions:
                if isinstance(action, Exit):
                    logger.info("stopped")
                    return action.status
                _carry_out(action, machine, procs)
            actions = []
            deadline = machine.deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            sentinels = {proc.sentinel: slot for slot, proc in procs.procs.items()}
            pipes = {pipe: slot for slot, pipe in procs.pipes.items()}
            ready = wait([wake_r, *pipes, *sentinels], timeout)
            now = time.monotonic()
            if wake_r in ready:
                for signum in _drain(wake_r):
                    if signum in STOP_SIGNALS:
                        logger.info("%s: stopping %d worker(s)", signal.Signals(signum).name,
                                    len(procs.procs))
                        actions += machine.stop(now)
            for pipe, slot in pipes.items():
                if pipe in ready:
                    actions += _read_pipe(pipe, slot, machine, procs, host, port, now)
            for sentinel, slot in sentinels.items():
                if sentinel in ready:
                    actions += _exited(slot, machine, procs, now)
            actions += machine.tick(now)
    finally:
        procs.kill_all()  # none left after an Exit; after an error, no orphan
        signal.set_wakeup_fd(previous_wakeup)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in (wake_r, wake_w, held):
            sock.close()


def _drain(wake: socket.socket) -> list[int]:
    try:
        return list(wake.recv(64))
    except BlockingIOError:
        return []


def _carry_out(action: Action, machine: Supervision, procs: _Workers) -> None:
    if isinstance(action, Spawn):
        pid = procs.spawn(action.slot)
        machine.spawned(action.slot, pid)
        logger.info("worker %d (pid %d) starting", action.slot + 1, pid)
    elif isinstance(action, Terminate):
        procs.send(action.slot, signal.SIGTERM)
    elif isinstance(action, Kill):
        logger.warning("killing worker %d (pid %s)", action.slot + 1,
                       procs.procs[action.slot].pid)
        procs.send(action.slot, signal.SIGKILL)


def _read_pipe(
    pipe: Connection, slot: int, machine: Supervision, procs: _Workers,
    host: str, port: int, now: float,
) -> list[Action]:
    try:
        pipe.recv()
    except (EOFError, OSError):
        # The worker is gone: its sentinel says how. Stop waiting on the pipe.
        procs.pipes.pop(slot, None)
        pipe.close()
        return []
    pid = procs.procs[slot].pid
    logger.info("worker %d (pid %s) serving", slot + 1, pid)
    if machine.ready(slot, now):
        logger.info("Nucleus Stream listening on ws://%s:%d with %d workers",
                    host, port, machine.workers)
    return []


def _exited(slot: int, machine: Supervision, procs: _Workers, now: float) -> list[Action]:
    pid = procs.procs[slot].pid
    status = procs.reap(slot)
    stopping = machine.phase is Phase.STOPPING
    actions = machine.exited(slot, status, now)
    if stopping:
        level = logging.INFO if status == 0 else logging.WARNING
        logger.log(level, "worker %d (pid %s) stopped: %s", slot + 1, pid, _describe(status))
    elif machine.phase is Phase.STOPPING:
        logger.error("worker %d (pid %s) failed to start (%s); stopping the server",
                     slot + 1, pid, _describe(status))
    else:
        due = machine.restart_at(slot)
        when = "now" if due is None else f"in {due - now:.1f} s"
        logger.error("worker %d (pid %s) died (%s); restarting it %s",
                     slot + 1, pid, _describe(status), when)
    return actions
