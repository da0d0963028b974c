"""
Opening one connection: a stream's settings, where its token travels
(subprotocol, header or query) and asking ``get_token`` for a fresh one.
The reconnecting around it is ``_stream``'s.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from nucleus.stream import SUBPROTOCOL

from ._policy import fits_subprotocol

__all__ = ["Config", "TokenGetter", "Unusable", "describe", "dial", "fetch_token"]

#: ``get_token``: returns (or awaits) a token, or ``None`` for none.
TokenGetter = Callable[[], "str | Awaitable[str | None] | None"]

TOKEN_PREFIX: Final = "nucleus.token."


@dataclass(frozen=True, slots=True)
class Config:
    """A stream's settings, checked by ``connect()``; ``websockets_options`` go to websockets."""

    url: str
    token: str | None = None
    get_token: TokenGetter | None = None
    token_in: Literal["protocol", "query", "header"] = "protocol"
    min_delay: float = 0.5
    max_delay: float = 30.0
    stable_after: float = 5.0
    refresh_before: float = 30.0
    restart_delay: tuple[float, float] = (0.5, 5.0)
    max_queue: int = 1000
    max_buffer: int = 1000
    open_timeout: float | None = 10.0
    unsubscribe_timeout: float = 10.0
    websockets_options: dict[str, Any] = field(default_factory=dict)


class Unusable(Exception):
    """A token that cannot travel as a subprotocol: retrying cannot help."""


async def fetch_token(get_token: TokenGetter) -> str | None:
    """Ask ``get_token`` (sync or async); an empty answer is no token."""
    token = get_token()
    if inspect.isawaitable(token):
        token = await token
    if token is not None and not isinstance(token, str):
        raise TypeError(f"get_token() returned {type(token).__name__}, not a str or None")
    return token or None


async def dial(config: Config, token: str | None) -> ClientConnection:
    """
    Open one connection offering ``nucleus.v1``, with ``token`` where
    ``config.token_in`` says. Raises what websockets raises, or :class:`Unusable`.
    """
    url = config.url
    protocols = [Subprotocol(SUBPROTOCOL)]
    headers: list[tuple[str, str]] = list(config.websockets_options["additional_headers"])
    if token:
        if config.token_in == "query":
            url = _with_query_token(url, token)
        elif config.token_in == "header":
            headers.append(("Authorization", f"Bearer {token}"))
        elif fits_subprotocol(token):
            protocols.append(Subprotocol(TOKEN_PREFIX + token))
        else:
            raise Unusable("the token has characters a subprotocol cannot hold; "
                           "use token_in='header' or 'query'")
    options = {**config.websockets_options, "additional_headers": headers or None}
    return await ws_connect(url, subprotocols=protocols, open_timeout=config.open_timeout,
                            **options)


def describe(exc: BaseException) -> str:
    """A failed attempt, for the log: never the URL, which may hold a query token."""
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, InvalidURI):
        return type(exc).__name__
    return str(exc) or type(exc).__name__


def _with_query_token(url: str, token: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("token", token)])))
