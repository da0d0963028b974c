"""The guide's Quick Example: every text message is broadcast to the "general" room.

Run: nucleus serve examples.quick_example:server   (or: python examples/quick_example.py)
"""

from nucleus.stream import SocketMessage, StreamHandler, StreamHub, StreamServer, WebSocket


class ChatHandler(StreamHandler):
    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        await hub.join_room(socket.id, "general")

    async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
        match msg:
            case SocketMessage.Text(text):
                # Broadcast to "general" room
                await hub.broadcast_to_room("general", SocketMessage.Text(text))

    async def on_disconnect(self, hub: StreamHub, socket_id: str) -> None:
        pass


server = StreamServer()
server.route("/ws/chat", ChatHandler())

if __name__ == "__main__":
    server.run(host="127.0.0.1", port=3000)
