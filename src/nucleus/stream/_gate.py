"""
The door policy: who may open a WebSocket, decided before the upgrade.

Pure decisions with an injected clock, shared by both front doors: the real
client address (``X-Forwarded-For`` only from a trusted proxy), per-address
connection and handshake caps, the ``Origin`` allow-list (Cross-Site WebSocket
Hijacking), and turning an authenticator's answer into a user. No I/O here
except awaiting the route's authenticator.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from ._errors import ConfigError
from ._ratelimit import TokenBucket
from ._request import HandshakeRequest

__all__ = ["Admission", "DoorPolicy", "IpGuard", "normalize_origin", "origin_allowed"]


class Admission(NamedTuple):
    """
    The door's answer: ``status`` 101 admits, anything else is the HTTP refusal.
    (A named tuple: one is made per handshake, and a tuple is made fastest.)
    """

    status: int
    reason: str = ""
    user_id: str | None = None
    expires_at: float | None = None
    client_ip: str | None = None


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, default ports dropped; ConfigError if not one."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"an origin looks like https://app.example[:port], got {origin!r}")
    default = 443 if parts.scheme == "https" else 80
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme}://{parts.hostname.lower()}{port}"


def origin_allowed(offered: str | None, allowed: frozenset[str]) -> bool:
    """Whether an ``Origin`` header names one of the ``allowed`` (normalized) origins."""
    if offered is None:
        return False
    try:
        return normalize_origin(offered) in allowed
    except (ConfigError, ValueError):
        return False  # "null", garbage: not on any list


class IpGuard:
    """Per-address caps: open connections, and handshakes per second (token bucket)."""

    __slots__ = ("_buckets", "_counts", "_max_connections", "_rate")

    def __init__(self, max_connections: int | None, handshakes_per_second: float | None) -> None:
        if max_connections is not None and max_connections < 1:
            raise ConfigError("max_connections_per_ip must be >= 1 or None")
        if handshakes_per_second is not None and handshakes_per_second <= 0:
            raise ConfigError("max_handshakes_per_ip must be > 0 or None")
        self._max_connections = max_connections
        self._rate = handshakes_per_second
        self._counts: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self._max_connections is not None or self._rate is not None

    def admit(self, ip: str, now: float) -> str | None:
        """None if ``ip`` may open one more connection now, else the reason it may not."""
        if self._rate is not None:
            bucket = self._buckets.get(ip)
            if bucket is None:
                bucket = self._buckets[ip] = TokenBucket(self._rate, max(1.0, self._rate))
            if not bucket.take(now):
                return "too many handshakes from this address; slow down"
        if self._max_connections is not None and self._counts.get(ip, 0) >= self._max_connections:
            return "too many connections from this address"
        return None

    def opened(self, ip: str) -> None:
        self._counts[ip] = self._counts.get(ip, 0) + 1

    def closed(self, ip: str) -> None:
        count = self._counts.get(ip, 0) - 1
        if count > 0:
            self._counts[ip] = count
        else:
            self._counts.pop(ip, None)

    def sweep(self, now: float) -> None:
        """Forget full buckets (addresses that have been quiet): memory stays bounded."""
        for ip in [ip for ip, b in self._buckets.items() if b.available(now) >= b.capacity]:
            del self._buckets[ip]

    def __len__(self) -> int:
        return len(self._counts) + len(self._buckets)


class DoorPolicy:
    """Everything the server checks before accepting an upgrade, for every route."""

    def __init__(
        self,
        *,
        max_connections_per_ip: int | None = None,
        max_handshakes_per_ip: float | None = None,
        trusted_proxies: Iterable[str] = (),
    ) -> None:
        self.guard = IpGuard(max_connections_per_ip, max_handshakes_per_ip)
        try:
            self._proxies = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies must be addresses or networks: {exc}") from None

    def _trusted(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in net for net in self._proxies)

    def client_ip(self, request: HandshakeRequest) -> str | None:
        """
        The client's address: the peer, unless the peer is a trusted proxy; then
        the right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy.
        """
        peer = request.remote_address[0] if request.remote_address else None
        if peer is None or not self._proxies or not self._trusted(peer):
            return peer
        hops = [hop.strip() for header in request.headers.get_all("x-forwarded-for")
                for hop in header.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return peer

    def check(self, request: HandshakeRequest, origins: frozenset[str] | None,
              now: float) -> Admission:
        """The checks that need no I/O: address caps, then the origin."""
        ip = self.client_ip(request)
        if self.guard.enabled and ip is not None:
            refused = self.guard.admit(ip, now)
            if refused is not None:
                return Admission(429, refused, client_ip=ip)
        if origins is not None and not origin_allowed(request.origin, origins):
            return Admission(403, "origin not allowed", client_ip=ip)
        return Admission(101, client_ip=ip)

    @staticmethod
    async def authenticate(
        request: HandshakeRequest,
        authenticate: Callable[[HandshakeRequest], Awaitable[Any]],
        ip: str | None,
    ) -> Admission:
        """Await the route's authenticator; its answer becomes the socket's user."""
        answer = await authenticate(request)
        if answer is None:
            return Admission(401, "authentication required", client_ip=ip)
        if isinstance(answer, str):
            return Admission(101, user_id=answer, client_ip=ip)
        user_id = getattr(answer, "user_id", None)
        if not isinstance(user_id, str) or not user_id:
            return Admission(401, "authentication required", client_ip=ip)
        return Admission(101, user_id=user_id, expires_at=getattr(answer, "expires_at", None),
                         client_ip=ip)
