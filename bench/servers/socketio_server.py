"""Benchmark peer: python-socketio's ``AsyncServer`` as an ASGI app under uvicorn.

A client connecting without ``role=pub`` in its query string is put in room
``bench``. An event ``msg`` from any client is emitted verbatim as event
``msg`` to the room (``sio.emit("msg", data, room="bench")``) and, since the
publisher is not in the room, not echoed to it. Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
from importlib.metadata import version
from typing import Any
from urllib.parse import parse_qs

import socketio  # type: ignore[import-untyped]
import uvicorn

ROOM = "bench"

sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"])
app = socketio.ASGIApp(sio, socketio_path="socket.io")


async def connect(sid: str, environ: dict[str, Any]) -> None:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if query.get("role") != ["pub"]:
        await sio.enter_room(sid, ROOM)


async def relay(sid: str, data: Any) -> None:
    await sio.emit("msg", data, room=ROOM)


sio.on("connect", connect)
sio.on("msg", relay)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    print(f"python-socketio {version('python-socketio')}, uvicorn {version('uvicorn')}", flush=True)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=1024,
    )
