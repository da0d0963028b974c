"""
What a server counts, for ``GET /metrics`` in the Prometheus text format.

One :class:`Metrics` per server, on a registry of its own (two servers in one
process never mix their figures). The hot paths pay per message received and
per broadcast, never per member of a broadcast: a fan-out to ten thousand
sockets is one call with its recipient count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_BACKEND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0)


class _RouteFigures(NamedTuple):
    """One route's labelled children, looked up once: ``labels()`` is slow per call."""

    connections: Gauge
    accepted: Counter
    messages_in: Counter
    bytes_in: Counter


class Metrics:
    """The server's counters; every method is cheap enough for its call site."""

    def __init__(self, rooms: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("nucleus_connections", "Open WebSocket connections.",
                                 ["route"], registry=r)
        self.accepted = Counter("nucleus_connections_accepted", "Connections opened.",
                                ["route"], registry=r)
        self.rooms = Gauge("nucleus_rooms", "Rooms with a member on this node.", registry=r)
        self.rooms.set_function(rooms)
        self.messages_in = Counter("nucleus_messages_in", "Messages received from clients.",
                                   ["route"], registry=r)
        self.bytes_in = Counter("nucleus_bytes_in", "Payload bytes received from clients.",
                                ["route"], registry=r)
        self.broadcasts = Counter("nucleus_broadcasts",
                                  "Room publications delivered by this node.", registry=r)
        self.deliveries = Counter("nucleus_deliveries",
                                  "Messages queued to sockets (fan-out and direct).", registry=r)
        self.bytes_out = Counter("nucleus_bytes_out",
                                 "Payload bytes queued to sockets (before framing).", registry=r)
        self.rate_limited = Counter("nucleus_rate_limited",
                                    "Messages dropped by a rate limit.", ["route"], registry=r)
        self.invalid = Counter("nucleus_invalid_messages",
                               "Messages refused by a route's message model.", ["route"],
                               registry=r)
        self.slow_consumers = Counter("nucleus_slow_consumer_closes",
                                      "Sockets closed with 1013 for not reading.", registry=r)
        self.refusals = Counter("nucleus_handshake_refusals",
                                "Opening handshakes answered with an HTTP error.", ["status"],
                                registry=r)
        self.backend_errors = Counter("nucleus_backend_errors", "Backend calls that failed.",
                                      ["operation"], registry=r)
        self.backend_latency = Histogram("nucleus_backend_seconds",
                                         "Time of backend calls that reach the broker.",
                                         ["operation"], buckets=_BACKEND_BUCKETS, registry=r)
        self._routes: dict[str, _RouteFigures] = {}

    def _route(self, route: str) -> _RouteFigures:
        found = self._routes.get(route)
        if found is None:
            found = self._routes[route] = _RouteFigures(
                self.connections.labels(route), self.accepted.labels(route),
                self.messages_in.labels(route), self.bytes_in.labels(route))
        return found

    def render(self) -> bytes:
        """The Prometheus text exposition of every figure."""
        return generate_latest(self.registry)

    def opened(self, route: str) -> None:
        figures = self._route(route)
        figures.connections.inc()
        figures.accepted.inc()

    def closed(self, route: str) -> None:
        self._route(route).connections.dec()

    def received(self, route: str, size: int) -> None:
        figures = self._route(route)
        figures.messages_in.inc()
        figures.bytes_in.inc(size)

    def delivered(self, recipients: int, size: int) -> None:
        """One broadcast (or direct message) queued to ``recipients`` sockets."""
        if recipients:
            self.deliveries.inc(recipients)
            self.bytes_out.inc(recipients * size)

    def refusals_by_status(self, status: int) -> None:
        self.refusals.labels(str(status)).inc()

    def backend_call(self, operation: str, seconds: float, failed: bool) -> None:
        self.backend_latency.labels(operation).observe(seconds)
        if failed:
            self.backend_errors.labels(operation).inc()
