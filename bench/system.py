"""
The machine as the benchmark sees it: ``/proc`` readings, CPU pinning, limits.

This module reads kernel settings but never changes one; the only process
state it changes is the harness's own CPU affinity and RLIMIT_NOFILE.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "core_busy",
    "cpu_seconds",
    "descendants",
    "ephemeral_port_count",
    "free_port",
    "irq_time_accounting",
    "machine_facts",
    "open_sockets",
    "pinned",
    "process_start",
    "raise_nofile",
    "read_sysctl",
    "rss_kib",
    "stable_rss_kib",
    "wait_for_port",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` in ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ProcessLookupError(f"no VmRSS for pid {pid}")


def stable_rss_kib(
    pid: int, *, interval: float = 0.2, tolerance: float = 0.005, timeout: float = 3.0
) -> int:
    """RSS once two readings ``interval`` apart agree within ``tolerance`` (or at ``timeout``)."""
    deadline = time.monotonic() + timeout
    last = rss_kib(pid)
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = rss_kib(pid)
        if abs(now - last) <= tolerance * max(last, 1):
            return now
        last = now
    return last


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process ``pid``, from ``/proc/<pid>/stat``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # fields 14 and 15 of proc(5)


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs, from the parent pids in ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        ppid = int(text[text.rindex(")") + 2 :].split()[1])  # field 4 of proc(5)
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children.get(child, ())
    return sorted(found)


def open_sockets(pid: int) -> int:
    """How many sockets ``pid`` holds (its ``/proc/<pid>/fd`` links to ``socket:[...]``)."""
    count = 0
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(entry).startswith("socket:")
    return count


def process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot), to tell it from a later process
    that reuses the pid; None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[19])  # field 22 of proc(5)


def _core_jiffies() -> dict[int, tuple[int, int]]:
    """Per core: (busy, total) jiffies from ``/proc/stat``."""
    cores = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[:8])
            busy = user + nice + system + irq + softirq + steal
            cores[int(name[3:])] = (busy, busy + idle + iowait)
    return cores


def core_busy(interval: float = 1.0) -> dict[int, float]:
    """Each core's busy share over the next ``interval`` seconds."""
    before = _core_jiffies()
    time.sleep(interval)
    after = _core_jiffies()
    shares = {}
    for core, (busy, total) in after.items():
        busy0, total0 = before.get(core, (busy, total))
        shares[core] = (busy - busy0) / (total - total0) if total > total0 else 0.0
    return shares


@functools.cache
def irq_time_accounting() -> bool | None:
    """Whether the kernel keeps irq/softirq time out of process times (CONFIG_IRQ_TIME_ACCOUNTING).

    Without it (tick accounting) softirq work done while a process runs, such
    as loopback packet processing, is charged to that process. ``None`` when
    the kernel's config can't be read.
    """
    candidates = [Path("/proc/config.gz"), Path(f"/boot/config-{platform.release()}")]
    for path in candidates:
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode(errors="replace")
        return "CONFIG_IRQ_TIME_ACCOUNTING=y" in text
    return None


@contextlib.contextmanager
def pinned(cpus: set[int]) -> Iterator[None]:
    """Run the body on ``cpus``: a process started inside inherits that affinity.

    Affinity is per thread and a child inherits the forking thread's, so
    this pins a server and every thread it starts (Node's included) without
    a ``preexec_fn``.
    """
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def raise_nofile(need: int) -> int:
    """Raise RLIMIT_NOFILE to ``need`` if allowed (children inherit it); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return soft
    try:  # raising the hard limit needs CAP_SYS_RESOURCE
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def read_sysctl(name: str) -> str | None:
    path = Path("/proc/sys") / name.replace(".", "/")
    try:
        return " ".join(path.read_text().split())
    except OSError:
        return None


def ephemeral_port_count() -> int:
    low, high = (read_sysctl("net.ipv4.ip_local_port_range") or "32768 60999").split()
    return int(high) - int(low) + 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, *, timeout: float, alive: Callable[[], bool]) -> bool:
    """Poll until 127.0.0.1:``port`` accepts; False if ``alive()`` fails or time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def _command_output(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def machine_facts(repo: Path) -> dict[str, Any]:
    """What a reader needs to judge the numbers: hardware, kernel settings, versions, other load."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "node": _command_output(["node", "--version"]),
        "git_revision": _command_output(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"]),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "irq_time_accounting": irq_time_accounting(),
        "sysctl": {
            name: read_sysctl(name)
            for name in (
                "net.ipv4.ip_local_port_range",
                "net.ipv4.tcp_congestion_control",
                "net.ipv4.tcp_tw_reuse",
                "net.core.somaxconn",
                "fs.nr_open",
            )
        },
    }
