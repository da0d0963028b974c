"""The guide's Chat Room pattern: each message goes out with its author and a timestamp.

Run: nucleus serve examples.chat_room:server
"""

from datetime import UTC, datetime

from nucleus.stream import SocketMessage, StreamHandler, StreamHub, StreamServer, WebSocket

ROOM = "room:lobby"


class ChatRoom(StreamHandler):
    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        print(f"Client connected: {socket.id}")
        await hub.join_room(socket.id, ROOM)

    async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
        if isinstance(msg, SocketMessage.Text):
            response = {
                "user": socket.user_id or "anon",
                "text": msg.text,
                "timestamp": datetime.now(UTC),
            }
            await hub.broadcast_to_room(ROOM, SocketMessage.json(response))

    async def on_disconnect(self, hub: StreamHub, socket_id: str) -> None:
        print(f"Client disconnected: {socket_id}")


server = StreamServer()
server.route("/ws/chat", ChatRoom())

if __name__ == "__main__":
    server.run(host="127.0.0.1", port=3000)
