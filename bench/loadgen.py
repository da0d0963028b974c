"""
Building and running the C load generator, ``loadgen.c``.

The binary is built into ``bench/.build/`` (git-ignored) and rebuilt when the
source, or ``wsclient.h`` that it includes, is newer. Each run is one process
whose stderr carries ``progress`` lines (and ``ready`` in idle mode) and whose
stdout carries one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BuildError, LoadgenFailed

__all__ = ["BUILD_DIR", "Loadgen", "Result", "build"]

SOURCE = Path(__file__).resolve().with_name("loadgen.c")
BUILD_DIR = SOURCE.with_name(".build")
HEADERS = (SOURCE.with_name("wsclient.h"),)
"""What every C program here includes: a change to one rebuilds them all."""

Result = dict[str, Any]
"""One load generator report, as documented in ``bench/README.md``."""


def build(cc: str | None = None, source: Path = SOURCE) -> Path:
    """Compile ``source`` (``loadgen.c``; ``storm.c`` for ``bench.storm``) unless the
    binary is newer than it and than :data:`HEADERS`; return the binary's path."""
    binary = BUILD_DIR / source.stem
    newest = max(path.stat().st_mtime for path in (source, *HEADERS))
    if binary.exists() and binary.stat().st_mtime >= newest:
        return binary
    BUILD_DIR.mkdir(exist_ok=True)
    argv = [
        cc or os.environ.get("CC", "cc"),
        "-O2",
        "-Wall",
        "-Wextra",
        "-o",
        str(binary),
        str(source),
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BuildError(f"cannot run {argv[0]}: {exc}") from exc
    if done.returncode != 0:
        raise BuildError(f"{' '.join(argv)} failed:\n{done.stderr.strip()}")
    return binary


@dataclass(frozen=True)
class Loadgen:
    """A built load generator that pins itself to ``cpu`` (``None``: anywhere)."""

    binary: Path
    cpu: int | None

    def run(
        self,
        mode: str,
        port: int,
        options: Mapping[str, object],
        *,
        timeout: float,
        on_progress: Callable[[str], None],
        on_ready: Callable[[], None] | None = None,
    ) -> Result:
        """Run one measurement and return its report.

        ``options`` become ``--key value`` flags (``None`` values are left
        out; a list or tuple repeats the flag once per item). In idle mode
        ``on_ready`` is called once every connection is open and joined; the
        connections close when it returns. Raises
        :class:`LoadgenFailed` on an error report, a crash or a timeout.
        """
        argv = [str(self.binary), mode, "--port", str(port)]
        if self.cpu is not None:
            argv += ["--cpu", str(self.cpu)]
        for key, value in options.items():
            flag = f"--{key.replace('_', '-')}"
            for item in value if isinstance(value, list | tuple) else (value,):
                if item is not None:
                    argv += [flag, str(item)]
        timed_out = threading.Event()
        other_lines: deque[str] = deque(maxlen=20)
        with subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if on_ready else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:

            def kill() -> None:
                timed_out.set()
                proc.kill()

            watchdog = threading.Timer(timeout, kill)
            watchdog.start()
            try:
                assert proc.stderr is not None and proc.stdout is not None
                for raw in proc.stderr:
                    line = raw.rstrip("\n")
                    if line.startswith("progress "):
                        on_progress(line.removeprefix("progress "))
                    elif line == "ready" and on_ready and proc.stdin:
                        on_ready()
                        proc.stdin.close()
                    else:
                        other_lines.append(line)
                out = proc.stdout.read()
                proc.wait()
            finally:
                watchdog.cancel()
                if proc.poll() is None:
                    proc.kill()
        if timed_out.is_set():
            raise LoadgenFailed(f"{mode} run killed after {timeout:.0f} s")
        try:
            result: Result = json.loads(out.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            tail = "\n".join(other_lines)
            raise LoadgenFailed(
                f"{mode} run exited {proc.returncode} without a report\n{tail}"
            ) from None
        if "error" in result:
            raise LoadgenFailed(str(result["error"]))
        return result
