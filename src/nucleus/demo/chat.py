"""
The chat app: pick a room and a name, see the room's recent messages, who is
online in it and who is typing.

Each room ``R`` is two channels: ``chat:R`` carries the messages and keeps
them (the last 50, for a day), ``typing:R`` carries typing indicators and
keeps nothing, so that neither a replay nor the recent history shows someone
typing an hour ago. A page subscribes to both, watches ``chat:R``'s presence,
then asks for the recent messages with a request and merges them with live
ones by offset: the request is handled after the subscription, so every
message is either in its answer or live, and none is shown twice.

The name travels in the URL (``ws?name=ann``) and becomes the socket's user
id: a demo trusts it; an app would take it from a token (see ``auth``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from ..stream import (
    HistoryPolicy,
    RequestError,
    SocketMessage,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)
from ._rooms import Traffic, publish, recent_json
from ._web import check_name, install_page, redirect

__all__ = ["PREFIX", "RECENT", "ROOMS", "ChatFrame", "ChatHandler", "create_app", "install"]

PREFIX = "/chat"
ROOMS = ("lobby", "python", "random")
#: How many recent messages a page gets when it enters a room.
RECENT = 20
MAX_TEXT = 2000


class ChatFrame(msgspec.Struct, frozen=True):
    """What a page sends: a line (``say``), a typing ping, or a history request."""

    type: Literal["say", "typing", "history"]
    room: Annotated[str, msgspec.Meta(max_length=40)]
    text: Annotated[str, msgspec.Meta(max_length=MAX_TEXT)] = ""


class ChatHandler(StreamHandler):
    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic
        self.channels = frozenset(f"{kind}:{room}" for room in ROOMS for kind in ("chat", "typing"))

    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        name = check_name(socket.query.get("name"))
        if name is None:
            await hub.disconnect(socket.id)  # 1008: the page asks for a valid name first
            return
        await hub.identify(socket.id, name)

    async def on_subscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
        return channel in self.channels

    async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
        self.traffic.received += 1
        frame = msg.as_json(ChatFrame)  # the route's message_model already checked it
        user = socket.user_id
        if frame is None or user is None or frame.type == "history":
            return
        if f"chat:{frame.room}" not in await hub.rooms_of(socket.id):
            return  # only members speak in a room
        if frame.type == "typing":
            await publish(hub, self.traffic, f"typing:{frame.room}", "typing", {"user": user})
        elif frame.text.strip():
            await publish(hub, self.traffic, f"chat:{frame.room}", "message",
                          {"user": user, "text": frame.text, "at": datetime.now(UTC)})

    async def on_request(self, hub: StreamHub, socket: WebSocket, data: Any) -> Any:
        self.traffic.received += 1
        if not isinstance(data, ChatFrame) or data.type != "history":
            raise RequestError("bad_request", "requests ask for a room's history")
        if data.room not in ROOMS:
            raise RequestError("not_found", f"no room {data.room!r}")
        return await recent_json(hub, f"chat:{data.room}", RECENT)


def install(server: StreamServer, traffic: Traffic) -> None:
    """Add the chat to ``server``: its page at ``/chat/``, its socket at ``/chat/ws``."""
    server.route(f"{PREFIX}/ws", ChatHandler(traffic), presence=True, message_model=ChatFrame)
    server.history("chat:*", HistoryPolicy(size=50, ttl=24 * 3600))
    server.history("typing:*", HistoryPolicy(size=0))
    install_page(server, PREFIX, "chat.html")


def create_app() -> StreamServer:
    """The chat alone, at http://127.0.0.1:3000/ (redirected to ``/chat/``)."""
    server = StreamServer()
    install(server, Traffic())
    redirect(server, "/", "chat/")
    return server
