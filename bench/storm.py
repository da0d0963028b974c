"""
``python -m bench storm`` (or ``python -m bench.storm``): the reconnect storm of
issue 12, against Nucleus Stream.

N ``nucleus.v1`` clients (the C load generator ``storm.c``), each subscribed
to one of R rooms while a publisher keeps traffic flowing, are disrupted in
two ways, each against a fresh server (``servers/storm_server.py``, memory
backend, pinned to its core):

- ``cut``: every link is aborted at once while the server stays up. The
  clients reconnect with the browser client's jittered backoff and must
  recover: ``recovered: true`` and the replay, nothing lost or duplicated.
- ``restart``: the server is stopped (SIGTERM: it closes every socket with
  1001) and started again on the same port. The memory backend's history is
  gone, so every client must get a gap (``recovered: false``) and come back.

Measured: the time until every client is back (from the cut; from the server
being reachable again), connections completed per 100 ms, the server's RSS
and CPU time during the storm (sampled every 20 ms from ``/proc``), and, with
``--profile``, where the server spends that time (py-spy). Results go to
``bench/results/storm.json`` and a chart to ``bench/results/storm.png``.

Exit status: 0 when every scenario passed its checks, 1 when one failed, 2 on
a setup error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import BenchError, LoadgenFailed, ServerUnavailable
from .loadgen import Loadgen, Result, build
from .progress import Progress
from .report import write_json
from .servers import LOG_DIR, REPO, SERVERS_DIR, ServerProcess, ServerSpec
from .storm_report import render_storm_chart, render_storm_table, summarize_profile
from .system import (
    core_busy,
    cpu_seconds,
    ephemeral_port_count,
    machine_facts,
    raise_nofile,
    rss_kib,
)

__all__ = ["StormPlan", "main", "run_scenario"]

SOURCE = Path(__file__).resolve().with_name("storm.c")
RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("cut", "restart")
TARGET_S = 5.0
"""Issue 12: every client back and recovered at most 5 s after the server is reachable."""

_SRC = os.environ.get("BENCH_NUCLEUS_SRC", str(REPO / "src"))
_FD_HEADROOM = 100
_SAMPLE_EVERY = 0.02
_QUIET = 0.1
_NOTE_EVERY = 10.0  # seconds between progress lines in a log (not a terminal)


@dataclasses.dataclass(frozen=True)
class StormPlan:
    clients: int = 19_000
    rooms: int = 100
    rate: float = 2.0
    """Messages/s published to each room."""
    steady: float = 2.0
    """Seconds of traffic before the disruption."""
    after: float = 1.0
    """Seconds of traffic after every client is back, before the tail check."""
    history_size: int = 1000
    """Messages each room keeps: at 2/s, 500 s, far more than any outage here."""
    history_ttl: float = 600.0
    connect_concurrency: int = 64
    max_delay_ms: float = 30_000.0
    """stream.js's ``maxDelay``; the other backoff options keep their defaults."""
    setup_timeout: float = 180.0
    storm_timeout: float = 120.0
    drain_timeout: float = 15.0
    stop_timeout: float = 30.0
    scenarios: tuple[str, ...] = SCENARIOS
    server_cpu: int = 0
    loadgen_cpu: int = 1
    quiet_wait: float = 60.0
    profile: bool = False
    smoke: bool = False
    capped_clients: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _spec(plan: StormPlan, name: str) -> ServerSpec:
    argv = (
        sys.executable, str(SERVERS_DIR / "storm_server.py"), "--rooms", str(plan.rooms),
        "--history-size", str(plan.history_size), "--history-ttl", str(plan.history_ttl),
    )
    # No log line per connection while measured, as in the fan-out benchmark.
    return ServerSpec(name, "Nucleus Stream, storm subject", "raw", argv,
                      env={"PYTHONPATH": _SRC, "NUCLEUS_LOG_LEVEL": "warning"})


# -- the server, watched -------------------------------------------------------


