"""
A TCP relay in front of a test server, to break the network on purpose:
``cut()`` drops every link at once (both ends see a reset, as after a blip),
``down = True`` refuses new links until it is set back, ``silence()`` makes
the current links swallow every byte while they look open (a half-open link
after a network change), and ``target`` can point at another server (a
restart on a new port).
"""

from __future__ import annotations

import asyncio
import contextlib


class _Link:
    def __init__(self, *ends: asyncio.StreamWriter) -> None:
        self.ends = ends
        self.silent = False

    def abort(self) -> None:
        for end in self.ends:
            end.transport.abort()


class TcpProxy:
    def __init__(self, target: int) -> None:
        #: The port links are relayed to.
        self.target = target
        #: While True, new links are reset at once.
        self.down = False
        #: Links accepted and relayed so far.
        self.links_made = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def cut(self) -> None:
        """Reset every link now."""
        for link in list(self._links):
            link.abort()

    def silence(self) -> None:
        """The current links stop carrying anything, and nobody is told."""
        for link in self._links:
            link.silent = True

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            self.cut()
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, upstream)
        self._links.add(link)
        self.links_made += 1
        try:
            await asyncio.gather(_pipe(link, reader, upstream),
                                 _pipe(link, upstream_reader, writer))
        finally:
            self._links.discard(link)
            link.abort()


async def _pipe(link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            if not link.silent:
                writer.write(data)
                await writer.drain()
    link.abort()  # one side is gone: so is the other (no half-open links here)
