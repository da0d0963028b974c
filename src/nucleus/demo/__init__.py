"""
The chat demo served by ``nucleus demo``: the guide's Chat Room, with a page.

Every socket joins the ``chat`` room; each ``{"user", "text"}`` message is
validated and broadcast with a timestamp. The page uses the browser client.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

from ..stream import SocketMessage, StreamHandler, StreamHub, StreamServer, WebSocket

__all__ = ["ChatHandler", "create_app"]

ROOM = "chat"


@dataclass(frozen=True)
class ChatLine:
    user: str
    text: str


class ChatHandler(StreamHandler):
    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        await hub.join_room(socket.id, ROOM)

    async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
        line = msg.as_json(ChatLine)
        if line is None or not line.text.strip():
            await socket.send(SocketMessage.json({"error": "send {\"user\": str, \"text\": str}"}))
            return
        await hub.broadcast_to_room(ROOM, SocketMessage.json({
            "user": line.user[:40] or "anon",
            "text": line.text[:2000],
            "timestamp": datetime.now(UTC),
        }))


def create_app() -> StreamServer:
    server = StreamServer()
    server.route("/ws/chat", ChatHandler())
    page = (resources.files("nucleus.demo") / "chat.html").read_bytes()
    server.static("/", page, "text/html; charset=utf-8")
    return server
