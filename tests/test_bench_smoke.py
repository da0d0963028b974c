"""The benchmark keeps working: a tiny run of `python -m bench --smoke` (not a timed test)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from .backends import REDIS_URL, require_redis
from .helpers import within

ROOT = Path(__file__).resolve().parents[1]


async def run_smoke(out: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run the smoke benchmark with ``args``; return the harness's pid and its results."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench", "--smoke", *args, "--out", str(out),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await within(proc.communicate(), 300)
    assert proc.returncode == 0, output.decode()[-3000:]
    return proc.pid, json.loads(await asyncio.to_thread(out.read_text))


def assert_every_delivery_checked(entry: dict[str, Any]) -> None:
    assert entry["available"], entry.get("error")
    for runs in entry["subscribers"].values():
        for mode in ("fanout", "serial", "latency"):
            check = runs[mode]["check"]
            assert check["ok"] and check["missing"] == 0, (mode, check)
        assert runs["fanout"]["deliveries_per_s"] > 0


def assert_serial_measured(result: dict[str, Any], name: str, n: int) -> None:
    """One message in flight: every delivery checked, rate, CPU and latency reported."""
    serial = result["servers"][name]["subscribers"][str(n)]["serial"]
    assert serial["window"] == 1
    check = serial["check"]
    assert check["ok"] and check["drained"] and check["missing"] == 0, check
    assert check["received"] == check["expected_deliveries"] == serial["messages_sent"] * n
    # The window holds whole messages but for the one in flight at each edge.
    assert abs(serial["deliveries"] - serial["messages_completed"] * n) <= 2 * n
    assert serial["latency_ms"]["count"] == serial["deliveries"] > 0
    figures = result["figures"]
    for key in ("serial_deliveries_per_s", "serial_cpu_s_per_million",
                "serial_latency_p50_ms", "serial_latency_p90_ms",
                "serial_latency_p99_ms", "serial_latency_max_ms"):
        assert figures[key][name][str(n)]["value"] > 0, key


def assert_handshakes_measured(result: dict[str, Any], name: str) -> None:
    """Both handshake figures: open-upgrade-close workers, and rounds held open."""
    entry = result["servers"][name]
    assert entry["handshakes"]["handshakes_per_s"] > 0
    opens = entry["opens"]
    assert opens["connections"] == 1000 and opens["concurrency"] == 64
    assert opens["rounds"] >= 1 and opens["handshakes"] == 1000 * opens["rounds"]
    assert opens["errors"] == 0 and opens["closed_by_server"] == 0
    assert opens["server_cpu_us_per_handshake"] > 0
    assert result["figures"]["open_handshakes_per_s"][name]["all"]["value"] > 0


async def test_bench_smoke_run_checks_every_delivery(tmp_path: Path) -> None:
    _, result = await run_smoke(
        tmp_path / "smoke.json", "--servers", "nucleus,websockets", "--require", "nucleus"
    )
    assert_every_delivery_checked(result["servers"]["nucleus"])
    for name in ("nucleus", "websockets"):
        assert_handshakes_measured(result, name)


async def test_bench_smoke_run_of_the_serial_figures_only(tmp_path: Path) -> None:
    _, result = await run_smoke(
        tmp_path / "smoke.json", "--servers", "nucleus", "--require", "nucleus",
        "--measures", "serial",
    )
    assert_serial_measured(result, "nucleus", 200)
    assert set(result["servers"]["nucleus"]["subscribers"]["200"]) == {"serial"}


async def test_bench_smoke_run_of_the_handshake_figures_only(tmp_path: Path) -> None:
    _, result = await run_smoke(
        tmp_path / "smoke.json", "--servers", "nucleus", "--require", "nucleus",
        "--measures", "handshakes,opens",
    )
    assert_handshakes_measured(result, "nucleus")
    assert "subscribers" not in result["servers"]["nucleus"]
    assert result["plan"]["measures"] == ["handshakes", "opens"]


async def test_bench_smoke_run_with_the_redis_backend(tmp_path: Path) -> None:
    require_redis()
    pid, result = await run_smoke(
        tmp_path / "smoke.json", "--servers", "nucleus-redis", "--require", "nucleus-redis",
        "--redis", REDIS_URL,
    )
    entry = result["servers"]["nucleus-redis"]
    assert_every_delivery_checked(entry)
    assert entry["handshakes"]["handshakes_per_s"] > 0
    # The harness removes the keys its servers wrote (prefix nucleus-bench-<its pid>-<n>).
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        left = [key async for key in client.scan_iter(match=f"nucleus-bench-{pid}-*")]
    finally:
        await client.aclose()
    assert left == []


async def test_bench_smoke_run_of_two_workers_fanning_out_through_redis(tmp_path: Path) -> None:
    require_redis()
    _, result = await run_smoke(
        tmp_path / "smoke.json", "--servers", "nucleus-workers-2", "--require", "nucleus-workers-2",
        "--measures", "fanout,serial", "--duration", "2", "--redis", REDIS_URL,
    )
    entry = result["servers"]["nucleus-workers-2"]
    assert_serial_measured(result, "nucleus-workers-2", 200)
    for mode in ("fanout", "serial"):
        run = entry["subscribers"]["200"][mode]
        assert run["check"]["ok"] and run["check"]["missing"] == 0, run["check"]
        # SO_REUSEPORT spread the 200 subscribers over both workers, and the CPU
        # time counted is that of every process of the server.
        workers = [p for p in run["processes"] if (p["sockets"] or 0) >= 50]
        assert len(workers) == 2, run["processes"]
        assert all(p["run_cpu_s"] > 0 for p in workers), run["processes"]
        assert run["server_cpu_s"] > 0

