"""
A test app that puts every cross-node hub operation in a client's hands
(``tests/test_workers.py``), served by several ``nucleus serve`` processes.

One route, ``/ws``; ``?user=NAME`` identifies the socket on connect. Each text
message is a JSON command ``{"op": ..., ...}``; the answer is
``{"re": op, "ok": result}``, or ``{"re": op, "error": "SocketNotFound"}``
when the hub raised a :class:`StreamError`. Messages that other sockets make
the hub send carry no ``"re"``. ``whoami`` answers the socket's id, user and
the process id, so a test can tell which process serves it. ``broken`` is
the same app failing at startup.
"""

from __future__ import annotations

import os
from typing import Any

from nucleus.stream import (
    ConfigError,
    SocketMessage,
    StreamError,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)


async def _run(hub: StreamHub, socket: WebSocket, op: str, args: dict[str, Any]) -> Any:
    if op == "whoami":
        return {"id": socket.id, "user": socket.user_id, "pid": os.getpid()}
    if op == "join":
        return await hub.join_room(socket.id, args["room"])
    if op == "broadcast":
        body = {"room": args["room"], "text": args["text"]}
        return await hub.broadcast_to_room(args["room"], SocketMessage.json(body))
    if op == "channel":
        return await hub.channel(args["room"]).broadcast(args["event"], args["data"])
    if op == "send_to":
        return await hub.send_to(args["id"], SocketMessage.json({"direct": args["text"]}))
    if op == "send_to_user":
        return await hub.send_to_user(args["user"], SocketMessage.json({"user": args["text"]}))
    if op == "disconnect":
        return await hub.disconnect(args["id"], args["code"], args.get("reason", ""))
    if op == "disconnect_user":
        return await hub.disconnect_user(args["user"], args["code"], args.get("reason", ""))
    if op == "identify":
        return await hub.identify(args["id"], args["user"])
    if op == "online_users":
        return await hub.online_users()
    if op == "room_members":
        return sorted(await hub.room_members(args["room"]))
    if op == "room_users":
        return await hub.room_users(args["room"])
    if op == "rooms_of":
        return sorted(await hub.rooms_of(args["id"]))
    if op == "connection_count":
        return await hub.connection_count()
    raise ValueError(f"unknown op {op!r}")


class Cluster(StreamHandler):
    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        user = socket.query.get("user")
        if user:
            await hub.identify(socket.id, user)

    async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
        command = msg.as_json()
        op = command.pop("op")
        try:
            answer = {"re": op, "ok": await _run(hub, socket, op, command)}
        except StreamError as exc:
            answer = {"re": op, "error": type(exc).__name__}
        await socket.send(SocketMessage.json(answer))


server = StreamServer()
server.route("/ws", Cluster(), rate_limit=None)


#: A server whose startup always fails, as an app missing its configuration does.
broken = StreamServer()
broken.route("/ws", Cluster())


@broken.on_startup
async def _refuse() -> None:
    raise ConfigError("the test app refuses to start")
