"""
The measurement plan and its execution against each server.

Per server and subscriber count N: ``idle`` (RSS per connection), ``fanout``
(deliveries/s at saturation, CPU per delivery), ``serial`` (the same with one
message in flight: each message is its own loop turn, nothing batches; rate,
CPU per delivery and latency) and ``latency`` (percentiles at a fixed rate);
then ``handshakes`` (open, upgrade, close, again) and ``opens`` (rounds of
1,000 connections opened, none closed until all are) once. A server may take
part in some of these only (``ServerSpec.measures``), and ``--measures``
picks some for the whole run.
In a full run every measurement gets a fresh server process, so one run's
leftovers (queues, fragmented heaps) can't tilt the next; ``--smoke`` reuses
one process per server to stay short.

A server that cannot be prepared or does not start the first time is "not
available" and skipped; a failed measurement is recorded and the run goes on.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .broker import RedisLink
from .errors import BrokerError, LoadgenFailed, ServerUnavailable
from .loadgen import Loadgen, Result
from .progress import Progress
from .servers import MEASURES, SERVERS, ServerProcess, ServerSpec, prepare, shown_url
from .system import core_busy, cpu_seconds, irq_time_accounting, open_sockets, stable_rss_kib

__all__ = ["Plan", "run_plan"]

_HARD_ERRORS = ("order_errors", "size_errors", "unknown", "protocol_errors", "echoed_to_publisher")
_IDLE_WARMUP_CONNECTIONS = 8
_OTHER_LOAD_LIMIT = 0.15
_LOADGEN_BUSY_LIMIT = 0.9
_SERVER_SATURATED = 0.85
_QUIET = 0.1


def _deliveries_per_s(result: Result) -> float:
    return float(result["deliveries_per_s"])


def _latency_p99(result: Result) -> float:
    return float(result["latency_ms"].get("p99", 0.0))


def _handshakes_per_s(result: Result) -> float:
    return float(result["handshakes_per_s"])


def _per_handshake(result: Result) -> Result:
    """Add the server's CPU time per handshake (µs): steadier than a rate on a busy machine."""
    if result.get("handshakes") and "server_cpu_s" in result:
        result["server_cpu_us_per_handshake"] = result["server_cpu_s"] / result["handshakes"] * 1e6
    return result


class _PerProcess:
    """A server of several processes (``nucleus serve --workers``): each one's CPU time
    over a load generator run (set-up and drain included) and the sockets it holds once
    the measured window is under way, which show how the kernel spread the connections."""

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self._cpu = {pid: self._cpu_s(pid) for pid in pids}
        self._sockets: dict[int, int | None] = {}

    @staticmethod
    def _cpu_s(pid: int) -> float | None:
        try:
            return cpu_seconds(pid)
        except OSError:  # it exited
            return None

    def on_progress(self, line: str) -> None:
        """Count the sockets at the first progress line of the measured window."""
        if self._sockets or not line.startswith("measure"):
            return
        for pid in self._pids:
            try:
                self._sockets[pid] = open_sockets(pid)
            except OSError:
                self._sockets[pid] = None

    def report(self) -> list[dict[str, Any]]:
        found = []
        for pid in self._pids:
            before, after = self._cpu[pid], self._cpu_s(pid)
            cpu = round(after - before, 3) if before is not None and after is not None else None
            found.append({"pid": pid, "run_cpu_s": cpu, "sockets": self._sockets.get(pid)})
        return found


