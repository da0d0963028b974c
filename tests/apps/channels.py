"""A test app for library clients: open channels, requests answered, users from ``?user=``."""

from __future__ import annotations

import asyncio
from typing import Any

from nucleus.stream import RequestError, StreamHub, WebSocket

from ..helpers import Recorder


class Open(Recorder):
    """
    Allows every subscription but ``secret*``; identifies ``?user=``; answers
    requests with ``{"echo": data, "user": ...}``, ``{"item": "gold"}`` with
    ``out_of_stock``, and ``"slow"`` once ``release`` is set (``asked`` says it came).
    """

    def __init__(self, rooms: tuple[str, ...] = ()) -> None:
        super().__init__(rooms)
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        if socket.query.get("user"):
            await hub.identify(socket.id, socket.query["user"])
        await super().on_connect(hub, socket)

    async def on_subscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
        return not channel.startswith("secret")

    async def on_request(self, hub: StreamHub, socket: WebSocket, data: Any) -> Any:
        if data == "slow":
            self.asked.set()
            await self.release.wait()
        if isinstance(data, dict) and data.get("item") == "gold":
            raise RequestError("out_of_stock", "no gold left")
        return {"echo": data, "user": socket.user_id}
