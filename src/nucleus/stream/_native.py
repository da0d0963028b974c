"""
The native front door: an asyncio server over websockets' Sans-I/O protocol.

Each TCP connection is a :class:`NativeConnection` (an ``asyncio.Protocol``).
The protocol state machine (handshake, framing, control frames, closing) is
websockets' Sans-I/O protocol; what to answer each request is the
:class:`Acceptor`'s decision; this module only moves bytes.

An ordinary upgrade request takes the fast path of ``_upgrade``: checked and
answered without websockets' HTTP parser, and the frame protocol is built only
once the connection is upgraded. Any other request goes to
``websockets.server.ServerProtocol`` whole, as it arrived, which answers it
(the reference for every refusal). Past ``max_pending_handshakes`` connections
waiting for their answer, a request is answered 503 with ``Retry-After``.

Outgoing data is *corked*: :meth:`NativeConnection.deliver` appends shared
frame bytes to the connection's buffer and marks it dirty; once per event-loop
iteration :class:`NativeServer` writes every dirty buffer with one
``writelines`` call. A broadcast therefore costs one list append per member
and one system call per member per loop turn, however many messages it holds.
No task or timer exists for an idle socket; one sweep per server does keepalive.

Compression (permessage-deflate, RFC 7692) is negotiated by websockets'
extension, which also inflates what peers send, within the route's
``max_message_size`` counted after inflating. Data frames never pass through
the protocol's encoder: a peer that negotiated compression gets the
:class:`Outgoing`'s shared compressed frame, built once per message. The
server always asks for ``server_no_context_takeover``, so that one compressed
frame is valid for every peer, and ``client_no_context_takeover``, so that no
inflate state outlives a message (an idle socket keeps no zlib buffers).
"""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import http
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from websockets.datastructures import Headers as WsHeaders
from websockets.extensions import Extension
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import SERVER, Protocol, State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from ._acceptor import BUSY, Accept, HttpResponse, Pending
from ._message import Binary, Text
from ._request import HandshakeRequest
from ._session import Session
from ._socket import Connection, WebSocket
from ._upgrade import MAX_HEAD, UpgradeRequest, accept_response, negotiate, parse_request
from ._wire import SUBPROTOCOL, Outgoing, deflate_key, frame_size

if TYPE_CHECKING:
    from ._server import StreamServer

__all__ = ["NativeConnection", "NativeServer"]

logger = logging.getLogger("nucleus.stream")
_ws_logger = logging.getLogger("nucleus.stream.protocol")
_ws_logger.setLevel(logging.WARNING)  # websockets logs every open/close at INFO

_OPEN = State.OPEN


_utf8_decoder = codecs.getincrementaldecoder("utf-8")

#: What a compressing route offers (RFC 7692 §7.1). Stateless: shared by every
#: connection. The protocol's own compressor is never used for data (see the
#: module docstring), so no ``compress_settings``.
_DEFLATE = ServerPerMessageDeflateFactory(
    server_no_context_takeover=True,
    client_no_context_takeover=True,
)


def _close_mid_message(protocol: Protocol, frame: Frame) -> None:
    # RFC 6455 §5.4 lets control frames interleave with a fragmented
    # message, and §5.5.1 requires a close to be answered with a close;
    # websockets fails with 1002 instead (Autobahn 7.1.5). The unfinished
    # message is dropped either way.
    if frame.opcode is Opcode.CLOSE:
        protocol.current_size = None


class _ServerProtocol(ServerProtocol):
    """websockets' server protocol, answering a close that arrives mid-message."""

    def recv_frame(self, frame: Frame) -> None:
        _close_mid_message(self, frame)
        super().recv_frame(frame)


class _OpenProtocol(Protocol):
    """The frame protocol of a connection upgraded by the fast path (already OPEN)."""

    def recv_frame(self, frame: Frame) -> None:
        _close_mid_message(self, frame)
        super().recv_frame(frame)


