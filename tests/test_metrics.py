"""`GET /metrics`: Prometheus figures, scraped over HTTP as Prometheus would."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from nucleus.fortress import Fortress
from nucleus.stream import RateLimit, SocketMessage, StreamServer

from .backends import redis_backend
from .conftest import Serve
from .helpers import Recorder, eventually, port_of, within


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


async def test_connections_messages_broadcasts_and_refusals_are_counted(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_KEY", "a-test-secret-of-at-least-thirty-two-bytes!")
    handler = Recorder(rooms=("room",))
    server = StreamServer()
    server.route("/ws", handler, rate_limit=RateLimit(rate=1, burst=3, per_user_rate=None,
                                                      per_user_burst=None))
    server.route("/private", Recorder(), auth=Fortress.query_token())
    base = await serve(server)
    port = port_of(base)
    route = (("route", "/ws"),)
    async with connect(f"{base}/ws") as a, connect(f"{base}/ws") as b:
        for _ in range(2):
            await within(handler.connected.get())
        figures = await scrape(port)
        assert figures["nucleus_connections", route] == 2
        assert figures["nucleus_rooms", ()] == 1
        for text in ("hello", "héllo", "x", "dropped"):
            await a.send(text)
        await server.hub.broadcast_to_room("room", SocketMessage.Text("to all"))
        assert await within(b.recv()) == "to all"
        with pytest.raises(InvalidStatus):
            await connect(f"{base}/private")
        async def counted() -> bool:
            f = await scrape(port)
            return f.get(("nucleus_messages_in_total", route)) == 4
        await eventually(counted)
        figures = await scrape(port)
        assert figures["nucleus_bytes_in_total", route] == len("hellohéllox".encode()) + 7
        assert figures["nucleus_rate_limited_total", route] == 1
        assert figures["nucleus_broadcasts_total", ()] == 1
        assert figures["nucleus_deliveries_total", ()] == 2  # one broadcast, two members
        assert figures["nucleus_bytes_out_total", ()] == 2 * len("to all")
        assert figures["nucleus_handshake_refusals_total", (("status", "401"),)] == 1
    async def closed() -> bool:
        return (await scrape(port))["nucleus_connections", route] == 0
    await eventually(closed)


async def test_backend_calls_are_timed_and_metrics_can_be_off(
    serve_native: Serve, redis_prefix: str
) -> None:
    server = StreamServer(backend=redis_backend(redis_prefix))
    server.route("/ws", Recorder(rooms=("room",)))
    port = port_of(await serve_native(server))
    await server.hub.broadcast_to_room("room", SocketMessage.Text("x"))
    figures = await scrape(port)
    assert figures["nucleus_backend_seconds_count", (("operation", "PUBLISH"),)] >= 1
    off = StreamServer(metrics_path=None)
    off_port = port_of(await serve_native(off))
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{off_port}/metrics")).status_code == 404
