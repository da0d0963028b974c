"""Request/reply: `req` frames answered by `on_request`, over real sockets on both doors."""

from __future__ import annotations

import json
import logging
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect

from nucleus.stream import (
    RateLimit,
    RequestError,
    SocketMessage,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)
from nucleus.testing import TestClient

from .conftest import Serve
from .helpers import within


class Order(msgspec.Struct):
    item: str
    count: int


class Shop(StreamHandler):
    def __init__(self) -> None:
        self.messages: list[SocketMessage] = []

    async def on_request(self, hub: StreamHub, socket: WebSocket, data: Any) -> Any:
        if isinstance(data, Order):
            return {"ordered": data.count, "of": data.item}
        if data == "boom":
            raise RuntimeError("secret database password in this text")
        if data == "unencodable":
            return object()
        if isinstance(data, dict) and data.get("item") == "gold":
            raise RequestError("out_of_stock", "no gold left")
        return {"echo": data, "user": socket.user_id}

    async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
        self.messages.append(msg)
        await socket.send(SocketMessage.Text("got it"))


async def tagged(base: str) -> ClientConnection:
    ws = await connect(f"{base}/ws", subprotocols=["nucleus.v1"])  # type: ignore[list-item]
    await ws.send('{"type":"hello","channels":{}}')
    return ws


async def ask(ws: ClientConnection, request_id: int, **fields: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "req", "id": request_id, **fields}))
    reply: dict[str, Any] = json.loads(await within(ws.recv()))
    assert reply["type"] == "reply" and reply["id"] == request_id, reply
    return reply


async def test_replies_carry_the_handlers_answer_or_its_refusal(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = StreamServer()
    server.route("/ws", Shop())
    ws = await tagged(await serve(server))
    assert await ask(ws, 1, data={"item": "tea", "n": [1, 2]}) == {
        "type": "reply", "id": 1, "data": {"echo": {"item": "tea", "n": [1, 2]}, "user": None}}
    assert (await ask(ws, 2, text="plain words"))["data"]["echo"] == "plain words"
    assert (await ask(ws, 3, data=None))["data"]["echo"] is None
    assert await ask(ws, 4, data={"item": "gold"}) == {
        "type": "reply", "id": 4, "error": {"code": "out_of_stock", "message": "no gold left"}}
    with caplog.at_level(logging.ERROR, "nucleus.stream"):
        failed = await ask(ws, 5, text="boom")
    assert failed["error"]["code"] == "internal"
    assert "secret" not in json.dumps(failed)
    assert "Shop.on_request failed" in caplog.text and "secret database" in caplog.text
    assert (await ask(ws, 6, text="unencodable"))["error"]["code"] == "internal"
    assert (await ask(ws, 7))["error"]["code"] == "bad_request"
    # A request without an id is not a request.
    await ws.send('{"type":"req","data":1}')
    assert json.loads(await within(ws.recv()))["code"] == "bad_request"
    await ws.close()


async def test_the_default_handler_answers_no_requests(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws", StreamHandler())
    ws = await tagged(await serve(server))
    assert (await ask(ws, 1, data=1))["error"]["code"] == "not_found"
    await ws.close()


async def test_the_routes_message_model_validates_requests(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws", Shop(), message_model=Order)
    ws = await tagged(await serve(server))
    assert (await ask(ws, 1, data={"item": "tea", "count": 2}))["data"] == {
        "ordered": 2, "of": "tea"}
    invalid = await ask(ws, 2, data={"item": "tea", "count": "many"})
    assert invalid["error"]["code"] == "invalid" and "$.count" in invalid["error"]["message"]
    await ws.close()


async def test_a_rate_limited_request_still_gets_its_reply(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws", Shop(), rate_limit=RateLimit(rate=1, burst=2, per_user_rate=None,
                                                     per_user_burst=None))
    ws = await tagged(await serve(server))  # the hello is the first of the burst
    for n in range(1, 4):
        await ws.send(json.dumps({"type": "req", "id": n, "data": n}))
    replies = [json.loads(await within(ws.recv())) for _ in range(3)]
    by_id = {r["id"]: r for r in replies}
    assert "data" in by_id[1]
    assert by_id[2]["error"]["code"] == by_id[3]["error"]["code"] == "rate_limited"
    await ws.close()


async def test_raw_clients_send_req_frames_as_plain_messages(serve: Serve) -> None:
    handler = Shop()
    server = StreamServer()
    server.route("/ws", handler)
    async with connect(f"{await serve(server)}/ws") as ws:
        await ws.send('{"type":"req","id":1,"data":1}')
        assert await within(ws.recv()) == "got it"
    assert handler.messages == [SocketMessage.Text('{"type":"req","id":1,"data":1}')]


class Buy(msgspec.Struct, tag="buy"):
    item: str


class Sell(msgspec.Struct, tag="sell"):
    item: str
    price: int


async def test_a_union_of_tagged_structs_is_a_message_model() -> None:
    class Market(StreamHandler):
        async def on_message(self, hub: StreamHub, socket: WebSocket,
                             msg: SocketMessage) -> None:
            await socket.send(SocketMessage.json({"got": type(msg.as_json(Buy | Sell)).__name__}))

        async def on_request(self, hub: StreamHub, socket: WebSocket, data: Any) -> Any:
            return type(data).__name__

    server = StreamServer()
    server.route("/ws", Market(), message_model=Buy | Sell)
    async with TestClient(server) as client, client.connect("/ws") as raw:
        await raw.send_json({"type": "sell", "item": "tea", "price": 3})
        assert await raw.receive_json() == {"got": "Sell"}
        await raw.send_json({"type": "steal", "item": "tea"})
        error = await raw.receive_json()
        assert (error["code"], error["message"]) == ("invalid", "invalid message: "
                                                     "Invalid value at $.type")
        await raw.send_bytes(b"\x00")
        assert (await raw.receive_json())["code"] == "invalid"
        await raw.send_json({"type": "buy", "item": "tea"})  # the socket still works
        assert await raw.receive_json() == {"got": "Buy"}
        async with client.connect("/ws", protocol=True) as tagged:
            await tagged.send_json({"type": "req", "id": 1, "data": {"type": "buy", "item": "x"}})
            assert await tagged.receive_json() == {"type": "reply", "id": 1, "data": "Buy"}
            await tagged.send_json({"type": "req", "id": 2, "data": {"type": "buy"}})
            reply = await tagged.receive_json()
            assert reply["error"]["code"] == "invalid", reply
