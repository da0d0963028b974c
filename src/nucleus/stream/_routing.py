"""
Routes: which handler serves which path, with which limits.

Pure configuration, validated when declared so that a mistake fails at
start-up with a clear :class:`RouteError`, not on the first connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ._errors import ConfigError, RouteError
from ._handler import StreamHandler
from ._message import MessageModel
from ._ratelimit import RateLimit, RateLimiter
from ._request import HandshakeRequest

__all__ = ["Limits", "Route"]


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
    """
    One WebSocket endpoint and its door policy.

    ``auth`` (or an overridden ``handler.authenticate``) runs before the upgrade;
    ``origins`` is the browser Origin allow-list; ``rate_limit`` caps inbound
    messages (``None``: unlimited); ``message_model`` validates every inbound
    message before ``on_message`` sees it; ``presence`` lets library clients
    watch who is in the rooms they are subscribed to. ``compression`` offers
    permessage-deflate on the native door; messages whose payload is smaller
    than ``compression_threshold`` bytes still go out uncompressed.
    """

    path: str
    handler: StreamHandler
    max_message_size: int
    max_send_queue: int
    auth: Callable[[HandshakeRequest], Awaitable[Any]] | None = None
    origins: frozenset[str] | None = None
    rate_limit: RateLimit | None = None
    message_model: MessageModel | None = None
    presence: bool = False
    compression: bool = False
    compression_threshold: int = 512
    limiter: RateLimiter | None = field(init=False, default=None)

    @property
    def authenticator(self) -> Callable[[HandshakeRequest], Awaitable[Any]] | None:
        """What authenticates this route's handshakes, if anything does."""
        if self.auth is not None:
            return self.auth
        if type(self.handler).authenticate is not StreamHandler.authenticate:
            return self.handler.authenticate
        return None

    def __post_init__(self) -> None:
        if self.rate_limit is not None:
            object.__setattr__(self, "limiter", RateLimiter(self.rate_limit))
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
        if self.compression_threshold < 0:
            raise ConfigError(f"route {self.path!r}: compression_threshold must be 0 or more, "
                              f"got {self.compression_threshold}")
