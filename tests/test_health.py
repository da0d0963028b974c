"""`GET /healthz`: what a load balancer asks, on both front doors and against Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from nucleus.stream import StreamServer

from .backends import REDIS_URL, redis_backend
from .cluster import TcpProxy
from .conftest import Serve
from .helpers import eventually, port_of, within


async def get(port: int, path: str = "/healthz") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    head, _, body = (await within(reader.read())).partition(b"\r\n\r\n")
    writer.close()
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


async def test_a_healthy_node_answers_200_on_either_door(serve: Serve) -> None:
    server = StreamServer()
    port = port_of(await serve(server))
    status, headers, body = await get(port)
    assert status == 200 and json.loads(body) == {"status": "ok"}
    assert headers["content-type"] == "application/json"


async def test_the_path_moves_or_goes(serve_native: Serve) -> None:
    moved = port_of(await serve_native(StreamServer(health_path="/ready")))
    assert (await get(moved, "/ready"))[0] == 200
    assert (await get(moved))[0] == 404
    gone = port_of(await serve_native(StreamServer(health_path=None)))
    assert (await get(gone))[0] == 404


@pytest.fixture
async def redis_proxy() -> AsyncIterator[TcpProxy]:
    host, _, rest = REDIS_URL.removeprefix("redis://").partition(":")
    proxy = TcpProxy((host, int(rest.partition("/")[0])))
    await proxy.start()
    yield proxy
    await proxy.aclose()


async def test_503_while_redis_or_its_pubsub_link_stops_answering(
    serve_native: Serve, redis_proxy: TcpProxy, redis_prefix: str,
) -> None:
    url = f"redis://127.0.0.1:{redis_proxy.port}/{REDIS_URL.rpartition('/')[2]}"
    backend = redis_backend(redis_prefix, url=url, timeout=1.0)
    port = port_of(await serve_native(StreamServer(backend=backend)))
    assert (await get(port))[0] == 200

    async def status_is(code: int) -> bool:
        return (await get(port))[0] == code

    # A partition: connections stay open, nothing comes back (probes included).
    redis_proxy.stall()
    await eventually(lambda: status_is(503), seconds=3 * backend.probe_interval + 3)
    _, headers, body = await get(port)
    assert json.loads(body)["status"] == "unavailable" and headers["retry-after"] == "1"
    redis_proxy.resume()
    await eventually(lambda: status_is(200), seconds=10)

    # Redis gone: connections reset and refused.
    await redis_proxy.stop()
    await eventually(lambda: status_is(503), seconds=3 * backend.probe_interval + 3)
    await redis_proxy.start()
    await eventually(lambda: status_is(200), seconds=10)
