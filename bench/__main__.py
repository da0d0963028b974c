"""
``python -m bench``: build the load generator, measure every server, report.

``python -m bench storm [...]`` runs the reconnect storm instead
(``bench/storm.py``, also ``python -m bench.storm``).

Exit status: 0 when every measurement that ran passed its checks, 1 when one
failed (or a ``--require`` d server was not available), 2 on a setup error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
from pathlib import Path

from .broker import PrivateRedis
from .errors import BenchError
from .loadgen import Loadgen, build
from .progress import Progress
from .report import figure_table, render_chart, render_table, write_json
from .runner import Plan, run_plan
from .servers import LOG_DIR, MEASURES, REPO, SERVERS
from .system import ephemeral_port_count, free_port, machine_facts, raise_nofile

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SERVERS = (
    "nucleus,nucleus-redis,nucleus-workers-1,nucleus-workers-2,"
    "websockets,socketio,node-ws,node-socketio,socketify"
)
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"
_FD_HEADROOM = 100  # descriptors a server or the load generator needs besides its sockets


def _names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in SERVERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown server {unknown[0]!r}; known: {', '.join(SERVERS)}"
        )
    return names


def _measures(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in MEASURES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown measurement {unknown[0] if unknown else text!r}; known: {', '.join(MEASURES)}"
        )
    return names


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("subscriber counts must be positive")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Room-broadcast benchmark: Nucleus Stream against peer WebSocket servers.",
        epilog="python -m bench storm --help: the reconnect storm (issue 12).",
    )
    parser.add_argument(
        "--servers",
        type=_names,
        default=None,
        help=f"comma-separated, in order (default {DEFAULT_SERVERS})",
    )
    parser.add_argument(
        "--subscribers",
        type=_counts,
        default=None,
        help="subscriber counts (default 1000,5000,20000; smoke 200)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds measured per run (default 10; smoke 1)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of load before each window (default 2; smoke 0.3)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per throughput/latency figure; the median is reported (default 1)",
    )
    parser.add_argument("--window", type=int, default=32, help="fan-out messages in flight (32)")
    parser.add_argument("--rate", type=float, default=20.0, help="latency run messages/s (20)")
    parser.add_argument("--size", type=int, default=100, help="message bytes (100)")
    parser.add_argument(
        "--measures",
        type=_measures,
        default=MEASURES,
        help=f"what to measure (default {','.join(MEASURES)}); e.g. handshakes,opens for "
        "the connection figures only",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="handshake workers (32)")
    parser.add_argument(
        "--open-connections",
        type=int,
        default=1000,
        help="opens: connections per round, none closed until all are upgraded (1000)",
    )
    parser.add_argument(
        "--open-concurrency", type=int, default=64, help="opens: handshakes in flight (64)"
    )
    parser.add_argument(
        "--redis",
        default=DEFAULT_REDIS,
        metavar="URL",
        help=f"Redis for nucleus-redis and nucleus-workers-N ({DEFAULT_REDIS}); the bench "
        "writes keys under its own prefix there and removes them afterwards. 'private': "
        "start a redis-server of its own, so that no other client's work is in its CPU time",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few hundred connections and seconds per server; every message checked",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="before each measurement wait up to this many seconds for other processes "
        "to leave the two cores alone (default 120; smoke 0)",
    )
    parser.add_argument(
        "--require",
        type=_names,
        default=(),
        help="servers that must be available (else exit 1), e.g. nucleus in CI",
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="core for the server (0)")
    parser.add_argument(
        "--loadgen-cpu", type=int, default=1, help="core for the load generator (1)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results (default bench/results/latest.json; smoke: smoke.json)",
    )
    parser.add_argument(
        "--chart",
        type=Path,
        default=None,
        help="PNG chart (default bench/results/latest.png; smoke: none)",
    )
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    smoke: bool = args.smoke
    cpus = os.cpu_count() or 1
    server_cpu, loadgen_cpu = args.server_cpu, args.loadgen_cpu
    if cpus < 2:
        print("warning: one CPU only; server and load generator share it", file=sys.stderr)
        server_cpu = loadgen_cpu = 0
    return Plan(
        servers=args.servers or _names(DEFAULT_SERVERS),
        subscribers=args.subscribers or ((200,) if smoke else (1000, 5000, 20000)),
        duration=args.duration or (1.0 if smoke else 10.0),
        warmup=args.warmup if args.warmup is not None else (0.3 if smoke else 2.0),
        warmup_max=10.0 if smoke else 60.0,
        window=args.window,
        rate=args.rate,
        msg_size=args.size,
        handshake_concurrency=args.concurrency,
        open_connections=args.open_connections,
        open_concurrency=args.open_concurrency,
        measures=args.measures,
        repeat=max(args.repeat, 1),
        redis_url=args.redis,
        smoke=smoke,
        setup_timeout=30.0 if smoke else 180.0,
        drain_timeout=10.0 if smoke else 45.0,
        server_cpu=server_cpu,
        loadgen_cpu=loadgen_cpu,
        require=args.require,
        quiet_wait=args.quiet_wait if args.quiet_wait is not None else (0.0 if smoke else 120.0),
    )


def fit_to_fd_limit(plan: Plan, limit: int) -> tuple[Plan, dict[int, int]]:
    """Lower subscriber counts that can't fit under ``limit`` descriptors per process.

    The server and the load generator each hold every connection plus their
    own descriptors; without CAP_SYS_RESOURCE the hard limit can't be raised.
    """
    ceiling = (limit - _FD_HEADROOM) // 100 * 100
    capped = {n: ceiling for n in plan.subscribers if n > ceiling}
    if not capped:
        return plan, {}
    counts = tuple(dict.fromkeys(min(n, ceiling) for n in plan.subscribers))
    return dataclasses.replace(plan, subscribers=counts, capped_subscribers=capped), capped


def _stop_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so running servers and load generators are stopped."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["storm"]:  # python -m bench storm ...: the reconnect storm (bench/storm.py)
        from . import storm

        return storm.main(argv[1:])
    args = parse_args(argv)
    plan = make_plan(args)
    out: Path = args.out or RESULTS / ("smoke.json" if plan.smoke else "latest.json")
    chart: Path | None = args.chart or (None if plan.smoke else RESULTS / "latest.png")

    most = max(*plan.subscribers, plan.open_connections)
    if most + plan.handshake_concurrency + 64 > ephemeral_port_count():
        print(
            f"error: {most:,} connections need more ephemeral ports than "
            f"net.ipv4.ip_local_port_range gives ({ephemeral_port_count():,})",
            file=sys.stderr,
        )
        return 2
    limit = raise_nofile(most + 4096)  # inherited by the servers and the load generator
    plan, capped = fit_to_fd_limit(plan, limit)
    for wanted, got in capped.items():
        print(
            f"warning: RLIMIT_NOFILE is {limit} and cannot be raised here: "
            f"measuring {got:,} subscribers instead of {wanted:,}",
            file=sys.stderr,
        )
    try:
        loadgen = Loadgen(build(), cpu=plan.loadgen_cpu)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    _stop_on_sigterm()
    facts = machine_facts(REPO)
    with contextlib.ExitStack() as stack:
        if plan.redis_url == "private" and any(SERVERS[name].redis for name in plan.servers):
            # Started before the harness pins itself: it runs on any core, as a shared one would.
            private = PrivateRedis(free_port(), LOG_DIR / "redis-server.log")
            try:
                plan = dataclasses.replace(plan, redis_url=stack.enter_context(private))
            except BenchError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            facts["redis"] = "a private redis-server started by the benchmark"
        # The harness mostly sleeps; keep it off the server's core all the same.
        os.sched_setaffinity(0, {plan.loadgen_cpu})
        progress = Progress(sum(plan.units(SERVERS[name]) for name in plan.servers))
        try:
            servers, failures = run_plan(plan, loadgen, progress)
        except KeyboardInterrupt:
            progress.close()
            print("interrupted", file=sys.stderr)
            return 130
        progress.close()

    columns = [str(n) for n in plan.subscribers]
    table = figure_table(servers, columns)
    document = {
        "meta": facts,
        "plan": plan.as_dict(),
        "servers": servers,
        "figures": table,
        "failures": failures,
    }
    write_json(document, out)
    print(render_table(servers, columns, table))
    print(f"\nresults: {out}")
    if chart is not None:
        try:
            render_chart(servers, columns, table, chart)
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
