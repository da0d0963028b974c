"""`python -m bench.compression` keeps working: a smoke run, every message checked (not timed)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from .helpers import within

ROOT = Path(__file__).resolve().parents[1]


async def test_compression_bench_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "compression.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.compression", "--smoke", "--out", str(out),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await within(proc.communicate(), 180)
    assert proc.returncode == 0, output.decode()[-3000:]
    results = {r["server"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"nucleus", "nucleus-deflate", "websockets", "websockets-deflate"}
    for result in results.values():
        assert result["checks"]["subscribers_equal"]
        assert result["checks"]["verified_messages"] == result["messages"]
        assert result["deliveries_per_s"] > 0
    assert results["nucleus"]["negotiated"] == "none"
    assert results["nucleus-deflate"]["negotiated"] == "deflate, window 15, no context takeover"
    assert results["websockets-deflate"]["negotiated"].endswith(", context takeover")
    # 1 KiB of JSON and a 4-byte header uncompressed; far less compressed.
    assert results["nucleus"]["bytes_per_delivery"] == 1028
    assert results["nucleus-deflate"]["bytes_per_delivery"] < 1028 / 2
    assert results["nucleus-deflate"]["compressed_share"] == 1.0