def _status_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss(pid: int) -> bool:
    """Make ``VmHWM`` start again from the current RSS (``clear_refs``, Linux 4.0+)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def schedstat_s(pid: int) -> tuple[float, float]:
    """Seconds the threads of ``pid`` ran, and waited on a run queue for a core
    (``/proc/<pid>/task/*/schedstat``): the wait is what other processes took."""
    run = wait = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:  # the thread ended meanwhile
            continue
        run += int(fields[0])
        wait += int(fields[1])
    return run / 1e9, wait / 1e9


@dataclasses.dataclass(frozen=True)
class Sample:
    t_ns: int
    pid: int
    rss_kib: int
    cpu_s: float
    """utime + stime (``/proc/<pid>/stat``, in clock ticks)."""
    run_s: float
    wait_s: float


class ServerSampler:
    """RSS and CPU time of the server process every 20 ms, in a thread; a context manager.

    :meth:`follow` switches to another process (the restarted server). Times
    are ``time.monotonic_ns()``: CLOCK_MONOTONIC, the load generator's clock.
    """

    def __init__(self, pid: int, interval: float = _SAMPLE_EVERY) -> None:
        self.samples: list[Sample] = []
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storm-sampler", daemon=True)

    def follow(self, pid: int) -> None:
        self._pid = pid

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            pid = self._pid
            try:
                sample = Sample(time.monotonic_ns(), pid, rss_kib(pid), cpu_seconds(pid),
                                *schedstat_s(pid))
            except (OSError, ProcessLookupError, ValueError):
                continue  # between a stop and a start
            self.samples.append(sample)

    def __enter__(self) -> ServerSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()


class Profiler:
    """py-spy recording one server process (raw collapsed stacks), if py-spy is installed."""

    def __init__(self, out: Path, cpu: int, limit: float) -> None:
        self.out = out
        self.error: str | None = None
        self._cpu = cpu
        self._limit = limit
        self._proc: subprocess.Popen[bytes] | None = None
        self.started_ns = self.stopped_ns = 0

    @staticmethod
    def executable() -> str | None:
        beside = Path(sys.executable).with_name("py-spy")
        if beside.exists():
            return str(beside)
        from shutil import which

        return which("py-spy")

    def start(self, pid: int) -> None:
        spy = self.executable()
        if spy is None:
            self.error = "py-spy is not installed (pip install py-spy)"
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        argv = [spy, "record", "--pid", str(pid), "--rate", "100", "--nonblocking",
                "--format", "raw", "--output", str(self.out),
                "--duration", str(int(self._limit))]
        # The profiler samples from the load generator's core, not the server's.
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {self._cpu})
        try:
            self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        finally:
            os.sched_setaffinity(0, saved)
        self.started_ns = time.monotonic_ns()
        time.sleep(0.3)  # attached before the storm starts

    def stop(self) -> None:
        """End the recording (SIGINT makes py-spy write its file); idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self.stopped_ns = time.monotonic_ns()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if not self.out.exists():
            self.error = f"py-spy wrote no profile: {err.decode(errors='replace').strip()[-300:]}"


# -- one scenario --------------------------------------------------------------


def _options(plan: StormPlan, scenario: str) -> dict[str, object]:
    options: dict[str, object] = {
        "clients": plan.clients,
        "rooms": plan.rooms,
        "rate": plan.rate,
        "connect_concurrency": plan.connect_concurrency,
        "steady": plan.steady,
        "after": plan.after,
        "max_delay": plan.max_delay_ms,
        "setup_timeout": plan.setup_timeout,
        "storm_timeout": plan.storm_timeout,
        "drain_timeout": plan.drain_timeout,
        "down_timeout": plan.stop_timeout + 30.0,
    }
    if scenario == "cut":
        options["cut_on"] = "stdin"  # after the harness has reset the peak RSS
    return options


def _timeout(plan: StormPlan) -> float:
    return (plan.setup_timeout + plan.steady + 2 * plan.stop_timeout + 60.0
            + plan.storm_timeout + plan.after + plan.drain_timeout + 60.0)


def _server_figures(
    samples: list[Sample], t0: int, t_end: int, pid: int, scenario: str
) -> dict[str, Any]:
    """RSS before, peak during and after the storm; CPU time during it; a 100 ms timeline."""
    before = [s for s in samples if s.t_ns < t0]
    during = [s for s in samples if t0 <= s.t_ns <= t_end and s.pid == pid]
    figures: dict[str, Any] = {"samples": len(during)}
    if before:
        figures["rss_before_kib"] = before[-1].rss_kib
    if during:
        figures["rss_peak_kib"] = max(s.rss_kib for s in during)
        figures["rss_end_kib"] = during[-1].rss_kib
        # From the cut; for a restarted server, from its start.
        start = before[-1] if scenario == "cut" and before else None
        cpu = during[-1].cpu_s - (start.cpu_s if start else 0.0)
        wall = (during[-1].t_ns - (t0 if start else during[0].t_ns)) / 1e9
        figures["cpu_s"] = round(cpu, 3)
        figures["cpu_share"] = round(cpu / wall, 4) if wall > 0 else None
        # Time it was ready to run but another process had its core.
        figures["run_queue_wait_s"] = round(
            during[-1].wait_s - (start.wait_s if start else 0.0), 3)
    timeline: dict[str, list[float]] = {"t_s": [], "rss_mib": [], "cpu_share": [],
                                        "wait_share": []}
    last: Sample | None = None
    for sample in samples:
        if last is not None and sample.t_ns - last.t_ns < 100_000_000:
            continue
        if last is not None and sample.pid == last.pid:
            seconds = (sample.t_ns - last.t_ns) / 1e9
            share = (sample.run_s - last.run_s) / seconds
            wait = (sample.wait_s - last.wait_s) / seconds
        else:
            share = wait = float("nan")
        timeline["t_s"].append(round((sample.t_ns - t0) / 1e9, 3))
        timeline["rss_mib"].append(round(sample.rss_kib / 1024, 2))
        timeline["cpu_share"].append(round(share, 3))
        timeline["wait_share"].append(round(wait, 3))
        last = sample
    figures["timeline"] = timeline
    return figures


_GC_LINE = re.compile(
    r"^gc generation=(\d) ms=([\d.]+) collected=(\d+) at=([\d.]+)$", re.MULTILINE)


def gc_pauses(logs: list[Path], t0: int, t_end: int) -> dict[str, Any]:
    """The collections the servers logged (``storm_server.py``): every one, relative to the
    disruption, and the sums over the storm."""
    pauses = []
    for log in logs:
        text = log.read_text(errors="replace") if log.exists() else ""
        for generation, ms, collected, at in _GC_LINE.findall(text):
            pauses.append([round(float(at) - t0 / 1e9, 3), int(generation), float(ms),
                           int(collected)])
    pauses.sort()
    end = (t_end - t0) / 1e9
    during = [p for p in pauses if 0 <= p[0] <= end]
    return {
        "pauses": pauses,
        "storm_count": len(during),
        "storm_total_ms": round(sum(p[2] for p in during), 1),
        "storm_max_ms": max((p[2] for p in during), default=0.0),
        "storm_full": sum(1 for p in during if p[1] == 2),
    }


def _relative(events: dict[str, int], t0: int) -> dict[str, float]:
    return {key.removesuffix("_ns") + "_s": round((value - t0) / 1e9, 3)
            for key, value in events.items() if value}


def run_scenario(
    scenario: str, plan: StormPlan, storm: Loadgen, progress: Progress
) -> Result:
    """Start a server, run ``scenario`` against it, and return the load generator's
    report with the server's figures (``server``), the harness's timings
    (``harness``) and, with ``plan.profile``, the profile (``profile``)."""
    events: dict[str, int] = {}
    extra: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(ServerProcess(
            _spec(plan, f"nucleus-storm-{scenario}"), cpus={plan.server_cpu}, redis_url="",
            stop_timeout=plan.stop_timeout))
        watched = [first]
        sampler = stack.enter_context(ServerSampler(first.pid))
        profiler = (Profiler(LOG_DIR / f"storm-{scenario}.pyspy.txt", plan.loadgen_cpu,
                             plan.storm_timeout + 60) if plan.profile else None)
        if profiler is not None:
            stack.callback(profiler.stop)

        def on_ready() -> None:
            if scenario == "cut":
                extra["peak_reset"] = reset_peak_rss(first.pid)
                if profiler is not None:
                    profiler.start(first.pid)
                return
            events["sigterm_ns"] = time.monotonic_ns()
            first.stop()
            events["exited_ns"] = time.monotonic_ns()
            second = stack.enter_context(ServerProcess(
                _spec(plan, f"nucleus-storm-{scenario}-2"), cpus={plan.server_cpu}, redis_url="",
                stop_timeout=plan.stop_timeout, port=first.port))
            events["listening_ns"] = time.monotonic_ns()
            watched.append(second)
            sampler.follow(second.pid)
            if profiler is not None:
                profiler.start(second.pid)

        noted = [time.monotonic()]

        def on_progress(text: str) -> None:
            progress.detail(text)
            if not sys.stderr.isatty() and time.monotonic() - noted[0] >= _NOTE_EVERY:
                noted[0] = time.monotonic()
                progress.note(f"  {scenario}: {text}")
            if profiler is not None and text.startswith("after"):
                profiler.stop()  # the storm is over: profile it alone

        result = storm.run(scenario, first.port, _options(plan, scenario),
                           timeout=_timeout(plan), on_progress=on_progress, on_ready=on_ready)
        server = watched[-1]
        t0 = int(result["t_disrupted_ns"])
        storm_s = result.get("since_disruption_s")
        t_end = t0 + int(storm_s * 1e9) if storm_s is not None else time.monotonic_ns()
        figures = _server_figures(sampler.samples, t0, t_end, server.pid, scenario)
        hwm = _status_kib(server.pid, "VmHWM")
        if hwm is not None and (scenario == "restart" or extra.get("peak_reset")):
            figures["rss_hwm_kib"] = hwm  # since the cut, or since the restart
        figures["gc"] = gc_pauses([p.log_path for p in watched], t0, t_end)
        figures["log_tail"] = "\n".join(
            line for line in server.log_tail(40).splitlines() if not line.startswith("gc "))
        result["server"] = figures
        result["harness"] = _relative(events, t0)
        if profiler is not None:
            profiler.stop()
            if profiler.error is not None:
                result["profile"] = {"error": profiler.error}
            else:
                seconds = (profiler.stopped_ns - profiler.started_ns) / 1e9
                result["profile"] = summarize_profile(profiler.out, seconds, rate=100)
    all_back = result.get("all_back_s")
    result["within_target"] = all_back is not None and all_back <= TARGET_S
    return result


# -- the command line ----------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench storm",
        description="Reconnect storm (issue 12): every link cut at once, and a server restart.",
    )
    parser.add_argument("--clients", type=int, default=None, help="clients (19000; smoke 300)")
    parser.add_argument("--rooms", type=int, default=None, help="rooms (100; smoke 10)")
    parser.add_argument("--rate", type=float, default=2.0, help="messages/s per room (2)")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {', '.join(SCENARIOS)} (default: both)",
    )
    parser.add_argument("--steady", type=float, default=None,
                        help="seconds of traffic before the disruption (2; smoke 1)")
    parser.add_argument("--max-delay", type=float, default=None,
                        help="the clients' backoff ceiling, ms (stream.js's 30000; smoke 2000)")
    parser.add_argument("--connect-concurrency", type=int, default=64,
                        help="handshakes in flight while the clients first connect (64)")
    parser.add_argument("--storm-timeout", type=float, default=120.0,
                        help="seconds to wait for every client to come back (120)")
    parser.add_argument("--profile", action="store_true",
                        help="record the server with py-spy during each storm")
    parser.add_argument("--smoke", action="store_true",
                        help="300 clients in 10 rooms, a backoff ceiling of 2 s, no chart")
    parser.add_argument("--quiet-wait", type=float, default=None,
                        help="wait up to this many seconds for quiet cores before each "
                        "scenario (60; smoke 0)")
    parser.add_argument("--server-cpu", type=int, default=0, help="core for the server (0)")
    parser.add_argument("--loadgen-cpu", type=int, default=1,
                        help="core for the load generator (1)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON results (bench/results/storm.json; smoke: storm-smoke.json)")
    parser.add_argument("--chart", type=Path, default=None,
                        help="PNG chart (bench/results/storm.png; smoke: none)")
    args = parser.parse_args(argv)
    names = tuple(name.strip() for name in args.scenarios.split(",") if name.strip())
    if not names or any(name not in SCENARIOS for name in names):
        parser.error(f"--scenarios takes {', '.join(SCENARIOS)}, got {args.scenarios!r}")
    args.scenarios = names
    return args


def make_plan(args: argparse.Namespace) -> StormPlan:
    smoke: bool = args.smoke
    server_cpu, loadgen_cpu = args.server_cpu, args.loadgen_cpu
    if (os.cpu_count() or 1) < 2:
        server_cpu = loadgen_cpu = 0
    return StormPlan(
        clients=args.clients or (300 if smoke else 19_000),
        rooms=args.rooms or (10 if smoke else 100),
        rate=args.rate,
        steady=args.steady if args.steady is not None else (1.0 if smoke else 2.0),
        after=0.5 if smoke else 1.0,
        connect_concurrency=args.connect_concurrency,
        max_delay_ms=args.max_delay or (2000.0 if smoke else 30_000.0),
        setup_timeout=60.0 if smoke else 180.0,
        storm_timeout=args.storm_timeout,
        drain_timeout=5.0 if smoke else 15.0,
        scenarios=args.scenarios,
        server_cpu=server_cpu,
        loadgen_cpu=loadgen_cpu,
        quiet_wait=args.quiet_wait if args.quiet_wait is not None else (0.0 if smoke else 60.0),
        profile=args.profile,
        smoke=smoke,
    )


def _wait_quiet(plan: StormPlan, progress: Progress) -> float | None:
    if plan.quiet_wait <= 0:
        return None
    deadline = time.monotonic() + plan.quiet_wait
    while True:
        busy = core_busy(0.5)
        worst = max(busy.get(core, 0.0) for core in (plan.server_cpu, plan.loadgen_cpu))
        if worst <= _QUIET or time.monotonic() >= deadline:
            return worst
        progress.detail(f"waiting for other load to stop ({worst:.0%} busy)")


def failures_of(scenario: str, result: Result) -> list[str]:
    """What a scenario's verdict found wrong, one line each (empty: it passed)."""
    if "error" in result:
        return [f"{scenario}: {result['error']}"]
    check = result["check"]
    if check["ok"]:
        return []
    found = []
    if not check["all_back"]:
        found.append(f"{result['left_behind']} of {result['clients']} clients not back")
    if not check["gaps_as_expected"]:
        expected = "none" if scenario == "cut" else "every client"
        found.append(f"{check['clients_with_gap']} clients got a gap (expected: {expected})")
    found += [f"{key}={check[key]}" for key in (
        "lost", "duplicates", "seq_errors", "wrong_channel", "protocol_errors", "extra_joins",
        "steady_drops", "tail_missing", "rooms_unchecked") if check.get(key)]
    if result["traffic"].get("publish_errors"):
        found.append(f"publish_errors={result['traffic']['publish_errors']}")
    return [f"{scenario}: {text}" for text in found or ["check failed"]]


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so that the servers and the load generator are stopped."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    out: Path = args.out or RESULTS / ("storm-smoke.json" if plan.smoke else "storm.json")
    chart: Path | None = args.chart or (None if plan.smoke else RESULTS / "storm.png")

    if plan.clients + 64 > ephemeral_port_count():
        print(f"error: {plan.clients:,} clients need more ephemeral ports than "
              f"net.ipv4.ip_local_port_range gives ({ephemeral_port_count():,})", file=sys.stderr)
        return 2
    limit = raise_nofile(plan.clients + 4096)  # inherited by the servers and the load generator
    ceiling = (limit - _FD_HEADROOM) // 100 * 100
    if plan.clients > ceiling:
        print(f"warning: RLIMIT_NOFILE is {limit} and cannot be raised here: "
              f"{ceiling:,} clients instead of {plan.clients:,}", file=sys.stderr)
        plan = dataclasses.replace(plan, clients=ceiling, capped_clients=plan.clients)
    try:
        storm = Loadgen(build(source=SOURCE), cpu=plan.loadgen_cpu)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    facts = machine_facts(REPO)
    results: dict[str, Any] = {}
    failures: list[str] = []
    progress = Progress(len(plan.scenarios))
    # The harness mostly sleeps; keep it (and the sampler) off the server's core.
    os.sched_setaffinity(0, {plan.loadgen_cpu})
    try:
        with _sigterm_as_interrupt():
            for scenario in plan.scenarios:
                progress.step(f"storm {scenario}: {plan.clients:,} clients, {plan.rooms} rooms")
                busy = _wait_quiet(plan, progress)
                try:
                    result = run_scenario(scenario, plan, storm, progress)
                except (LoadgenFailed, ServerUnavailable) as exc:
                    result = {"error": str(exc)}
                if busy is not None:
                    result["cores_busy_before"] = round(busy, 4)
                results[scenario] = result
                for text in failures_of(scenario, result):
                    failures.append(text)
                    progress.note(f"FAILED: {text.splitlines()[0]}")
                progress.advance()
    except KeyboardInterrupt:
        progress.close()
        print("interrupted", file=sys.stderr)
        return 130
    progress.close()

    document = {"meta": facts, "plan": plan.as_dict(), "target_s": TARGET_S,
                "scenarios": results, "failures": failures}
    write_json(document, out)
    print(render_storm_table(plan.as_dict(), results))
    print(f"\nresults: {out}")
    if chart is not None:
        try:
            render_storm_chart(plan.as_dict(), results, chart)
            print(f"chart:   {chart}")
        except ImportError:
            print("chart skipped: matplotlib is not installed", file=sys.stderr)
    if failures:
        print("\nFAILED:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
