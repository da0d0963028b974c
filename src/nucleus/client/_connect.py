"""
``connect()``: the settings of a stream, checked at once, and the two ways to
open it (``await connect(...)`` and ``async with connect(...) as stream``), as
the websockets library's ``connect`` offers them.
"""

from __future__ import annotations

import math
import ssl as ssl_module
from collections.abc import Generator, Mapping
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

from websockets.datastructures import HeadersLike

from nucleus.stream import ConfigError

from ._dial import Config, TokenGetter
from ._policy import fits_subprotocol
from ._stream import Stream

__all__ = ["connect"]

_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


class connect:
    """
    Open a :class:`Stream` to a Nucleus Stream route (``nucleus.v1``)::

        async with connect("wss://example.com/ws", token=jwt) as stream:
            chat = await stream.subscribe("chat")
            async for data in chat:
                ...

    ``await connect(...)`` returns the stream once a connection opened (close
    it with ``await stream.close()``); transient failures are retried
    meanwhile, so bound the wait with ``asyncio.timeout()`` if the server may
    be down. It raises :class:`StreamClosed` when the stream ended for good
    first (``unauthorized``...). Once open the stream reconnects by itself
    until it is closed, resuming every subscription where it stopped.

    Tokens: ``token``, or ``get_token`` (a function, sync or async, called
    before every connection and ``refresh_before`` seconds before a JWT's
    ``exp``, whose answer replaces it). ``token_in`` is where it travels:
    ``"protocol"`` (the ``nucleus.token.<token>`` subprotocol, as browsers
    send it), ``"header"`` (``Authorization: Bearer``) or ``"query"`` (the
    URL's ``token`` parameter, which ends up in access logs).

    Reconnection (seconds): retry ``n`` waits ``random() * min(max_delay,
    min_delay * 2**n)``; ``n`` starts again at 0 after a connection stayed
    open ``stable_after``; after a server restart (1001, 1012) the first
    retry waits a random time within ``restart_delay`` instead.

    Limits: ``max_queue`` messages wait in ``send()`` while not open (then
    :class:`SendQueueFull`); ``max_buffer`` messages wait for each
    subscription's (and ``messages()``') consumer before reading pauses.
    ``open_timeout``, ``ping_interval``, ``ping_timeout`` (keepalive: a link
    that does not answer a ping in time is dropped and dialed again),
    ``close_timeout``, ``max_size``, ``ssl`` and ``additional_headers`` go to
    the websockets library.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        get_token: TokenGetter | None = None,
        token_in: Literal["protocol", "query", "header"] = "protocol",
        min_delay: float = 0.5,
        max_delay: float = 30.0,
        stable_after: float = 5.0,
        refresh_before: float = 30.0,
        restart_delay: tuple[float, float] = (0.5, 5.0),
        max_queue: int = 1000,
        max_buffer: int = 1000,
        open_timeout: float | None = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float | None = 10.0,
        max_size: int | None = 2**20,
        ssl: ssl_module.SSLContext | None = None,
        additional_headers: HeadersLike | None = None,
    ) -> None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in _SCHEMES or not parts.netloc:
            raise ConfigError("url must be a ws://, wss://, http:// or https:// URL with a host")
        if token_in not in ("protocol", "query", "header"):
            raise ConfigError(f"token_in must be 'protocol', 'query' or 'header', got {token_in!r}")
        if token is not None and token_in == "protocol" and not fits_subprotocol(token):
            raise ConfigError("the token has characters a subprotocol cannot hold; "
                              "use token_in='header' or 'query'")
        if get_token is not None and not callable(get_token):
            raise ConfigError("get_token must be a function returning a token (or awaitable)")
        for name, value in (("min_delay", min_delay), ("max_delay", max_delay),
                            ("stable_after", stable_after), ("refresh_before", refresh_before)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a number of seconds, 0 or more; got {value!r}")
        low, high = restart_delay
        if not 0 <= low <= high:
            raise ConfigError(f"restart_delay must be (low, high) with 0 <= low <= high, "
                              f"got {restart_delay!r}")
        for name, size in (("max_queue", max_queue), ("max_buffer", max_buffer)):
            if not isinstance(size, int) or size < 1:
                raise ConfigError(f"{name} must be a positive integer, got {size!r}")
        options: dict[str, Any] = {
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "close_timeout": close_timeout,
            "max_size": max_size,
            "additional_headers": _pairs(additional_headers),
        }
        if ssl is not None:
            options["ssl"] = ssl
        self._config = Config(
            parts._replace(scheme=_SCHEMES[parts.scheme]).geturl(),
            token=token or None,
            get_token=get_token,
            token_in=token_in,
            min_delay=min_delay,
            max_delay=max_delay,
            stable_after=stable_after,
            refresh_before=refresh_before,
            restart_delay=(low, high),
            max_queue=max_queue,
            max_buffer=max_buffer,
            open_timeout=open_timeout,
            websockets_options=options,
        )
        self._stream: Stream | None = None

    def __await__(self) -> Generator[Any, None, Stream]:
        return self._open().__await__()

    async def _open(self) -> Stream:
        stream = Stream(self._config)
        stream._start()
        try:
            await stream._wait_open()
        except BaseException:
            await stream.close()
            raise
        return stream

    async def __aenter__(self) -> Stream:
        self._stream = await self._open()
        return self._stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._stream is not None:
            await self._stream.close()


def _pairs(headers: HeadersLike | None) -> list[tuple[str, str]]:
    """Headers as (name, value) pairs, whichever form websockets accepts they came in."""
    if headers is None:
        return []
    raw_items = getattr(headers, "raw_items", None)
    if callable(raw_items):
        return list(raw_items())
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)  # type: ignore[arg-type]