@dataclass(frozen=True)
class Plan:
    servers: tuple[str, ...]
    subscribers: tuple[int, ...]
    duration: float = 10.0
    warmup: float = 2.0
    warmup_max: float = 60.0
    """Fan-out: how long the window may wait for the first completed message."""
    window: int = 32
    rate: float = 20.0
    msg_size: int = 100
    handshake_concurrency: int = 32
    open_connections: int = 1000
    """Opens: connections per round, all held open until the last one is upgraded."""
    open_concurrency: int = 64
    """Opens: handshakes in flight."""
    measures: tuple[str, ...] = MEASURES
    """What to measure, for servers that take part in it (``--measures``)."""
    repeat: int = 1
    redis_url: str = "redis://127.0.0.1:6379/14"
    """The Redis of the servers that use one; the bench writes to it (prefixed keys)."""
    smoke: bool = False
    setup_timeout: float = 180.0
    drain_timeout: float = 45.0
    server_cpu: int = 0
    loadgen_cpu: int = 1
    capped_subscribers: dict[int, int] = field(default_factory=dict)
    """Requested counts lowered to fit RLIMIT_NOFILE, and what was measured instead."""
    quiet_wait: float = 0.0
    """Before each measurement, wait up to this many seconds for other load on the two cores."""
    require: tuple[str, ...] = ()
    """Servers whose unavailability is a failure (exit status 1) rather than a note."""

    def measured(self, spec: ServerSpec) -> tuple[str, ...]:
        """What this plan measures of ``spec``."""
        return tuple(m for m in spec.measures if m in self.measures)

    def units(self, spec: ServerSpec) -> int:
        """How many measurements ``spec`` takes (for the progress line)."""
        measures = self.measured(spec)
        per_n = ("idle" in measures) + self.repeat * (
            ("fanout" in measures) + ("serial" in measures) + ("latency" in measures)
        )
        once = ("handshakes" in measures) + ("opens" in measures)
        return len(self.subscribers) * per_n + self.repeat * once

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["redis_url"] = shown_url(self.redis_url)
        return found


def run_plan(plan: Plan, loadgen: Loadgen, progress: Progress) -> tuple[dict[str, Any], list[str]]:
    """Measure every server in ``plan``; return the per-server results and the failures found."""
    results: dict[str, Any] = {}
    failures: list[str] = []
    for name in plan.servers:
        run = _ServerRun(SERVERS[name], plan, loadgen, progress)
        results[name] = run.run()
        failures += run.failures
    return results, failures


