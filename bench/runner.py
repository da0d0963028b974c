"""
The measurement plan and its execution against each server.

Per server and subscriber count N: ``idle`` (RSS per connection), ``fanout``
(deliveries/s at saturation, CPU per delivery) and ``latency`` (percentiles
at a fixed rate); then ``handshakes`` once. In a full run every measurement
gets a fresh server process, so one run's leftovers (queues, fragmented heaps)
can't tilt the next; ``--smoke`` reuses one process per server to stay short.

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

from .errors import LoadgenFailed, ServerUnavailable
from .loadgen import Loadgen, Result
from .progress import Progress
from .servers import SERVERS, ServerProcess, ServerSpec, prepare
from .system import core_busy, irq_time_accounting, stable_rss_kib

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
    repeat: int = 1
    backend: str = "memory"
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

    def units_per_server(self) -> int:
        return len(self.subscribers) * (1 + 2 * self.repeat) + self.repeat

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        self._units_left = plan.units_per_server()
        self._shared: ServerProcess | None = None

    def run(self) -> dict[str, Any]:
        try:
            prepare(self.spec)
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
        per_n: dict[str, Any] = {}
        self.entry["subscribers"] = per_n
        for n in self.plan.subscribers:
            per_n[str(n)] = {
                "idle": self._step(f"idle N={n}", functools.partial(self._idle, n=n)),
                "fanout": self._repeated(
                    f"fanout N={n}", functools.partial(self._fanout, n=n), _deliveries_per_s
                ),
                "latency": self._repeated(
                    f"latency N={n}", functools.partial(self._latency, n=n), _latency_p99
                ),
            }
        self.entry["handshakes"] = self._repeated("handshakes", self._handshakes, _handshakes_per_s)

    # -- running one step ------------------------------------------------

    @contextlib.contextmanager
    def _server(self) -> Iterator[ServerProcess]:
        if self._shared is not None:
            yield self._shared
            return
        with self._start() as server:
            yield server

    @contextlib.contextmanager
    def _start(self) -> Iterator[ServerProcess]:
        with ServerProcess(
            self.spec, cpu=self.plan.server_cpu, backend=self.plan.backend
        ) as server:
            if not self.entry["available"]:
                self.entry["available"] = True
                self.entry["version"] = server.version
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
        return self.loadgen.run(
            mode,
            server.port,
            options,
            timeout=self._timeout(),
            on_progress=self.progress.detail,
            on_ready=on_ready,
        )

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

    def _fanout(self, server: ServerProcess, n: int) -> Result:
        options = {
            **self._common(n),
            "window": self.plan.window,
            "warmup": self.plan.warmup,
            "warmup_max": self.plan.warmup_max,
            "duration": self.plan.duration,
            "drain_timeout": self.plan.drain_timeout,
            "server_pid": server.pid,
        }
        result = self._run("fanout", server, options)
        deliveries = result.get("deliveries", 0)
        if deliveries and "server_cpu_s" in result:
            result["server_cpu_s_per_million"] = result["server_cpu_s"] / deliveries * 1e6
        return result

    def _latency(self, server: ServerProcess, n: int) -> Result:
        options = {
            **self._common(n),
            "rate": self.plan.rate,
            "warmup": min(self.plan.warmup, 1.0),
            "duration": self.plan.duration,
            "drain_timeout": self.plan.drain_timeout,
            "server_pid": server.pid,
        }
        return self._run("latency", server, options)

    def _handshakes(self, server: ServerProcess) -> Result:
        options = {
            "dialect": self.spec.dialect,
            "concurrency": self.plan.handshake_concurrency,
            "warmup": min(self.plan.warmup, 1.0),
            "duration": self.plan.duration,
            "server_pid": server.pid,
        }
        return self._run("handshakes", server, options)

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
            other = {"loadgen_core": round(max(lg_core["busy"] - share, 0.0), 4)}
            if srv_core is not None and "server_cpu_share" in result:
                server = result["server_cpu_share"] + (
                    srv_core["softirq"] if softirq_apart else 0.0
                )
                other["server_core"] = round(max(srv_core["busy"] - server, 0.0), 4)
                if result.get("mode") == "fanout" and server < _SERVER_SATURATED:
                    result["server_unsaturated"] = True
                    notes.append(f"server used only {server:.0%} of its core at 'saturation'")
            result["other_load"] = other
            for where, value in other.items():
                if value > _OTHER_LOAD_LIMIT:
                    notes.append(
                        f"other processes used {value:.0%} of the {where.replace('_', ' ')}"
                    )
            if share > _LOADGEN_BUSY_LIMIT:
                notes.append(f"load generator near saturation ({share:.0%} of its core)")
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
            failed.append(f"{result['closed_by_server']} idle connections closed by the server")
        if result.get("mode") == "handshakes" and result.get("errors"):
            (failed if self.plan.smoke else notes).append(f"{result['errors']} handshakes failed")
        if notes:
            result["notes"] = notes
        for text in notes:
            self.progress.note(f"{self.spec.name} {label}: note: {text}")
        for text in failed:
            self.failures.append(f"{self.spec.name} {label}: {text}")
            self.progress.note(f"{self.spec.name} {label}: FAILED: {text}")
