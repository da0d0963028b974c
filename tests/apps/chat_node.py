"""
A chat node for the cluster fault tests: run several with ``NUCLEUS_BACKEND=redis://...``.

``?user=<id>`` identifies a socket; any channel may be subscribed to; a
message from a socket is broadcast to "chat". Rooms keep their last 1000
messages for 5 minutes, so that recovery across a node's death is exact.
"""

from nucleus.stream import (
    HistoryPolicy,
    SocketMessage,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)


class Chat(StreamHandler):
    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        user = socket.query.get("user")
        if user:
            await hub.identify(socket.id, user)

    async def on_subscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
        return True

    async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
        await hub.broadcast_to_room("chat", msg)


def create_app() -> StreamServer:
    server = StreamServer()
    server.route("/ws", Chat(), rate_limit=None)
    server.history("*", HistoryPolicy(size=1000, ttl=300))
    return server


server = create_app()
