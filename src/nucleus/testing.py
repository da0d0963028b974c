"""
Test your handlers without a port: a client that drives a :class:`StreamServer`
in-process, through its ASGI interface, as Django Channels'
``WebsocketCommunicator`` and Starlette's ``TestClient`` do::

    from nucleus.testing import TestClient

    async def test_chat() -> None:
        async with TestClient(server) as client:          # start-up hooks run
            async with client.connect("/ws/chat") as ann, client.connect("/ws/chat") as bob:
                await ann.send_text("hi")
                assert await bob.receive_text() == "hi"

Everything a socket does is real (routes, auth, rate limits, rooms, the hub);
only the network is missing. ``connect`` returns once the server accepted, so
no sleep is ever needed; every ``receive_*`` and ``wait_closed`` has a timeout
and raises :class:`TimeoutError` instead of hanging. A handshake the server
refuses raises :class:`HandshakeRefused` with its HTTP status.

With ``pytest_plugins = ["nucleus.testing"]`` in a ``conftest.py`` (and
pytest-asyncio), the ``nucleus_client`` fixture gives ``await
nucleus_client(server)``: a started :class:`TestClient` closed after the test.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Mapping,
    MutableMapping,
)
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from .stream import SUBPROTOCOL, ChannelError, SocketClosed, StreamError, StreamServer

__all__ = ["HandshakeRefused", "TestClient", "TestSocket", "nucleus_client"]

#: Seconds a receive waits by default.
TIMEOUT = 5.0

_ports = itertools.count(40000)


class HandshakeRefused(StreamError):
    """The server answered the opening handshake with an HTTP status instead of 101."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"the handshake was refused with HTTP {status}")
        #: The HTTP status the server answered (401, 403, 404...).
        self.status = status
        #: The response body, e.g. the 404's text naming the known routes.
        self.body = body


