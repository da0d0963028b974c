"""Nucleus Stream inside a plain Starlette app: HTTP endpoints push to rooms and users.

Run: uvicorn examples.starlette_app:app --port 8000
Then a page (or `python -m websockets ws://127.0.0.1:8000/realtime/ws?user=ann`)
connects, and `curl -X POST localhost:8000/rooms/lobby -d '{"text":"hi"}'` reaches
it; `curl -X POST localhost:8000/users/ann/notify -d '{"kind":"mention"}'` reaches
every socket of ann only. The browser client is served at /realtime/nucleus/stream.js.
The same app in FastAPI: examples/fastapi_app.py.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

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


async def broadcast(request: Request) -> JSONResponse:
    message = SocketMessage.json(await request.json())
    offset = await realtime.hub.broadcast_to_room(request.path_params["room"], message)
    return JSONResponse({"offset": offset})


async def notify(request: Request) -> JSONResponse:
    message = SocketMessage.json(await request.json())
    await realtime.hub.send_to_user(request.path_params["user_id"], message)
    return JSONResponse({"sent": True})


async def online(request: Request) -> JSONResponse:
    return JSONResponse(await realtime.hub.online_users())


# The lifespan starts the server with the app (its checks and start-up hooks
# run then) and closes its sockets when the app stops.
app = Starlette(
    routes=[
        Route("/rooms/{room}", broadcast, methods=["POST"]),
        Route("/users/{user_id}/notify", notify, methods=["POST"]),
        Route("/online", online),
        Mount("/realtime", app=realtime),
    ],
    lifespan=realtime.lifespan,
)
