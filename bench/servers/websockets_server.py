"""Benchmark peer: the ``websockets`` library's asyncio server.

Subscribers on ``/sub`` join one set; every text message received on ``/pub``
goes to all of them through ``websockets.broadcast()``, the fan-out the library
recommends (it writes each frame without awaiting any one client). Stops on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import signal
from importlib.metadata import version

from websockets.asyncio.server import ServerConnection, broadcast, serve


async def handler(subscribers: set[ServerConnection], websocket: ServerConnection) -> None:
    path = websocket.request.path if websocket.request else ""
    if path == "/sub":
        subscribers.add(websocket)
        try:
            await websocket.wait_closed()
        finally:
            subscribers.discard(websocket)
    elif path == "/pub":
        async for message in websocket:
            broadcast(subscribers, message)
    else:
        await websocket.close(1008, "unknown path")


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    subscribers: set[ServerConnection] = set()
    # Library defaults otherwise; permessage-deflate stays off because the
    # load generator does not offer it.
    async with serve(functools.partial(handler, subscribers), "127.0.0.1", port, backlog=1024):
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop (default uvloop, as Nucleus Stream and uvicorn use)",
    )
    args = parser.parse_args()
    print(f"websockets {version('websockets')}, {args.loop}", flush=True)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main(args.port))
    else:
        asyncio.run(main(args.port))
