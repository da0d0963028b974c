"""
The ASGI front door: the same routes and hub behind any ASGI server.

``StreamServer`` is an ASGI application (``uvicorn app:server``, or mounted
inside FastAPI/Starlette); this module adapts ASGI's event dictionaries to a
:class:`Connection` and a :class:`Session`, and leaves every decision about a
request (routes, HTTP endpoints, the door, authentication) to the
:class:`Acceptor`, as the native door does. ASGI hides the transport, so each
socket gets a writer task that drains its bounded queue through ``send``;
fan-out still never awaits a recipient. Keepalive pings are the ASGI server's
job here (uvicorn: ``--ws-ping-interval`` / ``--ws-ping-timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ._acceptor import Decision, HttpResponse, Pending
from ._message import Binary, Text
from ._request import HandshakeRequest, Headers
from ._session import Session
from ._socket import Connection, WebSocket
from ._wire import SUBPROTOCOL, Outgoing

if TYPE_CHECKING:
    from ._metrics import Metrics
    from ._server import StreamServer

__all__ = ["AsgiConnection", "handle_asgi"]

logger = logging.getLogger("nucleus.stream")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AsgiConnection(Connection):
    """A socket behind an ASGI server: a bounded queue drained by one writer task."""

    __slots__ = ("_close", "_max_send_queue", "_metrics", "_open", "_queue", "_queued",
                 "_sending", "_wakeup", "tagged")

    def __init__(self, tagged: bool, max_send_queue: int, metrics: Metrics | None = None) -> None:
        self.tagged = tagged
        self._metrics = metrics
        self._max_send_queue = max_send_queue
        self._queue: deque[str | bytes] = deque()
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._open = True
        self._close: tuple[int, str] | None = None
        # True while the writer is suspended inside the ASGI send(), which only
        # happens when the server's transport is paused: the client isn't reading.
        self._sending = False

    def deliver(self, out: Outgoing) -> None:
        if self._open:
            payload = (out.tagged_text if out.is_text else out.tagged_payload) \
                if self.tagged else out.raw_payload
            self._enqueue(payload)

    def deliver_frame(self, frame: bytes, payload: str | bytes) -> None:
        if self._open:
            self._enqueue(payload)

    def _enqueue(self, payload: str | bytes) -> None:
        self._queue.append(payload)
        self._queued += len(payload)
        self._wakeup.set()
        if self._queued > self._max_send_queue and self._sending:
            logger.warning("closing slow consumer: more than %d bytes queued",
                           self._max_send_queue)
            self._queue.clear()
            self._queued = 0
            if self._metrics is not None:
                self._metrics.slow_consumers.inc()
            self.close(1013, "slow consumer: send queue full")

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self._open:
            self._open = False
            self._close = (code, reason)
            self._wakeup.set()

    @property
    def is_open(self) -> bool:
        return self._open

    def gone(self) -> None:
        """The peer disconnected: stop sending."""
        self._open = False
        self._queue.clear()
        self._wakeup.set()

    async def run_writer(self, send: Send) -> None:
        queue = self._queue
        while True:
            while queue:
                payload = queue.popleft()
                self._queued -= len(payload)
                self._sending = True
                if isinstance(payload, str):
                    await send({"type": "websocket.send", "text": payload})
                else:
                    await send({"type": "websocket.send", "bytes": payload})
                self._sending = False
            if self._close is not None:
                code, reason = self._close
                await send({"type": "websocket.close", "code": code, "reason": reason})
                return
            if not self._open:
                return
            self._wakeup.clear()
            await self._wakeup.wait()


def _request(scope: Scope) -> tuple[HandshakeRequest, str]:
    """The request as routes see it (mount prefix removed) and the full path asked for."""
    path = full = scope["path"]
    root = scope.get("root_path", "")
    if root:
        if path.startswith(root):
            path = path[len(root):] or "/"
        else:
            full = root + path  # an older server: ``path`` is relative to the mount
    client = scope.get("client")
    request = HandshakeRequest(
        path,
        scope.get("query_string", b"").decode("latin-1"),
        Headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]),
        (client[0], client[1]) if client else None,
    )
    return request, full


async def _decide(
    app: StreamServer, request: HandshakeRequest, full_path: str, *, websocket: bool,
    method: str = "GET",
) -> Decision:
    decision = app.acceptor.decide(request, asyncio.get_running_loop().time(),
                                   websocket=websocket, method=method, full_path=full_path)
    if isinstance(decision, Pending):
        return await decision
    return decision


async def _send_response(send: Send, response: HttpResponse, prefix: str = "http.response") -> None:
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
               for name, value in response.header_list()]
    await send({"type": f"{prefix}.start", "status": response.status, "headers": headers})
    await send({"type": f"{prefix}.body", "body": response.body})


async def handle_asgi(app: StreamServer, scope: Scope, receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(app, receive, send)
    elif kind == "http":
        await _http(app, scope, send)
    elif kind == "websocket":
        await _websocket(app, scope, receive, send)


async def _lifespan(app: StreamServer, receive: Receive, send: Send) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            try:
                await app._startup()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await app._shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _http(app: StreamServer, scope: Scope, send: Send) -> None:
    request, full_path = _request(scope)
    decision = await _decide(app, request, full_path, websocket=False,
                             method=scope.get("method", "GET"))
    assert isinstance(decision, HttpResponse)  # plain HTTP never opens a WebSocket
    await _send_response(send, decision)


async def _refuse(scope: Scope, send: Send, response: HttpResponse) -> None:
    if "websocket.http.response" in scope.get("extensions", {}):
        await _send_response(send, response, prefix="websocket.http.response")
    else:
        await send({"type": "websocket.close", "code": 1008})  # the server answers 403


async def _websocket(app: StreamServer, scope: Scope, receive: Receive, send: Send) -> None:
    request, full_path = _request(scope)
    if (await receive())["type"] != "websocket.connect":
        return
    await app._ensure_started(lazily=True)
    decision = await _decide(app, request, full_path, websocket=True)
    if isinstance(decision, HttpResponse):
        await _refuse(scope, send, decision)
        return
    route, admission = decision.route, decision.admission
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in request.subprotocols else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    conn = AsgiConnection(subprotocol is not None, route.max_send_queue, app.metrics)
    socket = WebSocket(request, conn, route=route.path, subprotocol=subprotocol,
                       user_id=admission.user_id)
    reading = asyncio.Event()
    reading.set()
    session = Session(app.hub, route, socket, app._owner, reading.clear, reading.set)
    counted = app.door.guard.enabled and admission.client_ip is not None
    if counted:
        app.door.guard.opened(admission.client_ip)  # type: ignore[arg-type]
    app._asgi_connections.add(conn)
    writer = asyncio.get_running_loop().create_task(conn.run_writer(send))
    session.opened(app.hello_timeout, admission.expires_at)
    try:
        while True:
            if not reading.is_set():
                await reading.wait()
            event = await receive()
            if event["type"] != "websocket.receive":
                break
            text, data = event.get("text"), event.get("bytes")
            size = len(text.encode()) if text is not None else len(data or b"")
            if size > route.max_message_size:
                conn.close(1009, "message too big")
            elif not conn.is_open:
                continue
            elif text is not None:
                session.received(Text(text))
            else:
                session.received(Binary(data or b""))
    finally:
        conn.gone()
        session.closed()
        app._asgi_connections.discard(conn)
        if counted:
            app.door.guard.closed(admission.client_ip)  # type: ignore[arg-type]
        with contextlib.suppress(Exception):
            await writer
        await session.finished()
