"""Nucleus Stream inside a FastAPI app: HTTP endpoints push to rooms and users.

Run: uvicorn examples.fastapi_app:app --port 8000
Then a page (or `python -m websockets ws://127.0.0.1:8000/realtime/ws?user=ann`)
connects, and `curl -X POST localhost:8000/rooms/lobby -d '{"text":"hi"}'
-H 'content-type: application/json'` reaches it. The browser client is served
at /realtime/nucleus/stream.js.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from nucleus.stream import SocketMessage, StreamHandler, StreamHub, StreamServer, WebSocket


class Lobby(StreamHandler):
    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        user = socket.query.get("user")  # a real app takes it from a token (auth=...)
        if user:
            await hub.identify(socket.id, user)
        await hub.join_room(socket.id, "lobby")

    async def on_subscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
        return channel == "lobby"


realtime = StreamServer()
realtime.route("/ws", Lobby())

# The lifespan starts the server with the app (its checks and start-up hooks
# run then) and closes its sockets when the app stops.
app = FastAPI(lifespan=realtime.lifespan)


@app.post("/rooms/{room}")
async def broadcast(room: str, message: dict[str, Any]) -> dict[str, int]:
    offset = await realtime.hub.broadcast_to_room(room, SocketMessage.json(message))
    return {"offset": offset}


@app.post("/users/{user_id}/notify")
async def notify(user_id: str, message: dict[str, Any]) -> dict[str, bool]:
    await realtime.hub.send_to_user(user_id, SocketMessage.json(message))
    return {"sent": True}


@app.get("/online")
async def online() -> list[str]:
    return await realtime.hub.online_users()


app.mount("/realtime", realtime)
