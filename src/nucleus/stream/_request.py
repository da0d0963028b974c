"""
The opening handshake as the application sees it, whichever front door took it.

Pure data: parsing the target and the cookie header, nothing more. Both front
doors (native and ASGI) build a :class:`HandshakeRequest` and hand it to routing,
authentication and origin checks, then to the :class:`WebSocket` they open.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, urlsplit

__all__ = ["HandshakeRequest", "Headers"]


class Headers(Mapping[str, str]):
    """
    Read-only, case-insensitive HTTP headers.

    ``headers["x"]`` is the first value of a repeated header; :meth:`get_all`
    returns every value.
    """

    __slots__ = ("_index", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: tuple[tuple[str, str], ...] = tuple(items)
        index: dict[str, str] = {}
        for name, value in self._items:
            index.setdefault(name.lower(), value)
        self._index = index

    def __getitem__(self, name: str) -> str:
        return self._index[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name``, in the order received."""
        key = name.lower()
        return [value for item, value in self._items if item.lower() == key]

    def raw_items(self) -> tuple[tuple[str, str], ...]:
        """The headers as received: original case, repeats kept."""
        return self._items

    def __repr__(self) -> str:
        return f"Headers({list(self._index)!r})"


def _first_values(query: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        values.setdefault(key, value)
    return values


def _cookies(headers: Headers) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for header in headers.get_all("cookie"):
        try:
            jar.load(header)
        except CookieError:
            continue  # a malformed cookie header is ignored, not fatal
    return {name: morsel.value for name, morsel in jar.items()}


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """
    One WebSocket opening handshake (or plain HTTP request) received by a route.

    ``query`` keeps the first value of each parameter; ``subprotocols`` lists the
    ``Sec-WebSocket-Protocol`` values the client offered, in order.
    """

    path: str
    query_string: str
    headers: Headers
    remote_address: tuple[str, int] | None
    query: Mapping[str, str] = field(init=False)
    cookies: Mapping[str, str] = field(init=False)
    subprotocols: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "query", _first_values(self.query_string))
        object.__setattr__(self, "cookies", _cookies(self.headers))
        offered = [
            item.strip()
            for header in self.headers.get_all("sec-websocket-protocol")
            for item in header.split(",")
            if item.strip()
        ]
        object.__setattr__(self, "subprotocols", tuple(offered))

    @classmethod
    def from_target(
        cls,
        target: str,
        headers: Iterable[tuple[str, str]],
        remote_address: tuple[str, int] | None,
    ) -> HandshakeRequest:
        """Build from a raw request target such as ``/ws/chat?token=abc``."""
        parts = urlsplit(target)
        return cls(parts.path or "/", parts.query, Headers(headers), remote_address)

    @property
    def origin(self) -> str | None:
        """The ``Origin`` header a browser sends, or ``None``."""
        return self.headers.get("origin")