def select_subprotocol(
    protocol: ServerProtocol, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Speak ``nucleus.v1`` to clients that offer it; everyone else gets raw mode."""
    return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in offered else None


def _response(response: HttpResponse) -> Response:
    headers = WsHeaders()
    headers["Date"] = email.utils.formatdate(usegmt=True)
    headers["Connection"] = "close"  # websockets closes after any answer but 101
    for name, value in response.header_list():
        headers[name] = value
    try:
        reason = http.HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    return Response(response.status, reason, headers, response.body)


class NativeConnection(asyncio.Protocol, Connection):
    """One TCP connection: handshake, then frames, then close."""

    __slots__ = (
        "_buf",
        "_close_timer",
        "_counted_ip",
        "_deflate",
        "_deflate_from",
        "_eof",
        "_frag",
        "_handshaking",
        "_head",
        "_last_seen",
        "_max_send_queue",
        "_open",
        "_ping_sent",
        "_proto",
        "_seen",
        "_server",
        "_session",
        "_timer",
        "_transport",
        "_utf8",
        "tagged",
    )

    def __init__(self, server: NativeServer) -> None:
        self._server = server
        # None until the fast path upgrades the connection or hands it to websockets' parser.
        self._proto: Protocol | None = None
        # The request head received so far; None once it was read (or went to the parser).
        self._head: bytes | None = b""
        self._handshaking = False  # counted in the server's pending handshakes
        self._transport: asyncio.Transport | None = None
        self._session: Session | None = None
        self._buf: list[bytes] = []
        self._max_send_queue = server.app.limits.max_send_queue
        self._open = False
        self._eof = False
        self._frag: list[Any] | None = None  # str parts for text, bytes for binary
        # Set while a fragmented text message arrives: its UTF-8 is checked
        # fragment by fragment, so a bad one fails at once (RFC 6455 §8.1).
        self._utf8: codecs.IncrementalDecoder | None = None
        self._seen = False
        self._last_seen = 0.0
        self._ping_sent: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._counted_ip: str | None = None
        # Set when the peer negotiated permessage-deflate: its deflate_key, and
        # the frame length from which a message goes out compressed.
        self._deflate = 0
        self._deflate_from = 0
        self.tagged = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        server = self._server
        server.connections.add(self)
        server.handshaking += 1
        self._handshaking = True
        self._timer = server.loop.call_later(server.app.limits.handshake_timeout, self._abort)

    def data_received(self, data: bytes) -> None:
        self._seen = True
        proto = self._proto
        if proto is None:
            if self._head is None:
                return  # the answer is decided or sent; a client must wait for it (§4.1)
            head = self._head + data if self._head else data
            end = head.find(b"\r\n\r\n")
            if end < 0 and len(head) <= MAX_HEAD:
                self._head = head  # the rest of the head is on its way
                return
            self._head = None
            request = parse_request(head) if end + 4 == len(head) <= MAX_HEAD else None
            if request is not None:
                self._fast_handshake(request)
                return
            # Unusual, or more than a request: websockets' parser reads all of it.
            proto = self._proto = _ServerProtocol(
                select_subprotocol=select_subprotocol,
                max_size=self._server.app.limits.max_message_size,
                logger=_ws_logger,
            )
            data = head
        proto.receive_data(data)
        for event in proto.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Request):
                self._handshake(event)
        if self._open and proto.state is not _OPEN:
            self._open = False  # the protocol failed the connection (protocol error, too big)
        self._pump()

    def eof_received(self) -> bool | None:
        # The peer left: the protocol is finished before connection_lost runs,
        # so nothing may try to send a close or a ping in between.
        self._open = False
        if self._proto is not None:
            self._proto.receive_eof()
            self._pump()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        self._answered()
        for timer in (self._timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._close_timer = None
        self._buf = []
        if self._counted_ip is not None:
            self._server.app.door.guard.closed(self._counted_ip)
        self._server.forget(self)
        # Drop the links back to this connection (its session's socket, the
        # transport, the protocol's parser): it is then freed as soon as the
        # application lets go of its socket, not by a cyclic garbage collection,
        # which costs a storm of short connections dearly.
        session, self._session = self._session, None
        self._transport = None
        self._proto = None
        if session is not None:
            session.closed()

    def pause_writing(self) -> None:
        pass  # the send-queue limit, checked at each flush, bounds memory instead

    def resume_writing(self) -> None:
        pass

    # handshake: the acceptor decides, this door reads and writes

    def _answered(self) -> None:
        """The handshake got its answer (or the connection is gone): no longer pending."""
        if self._handshaking:
            self._handshaking = False
            self._server.handshaking -= 1

    def _admit(self) -> bool:
        """
        Whether to handle the request now: past ``max_pending_handshakes`` it is
        answered 503 with ``Retry-After`` instead of joining the queue.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        server = self._server
        limit = server.app.max_pending_handshakes
        if limit is None or server.handshaking <= limit:
            return True
        refused = server.app.acceptor.refused
        if refused is not None:
            refused(BUSY.status)
        return False

    def _peer(self) -> tuple[str, int] | None:
        assert self._transport is not None
        peer = self._transport.get_extra_info("peername")
        return (peer[0], peer[1]) if isinstance(peer, tuple) else None

    def _fast_handshake(self, request: UpgradeRequest) -> None:
        if not self._admit():
            self._answer(BUSY)
            return
        server = self._server
        hs = HandshakeRequest.from_target(request.target, request.headers, self._peer())
        decision = server.app.acceptor.decide(
            hs, server.loop.time(), method="GET", websocket=request.websocket)
        if isinstance(decision, Pending):
            # An authenticator or an async endpoint may do I/O: hold the connection meanwhile.
            assert self._transport is not None
            self._transport.pause_reading()
            server.app._owner.spawn(self._fast_decide_later(request, decision), name="handshake")
        elif isinstance(decision, Accept):
            self._upgrade(request, decision)
        else:
            self._answer(decision)

    async def _fast_decide_later(self, request: UpgradeRequest, pending: Pending) -> None:
        decision = await pending
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if isinstance(decision, Accept):
            self._upgrade(request, decision)
        else:
            self._answer(decision)
        transport.resume_reading()

    def _answer(self, response: HttpResponse) -> None:
        """Send ``response`` instead of an upgrade, then close (as websockets does)."""
        self._answered()
        self._write(_response(response).serialize())
        self._eof = True

    def _upgrade(self, request: UpgradeRequest, accept: Accept) -> None:
        """Accept a handshake the fast path checked: answer 101, then speak frames."""
        route = accept.route
        extensions: list[Extension] = []
        answer = None
        if route.compression and request.extensions:
            answer, extensions = negotiate(request.extensions, [_DEFLATE])
        subprotocol = Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in request.subprotocols else None
        self._write(accept_response(request.key, subprotocol, answer, time.time()))
        self._answered()
        proto = self._proto = _OpenProtocol(SERVER, max_size=route.max_message_size,
                                            logger=_ws_logger)
        proto.extensions = extensions
        proto.subprotocol = subprotocol
        self._opened(accept)

    def _write(self, data: bytes) -> None:
        if not self._buf:
            self._server.mark_dirty(self)
        self._buf.append(data)

    # handshake: anything unusual, read by websockets' parser

    def _handshake(self, request: Request) -> None:
        if not self._admit():
            self._respond(BUSY)
            return
        server = self._server
        hs = HandshakeRequest.from_target(request.path, request.headers.raw_items(), self._peer())
        upgrade = request.headers.get_all("Upgrade")
        decision = server.app.acceptor.decide(
            hs, server.loop.time(), method=request.method,
            websocket=any("websocket" in value.lower() for value in upgrade),
        )
        if isinstance(decision, Pending):
            assert self._transport is not None
            self._transport.pause_reading()
            server.app._owner.spawn(self._decide_later(request, decision), name="handshake")
        elif isinstance(decision, Accept):
            self._accept(request, decision)
        else:
            self._respond(decision)

    async def _decide_later(self, request: Request, pending: Pending) -> None:
        decision = await pending
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if isinstance(decision, Accept):
            self._accept(request, decision)
        else:
            self._respond(decision)
        self._pump()
        transport.resume_reading()

    def _respond(self, response: HttpResponse) -> None:
        assert isinstance(self._proto, ServerProtocol)
        self._answered()
        self._proto.send_response(_response(response))

    def _accept(self, request: Request, accept: Accept) -> None:
        route = accept.route
        proto = self._proto
        assert isinstance(proto, ServerProtocol)
        proto.max_message_size = route.max_message_size
        proto.available_extensions = [_DEFLATE] if route.compression else None
        response = proto.accept(request)
        proto.send_response(response)
        self._pump()  # the answer goes out before anything on_connect sends
        self._answered()
        # websockets' parser generator keeps the request alive for the whole
        # connection; its headers are copied into the HandshakeRequest, so free them (~1 KiB).
        request.headers.clear()
        if response.status_code == 101:
            self._opened(accept)

    def _opened(self, accept: Accept) -> None:
        """The 101 is on its way: start the session."""
        app = self._server.app
        route, admission = accept.route, accept.admission
        proto = self._proto
        assert proto is not None
        self._open = True
        self._max_send_queue = route.max_send_queue
        self.tagged = proto.subprotocol == SUBPROTOCOL
        for extension in proto.extensions:
            if isinstance(extension, PerMessageDeflate):
                self._deflate = deflate_key(self.tagged, extension.local_max_window_bits)
                self._deflate_from = frame_size(route.compression_threshold)
        self._last_seen = self._server.loop.time()
        if app.door.guard.enabled and admission.client_ip is not None:
            self._counted_ip = admission.client_ip
            app.door.guard.opened(admission.client_ip)
        socket = WebSocket(accept.request, self, route=route.path, subprotocol=proto.subprotocol,
                           user_id=admission.user_id)
        self._session = Session(app.hub, route, socket, app._owner,
                                self._pause_reading, self._resume_reading)
        self._session.opened(app.hello_timeout, admission.expires_at)

    def _pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # frames

    def _frame(self, frame: Frame) -> None:
        if not self._open:
            return
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._message(opcode is Opcode.TEXT, bytes(frame.data))
                return
            self._frag = []
            self._utf8 = _utf8_decoder() if opcode is Opcode.TEXT else None
            self._fragment(bytes(frame.data), False)
        elif opcode is Opcode.CONT:
            self._fragment(bytes(frame.data), frame.fin)
        elif opcode is Opcode.PONG:
            self._ping_sent = None
        elif opcode is Opcode.CLOSE:
            self._open = False  # the protocol answers and ends the connection

    def _fragment(self, data: bytes, fin: bool) -> None:
        parts = self._frag
        assert parts is not None  # the protocol checks continuation order
        utf8 = self._utf8
        if utf8 is not None:
            try:
                parts.append(utf8.decode(data, fin))
            except UnicodeDecodeError:
                self._invalid_utf8()
                return
        else:
            parts.append(data)
        if not fin:
            return
        self._frag = self._utf8 = None
        assert self._session is not None
        if utf8 is not None:
            self._session.received(Text("".join(parts)))
        else:
            self._session.received(Binary(b"".join(parts)))

    def _invalid_utf8(self) -> None:
        # RFC 6455 §8.1: invalid UTF-8 in a text message fails the connection.
        assert self._proto is not None
        self._proto.fail(1007, "invalid UTF-8 in a text message")
        self._open = False

    def _message(self, is_text: bool, data: bytes) -> None:
        assert self._session is not None
        if is_text:
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self._invalid_utf8()
                return
            self._session.received(Text(text))
        else:
            self._session.received(Binary(bytes(data)))

    # sending: Connection interface

    def deliver(self, out: Outgoing) -> None:
        if not self._open:
            return
        # The cached bytes first: the property (which encodes) runs once per broadcast.
        if self.tagged:
            frame = out._tagged_frame or out.tagged_frame
        else:
            frame = out._raw_frame or out.raw_frame
        # A frame is as long as its payload plus a header that grows with it,
        # so comparing frame lengths compares payloads.
        if self._deflate and len(frame) >= self._deflate_from:
            frame = out.deflated_frame(self._deflate)
        buf = self._buf
        if not buf:
            self._server.mark_dirty(self)
        buf.append(frame)

    def deliver_frame(self, frame: bytes, payload: str | bytes) -> None:
        if not self._open:
            return
        if not self._buf:
            self._server.mark_dirty(self)
        self._buf.append(frame)

    def close(self, code: int = 1000, reason: str = "") -> None:
        if not self._open:
            return
        self._open = False
        assert self._proto is not None
        self._proto.send_close(code, reason)
        self._pump()
        self._close_timer = self._server.loop.call_later(
            self._server.app.limits.close_timeout, self._abort)

    @property
    def is_open(self) -> bool:
        return self._open

    # internals

    def _pump(self) -> None:
        """Move what the protocol wants to send into the corked buffer."""
        if self._proto is None:
            return
        for data in self._proto.data_to_send():
            if not data:  # SEND_EOF: close the TCP connection once flushed
                self._eof = True
                if not self._buf:
                    self._server.mark_dirty(self)
                continue
            if not self._buf:
                self._server.mark_dirty(self)
            self._buf.append(data)

    def flush(self) -> None:
        buf = self._buf
        transport = self._transport
        if transport is None or transport.is_closing():
            self._buf = []
            return
        if buf:
            self._buf = []
            transport.writelines(buf)
        if self._eof:
            transport.close()
            return
        if self._open and transport.get_write_buffer_size() > self._max_send_queue:
            self._slow_consumer()

    def _slow_consumer(self) -> None:
        logger.warning("closing slow consumer %s: more than %d bytes queued",
                       self._session.socket.id if self._session else "?", self._max_send_queue)
        self._buf = []
        if self._session is not None and self._session.hub.metrics is not None:
            self._session.hub.metrics.slow_consumers.inc()
        self.close(1013, "slow consumer: send queue full")

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def keepalive(self, now: float, interval: float, timeout: float) -> None:
        if self._seen:
            self._seen = False
            self._last_seen = now
            self._ping_sent = None
        elif self._ping_sent is not None:
            if now - self._ping_sent >= timeout:
                logger.info("dropping socket %s: no answer to ping within %ss",
                            self._session.socket.id if self._session else "?", timeout)
                self._open = False
                self._abort()
        elif self._open and now - self._last_seen >= interval:
            assert self._proto is not None
            self._proto.send_ping(b"")
            self._ping_sent = now
            self._pump()


class NativeServer:
    """The listening socket, the connections, the corked flush and the keepalive sweep."""

    def __init__(self, app: StreamServer, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop
        self.connections: set[NativeConnection] = set()
        #: Connections still waiting for the answer to their handshake.
        self.handshaking = 0
        self._dirty: list[NativeConnection] = []
        self._flush_scheduled = False
        self._server: asyncio.Server | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._all_gone: asyncio.Event | None = None

    def forget(self, conn: NativeConnection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._all_gone is not None:
            self._all_gone.set()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> tuple[str, int]:
        """
        Listen on ``host:port``; return the bound address. ``reuse_port`` sets
        SO_REUSEPORT, so that several processes listen on one port and the
        kernel spreads connections over them (``nucleus serve --workers``).
        """
        self._server = await self.loop.create_server(
            lambda: NativeConnection(self), host, port, backlog=self.app.backlog,
            reuse_address=True, reuse_port=reuse_port)
        limits = self.app.limits
        if limits.ping_interval is not None:
            self._keepalive = self.loop.create_task(
                self._sweep(limits.ping_interval, limits.ping_timeout), name="keepalive")
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    def mark_dirty(self, conn: NativeConnection) -> None:
        self._dirty.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    async def _sweep(self, interval: float, patience: float) -> None:
        tick = min(interval, patience) / 4
        while True:
            await asyncio.sleep(tick)
            now = self.loop.time()
            for conn in list(self.connections):
                if conn._session is not None:
                    conn.keepalive(now, interval, patience)

    async def aclose(self, code: int = 1001, reason: str = "going away") -> None:
        """Stop listening, close every socket with ``code``, wait (bounded) until all are gone."""
        if self._server is not None:
            self._server.close()
        if self._keepalive is not None:
            self._keepalive.cancel()
        for conn in list(self.connections):
            if conn.is_open:
                conn.close(code, reason)
            elif conn._session is None:
                conn._abort()  # still in the handshake
        if self.connections:
            self._all_gone = asyncio.Event()
            try:
                await asyncio.wait_for(self._all_gone.wait(), self.app.limits.close_timeout)
            except TimeoutError:
                for conn in list(self.connections):
                    conn._abort()
        if self._keepalive is not None:
            try:
                await self._keepalive
            except asyncio.CancelledError:
                pass
