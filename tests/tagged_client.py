"""
A small ``nucleus.v1`` client for tests: the protocol of docs/protocol.md, in Python.

It records every frame as received (so tests can see duplicates or gaps the
server sends; ``frames`` keeps them all in order) and keeps per-channel
positions to resume from, as the browser client does.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from .helpers import within


@dataclass
class ChannelLog:
    epoch: str | None = None
    offset: int | None = None
    received: list[tuple[int, Any]] = field(default_factory=list)
    gaps: int = 0


class TaggedClient:
    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: ClientConnection | None = None
        self.channels: dict[str, ChannelLog] = {}
        self.direct: asyncio.Queue[Any] = asyncio.Queue()
        self.control: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.pubs: asyncio.Queue[tuple[str, int, Any]] = asyncio.Queue()
        self.frames: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    async def open(self, *channels: str, resume: bool = True) -> None:
        for name in channels:
            self.channels.setdefault(name, ChannelLog())
        self.ws = await connect(self.url, subprotocols=["nucleus.v1"], max_queue=None)  # type: ignore[list-item]
        assert self.ws.subprotocol == "nucleus.v1"
        hello: dict[str, Any] = {}
        for name, log in self.channels.items():
            position = {"epoch": log.epoch, "offset": log.offset} if resume and log.epoch else {}
            hello[name] = position
        await self.ws.send(json.dumps({"type": "hello", "channels": hello}))
        self._reader = asyncio.get_running_loop().create_task(self._read(self.ws))

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            assert isinstance(raw, str), "tests only use text"
            frame = json.loads(raw)
            self.frames.append(frame)
            kind = frame["type"]
            if kind == "pub":
                log = self.channels.setdefault(frame["channel"], ChannelLog())
                data = frame.get("data", frame.get("text"))
                log.received.append((frame["offset"], data))
                log.offset = frame["offset"]
                await self.pubs.put((frame["channel"], frame["offset"], data))
            elif kind == "msg":
                await self.direct.put(frame.get("data", frame.get("text")))
            else:
                if kind == "joined":
                    log = self.channels.setdefault(frame["channel"], ChannelLog())
                    if frame.get("recovered") is False:
                        log.gaps += 1
                    if log.epoch != frame["epoch"] or log.offset is None or \
                            frame.get("recovered") is False:
                        log.offset = frame["offset"]
                    log.epoch = frame["epoch"]
                await self.control.put(frame)

    async def send(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(frame))

    async def next_control(self, kind: str) -> dict[str, Any]:
        while True:
            frame = await within(self.control.get())
            if frame["type"] == kind:
                return frame

    async def drop(self) -> None:
        """Lose the connection without a closing handshake, like a network blip."""
        assert self.ws is not None
        self.ws.transport.abort()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        if self._reader is not None:
            await within(asyncio.gather(self._reader, return_exceptions=True))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        await self.wait_closed()
