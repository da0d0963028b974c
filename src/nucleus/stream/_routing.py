"""
Routes: which handler serves which path, with which limits.

Pure configuration, validated when declared so that a mistake fails at
start-up with a clear :class:`RouteError`, not on the first connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import ConfigError, RouteError
from ._handler import StreamHandler
from ._history import HistoryPolicy

__all__ = ["Limits", "Route", "StaticFile"]


@dataclass(frozen=True, slots=True)
class Limits:
    """
    Per-connection limits, with their defaults.

    - ``max_message_size``: largest incoming message in bytes (1 MiB); bigger
      ones close the socket with 1009.
    - ``max_send_queue``: bytes that may wait for a slow client beyond what
      its kernel buffer took (1 MiB); past it the socket is closed with 1013
      (try again later) and the client recovers from history on reconnect.
    - ``ping_interval`` / ``ping_timeout``: a socket silent for
      ``ping_interval`` seconds is pinged; no answer within ``ping_timeout``
      drops it (20 s / 20 s). ``None`` turns keepalive off.
    - ``close_timeout``: how long a closing handshake may take before the TCP
      connection is aborted (10 s).
    - ``handshake_timeout``: how long a client may take to send its opening
      handshake (10 s).
    """

    max_message_size: int = 2**20
    max_send_queue: int = 2**20
    ping_interval: float | None = 20.0
    ping_timeout: float = 20.0
    close_timeout: float = 10.0
    handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_message_size", "max_send_queue", "ping_timeout",
                     "close_timeout", "handshake_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.ping_interval is not None and self.ping_interval <= 0:
            raise ConfigError(f"ping_interval must be positive or None, got {self.ping_interval}")


@dataclass(frozen=True, slots=True)
class Route:
    """One WebSocket endpoint."""

    path: str
    handler: StreamHandler
    max_message_size: int
    max_send_queue: int
    history: HistoryPolicy | None = None

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or "?" in self.path or "#" in self.path:
            raise RouteError(f"a route path starts with '/' and has no query, got {self.path!r}")
        if not isinstance(self.handler, StreamHandler):
            raise RouteError(
                f"route {self.path!r} needs a StreamHandler instance, "
                f"got {type(self.handler).__name__} (did you pass the class instead of "
                "an instance?)"
            )
        if self.max_message_size <= 0 or self.max_send_queue <= 0:
            raise ConfigError(f"route {self.path!r}: limits must be positive")


@dataclass(frozen=True, slots=True)
class StaticFile:
    """A small file served over plain HTTP GET (the demo page, the browser client)."""

    body: bytes
    content_type: str
