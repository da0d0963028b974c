"""
``WebSocket``: one open connection as handlers see it, and the I/O boundary under it.

:class:`Connection` is the one small interface between the hub and a front door
(native server, ASGI adapter, or the in-memory twin used by unit tests). It
never blocks and never awaits: :meth:`Connection.deliver` queues shared frame
bytes on the connection's bounded outgoing buffer and returns.
"""

from __future__ import annotations

import abc
import itertools
import os
from collections.abc import Mapping
from typing import Any

from ._errors import SocketClosed
from ._message import SocketMessage
from ._protocol import TaggedProtocol
from ._request import HandshakeRequest, Headers
from ._wire import Outgoing

__all__ = ["Connection", "WebSocket", "new_socket_id"]

_node_prefix = os.urandom(4).hex()
_counter = itertools.count(1)


def new_socket_id() -> str:
    """A socket id unique across nodes and restarts: random node prefix + counter."""
    return f"{_node_prefix}.{next(_counter):x}"


class Connection(abc.ABC):
    """The I/O boundary: what the hub needs from one open WebSocket."""

    __slots__ = ()

    #: True when the peer speaks the ``nucleus.v1`` subprotocol.
    tagged: bool = False

    @abc.abstractmethod
    def deliver(self, out: Outgoing) -> None:
        """Queue ``out`` for sending; never blocks. Dropped if the socket is closing."""

    @abc.abstractmethod
    def deliver_frame(self, frame: bytes, payload: str | bytes) -> None:
        """Queue a pre-encoded control frame (``frame`` for native, ``payload`` for ASGI)."""

    @abc.abstractmethod
    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; idempotent."""

    @property
    @abc.abstractmethod
    def is_open(self) -> bool:
        """True until the closing handshake starts."""


class WebSocket:
    """
    One open WebSocket connection, as given to :class:`StreamHandler` methods.

    The server creates it; handlers keep its ``id`` (not the object) to reach
    it later through the hub (``hub.send_to(socket_id, msg)``), which works
    from any node. ``query`` holds the first value of each URL query
    parameter; ``state`` is a dict for the application's own per-connection data.
    """

    __slots__ = (
        "_conn",
        "_connecting",
        "_protocol",
        "_refused",
        "_request",
        "_state",
        "deliver",
        "id",
        "route",
        "subprotocol",
        "user_id",
    )

    def __init__(
        self,
        request: HandshakeRequest,
        conn: Connection,
        *,
        route: str,
        subprotocol: str | None = None,
        user_id: str | None = None,
        socket_id: str | None = None,
    ) -> None:
        #: Unique across nodes and restarts: what the hub's calls take (``join_room``...).
        self.id: str = socket_id or new_socket_id()
        #: The user bound by authentication or ``hub.identify``; ``None`` when anonymous.
        self.user_id: str | None = user_id
        #: The path of the route that accepted it (``"/ws/chat"``).
        self.route: str = route
        #: The subprotocol the server selected (``"nucleus.v1"`` for the library
        #: clients), or ``None``.
        self.subprotocol: str | None = subprotocol
        self._request = request
        self._conn = conn
        # The nucleus.v1 conversation of a library client (the session and the
        # hub write its frames through it); None for a plain WebSocket.
        self._protocol = TaggedProtocol() if conn.tagged else None
        #: Queue a shared outgoing message; never blocks (the hub's fan-out path).
        self.deliver = conn.deliver
        self._state: dict[str, Any] | None = None
        self._connecting = True
        #: Closed by the server before ``on_connect`` returned: a refusal.
        self._refused = False

    @property
    def query(self) -> Mapping[str, str]:
        """The URL's query parameters, the first value of each (``?room=a`` → ``{"room": "a"}``)."""
        return self._request.query

    @property
    def headers(self) -> Headers:
        """The opening handshake's headers (case-insensitive)."""
        return self._request.headers

    @property
    def path(self) -> str:
        """The request path, percent-decoded, without the query or a mount prefix."""
        return self._request.path

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's ``(host, port)`` as the server saw it (a proxy's, behind one), if known."""
        return self._request.remote_address

    @property
    def request(self) -> HandshakeRequest:
        """The opening handshake, for anything the shortcuts above don't cover."""
        return self._request

    @property
    def state(self) -> dict[str, Any]:
        """The application's own data for this connection, e.g. ``socket.state["name"]``."""
        # Created on first use: most sockets never need one.
        if self._state is None:
            self._state = {}
        return self._state

    @property
    def is_open(self) -> bool:
        """True until the closing handshake starts; :meth:`send` raises after that."""
        return self._conn.is_open

    @property
    def tagged(self) -> bool:
        """True when the peer speaks ``nucleus.v1`` (the library clients)."""
        return self._protocol is not None

    def deliver_encoded(self, encoded: tuple[bytes, str]) -> None:
        """Queue a control frame (``joined``, ``error``...), the server's own; never blocks."""
        self._conn.deliver_frame(*encoded)

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        """:meth:`close`, from code that cannot await: the closing handshake starts now."""
        if self._connecting:
            self._refused = True
        self._conn.close(code, reason)

    async def send(self, msg: SocketMessage) -> None:
        """
        Send ``msg`` to this socket only; :class:`SocketClosed` if it is closed.

        It is queued and this returns at once, without waiting for the peer; a
        peer that stops reading is closed with 1013 once ``max_send_queue``
        bytes wait for it. For a socket of another node, use ``hub.send_to``.
        """
        if not self._conn.is_open:
            raise SocketClosed(f"socket {self.id} is closed; stop sending to it")
        self._conn.deliver(Outgoing(msg))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close this socket with ``code``; ``on_disconnect`` follows. Idempotent."""
        self.close_nowait(code, reason)

    def __repr__(self) -> str:
        return f"<WebSocket {self.id} path={self.path!r} user={self.user_id!r}>"
