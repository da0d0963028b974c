"""
The Redis that ``nucleus-redis`` and the ``--workers`` servers use, seen from the harness.

Four questions: is it reachable, which local process is it (so the load
generator can read its CPU time over the same window as the server's), did
other clients use it meanwhile (then that CPU time is not all ours), and which
keys did a benchmark server leave behind (removed after every run, by their
prefix, never anything else). A handful of commands over one socket (RESP2),
so the harness needs no Redis client of its own.

``--redis private`` runs a redis-server of the benchmark's own instead
(:class:`PrivateRedis`): no other client, no persistence.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import BrokerError

__all__ = ["PrivateRedis", "RedisLink", "local_redis_pid"]

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class _Address:
    host: str
    port: int
    path: str | None
    db: int
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> _Address:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "unix"):
            raise BrokerError(f"the harness speaks redis:// and unix:// only, not {url!r}")
        query = dict(p.partition("=")[::2] for p in parts.query.split("&") if p)
        if parts.scheme == "unix":
            db = query.get("db", "0")
        else:
            db = parts.path.strip("/") or query.get("db", "0")
        try:
            number = int(db)
        except ValueError:
            raise BrokerError(f"not a database number in {url!r}: {db!r}") from None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            path=parts.path if parts.scheme == "unix" else None,
            db=number,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    @property
    def local(self) -> bool:
        return self.path is not None or self.host in _LOOPBACK


class RedisLink:
    """One connection to the Redis of ``url``, on its database; a context manager."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.address = _Address.parse(url)
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""

    def __enter__(self) -> RedisLink:
        address = self.address
        try:
            if address.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self._timeout)
                sock.connect(address.path)
            else:
                sock = socket.create_connection(
                    (address.host, address.port), timeout=self._timeout
                )
        except OSError as exc:
            raise BrokerError(f"Redis is not reachable: {exc}") from exc
        self._sock = sock
        if address.password is not None:
            user = (address.username,) if address.username else ()
            self.command("AUTH", *user, address.password)
        if address.db:
            self.command("SELECT", str(address.db))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def command(self, *args: str) -> Any:
        """Send one command and return its reply (bytes, int, list or None)."""
        assert self._sock is not None, "not connected"
        out = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        try:
            self._sock.sendall(b"".join(out))
            return self._reply()
        except OSError as exc:
            raise BrokerError(f"Redis connection failed: {exc}") from exc

    def _line(self) -> bytes:
        assert self._sock is not None
        while b"\r\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise BrokerError("Redis closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line

    def _exactly(self, n: int) -> bytes:
        assert self._sock is not None
        while len(self._buf) < n + 2:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise BrokerError("Redis closed the connection")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n + 2 :]
        return data

    def _reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise BrokerError(f"Redis refused: {rest.decode(errors='replace')}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            return None if rest == b"-1" else self._exactly(int(rest))
        if kind == b"*":
            return None if rest == b"-1" else [self._reply() for _ in range(int(rest))]
        raise BrokerError(f"unexpected reply from Redis: {line[:40]!r}")

    def keys(self, prefix: str, limit: int | None = None) -> list[str]:
        """Keys that start with ``prefix:`` (SCAN, so never blocking the server)."""
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + ":*"
        found: list[str] = []
        cursor = "0"
        while True:
            cursor_b, batch = self.command("SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
            found += [key.decode() for key in batch]
            cursor = cursor_b.decode()
            if cursor == "0" or (limit is not None and len(found) >= limit):
                return found

    def other_clients(self, active_within: float) -> int:
        """Clients on another database that sent a command in the last ``active_within`` s."""
        listing = bytes(self.command("CLIENT", "LIST")).decode(errors="replace")
        count = 0
        for line in listing.splitlines():
            fields = dict(f.partition("=")[::2] for f in line.split())
            if fields.get("db") != str(self.address.db) and int(fields.get("idle", "0") or 0) <= (
                active_within
            ):
                count += 1
        return count

    def delete_prefix(self, prefix: str) -> int:
        """Remove every key that starts with ``prefix:``; return how many."""
        keys = self.keys(prefix)
        removed = 0
        for i in range(0, len(keys), 500):
            removed += int(self.command("UNLINK", *keys[i : i + 500]))
        return removed


def local_redis_pid(link: RedisLink) -> int | None:
    """
    The pid of the redis-server behind ``link`` if it runs on this machine,
    so that its CPU time can be read from ``/proc``; None when it is remote or
    the pid it reports (``INFO server``) is not a redis-server here (a container).
    """
    if not link.address.local:
        return None
    info = link.command("INFO", "server")
    for line in bytes(info).decode(errors="replace").splitlines():
        if line.startswith("process_id:"):
            pid = int(line.partition(":")[2])
            break
    else:
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm.startswith("redis") else None


class PrivateRedis:
    """
    A redis-server of the benchmark's own on a free port (no persistence), so
    that its CPU time is the benchmark's only; a context manager yielding its URL.
    """

    def __init__(self, port: int, log: Path) -> None:
        self.url = f"redis://127.0.0.1:{port}/0"
        self._port = port
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BrokerError("--redis private needs redis-server on PATH")
        argv = [binary, "--port", str(self._port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no"]
        self._log.parent.mkdir(parents=True, exist_ok=True)
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and self._proc.poll() is None:
            with contextlib.suppress(BrokerError), RedisLink(self.url, timeout=1.0) as link:
                link.command("PING")
                return self.url
            time.sleep(0.05)
        self.__exit__(None, None, None)
        raise BrokerError(f"the private redis-server did not start (log: {self._log})")

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
