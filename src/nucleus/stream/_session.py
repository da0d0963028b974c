"""
The life of one socket, driven the same way by every front door.

A :class:`Session` turns what a front door observes (opened, a message, closed)
into handler calls with the guaranteed order: ``on_connect`` first, then each
message in arrival order, one at a time, then ``on_disconnect`` exactly once,
after the socket has left every room. No task exists while a socket is idle:
one is started when work arrives and ends when the inbox is empty.

For ``nucleus.v1`` clients, the socket's :class:`TaggedProtocol` reads the
frames and writes the answers; the session acts on what they ask (subscribe,
request, refresh...) and queues the answers in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from . import _tagged
from ._errors import BackendError, InvalidMessage, RequestError, StreamError
from ._message import SocketMessage, Text, decode_as, payload_size
from ._protocol import Answer, Encoded, Event, Message, PingReceived, Started, error_frame
from ._ratelimit import RATE_LIMITED, Verdict

if TYPE_CHECKING:
    from ._hub import StreamHub
    from ._routing import Route
    from ._socket import WebSocket
    from ._tasks import TaskOwner

__all__ = ["Session"]

logger = logging.getLogger("nucleus.stream")

_CONNECT: Final = "connect"
_CLOSED: Final = "closed"

#: Close code when an authenticated socket's token expires without a refresh.
TOKEN_EXPIRED: Final = 4001

_decode_json = msgspec.json.decode

#: How many received messages may wait for the handler before reading pauses.
PAUSE_AT: Final = 64
RESUME_AT: Final = 16


def _name(model: object) -> str:
    """What an ``invalid`` error calls a model: its class name; a union has none."""
    name = getattr(model, "__name__", None)
    return name if isinstance(name, str) else "message"


class Session:
    """Dispatches one socket's events to its handler, in order."""

    __slots__ = (
        "_closed",
        "_connected",
        "_expiry",
        "_hello_timer",
        "_inbox",
        "_owner",
        "_pause",
        "_paused",
        "_protocol",
        "_refused",
        "_resume",
        "_running",
        "_task",
        "handler",
        "hub",
        "route",
        "socket",
    )

    def __init__(
        self,
        hub: StreamHub,
        route: Route,
        socket: WebSocket,
        owner: TaskOwner,
        pause: Callable[[], None],
        resume: Callable[[], None],
    ) -> None:
        self.hub = hub
        self.route = route
        self.handler = route.handler
        self.socket = socket
        #: The socket's ``nucleus.v1`` state machine; None for a plain WebSocket.
        self._protocol = socket._protocol
        self._owner = owner
        self._pause = pause
        self._resume = resume
        # Created when work arrives, dropped when drained: an idle socket holds none.
        self._inbox: deque[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        # True from the push that starts a drain until the drain ends: a push
        # made meanwhile (even from within an eager first step) joins the inbox.
        self._running = False
        self._paused = False
        self._refused = False
        self._closed = False
        self._connected = False
        self._hello_timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def tagged(self) -> bool:
        return self._protocol is not None

    # what the front door reports

    def opened(self, hello_timeout: float = 10.0, expires_at: float | None = None) -> None:
        """
        The upgrade completed. Tagged clients get ``on_connect`` after their hello.

        ``expires_at`` (seconds since the epoch) is when the socket's token
        expires: it is closed with 4001 then, unless the client refreshes it.
        """
        loop = asyncio.get_running_loop()
        if self.hub.metrics is not None:
            self.hub.metrics.opened(self.route.path)
        if logger.isEnabledFor(logging.INFO):
            logger.info("connection opened", extra=self._fields())
        if expires_at is not None:
            self._schedule_expiry(expires_at)
        if self.tagged:
            self._hello_timer = loop.call_later(hello_timeout, self._connect_now)
        else:
            self._connect_now()

    def _schedule_expiry(self, expires_at: float) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        delay = max(0.0, expires_at - time.time())
        self._expiry = asyncio.get_running_loop().call_later(delay, self._expired)

    def _expired(self) -> None:
        self._expiry = None
        self.socket.close_nowait(TOKEN_EXPIRED, "token expired")

    def _connect_now(self) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        if self._protocol is not None:
            self._protocol.start()  # a hello from now on is refused
        if not self._connected:
            self._connected = True
            self._push(_CONNECT)

    def received(self, msg: SocketMessage) -> None:
        """A complete message arrived."""
        metrics = self.hub.metrics
        if metrics is not None:
            metrics.received(self.route.path, payload_size(msg))
        limiter = self.route.limiter
        if limiter is not None:
            verdict = limiter.check(self.socket.id, self.socket.user_id, time.monotonic())
            if verdict is not Verdict.ALLOW:
                if metrics is not None:
                    metrics.rate_limited.labels(self.route.path).inc()
                if verdict is Verdict.REJECT:
                    self._rate_limited(msg)
                else:
                    self.socket.close_nowait(RATE_LIMITED, "rate limited: back off and reconnect")
                return
        protocol = self._protocol
        if protocol is None:
            self._push(msg)
        else:
            for event in protocol.receive(msg):
                if isinstance(event, Started):
                    self._connect_now()
                elif isinstance(event, PingReceived):
                    # Answered at once, not after the handler's queue: a busy
                    # handler must not look like a dead link to the client.
                    self.socket.deliver_encoded(protocol.pong())
                else:
                    self._push(event)
        if not self._paused and self._inbox is not None and len(self._inbox) >= PAUSE_AT:
            self._paused = True
            self._pause()

    def _rate_limited(self, msg: SocketMessage) -> None:
        """Say a frame was dropped; a dropped request gets its reply, so it never hangs."""
        text = "too many messages: this one was dropped"
        if self._protocol is None:
            self.socket.deliver_encoded(error_frame("rate_limited", text))
        else:
            self.socket.deliver_encoded(self._protocol.dropped(msg, "rate_limited", text))

    def closed(self) -> None:
        """The connection is gone; call once, whatever ended it."""
        if self._closed:
            return
        self._closed = True
        if self.hub.metrics is not None:
            self.hub.metrics.closed(self.route.path)
        if logger.isEnabledFor(logging.INFO):
            logger.info("connection closed", extra=self._fields())
        if self._expiry is not None:
            self._expiry.cancel()
        if self._protocol is not None:
            self._protocol.close()
        if self.route.limiter is not None:
            self.route.limiter.forget_socket(self.socket.id)
        self._connect_now()
        self._push(_CLOSED)

    def _fields(self) -> dict[str, Any]:
        """What a log line about this connection says (never its token)."""
        socket = self.socket
        address = socket.remote_address
        return {"socket": socket.id, "user": socket.user_id, "route": self.route.path,
                "remote": f"{address[0]}:{address[1]}" if address else None}

    async def finished(self) -> None:
        """Wait until every queued event, ``on_disconnect`` included, has been handled."""
        while self._task is not None:
            await asyncio.wait({self._task})

    # dispatch

    def _push(self, item: Any) -> None:
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append(item)
        if not self._running:
            self._running = True
            # Eager where Python allows: an on_connect that never suspends is
            # done before this returns (see TaskOwner.start).
            self._task = self._owner.start(self._drain(), name=f"socket {self.socket.id}")

    async def _drain(self) -> None:
        inbox = self._inbox
        assert inbox is not None
        try:
            while inbox:
                item = inbox.popleft()
                if self._paused and len(inbox) <= RESUME_AT:
                    self._paused = False
                    self._resume()
                if item is _CONNECT:
                    await self._run_connect()
                elif item is _CLOSED:
                    await self._run_disconnect()
                elif self._refused:
                    continue  # no message is handled without an accepting on_connect
                elif isinstance(item, SocketMessage):
                    await self._on_message(item)
                else:
                    await self._run_tagged(item)
        finally:
            self._task = None
            self._running = False
            if not inbox:
                self._inbox = None

    async def _on_message(self, msg: SocketMessage) -> None:
        """Validate against the route's model, if any, then hand to ``on_message``."""
        model = self.route.message_model
        if model is not None:
            try:
                if not isinstance(msg, Text):
                    raise InvalidMessage(f"expected a JSON {_name(model)} as text, got binary")
                decode_as(msg.text, model)
            except InvalidMessage as exc:
                if self.hub.metrics is not None:
                    self.hub.metrics.invalid.labels(self.route.path).inc()
                self._error("invalid", f"invalid {_name(model)}: {exc}")
                return
        await self._call("on_message", self.handler.on_message(self.hub, self.socket, msg))

    async def _call(self, name: str, call: Any) -> Any:
        try:
            return await call
        except Exception:
            logger.exception(
                "%s.%s failed on socket %s (route %s)",
                type(self.handler).__name__, name, self.socket.id, self.socket.route,
            )
            return None

    async def _run_connect(self) -> None:
        socket = self.socket
        try:
            await self.hub._attach(socket)
        except BackendError as exc:
            # Without the cluster knowing this socket, nothing it does could be
            # exact: refuse it (the client retries later); on_disconnect still runs.
            logger.warning("refusing socket %s: %s", socket.id, exc)
            self._refused = True
            socket._connecting = False
            socket.close_nowait(1013, "backend unavailable, try again later")
            return
        try:
            await self._call("on_connect", self.handler.on_connect(self.hub, socket))
        finally:
            socket._connecting = False
        if socket._refused:
            # on_connect closed it (hub.disconnect: 1008): what the client sent
            # meanwhile must not reach on_message as if it had been accepted.
            self._refused = True
            return
        if self._protocol is None:
            return
        # Channels the hello asked for that on_connect did not join are
        # subscribe requests.
        positions, watch = self._protocol.take_hello()
        if socket.is_open:
            for channel, (epoch, offset) in positions.items():
                await self._subscribe(
                    _tagged.Sub(channel, None, epoch, offset, channel in watch or None))
            for channel in watch.difference(positions):
                if channel in (self.hub.local_rooms(socket.id) or ()):
                    await self._presence(channel, True)  # on_connect joined it

    async def _run_disconnect(self) -> None:
        socket_id = self.socket.id
        await self.hub._detach(socket_id)
        await self._call("on_disconnect", self.handler.on_disconnect(self.hub, socket_id))

    # nucleus.v1

    async def _run_tagged(self, event: Event) -> None:
        """Act on what a library client's frame asked for, in arrival order."""
        if isinstance(event, Message):
            await self._on_message(event.msg)
        elif isinstance(event, Answer):
            self.socket.deliver_encoded(event.frame)
        elif isinstance(event, _tagged.Req):
            await self._request(event)
        elif isinstance(event, _tagged.Sub):
            await self._subscribe(event)
        elif isinstance(event, _tagged.Unsub):
            await self._unsubscribe(event)
        elif isinstance(event, _tagged.Refresh):
            self._refresh(event)

    async def _request(self, frame: _tagged.Req) -> None:
        """Ask ``on_request`` and answer with a ``reply``: its value, or why not."""
        protocol = self._protocol
        assert protocol is not None
        data: Any
        model = self.route.message_model
        reply: Encoded
        try:
            if frame.text is not None:
                data = frame.text if model is None else decode_as(frame.text, model)
            elif frame.data:
                data = _decode_json(frame.data) if model is None else decode_as(
                    bytes(frame.data).decode(), model)
            else:
                raise RequestError("bad_request", "a req frame needs text or data")
            result = await self.handler.on_request(self.hub, self.socket, data)
            reply = protocol.reply(frame.id, result)
        except RequestError as exc:
            reply = protocol.reply_error(frame.id, exc.code, exc.message)
        except InvalidMessage as exc:
            reply = protocol.reply_error(frame.id, "invalid", f"invalid {_name(model)}: {exc}")
        except Exception:
            logger.exception("%s.on_request failed on socket %s (route %s)",
                             type(self.handler).__name__, self.socket.id, self.socket.route)
            reply = protocol.reply_error(
                frame.id, "internal", "the server failed to answer this request")
        self.socket.deliver_encoded(reply)

    def _refresh(self, frame: _tagged.Refresh) -> None:
        """In-band token refresh: same user, new expiry; a bad token changes nothing."""
        verify = getattr(self.route.auth, "verify", None)
        if not callable(verify):
            self._error("bad_request", "this route does not take token refreshes", frame.id)
            return
        claims = verify(frame.token)
        if claims is None or claims.user_id != self.socket.user_id:
            self._error("unauthorized", "token refused", frame.id)
            return
        self._schedule_expiry(claims.expires_at)
        assert self._protocol is not None
        self.socket.deliver_encoded(self._protocol.refreshed(frame.id))

    async def _subscribe(self, frame: _tagged.Sub) -> None:
        socket, channel = self.socket, frame.channel
        if channel not in (self.hub.local_rooms(socket.id) or ()):
            allowed = await self._call(
                "on_subscribe", self.handler.on_subscribe(self.hub, socket, channel))
            if allowed is not True:
                self._error("forbidden", f"subscription to {channel!r} refused",
                            frame.id, channel)
                return
        resume = (frame.epoch, frame.offset) if frame.offset is not None else None
        try:
            await self.hub._join(socket, channel, frame.id, resume)
        except BackendError as exc:
            # An error naming the channel is a refusal, which clients do not
            # retry: close with 1013 instead, so that the client comes back
            # and resumes every channel from its position.
            logger.warning("closing socket %s: subscribing to %r failed: %s",
                           socket.id, channel, exc)
            socket.close_nowait(1013, "backend unavailable, try again later")
        except StreamError as exc:
            self._error("forbidden", str(exc), frame.id, channel)
            return
        if frame.presence is not None:
            await self._presence(channel, frame.presence)

    async def _presence(self, channel: str, watch: bool) -> None:
        """Start or stop sending ``channel``'s presence to this (member) socket."""
        if not watch:
            self.hub._unwatch(channel, self.socket.id)
            return
        if not self.route.presence:
            self._presence_error("forbidden", f"presence is off on route {self.route.path!r} "
                                 "(the server enables it with route(..., presence=True))",
                                 channel)
            return
        try:
            await self.hub._watch(self.socket, channel)
        except BackendError:
            self._presence_error("unavailable", f"the presence of {channel!r} could not be "
                                 "read: the backend is unavailable", channel)
        except StreamError as exc:
            self._presence_error("forbidden", str(exc), channel)

    def _presence_error(self, code: str, message: str, channel: str) -> None:
        # Not marked with "channel": the subscription itself stands.
        assert self._protocol is not None
        self.socket.deliver_encoded(self._protocol.presence_refused(channel, code, message))

    async def _unsubscribe(self, frame: _tagged.Unsub) -> None:
        socket, channel = self.socket, frame.channel
        if channel in (self.hub.local_rooms(socket.id) or ()):
            allowed = await self._call(
                "on_unsubscribe", self.handler.on_unsubscribe(self.hub, socket, channel))
            if allowed is False:
                self._error("forbidden", f"leaving {channel!r} is not allowed", frame.id, channel)
                return
        await self.hub._leave(socket, channel, frame.id)

    def _error(self, code: str, message: str, request_id: int | None = None,
               channel: str | None = None) -> None:
        """Tell the client what went wrong (raw clients get the same JSON frame)."""
        self.socket.deliver_encoded(error_frame(code, message, request_id, channel))