class TestSocket:
    """
    One WebSocket connection to the server under test, from :meth:`TestClient.connect`.

    Every ``receive_*`` waits at most ``timeout`` seconds (5 by default), then
    raises :class:`TimeoutError`; if the server closed the connection instead
    of sending, it raises :class:`~nucleus.stream.SocketClosed` naming the close
    code (also kept in :attr:`close_code`). Leaving
    ``async with`` closes the connection if the server has not.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, server: StreamServer, scope: dict[str, Any]) -> None:
        self._server = server
        self._scope = scope
        self._to_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        #: The subprotocol the server selected (``nucleus.v1`` or None).
        self.subprotocol: str | None = None
        #: The close code, once the connection is closed.
        self.close_code: int | None = None
        #: The close reason, once the connection is closed.
        self.close_reason = ""

    async def _open(self, timeout: float) -> TestSocket:
        self._task = asyncio.get_running_loop().create_task(
            self._server(self._scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "websocket.connect"})
        event = await self._next(timeout)
        if event["type"] == "websocket.accept":
            self.subprotocol = event.get("subprotocol")
            return self
        if event["type"] == "websocket.http.response.start":
            body = (await self._next(timeout)).get("body", b"")
            await self._finish()
            raise HandshakeRefused(event["status"], body)
        self._closed(event)
        await self._finish()
        raise HandshakeRefused(403, b"")

    async def _next(self, timeout: float) -> MutableMapping[str, Any]:
        getter = asyncio.ensure_future(self._from_app.get())
        assert self._task is not None
        done, _ = await asyncio.wait({getter, self._task}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        if self._task in done:
            self._task.result()  # the app failed: raise what it raised
            return {"type": "websocket.close", "code": 1006}
        raise TimeoutError(f"nothing from the server within {timeout}s")

    def _closed(self, event: Mapping[str, Any]) -> None:
        if self.close_code is None:
            self.close_code = int(event.get("code", 1000))
            self.close_reason = event.get("reason") or ""

    # sending

    async def send_text(self, text: str) -> None:
        """Send a text message, as a browser's ``ws.send(text)``."""
        await self._to_app.put({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        await self._to_app.put({"type": "websocket.receive", "bytes": data})

    async def send_json(self, value: Any) -> None:
        """Send ``value`` as a JSON text message (how ``nucleus.v1`` frames travel too)."""
        await self.send_text(json.dumps(value))

    # receiving

    async def receive(self, timeout: float = TIMEOUT) -> str | bytes:
        """The next message (text or bytes); :class:`SocketClosed` if it closed instead."""
        if self.close_code is not None:
            raise SocketClosed(f"the connection is closed ({self.close_code})")
        event = await self._next(timeout)
        if event["type"] == "websocket.send":
            text = event.get("text")
            return text if text is not None else bytes(event.get("bytes") or b"")
        self._closed(event)
        raise SocketClosed(f"the server closed the connection ({self.close_code} "
                              f"{self.close_reason!r}) instead of sending")

    async def receive_text(self, timeout: float = TIMEOUT) -> str:
        """The next message, which must be text (:class:`TypeError` otherwise)."""
        message = await self.receive(timeout)
        if not isinstance(message, str):
            raise TypeError(f"expected text, got {len(message)} bytes")
        return message

    async def receive_bytes(self, timeout: float = TIMEOUT) -> bytes:
        """The next message, which must be binary (:class:`TypeError` otherwise)."""
        message = await self.receive(timeout)
        if not isinstance(message, bytes):
            raise TypeError(f"expected bytes, got text {message[:80]!r}")
        return message

    async def receive_json(self, timeout: float = TIMEOUT) -> Any:
        """The next message, a text holding JSON, decoded."""
        return json.loads(await self.receive_text(timeout))

    # nucleus.v1

    async def subscribe(self, channel: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """
        Subscribe to ``channel`` (connections opened with ``protocol=True``):
        return the ``joined`` frame; :class:`~nucleus.stream.ChannelError` if it
        was refused.
        Frames of other channels that arrive meanwhile are dropped.
        """
        if self.subprotocol != SUBPROTOCOL:
            raise ChannelError("subscribe() needs connect(..., protocol=True)")
        await self.send_json({"type": "sub", "channel": channel})
        while True:
            frame = await self.receive_json(timeout)
            if frame.get("channel") == channel and frame["type"] == "joined":
                return dict(frame)
            if frame.get("channel") == channel and frame["type"] == "error":
                raise ChannelError(f"subscription to {channel!r} refused: {frame['message']}")

    async def receive_data(self, timeout: float = TIMEOUT) -> Any:
        """The data of the next ``pub`` or ``msg`` (``nucleus.v1``), skipping control frames."""
        while True:
            frame = await self.receive_json(timeout)
            if frame["type"] in ("pub", "msg"):
                return frame["data"] if "data" in frame else frame.get("text")

    # closing

    async def close(self, code: int = 1000) -> None:
        """Close from the client side and wait until the server's handlers are done."""
        if self._task is not None and not self._task.done():
            await self._to_app.put({"type": "websocket.disconnect", "code": code})
        self._closed({"code": code})
        await self._finish()

    async def wait_closed(self, timeout: float = TIMEOUT) -> int:
        """Wait for the server to close; return the code. Messages on the way are dropped."""
        while self.close_code is None:
            event = await self._next(timeout)
            if event["type"] == "websocket.close":
                self._closed(event)
        await self._to_app.put({"type": "websocket.disconnect", "code": self.close_code})
        await self._finish()
        return self.close_code

    async def _finish(self) -> None:
        if self._task is not None:
            await asyncio.wait_for(asyncio.shield(self._task), TIMEOUT)

    async def __aenter__(self) -> TestSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None and not self._task.done():
            await self.close()


class _Connecting:
    """``client.connect(...)``: awaitable, or an async context manager."""

    def __init__(self, opening: Callable[[], Awaitable[TestSocket]]) -> None:
        self._opening = opening
        self._socket: TestSocket | None = None

    def __await__(self) -> Generator[Any, None, TestSocket]:
        return self._opening().__await__()

    async def __aenter__(self) -> TestSocket:
        self._socket = await self._opening()
        return self._socket

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._socket is not None:
            await self._socket.__aexit__()


class TestClient:
    """
    Start ``server`` (its lifespan) and open connections to it, in-process.

    Use it as ``async with TestClient(server) as client``: entering runs the
    server's checks, start-up hooks and background tasks; leaving closes the
    connections still open and stops the server (shutdown hooks run).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, server: StreamServer) -> None:
        self.server = server
        self._sockets: list[TestSocket] = []
        self._lifespan: Any = None

    def connect(
        self,
        path: str,
        *,
        protocol: bool = False,
        token: str | None = None,
        token_in: str = "query",
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        client: tuple[str, int] | None = None,
        timeout: float = TIMEOUT,
    ) -> _Connecting:
        """
        Open a connection to ``path``: ``await`` it for a :class:`TestSocket`,
        or ``async with`` it to close the socket at the end of the block. It
        returns once the server accepted the upgrade (``on_connect`` runs next;
        what the socket sends meanwhile waits for it); a refused handshake
        raises :class:`HandshakeRefused`.

        ``protocol=True`` speaks ``nucleus.v1`` (the hello is sent for you);
        ``token`` travels in the query string (``token_in="query"``), as a
        subprotocol (``"protocol"``) or as a bearer ``Authorization`` header
        (``"header"``). ``query`` and ``headers`` are added to the request;
        ``client`` is the peer address the server sees.
        """
        params = dict(query or {})
        subprotocols = [SUBPROTOCOL] if protocol else []
        head = {"host": "testserver", **{k.lower(): v for k, v in (headers or {}).items()}}
        if token is not None:
            if token_in == "query":
                params["token"] = token
            elif token_in == "protocol":
                subprotocols.append(f"nucleus.token.{token}")
            elif token_in == "header":
                head["authorization"] = f"Bearer {token}"
            else:
                raise ValueError(f"token_in is 'query', 'protocol' or 'header', not {token_in!r}")
        if subprotocols:
            head["sec-websocket-protocol"] = ", ".join(subprotocols)
        scope: dict[str, Any] = {
            "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws",
            "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": urlencode(params).encode(),
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head.items()],
            "subprotocols": subprotocols,
            "client": client or ("127.0.0.1", next(_ports)), "server": ("testserver", 80),
            "extensions": {"websocket.http.response": {}},
        }

        async def opening() -> TestSocket:
            socket = await TestSocket(self.server, scope)._open(timeout)
            self._sockets.append(socket)
            if protocol and socket.subprotocol == SUBPROTOCOL:
                await socket.send_json({"type": "hello", "channels": {}})
            return socket

        return _Connecting(opening)

    async def __aenter__(self) -> TestClient:
        self._lifespan = self.server.lifespan()
        await self._lifespan.__aenter__()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for socket in self._sockets:
            await socket.__aexit__()
        await self._lifespan.__aexit__(kind, exc, tb)


try:
    import pytest
    import pytest_asyncio
except ImportError:  # pragma: no cover - the fixture needs pytest and pytest-asyncio
    pass
else:
    @pytest_asyncio.fixture
    async def nucleus_client() -> AsyncIterator[Callable[[StreamServer], Awaitable[TestClient]]]:
        """
        A pytest fixture: take ``nucleus_client`` as a test's argument, then
        ``client = await nucleus_client(server)`` gives a started
        :class:`TestClient`, stopped after the test. Needs
        ``pytest_plugins = ["nucleus.testing"]`` and pytest-asyncio.
        """
        clients: list[TestClient] = []

        async def start(server: StreamServer) -> TestClient:
            client = await TestClient(server).__aenter__()
            clients.append(client)
            return client

        yield start
        for client in reversed(clients):
            await client.__aexit__(None, None, None)

    del pytest
