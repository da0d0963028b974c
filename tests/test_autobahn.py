"""
RFC 6455 and RFC 7692 conformance: the Autobahn TestSuite against both front doors.

The echo app (``tests/apps/echo.py``) is served natively or under uvicorn, and
kosoku (a Python 3 runner of the Autobahn case files) drives the whole suite
at it in a subprocess, writing Autobahn's ``index.json``. Every case must end
with an acceptable verdict, except the strict xfail list in
``tests/autobahn/xfail.toml``: a case listed there must still fail, so a fix
upstream prunes the list. ``docs/autobahn.md`` has the summary and the reasons.

Both doors negotiate permessage-deflate (the native door with our own
encode-once compression, the ASGI door with uvicorn's), so the compression
cases (12.x, 13.x) really run on both, and UNIMPLEMENTED is a failure like any
other: 1000 compressed round trips per case, 11 to 14 minutes per door on a
busy 2-core machine, nearly all of it zlib on the payloads above 4 KiB. By
default each door runs those up to 4 KiB (suffixes .1 to .5), in under a
minute; ``AUTOBAHN_FULL=1`` (set by ``make unit``, so by the CI) runs every
case. ``AUTOBAHN_REPORTS=DIR`` keeps the full reports
(``DIR/<door>/index.html``); ``AUTOBAHN_CASES="1.*,9.7.1"`` runs a selection
while iterating.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tomllib
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from .apps.echo import create_app
from .conftest import UvicornRunner

XFAIL_FILE = Path(__file__).parent / "autobahn" / "xfail.toml"

#: Verdicts a case may end with (Autobahn's "pass": OK, NON-STRICT, INFORMATIONAL).
ACCEPTED = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})
ACCEPTED_CLOSE = frozenset({"OK", "INFORMATIONAL"})

#: 12.x/13.x cases with payloads above 4 KiB, skipped on both doors unless
#: AUTOBAHN_FULL is set (patterns are anchored: "12.*.6" is not 12.1.16).
HEAVY_COMPRESSION = tuple(f"{group}.*.{n}" for group in (12, 13) for n in range(6, 19))

#: Each run's bound: a default run takes under a minute; a full one took
#: 640 s (asgi) and 842 s (native) on a busy machine, zlib on both ends of every
#: 128 KiB round trip (docs/autobahn.md).
SUITE_DEADLINE = 300.0
FULL_SUITE_DEADLINE = 1800.0


def kosoku_command() -> list[str]:
    """The kosoku console script installed beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).with_name("kosoku")
    found = str(beside) if beside.exists() else shutil.which("kosoku")
    if found is None:
        pytest.fail("kosoku is not installed: pip install -e '.[test]'")
    return [found]


def load_xfail(door: str) -> dict[str, str]:
    with XFAIL_FILE.open("rb") as file:
        table: dict[str, Any] = tomllib.load(file)
    return {str(case): str(reason) for case, reason in table.get(door, {}).items()}


def passed(verdict: Mapping[str, Any]) -> bool:
    return verdict["behavior"] in ACCEPTED and verdict["behaviorClose"] in ACCEPTED_CLOSE


def describe(report_dir: Path, case_id: str, verdict: Mapping[str, Any]) -> str:
    """One line per case a reader can act on, from the case's own report file."""
    report = json.loads((report_dir / verdict["reportfile"]).read_text())
    return (
        f"{case_id}: behavior={verdict['behavior']} close={verdict['behaviorClose']} "
        f"remote close code={verdict['remoteCloseCode']} — {report['description']!r}: "
        f"{report['result']} / {report['resultClose']}"
    )


async def run_suite(
    url: str, report_dir: Path, exclude: tuple[str, ...], deadline: float
) -> dict[str, dict[str, Any]]:
    """Run the selected cases against ``url``; return index.json's verdicts by case id."""
    command = [*kosoku_command(), url, "--outdir", str(report_dir)]
    for pattern in filter(None, os.environ.get("AUTOBAHN_CASES", "").split(",")):
        command += ["--include", pattern.strip()]
    for pattern in exclude:
        command += ["--exclude", pattern]
    log = report_dir.with_suffix(".log")
    with log.open("wb") as out:
        # kosoku exits 1 when a case fails; index.json is the verdict either way.
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
        try:
            await asyncio.wait_for(process.wait(), deadline)
        except TimeoutError:
            process.kill()
            await process.wait()
            pytest.fail(f"the Autobahn suite took over {deadline:.0f} s (log: {log})")
    index = report_dir / "index.json"
    if not index.exists():
        pytest.fail(f"kosoku wrote no report (exit {process.returncode}):\n"
                    + log.read_text(errors="replace")[-4000:])
    agents: dict[str, dict[str, dict[str, Any]]] = json.loads(index.read_text())
    ((_agent, verdicts),) = agents.items()  # one server under test
    return verdicts


def summary_row(door: str, verdicts: Mapping[str, Mapping[str, Any]]) -> str:
    counts = Counter(v["behavior"] for v in verdicts.values())
    close = Counter(v["behaviorClose"] for v in verdicts.values())
    cells = [str(counts[b]) for b in ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED",
                                      "FAILED")]
    closes = ", ".join(f"{name} {n}" for name, n in sorted(close.items()))
    return f"| {door} | {len(verdicts)} | {' | '.join(cells)} | {closes} |"


@pytest.fixture
def report_dir(tmp_path: Path, front_door: str) -> Path:
    keep = os.environ.get("AUTOBAHN_REPORTS")
    root = Path(keep) if keep else tmp_path
    directory = root / front_door
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


@pytest.mark.timeout(FULL_SUITE_DEADLINE + 60)
async def test_autobahn_suite(front_door: str, report_dir: Path) -> None:
    full = bool(os.environ.get("AUTOBAHN_FULL"))
    exclude = () if full else HEAVY_COMPRESSION
    app = create_app()
    if front_door == "native":
        host, port = await app.start("127.0.0.1", 0)
        stop = app.aclose
    else:
        # uvicorn's own keepalive would add pings to the events a case compares.
        runner = UvicornRunner(app, ws_ping_interval=None)  # ws_max_size: 16 MiB
        await runner.start()
        host, port, stop = "127.0.0.1", runner.port, runner.stop
    try:
        verdicts = await run_suite(f"ws://{host}:{port}/echo", report_dir, exclude,
                                   FULL_SUITE_DEADLINE if full else SUITE_DEADLINE)
    finally:
        await stop()

    print(f"\n{summary_row(front_door, verdicts)}")
    xfail = load_xfail(front_door)
    unexpected = [describe(report_dir, case_id, verdict) for case_id, verdict in verdicts.items()
                  if not passed(verdict) and case_id not in xfail]
    fixed = [case_id for case_id in xfail
             if case_id in verdicts and passed(verdicts[case_id])]
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} case(s) failed:\n  " + "\n  ".join(unexpected))
    if fixed:
        problems.append(f"now passing, remove from {XFAIL_FILE.name} [{front_door}]: "
                        + ", ".join(fixed))
    assert not problems, "\n".join(problems) + f"\n(reports: {report_dir})"
