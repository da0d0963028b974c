"""The guide's examples, ported to examples/, served for real."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

from starlette.applications import Starlette
from starlette.routing import Mount
from websockets.asyncio.client import connect

from examples import chat_bot, chat_room, dashboard, quick_example
from nucleus.stream import SocketMessage, StreamHandler, StreamHub, StreamServer, WebSocket

from .conftest import Serve, UvicornRunner
from .helpers import within


async def test_quick_example_broadcasts_text_to_general(serve: Serve) -> None:
    base = await serve(quick_example.server)
    async with connect(f"{base}/ws/chat") as a, connect(f"{base}/ws/chat") as b:
        await a.send("hello general")
        assert await within(a.recv()) == "hello general"
        assert await within(b.recv()) == "hello general"
        await b.send(b"binary is ignored")
        await b.send("after binary")
        assert await within(a.recv()) == "after binary"


async def test_chat_room_adds_user_and_timestamp(serve: Serve) -> None:
    base = await serve(chat_room.server)
    async with connect(f"{base}/ws/chat") as a, connect(f"{base}/ws/chat") as b:
        await a.send("hi there")
        for client in (a, b):
            line = json.loads(await within(client.recv()))
            assert line["user"] == "anon" and line["text"] == "hi there"
            assert datetime.fromisoformat(line["timestamp"]).tzinfo is not None


async def test_dashboard_background_task_streams_metrics(serve: Serve) -> None:
    base = await serve(dashboard.server)
    async with connect(f"{base}/ws/metrics") as client:
        first = json.loads(await within(client.recv(), 5))
        second = json.loads(await within(client.recv(), 5))
    assert {"time", "load1", "load5", "load15"} <= first.keys()
    assert second["time"] > first["time"]


async def test_server_mounts_inside_a_starlette_app() -> None:
    class Echo(StreamHandler):
        async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
            await socket.send(SocketMessage.json({"path": socket.path, "echo": msg.payload}))

    stream = StreamServer()
    stream.route("/ws/echo", Echo())
    app = Starlette(routes=[Mount("/realtime", app=stream)])
    runner = UvicornRunner(app)  # type: ignore[arg-type]
    await runner.start()
    try:
        async with connect(f"ws://127.0.0.1:{runner.port}/realtime/ws/echo") as client:
            await client.send("ping")
            assert json.loads(await within(client.recv())) == {"path": "/ws/echo", "echo": "ping"}
    finally:
        await runner.stop()
        await stream.aclose()


async def test_chat_bot_answers_in_the_chat_room(serve: Serve) -> None:
    server = StreamServer()
    server.route("/ws/chat", chat_room.ChatRoom())
    url = f"{await serve(server)}/ws/chat"
    ready = asyncio.Event()
    bot = asyncio.create_task(chat_bot.run_bot(url, ready=ready.set))
    try:
        await within(ready.wait())
        async with connect(url) as person:  # a plain WebSocket, as the guide's page
            heard = []
            for said, lines in (("hello everyone", 1), ("!echo hello bot", 2), ("!help", 2)):
                await person.send(said)
                heard += [json.loads(await within(person.recv()))["text"] for _ in range(lines)]
        assert heard == ["hello everyone", "!echo hello bot", "bot: hello bot", "!help",
                         "bot: I know !help, !echo <text> and !time"]
    finally:
        bot.cancel()
        await asyncio.gather(bot, return_exceptions=True)
    assert bot.cancelled()
