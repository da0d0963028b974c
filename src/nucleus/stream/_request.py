"""
The opening handshake as the application sees it, whichever front door took it.

Pure data: parsing the target and the cookie header, nothing more. Both front
doors (native and ASGI) build a :class:`HandshakeRequest` and hand it to routing,
authentication and origin checks, then to the :class:`WebSocket` they open.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import parse_qsl, unquote

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
        self._index: dict[str, str] | None = None  # built on first lookup

    @property
    def _lookup(self) -> dict[str, str]:
        if self._index is None:
            index: dict[str, str] = {}
            for name, value in self._items:
                index.setdefault(name.lower(), value)
            self._index = index
        return self._index

    def __getitem__(self, name: str) -> str:
        return self._lookup[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup

    def __iter__(self) -> Iterator[str]:
        return iter(self._lookup)

    def __len__(self) -> int:
        return len(self._lookup)

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name``, in the order received."""
        key = name.lower()
        return [value for item, value in self._items if item.lower() == key]

    def raw_items(self) -> tuple[tuple[str, str], ...]:
        """The headers as received: original case, repeats kept."""
        return self._items

    def __repr__(self) -> str:
        return f"Headers({list(self._lookup)!r})"


def _first_values(query: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        values.setdefault(key, value)
    return values


def _cookies(headers: Headers) -> dict[str, str]:
    # RFC 6265 §5.4: "name=value" pairs separated by "; ". Parsed leniently, one
    # pair at a time, so an odd cookie never hides the others; first value wins
    # (the browser sends the most specific cookie first).
    found: dict[str, str] = {}
    for header in headers.get_all("cookie"):
        for pair in header.split(";"):
            name, sep, value = pair.partition("=")
            name, value = name.strip(), value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if sep and _COOKIE_NAME.fullmatch(name) and _COOKIE_VALUE.fullmatch(value):
                found.setdefault(name, value)
    return found


# RFC 6265 §4.1.1: a name is an RFC 7230 token; a value is cookie-octets.
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*")


class HandshakeRequest:
    """
    One WebSocket opening handshake (or plain HTTP request) received by a route.

    ``query`` keeps the first value of each parameter; ``subprotocols`` lists the
    ``Sec-WebSocket-Protocol`` values the client offered, in order. Each is
    parsed on first use: most sockets never read their cookies.
    """

    __slots__ = ("_cookies", "_query", "_subprotocols", "headers", "path", "query_string",
                 "remote_address")

    def __init__(
        self,
        path: str,
        query_string: str,
        headers: Headers,
        remote_address: tuple[str, int] | None,
    ) -> None:
        init = object.__setattr__  # immutable once built, like a frozen dataclass
        init(self, "path", path)
        init(self, "query_string", query_string)
        init(self, "headers", headers)
        init(self, "remote_address", remote_address)
        init(self, "_query", None)
        init(self, "_cookies", None)
        init(self, "_subprotocols", None)

    #: The request path, percent-decoded (``/ws/chat``), without a mount prefix.
    path: str
    #: The raw query string, without the ``?`` (``token=abc&room=a``).
    query_string: str
    #: The request's headers, case-insensitive.
    headers: Headers
    #: The TCP peer's ``(host, port)``, if known (behind a proxy: the proxy's).
    remote_address: tuple[str, int] | None
    _query: Mapping[str, str] | None
    _cookies: Mapping[str, str] | None
    _subprotocols: tuple[str, ...] | None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"HandshakeRequest is immutable: cannot set {name!r}")

    @property
    def query(self) -> Mapping[str, str]:
        """The query parameters, the first value of each, percent-decoded."""
        if self._query is None:
            object.__setattr__(self, "_query", _first_values(self.query_string))
        return self._query  # type: ignore[return-value]

    @property
    def cookies(self) -> Mapping[str, str]:
        """The ``Cookie`` header's cookies by name (the first of a repeated name)."""
        if self._cookies is None:
            object.__setattr__(self, "_cookies", _cookies(self.headers))
        return self._cookies  # type: ignore[return-value]

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """The ``Sec-WebSocket-Protocol`` values the client offered, in order."""
        if self._subprotocols is None:
            object.__setattr__(self, "_subprotocols", tuple(
                item.strip()
                for header in self.headers.get_all("sec-websocket-protocol")
                for item in header.split(",")
                if item.strip()
            ))
        return self._subprotocols  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"HandshakeRequest(path={self.path!r}, remote_address={self.remote_address!r})"

    @classmethod
    def from_target(
        cls,
        target: str,
        headers: Iterable[tuple[str, str]],
        remote_address: tuple[str, int] | None,
    ) -> HandshakeRequest:
        """
        Build from a raw request target such as ``/ws/chat?token=abc``.

        The path is percent-decoded, as ASGI servers do, so both front doors
        route ``/caf%C3%A9`` alike; a leading ``//`` stays part of the path.
        """
        path, _, rest = target.partition("?")
        query = rest.partition("#")[0]
        path = unquote(path.partition("#")[0]) or "/"
        return cls(path, query, Headers(headers), remote_address)

    @property
    def origin(self) -> str | None:
        """The ``Origin`` header a browser sends, or ``None``."""
        return self.headers.get("origin")
