"""The guide's Live Dashboard: a background task broadcasts metrics every second.

Run: nucleus serve examples.dashboard:server
"""

import asyncio
import os
import time

from nucleus.stream import SocketMessage, StreamHandler, StreamHub, StreamServer, WebSocket

INTERVAL = float(os.environ.get("DASHBOARD_INTERVAL", "1.0"))


class Dashboard(StreamHandler):
    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        await hub.join_room(socket.id, "metrics")


server = StreamServer()
server.route("/ws/metrics", Dashboard())


def get_system_metrics() -> dict[str, float]:
    load1, load5, load15 = os.getloadavg()
    return {"time": time.time(), "load1": load1, "load5": load5, "load15": load15}


@server.background
async def start_metrics_stream(hub: StreamHub) -> None:
    while True:
        await hub.broadcast_to_room("metrics", SocketMessage.json(get_system_metrics()))
        await asyncio.sleep(INTERVAL)


if __name__ == "__main__":
    server.run(host="127.0.0.1", port=3000)