class _ServerRun:
    def __init__(self, spec: ServerSpec, plan: Plan, loadgen: Loadgen, progress: Progress) -> None:
        self.spec = spec
        self.plan = plan
        self.loadgen = loadgen
        self.progress = progress
        self.failures: list[str] = []
        self.entry: dict[str, Any] = {
            "label": spec.label,
            "dialect": spec.dialect,
            "available": False,
        }
        self._units_left = plan.units(spec)
        self._shared: ServerProcess | None = None

    def run(self) -> dict[str, Any]:
        try:
            prepare(self.spec, self.plan.redis_url)
            with contextlib.ExitStack() as stack:
                if self.plan.smoke:
                    self._shared = stack.enter_context(self._start())
                self._measure_all()
        except ServerUnavailable as exc:
            self.entry["error"] = str(exc)
            self.progress.note(f"{self.spec.name}: not available: {str(exc).splitlines()[0]}")
            if self.spec.name in self.plan.require:
                self.failures.append(f"{self.spec.name}: not available: {str(exc).splitlines()[0]}")
        self.progress.advance(self._units_left)
        return self.entry

    def _measure_all(self) -> None:
        measures = self.plan.measured(self.spec)
        if {"idle", "fanout", "serial", "latency"} & set(measures):
            per_n: dict[str, Any] = {}
            self.entry["subscribers"] = per_n
            for n in self.plan.subscribers:
                runs = per_n[str(n)] = {}
                if "idle" in measures:
                    runs["idle"] = self._step(f"idle N={n}", functools.partial(self._idle, n=n))
                if "fanout" in measures:
                    runs["fanout"] = self._repeated(
                        f"fanout N={n}", functools.partial(self._fanout, n=n), _deliveries_per_s
                    )
                if "serial" in measures:
                    runs["serial"] = self._repeated(
                        f"serial N={n}", functools.partial(self._serial, n=n), _deliveries_per_s
                    )
                if "latency" in measures:
                    runs["latency"] = self._repeated(
                        f"latency N={n}", functools.partial(self._latency, n=n), _latency_p99
                    )
        if "handshakes" in measures:
            self.entry["handshakes"] = self._repeated(
                "handshakes", self._handshakes, _handshakes_per_s
            )
        if "opens" in measures:
            self.entry["opens"] = self._repeated("opens", self._opens, _handshakes_per_s)

    # -- running one step ------------------------------------------------

    @contextlib.contextmanager
    def _server(self) -> Iterator[ServerProcess]:
        if self._shared is not None:
            yield self._shared
            return
        with self._start() as server:
            yield server

    def _cpus(self) -> set[int]:
        plan = self.plan
        return {plan.server_cpu, plan.loadgen_cpu} if self.spec.all_cores else {plan.server_cpu}

    @contextlib.contextmanager
    def _start(self) -> Iterator[ServerProcess]:
        with ServerProcess(
            self.spec, cpus=self._cpus(), redis_url=self.plan.redis_url
        ) as server:
            if not self.entry["available"]:
                self.entry["available"] = True
                self.entry["version"] = server.version
                if self.spec.redis:
                    self.entry["redis"] = {
                        "url": shown_url(self.plan.redis_url),
                        "broker_cpu": "measured" if server.broker_pids else
                        "not measured: redis-server is not a local process",
                    }
            yield server

    def _wait_quiet(self) -> float:
        """Wait (at most ``plan.quiet_wait`` s) for both cores to idle; return the busier share."""
        cores = (self.plan.server_cpu, self.plan.loadgen_cpu)
        deadline = time.monotonic() + self.plan.quiet_wait
        while True:
            busy = core_busy(0.5)
            worst = max(busy.get(core, 0.0) for core in cores)
            if worst <= _QUIET or time.monotonic() >= deadline:
                return worst
            self.progress.detail(f"waiting for other load to stop ({worst:.0%} busy)")

    def _step(self, label: str, measure: Callable[[ServerProcess], Result]) -> Result:
        self.progress.step(f"{self.spec.name} {label}")
        busy_before = self._wait_quiet() if self.plan.quiet_wait > 0 and not self._shared else None
        try:
            with self._server() as server:
                result = measure(server)
        except LoadgenFailed as exc:
            result = {"error": str(exc)}
            self.failures.append(f"{self.spec.name} {label}: {exc}")
            self.progress.note(f"{self.spec.name} {label}: FAILED: {str(exc).splitlines()[0]}")
        except ServerUnavailable as exc:
            if not self.entry["available"]:
                raise
            result = {"error": str(exc)}
            self.failures.append(
                f"{self.spec.name} {label}: server did not start: {str(exc).splitlines()[0]}"
            )
        else:
            if busy_before is not None:
                result["cores_busy_before"] = round(busy_before, 4)
            self._judge(label, result)
        self._units_left -= 1
        self.progress.advance()
        return result

    def _repeated(
        self, label: str, measure: Callable[[ServerProcess], Result], key: Callable[[Result], float]
    ) -> Result:
        runs = []
        for i in range(self.plan.repeat):
            suffix = f" ({i + 1}/{self.plan.repeat})" if self.plan.repeat > 1 else ""
            runs.append(self._step(label + suffix, measure))
        good = [r for r in runs if "error" not in r]
        if not good:
            return runs[0]
        ordered = sorted(good, key=key)
        chosen = dict(ordered[(len(ordered) - 1) // 2])
        if len(runs) > 1:
            chosen["repeats"] = {
                "runs": len(runs),
                "ok": len(good),
                "values": [key(r) for r in good],
            }
        return chosen

    # -- the measurements --------------------------------------------------

    def _common(self, n: int) -> dict[str, object]:
        return {
            "dialect": self.spec.dialect,
            "subscribers": n,
            "size": self.plan.msg_size,
            "setup_timeout": self.plan.setup_timeout,
        }

    @staticmethod
    def _pids(server: ServerProcess) -> dict[str, object]:
        """Whose CPU time the load generator reads over its window."""
        return {"server_pid": server.pids(), "broker_pid": server.broker_pids}

    def _timeout(self) -> float:
        plan = self.plan
        warmup = max(plan.warmup, plan.warmup_max)
        return plan.setup_timeout + warmup + plan.duration + plan.drain_timeout + 30.0

    def _run(
        self,
        mode: str,
        server: ServerProcess,
        options: Mapping[str, object],
        on_ready: Callable[[], None] | None = None,
    ) -> Result:
        pids = server.pids()
        per_process = _PerProcess(pids) if len(pids) > 1 and mode != "idle" else None

        def on_progress(line: str) -> None:
            if per_process is not None:
                per_process.on_progress(line)
            self.progress.detail(line)

        result = self.loadgen.run(
            mode,
            server.port,
            options,
            timeout=self._timeout(),
            on_progress=on_progress,
            on_ready=on_ready,
        )
        if per_process is not None:
            result["processes"] = per_process.report()
        if server.broker_pids and mode != "idle":
            result["broker_other_clients"] = self._other_redis_clients(result)
        return result

    def _other_redis_clients(self, result: Result) -> int | None:
        """Clients of other databases busy during the run: their work is in redis-server's CPU."""
        window = float(result.get("warmup_s", 0.0)) + float(result.get("duration_s", 0.0))
        try:
            with RedisLink(self.plan.redis_url) as link:
                return link.other_clients(active_within=window + 1.0)
        except BrokerError:
            return None

    def _idle(self, server: ServerProcess, n: int) -> Result:
        # A few connections first, so lazily imported code and first-use
        # allocations are in the baseline, not billed to the N connections.
        warm = {**self._common(min(n, _IDLE_WARMUP_CONNECTIONS))}
        self._run("idle", server, warm, on_ready=lambda: None)
        baseline = stable_rss_kib(server.pid)
        loaded: list[int] = []
        result = self._run(
            "idle",
            server,
            self._common(n),
            on_ready=lambda: loaded.append(stable_rss_kib(server.pid)),
        )
        if not loaded:
            raise LoadgenFailed("idle run ended before its connections were ready")
        connections = n + 1  # the subscribers and the publisher that sent the ready probe
        result.update(
            rss_baseline_kib=baseline,
            rss_kib=loaded[0],
            connections=connections,
            kib_per_conn=(loaded[0] - baseline) / connections,
        )
        return result

    def _fanout(self, server: ServerProcess, n: int, window: int | None = None) -> Result:
        options = {
            **self._common(n),
            "window": window or self.plan.window,
            "warmup": self.plan.warmup,
            "warmup_max": self.plan.warmup_max,
            "duration": self.plan.duration,
            "drain_timeout": self.plan.drain_timeout,
            **self._pids(server),
        }
        result = self._run("fanout", server, options)
        deliveries = result.get("deliveries", 0)
        if deliveries and "server_cpu_s" in result:
            server_cpu = result["server_cpu_s"]
            broker_cpu = result.get("broker_cpu_s", 0.0)
            result["server_cpu_s_per_million"] = server_cpu / deliveries * 1e6
            if "broker_cpu_s" in result:
                result["broker_cpu_s_per_million"] = broker_cpu / deliveries * 1e6
            if not self.spec.redis or "broker_cpu_s" in result:
                result["total_cpu_s_per_million"] = (server_cpu + broker_cpu) / deliveries * 1e6
        return result

    def _serial(self, server: ServerProcess, n: int) -> Result:
        """Fan-out with one message in flight: the publisher sends the next only once
        every subscriber has the last, so each is its own loop turn and nothing batches.
        The load generator's fan-out mode records every delivery's latency too."""
        return self._fanout(server, n, window=1)

    def _latency(self, server: ServerProcess, n: int) -> Result:
        options = {
            **self._common(n),
            "rate": self.plan.rate,
            "warmup": min(self.plan.warmup, 1.0),
            "duration": self.plan.duration,
            "drain_timeout": self.plan.drain_timeout,
            **self._pids(server),
        }
        return self._run("latency", server, options)

    def _handshakes(self, server: ServerProcess) -> Result:
        options = {
            "dialect": self.spec.dialect,
            "concurrency": self.plan.handshake_concurrency,
            "warmup": min(self.plan.warmup, 1.0),
            "duration": self.plan.duration,
            **self._pids(server),
        }
        return _per_handshake(self._run("handshakes", server, options))

    def _opens(self, server: ServerProcess) -> Result:
        options = {
            "dialect": self.spec.dialect,
            "subscribers": self.plan.open_connections,
            "connect_concurrency": self.plan.open_concurrency,
            "warmup": min(self.plan.warmup, 1.0),
            "duration": self.plan.duration,
            "setup_timeout": self.plan.setup_timeout,
            **self._pids(server),
        }
        return _per_handshake(self._run("opens", server, options))

    # -- judging a result ---------------------------------------------------

    def _judge(self, label: str, result: Result) -> None:
        """Add ``loadgen_core_share``, ``other_load`` and ``notes``; record failures."""
        notes: list[str] = []
        failed: list[str] = []
        cores = {core["cpu"]: core for core in result.get("cores", [])}
        lg_core, srv_core = cores.get(self.plan.loadgen_cpu), cores.get(self.plan.server_cpu)
        # With tick accounting (no CONFIG_IRQ_TIME_ACCOUNTING) the softirq work
        # a process triggers, e.g. loopback packet processing, is already in
        # its utime+stime; otherwise it is charged to no process and is added.
        softirq_apart = irq_time_accounting() is True
        if lg_core is not None and "loadgen_cpu_share" in result:
            share = result["loadgen_cpu_share"] + (lg_core["softirq"] if softirq_apart else 0.0)
            result["loadgen_core_share"] = round(share, 4)
            other = {"loadgen_core": max(lg_core["busy"] - share, 0.0)}
            if self.spec.all_cores and srv_core is not None and "server_cpu_share" in result:
                # Workers run on both cores: only the sum of the two can be split.
                server = result["server_cpu_share"] + (
                    srv_core["softirq"] if softirq_apart else 0.0
                )
                both = lg_core["busy"] + srv_core["busy"]
                other = {"cores": max(both - share - server, 0.0)}
            elif srv_core is not None and "server_cpu_share" in result:
                server = result["server_cpu_share"] + (
                    srv_core["softirq"] if softirq_apart else 0.0
                )
                other["server_core"] = max(srv_core["busy"] - server, 0.0)
                # One message in flight (serial) leaves the server idle while the
                # load generator reads, by design: not a saturation run.
                saturating = result.get("mode") == "fanout" and result.get("window", 0) > 1
                if saturating and server < _SERVER_SATURATED:
                    result["server_unsaturated"] = True
                    notes.append(f"server used only {server:.0%} of its core at 'saturation'")
            # redis-server is not pinned: whichever core it ran on, its time is
            # not "other load"; take it off the cores that show the most.
            broker = result.get("broker_cpu_share", 0.0)
            for where in sorted(other, key=other.__getitem__, reverse=True):
                taken = min(other[where], broker)
                other[where] -= taken
                broker -= taken
            other = {where: round(value, 4) for where, value in other.items()}
            result["other_load"] = other
            for where, value in other.items():
                if value > _OTHER_LOAD_LIMIT:
                    where_text = "two cores" if where == "cores" else where.replace("_", " ")
                    notes.append(f"other processes used {value:.0%} of the {where_text}")
            if share > _LOADGEN_BUSY_LIMIT:
                notes.append(f"load generator near saturation ({share:.0%} of its core)")
        if result.get("broker_other_clients"):
            notes.append(
                f"redis-server also served {result['broker_other_clients']} clients of other "
                "databases during the run: its CPU time includes their work (--redis private)"
            )
        check = result.get("check")
        if check is not None:
            failed += [f"{key}={check[key]}" for key in _HARD_ERRORS if check.get(key)]
            if check.get("missing"):
                missing, expected = check["missing"], check["expected_deliveries"]
                text = f"{missing} of {expected} deliveries missing after the drain"
                (failed if self.plan.smoke else notes).append(text)
        if result.get("mode") == "latency":
            offered = result.get("offered_deliveries_per_s", 0.0)
            achieved = result.get("deliveries_per_s", 0.0)
            if result.get("overloaded"):
                notes.append(
                    f"overloaded: offered {offered:,.0f} deliveries/s; stopped after "
                    f"{result.get('duration_s', 0.0):.1f} s when a message had waited 3 s"
                )
            elif offered and achieved < 0.9 * offered:
                result["overloaded"] = True
                notes.append(
                    f"overloaded: offered {offered:,.0f} deliveries/s, got {achieved:,.0f}"
                )
        if result.get("closed_by_server"):
            what = "open connections" if result.get("mode") == "opens" else "idle connections"
            failed.append(f"{result['closed_by_server']} {what} closed by the server")
        if result.get("mode") in ("handshakes", "opens") and result.get("errors"):
            (failed if self.plan.smoke else notes).append(f"{result['errors']} handshakes failed")
        if notes:
            result["notes"] = notes
        for text in notes:
            self.progress.note(f"{self.spec.name} {label}: note: {text}")
        for text in failed:
            self.failures.append(f"{self.spec.name} {label}: {text}")
            self.progress.note(f"{self.spec.name} {label}: FAILED: {text}")
