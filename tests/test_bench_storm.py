"""The reconnect storm keeps working: `python -m bench storm --smoke` (300 clients, 10 rooms).

Not a timed test: it asserts the verdicts, not the times. After every link is
cut, every client is back and has resumed with nothing lost or duplicated;
after a server restart (memory backend), every client is back and was told
of its gap.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .helpers import within

ROOT = Path(__file__).resolve().parents[1]


async def run_storm_smoke(out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench", "storm", "--smoke", "--out", str(out),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await within(proc.communicate(), 120)
    finally:
        if proc.returncode is None:  # timed out: the harness stops its servers on SIGTERM
            proc.send_signal(signal.SIGTERM)
            try:
                await within(proc.wait(), 40)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, output.decode()[-3000:]
    document: dict[str, Any] = json.loads(await asyncio.to_thread(out.read_text))
    return document


def assert_nothing_lost(result: dict[str, Any]) -> None:
    check = result["check"]
    for key in ("lost", "duplicates", "seq_errors", "wrong_channel", "protocol_errors",
                "tail_missing", "rooms_unchecked"):
        assert check[key] == 0, (key, check)
    assert result["traffic"]["deliveries"] > 0


async def test_storm_smoke_everyone_back_recovered_after_a_cut_with_a_gap_after_a_restart(
    tmp_path: Path,
) -> None:
    document = await run_storm_smoke(tmp_path / "storm.json")
    clients = document["plan"]["clients"]
    cut, restart = document["scenarios"]["cut"], document["scenarios"]["restart"]

    assert cut["all_back"] and cut["left_behind"] == 0, cut
    assert cut["check"]["clients_with_gap"] == 0
    assert cut["check"]["recovered_true"] >= clients
    assert cut["traffic"]["replayed"] > 0  # what was published during the cut came back
    assert_nothing_lost(cut)

    assert restart["all_back"] and restart["left_behind"] == 0, restart
    assert restart["check"]["clients_with_gap"] == clients  # history gone: each told of its gap
    assert restart["close_codes"].get("1001") == clients  # the server said it was going away
    assert_nothing_lost(restart)

    assert document["failures"] == []
    for result in (cut, restart):
        assert sum(result["per_bucket"]["opened"]) >= clients
        assert result["server"]["rss_peak_kib"] > 0
