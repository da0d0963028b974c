"""
The I/O layer: a :class:`Stream` drives :class:`ClientProtocol` over the
websockets library's asyncio client, reconnecting until it is closed.

It owns one task (``_main``) that dials, serves each connection (a reader in
that task; a writer and a token refresher in a task group under it) and backs
off between connections, acting on close codes as the browser client does.
Dead links are the websockets library's keepalive pings' business. Everything
the application awaits (``subscribe``, ``request``, ``send``...) waits on
futures and events this task settles; nothing here parses a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.protocol import State as WsState

from nucleus.stream import SUBPROTOCOL
from nucleus.stream._message import decode_as

from ._dial import Config, Unusable, describe, dial, fetch_token
from ._errors import RequestFailed, StreamClosed, SubscriptionRefused
from ._events import ErrorInfo, Gap, Meta, State
from ._listeners import Listeners
from ._policy import after_close, backoff, refresh_delay, refresh_retry_delay
from ._protocol import (
    Answer,
    ClientProtocol,
    Event,
    Message,
    Refreshed,
    Refused,
    Subscribed,
    Unsubscribed,
    encode_message,
)
from ._subscription import DirectMessages, Subscription

if TYPE_CHECKING:
    from ._inbox import Inbox

__all__ = ["Stream"]

logger = logging.getLogger("nucleus.client")

T = TypeVar("T")

_NO_CHANNELS = ErrorInfo("unsupported_protocol",
                         f"the server does not speak {SUBPROTOCOL}: it has no channels")


@dataclass(slots=True)
class _Channel:
    joined: asyncio.Future[None]
    subscriptions: list[Subscription[Any]] = field(default_factory=list)


class Stream:
    """
    A ``nucleus.v1`` stream: channel subscriptions that survive reconnects,
    requests, direct messages and sends. Get one from ``connect()``.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._protocol = ClientProtocol(config.max_queue)
        self._state = State.CONNECTING
        self._token = config.token
        self._ws: ClientConnection | None = None
        self._channels: dict[str, _Channel] = {}
        self._requests: dict[int, asyncio.Future[Answer]] = {}
        self._unsubs: dict[int, asyncio.Future[None]] = {}
        self._direct: set[Inbox[Message]] = set()
        self._listeners = Listeners()
        self._wake = asyncio.Event()  # the outbox has something
        self._room = asyncio.Event()  # the outbox has room
        self._opened = asyncio.Event()  # opened once, or ended
        self._ended = asyncio.Event()
        self._close_error: StreamClosed | None = None
        self._task: asyncio.Task[None] | None = None
        self._random = random.random
        self._held = config.token  # the token the server holds
        self._refresh_id: int | None = None  # the last refresh sent
        self._refused = asyncio.Event()  # the server refused it

    # the application's side

    @property
    def state(self) -> State:
        """``connecting``, ``open``, ``reconnecting`` or ``closed``."""
        return self._state

    @overload
    async def subscribe(self, channel: str) -> Subscription[Any]: ...

    @overload
    async def subscribe(self, channel: str, *, model: type[T]) -> Subscription[T]: ...

    async def subscribe(self, channel: str, *, model: type[Any] | None = None) -> Subscription[Any]:
        """
        Subscribe to ``channel``; returns once the server confirmed (``joined``),
        also across a reconnect. Raises :class:`SubscriptionRefused` when the
        server refuses (``on_subscribe`` said no), :class:`StreamClosed` when
        the stream is closed. ``model`` (a msgspec Struct, dataclass or pydantic
        model) is what each message is decoded into.
        """
        if not isinstance(channel, str) or not channel:
            raise TypeError("channel must be a non-empty string")
        self._check_not_closed()
        if self._protocol.open and not self._protocol.tagged:
            raise SubscriptionRefused(_NO_CHANNELS.code, _NO_CHANNELS.message, channel)
        entry = self._channels.get(channel)
        if entry is None:
            joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            joined.add_done_callback(_retrieve)
            entry = self._channels[channel] = _Channel(joined)
            self._protocol.subscribe(channel)
            self._wake.set()
        subscription = Subscription(self, channel, model, self._config.max_buffer)
        entry.subscriptions.append(subscription)
        try:
            await asyncio.shield(entry.joined)
        except BaseException:
            subscription._inbox.end()
            self._discard(subscription)
            raise
        return subscription

    async def send(self, data: Any) -> None:
        """
        Send ``data`` to the server's handler: a ``str`` as text, bytes as
        binary, anything else as JSON. While not open it is queued, up to
        ``max_queue`` messages (then :class:`SendQueueFull`); while open this
        waits when as many are still being written.
        """
        self._check_not_closed()
        body, is_json = encode_message(data)
        while self._protocol.open and self._protocol.backlog >= self._config.max_queue:
            self._room.clear()
            await self._room.wait()
            self._check_not_closed()
        self._protocol.send(body, is_json)
        self._wake.set()

    @overload
    async def request(self, data: Any, *, timeout: float | None = ...,  # noqa: ASYNC109
                      offline: Literal["queue", "reject"] = ...) -> Any: ...

    @overload
    async def request(self, data: Any, *, timeout: float | None = ...,  # noqa: ASYNC109
                      offline: Literal["queue", "reject"] = ..., model: type[T]) -> T: ...

    async def request(
        self,
        data: Any,
        *,
        # The browser client's option: the request is forgotten when it expires.
        timeout: float | None = 10.0,  # noqa: ASYNC109
        offline: Literal["queue", "reject"] = "queue",
        model: type[Any] | None = None,
    ) -> Any:
        """
        Ask the server's ``on_request`` and return its answer (decoded JSON, or
        a ``model`` instance). :class:`RequestFailed` carries the refusal's
        ``code`` and ``message``, or the client's: ``timeout``, ``offline``
        (not connected and ``offline="reject"``; while not open a request
        otherwise waits for the connection, its timeout running),
        ``disconnected`` (the link dropped after sending it: it is never
        resent, the server may or may not have acted) or ``closed``.
        """
        if self._state is State.CLOSED:
            raise RequestFailed("closed", "the stream is closed")
        raw = self._protocol.open and not self._protocol.tagged
        if raw or (offline == "reject" and not self._protocol.open):
            reason = f"the server does not speak {SUBPROTOCOL}" if raw else "not connected"
            raise RequestFailed("offline", reason)
        request_id = self._protocol.request(data)
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._requests[request_id] = answer
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                reply = await answer
        except TimeoutError:
            raise RequestFailed("timeout", f"no reply within {timeout} s") from None
        finally:
            self._requests.pop(request_id, None)
            self._protocol.forget_request(request_id)
        if reply.failure is not None:
            raise RequestFailed(reply.failure.code, reply.failure.message)
        if not reply.data:
            return None
        if model is not None:
            return decode_as(bytes(reply.data), model)
        return msgspec.json.decode(reply.data)

    def messages(self) -> DirectMessages:
        """
        Iterate the direct messages that arrive from now on (``send_to``,
        ``send_to_user``): each one's data. See also ``on("message", ...)``.
        """
        iterator = DirectMessages(self, self._config.max_buffer)
        if self._state is State.CLOSED:
            iterator._inbox.end(self._close_error)
        else:
            self._direct.add(iterator._inbox)
        return iterator

    @overload
    def on(self, event: Literal["state"],
           callback: Callable[[State], object]) -> Callable[[], None]: ...

    @overload
    def on(self, event: Literal["gap"],
           callback: Callable[[Gap], object]) -> Callable[[], None]: ...

    @overload
    def on(self, event: Literal["message"],
           callback: Callable[[Any, Meta], object]) -> Callable[[], None]: ...

    @overload
    def on(self, event: Literal["error"],
           callback: Callable[[ErrorInfo], object]) -> Callable[[], None]: ...

    def on(self, event: str, callback: Callable[..., object]) -> Callable[[], None]:
        """
        Call ``callback`` on every ``state`` (the new :class:`State`), ``gap``
        (a :class:`Gap`), direct ``message`` (data, :class:`Meta`) or ``error``
        (an :class:`ErrorInfo`); returns the function that removes it.
        Callbacks are plain functions, called in the stream's task: they must
        not block, and what they raise is logged, not propagated.
        """
        return self._listeners.add(event, callback)

    async def close(self) -> None:
        """
        Close for good: no reconnect; subscriptions and ``messages()`` end,
        pending requests fail with ``closed``. Idempotent.
        """
        self._finish(None)
        ws = self._ws
        if ws is not None:
            await ws.close()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait({task})

    async def wait_closed(self) -> None:
        """
        Wait until the stream is closed; raises :class:`StreamClosed` if it
        ended for good on an error (``unauthorized``, ``token_revoked``...).
        """
        await self._ended.wait()
        if self._close_error is not None:
            raise _copy(self._close_error)

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Stream {self._state.value} channels={sorted(self._channels)}>"

    # the stream's task

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._main(), name="nucleus stream")

    async def _wait_open(self) -> None:
        await self._opened.wait()
        if self._state is State.CLOSED:
            raise _copy(self._close_error) if self._close_error else StreamClosed(
                "closed", "the stream was closed before it opened")

    async def _main(self) -> None:
        try:
            await self._run()
        except Exception:
            logger.exception("the nucleus stream failed")
            self._finish(ErrorInfo("internal", "the client failed (see the nucleus.client log)"))
        finally:
            self._finish(None)

    async def _run(self) -> None:
        config = self._config
        loop = asyncio.get_running_loop()
        attempt = 0
        auth_retried = False
        delay: float | None = None

        def retry(at_least: float = 0.0) -> float:
            nonlocal attempt
            attempt += 1
            return backoff(attempt - 1, config.min_delay, config.max_delay, self._random,
                           at_least)

        while True:
            if delay is not None:
                self._set_state(State.RECONNECTING)
                await asyncio.sleep(delay)
            if config.get_token is not None:
                try:
                    self._token = await fetch_token(config.get_token)
                except Exception as exc:
                    self._report(ErrorInfo("token_unavailable", f"get_token() failed: {exc!r}"))
                    delay = retry()
                    continue
            try:
                ws = await dial(config, self._token)
            except Unusable as exc:
                self._finish(ErrorInfo("connect_failed", str(exc)))
                return
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    if config.get_token is not None and not auth_retried:
                        auth_retried, delay = True, 0.0  # once more, with a fresh token
                        continue
                    self._finish(ErrorInfo(
                        "unauthorized", f"the server refused the connection (HTTP {status})"))
                    return
                delay = retry()
                logger.info("the server answered HTTP %d; retrying in %.2f s", status, delay)
                continue
            except InvalidURI:
                self._finish(ErrorInfo("connect_failed", "the URL is not a WebSocket URL"))
                return
            except (OSError, TimeoutError, WebSocketException) as exc:
                delay = retry()
                logger.info("connecting failed (%s); retrying in %.2f s", describe(exc), delay)
                continue
            auth_retried = False
            opened_at = loop.time()
            code, reason = await self._serve(ws)
            if self._state is State.CLOSED:
                return
            if loop.time() - opened_at >= config.stable_after:
                attempt = 0
            action = after_close(code, reason, config.get_token is not None)
            if action.final:
                self._finish(action.error)
                return
            if action.error is not None:
                self._report(action.error)
            if action.restart:
                delay = config.restart_delay[0] + self._random() * (
                    config.restart_delay[1] - config.restart_delay[0])
            else:
                delay = retry(0.5 if action.throttled else 0.0)
            logger.info("connection closed (%d); reconnecting in %.2f s", code, delay)

    async def _serve(self, ws: ClientConnection) -> tuple[int, str]:
        """Serve one connection until it closes; returns its close code and reason."""
        self._ws = ws
        self._held = self._token  # the token the server holds for this connection
        tagged = ws.subprotocol == SUBPROTOCOL
        for request_id in self._protocol.connection_opened(tagged):
            self._settle(request_id, RequestFailed(
                "offline", f"the server does not speak {SUBPROTOCOL}"))
        self._wake.set()
        self._set_state(State.OPEN)
        self._opened.set()
        if not tagged:
            for channel in list(self._channels):
                self._refuse(Refused(channel, _NO_CHANNELS))
            self._report(ErrorInfo("unsupported_protocol", (
                f"the server did not select {SUBPROTOCOL}; every frame is delivered "
                "as a direct message")))
        try:
            async with asyncio.TaskGroup() as tasks:
                writer = tasks.create_task(self._write(ws))
                refresher = tasks.create_task(self._refresh())
                try:
                    await self._read(ws)
                finally:
                    writer.cancel()
                    refresher.cancel()
        finally:
            self._ws = None
            for request_id in self._protocol.connection_lost():
                self._settle(request_id, RequestFailed(
                    "disconnected", "the connection dropped before the reply"))
            for waiter in self._unsubs.values():
                if not waiter.done():
                    waiter.set_result(None)
            self._unsubs.clear()
            self._room.set()
            await ws.close()
        return ws.close_code or 1006, ws.close_reason or ""

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                for event in self._protocol.receive(frame):
                    await self._dispatch(event)
        except ConnectionClosed:
            pass

    async def _write(self, ws: ClientConnection) -> None:
        """The one writer: frames go out in the order the protocol hands them."""
        while True:
            item = self._protocol.next_outgoing()
            if item is None:
                self._room.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if ws.state is not WsState.OPEN:
                self._protocol.unsend(item)  # not written: it goes on the next connection
                return
            try:
                await ws.send(self._protocol.wire(item))
            except ConnectionClosed:
                return  # written or not, it is lost with the link (§6)
            if self._protocol.backlog < self._config.max_queue:
                self._room.set()

    async def _refresh(self) -> None:
        """
        Renew a JWT in-band before its ``exp``, while the connection lasts. A
        failed renewal (``get_token`` failed, or the server refused the token)
        is tried again before the token the server holds expires.
        """
        get_token = self._config.get_token
        if get_token is None or not self._protocol.tagged:
            return
        failed = False
        while True:
            now = time.time()
            if failed:
                delay = refresh_retry_delay(self._held, now)
                if delay is None:
                    return  # expired: the server closes with 4001, and we redial
            else:  # None: nothing to renew, unless the server refuses what it got
                delay = refresh_delay(self._token, now, self._config.refresh_before)
            self._refused.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._refused.wait()
                failed = True  # the server refused the last token: again, soon
                continue
            try:
                fresh = await fetch_token(get_token)
            except Exception as exc:
                self._report(ErrorInfo("token_unavailable", f"get_token() failed: {exc!r}"))
                failed = True
                continue
            failed = not fresh
            if fresh:
                self._token = fresh
                self._refresh_id = self._protocol.refresh(fresh)
                self._wake.set()

    async def _dispatch(self, event: Event) -> None:
        if isinstance(event, Message):
            if event.meta.channel is None:
                await self._deliver_direct(event)
                return
            entry = self._channels.get(event.meta.channel)
            for subscription in list(entry.subscriptions) if entry is not None else ():
                await subscription._inbox.put(event)
        elif isinstance(event, Subscribed):
            entry = self._channels.get(event.channel)
            if entry is not None and not entry.joined.done():
                entry.joined.set_result(None)
        elif isinstance(event, Refused):
            self._refuse(event)
        elif isinstance(event, Unsubscribed):
            self._unsubscribed(event.id)
        elif isinstance(event, Refreshed):
            if event.id == self._refresh_id:
                self._held = self._token
        elif isinstance(event, Answer):
            answer = self._requests.get(event.id)
            if answer is not None and not answer.done():
                answer.set_result(event)
        elif isinstance(event, Gap):
            self._listeners.emit("gap", event)
        else:
            if event.id is not None:
                self._unsubscribed(event.id)  # an unsub refused is over too
                if event.id == self._refresh_id:
                    self._refused.set()
            self._report(event)

    async def _deliver_direct(self, message: Message) -> None:
        if "message" in self._listeners:
            self._listeners.emit("message", message.data(), message.meta)
        for inbox in list(self._direct):
            await inbox.put(message)

    def _refuse(self, event: Refused) -> None:
        entry = self._channels.pop(event.channel, None)
        if entry is None:
            self._report(event.error)
            return
        error = SubscriptionRefused(event.error.code, event.error.message, event.channel)
        if not entry.joined.done():
            entry.joined.set_exception(error)
        for subscription in entry.subscriptions:
            subscription._inbox.end(error)
        self._listeners.emit("error", event.error)  # raised where it is awaited: no need to log it

    def _unsubscribed(self, unsub_id: int) -> None:
        waiter = self._unsubs.pop(unsub_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # helpers

    async def _unsubscribe(self, subscription: Subscription[Any]) -> None:
        unsub_id = self._discard(subscription)
        if unsub_id is None:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unsubs[unsub_id] = waiter
        # The client forgot the channel already; the answer only says the server did.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._config.unsubscribe_timeout):
                await waiter
        self._unsubs.pop(unsub_id, None)

    def _discard(self, subscription: Subscription[Any]) -> int | None:
        """Forget ``subscription``; the id of the ``unsub`` sent when it was its channel's last."""
        entry = self._channels.get(subscription.channel)
        if entry is None or subscription not in entry.subscriptions:
            return None
        entry.subscriptions.remove(subscription)
        if entry.subscriptions:
            return None
        del self._channels[subscription.channel]
        if not entry.joined.done():
            entry.joined.cancel()
        unsub_id = self._protocol.unsubscribe(subscription.channel)
        self._wake.set()
        return unsub_id

    def _check_not_closed(self) -> None:
        if self._state is State.CLOSED:
            raise _copy(self._close_error) if self._close_error else StreamClosed(
                "closed", "the stream is closed")

    def _settle(self, request_id: int, error: RequestFailed) -> None:
        answer = self._requests.get(request_id)
        if answer is not None and not answer.done():
            answer.set_exception(error)

    def _set_state(self, state: State) -> None:
        if state is not self._state:
            self._state = state
            self._listeners.emit("state", state)

    def _report(self, info: ErrorInfo) -> None:
        if "error" in self._listeners:
            self._listeners.emit("error", info)
        else:
            logger.warning("%s: %s", info.code, info.message)

    def _finish(self, error: ErrorInfo | None) -> None:
        """End for good (idempotent): settle everything anyone awaits."""
        if self._state is State.CLOSED:
            return
        closed = StreamClosed(error.code, error.message) if error is not None else None
        self._close_error = closed
        for request_id in self._protocol.close():
            self._settle(request_id, RequestFailed("closed", "the stream was closed"))
        for entry in self._channels.values():
            if not entry.joined.done():
                entry.joined.set_exception(
                    _copy(closed) if closed else StreamClosed("closed", "the stream was closed"))
            for subscription in entry.subscriptions:
                subscription._inbox.end(closed)
        self._channels.clear()
        for inbox in self._direct:
            inbox.end(closed)
        self._direct.clear()
        for waiter in self._unsubs.values():
            if not waiter.done():
                waiter.set_result(None)
        self._unsubs.clear()
        self._room.set()
        self._wake.set()
        if error is not None:
            self._report(error)
        self._set_state(State.CLOSED)
        self._listeners.clear()
        self._token = None
        self._opened.set()
        self._ended.set()


def _copy(error: StreamClosed) -> StreamClosed:
    return StreamClosed(error.code, error.message)


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A refusal nobody awaits any more is not an "exception never retrieved".
    if not future.cancelled():
        future.exception()

