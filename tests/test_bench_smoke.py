"""The benchmark keeps working: a tiny run of `python -m bench --smoke` (not a timed test)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from .helpers import within

ROOT = Path(__file__).resolve().parents[1]


async def test_bench_smoke_run_checks_every_delivery(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench", "--smoke", "--servers", "nucleus,websockets",
        "--require", "nucleus", "--out", str(out),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await within(proc.communicate(), 300)
    assert proc.returncode == 0, output.decode()[-3000:]
    result = json.loads(out.read_text())
    nucleus = result["servers"]["nucleus"]
    assert nucleus["available"]
    for runs in nucleus["subscribers"].values():
        fanout = runs["fanout"]
        assert fanout["check"]["ok"] and fanout["check"]["missing"] == 0
        assert fanout["deliveries_per_s"] > 0
