"""
``StreamHandler``: the application's callbacks for one route.

Subclass it and override what you need; every method defaults to doing
nothing (and :meth:`on_subscribe` to refusing). The server guarantees the
order: ``on_connect`` finishes before any ``on_message`` of that socket (a
socket it closes, a refusal, gets none), messages of one socket are handled
one at a time in arrival order, and ``on_disconnect`` runs exactly once,
after the socket has left every room.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import RequestError

if TYPE_CHECKING:
    from ._hub import StreamHub
    from ._message import SocketMessage
    from ._request import HandshakeRequest
    from ._socket import WebSocket

__all__ = ["StreamHandler"]


class StreamHandler:
    """
    Base class for the callbacks of one WebSocket route.

    Subclass it, override what the route needs, and pass an instance to
    ``server.route(path, handler)``; one instance serves every socket of the
    route, so keep per-connection data in ``socket.state``. Every method
    defaults to doing nothing (:meth:`on_subscribe` to refusing,
    :meth:`on_request` to ``not_found``).

    Order: ``on_connect`` finishes before any ``on_message`` of that socket;
    one socket's messages are handled one at a time, in arrival order;
    ``on_disconnect`` runs exactly once, after the socket has left every room.
    An exception a callback raises is logged with the socket's id and route;
    the socket stays open and the peer is told nothing.
    """

    async def authenticate(self, request: HandshakeRequest) -> str | None:
        """
        Authenticate a handshake before the upgrade is accepted: return the
        user id (it becomes ``socket.user_id``), or ``None`` to refuse with
        HTTP 401.

        Called only when overridden, and only for routes declared without
        ``auth=`` (which takes precedence).
        """
        return None

    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        """
        A socket opened: join rooms (``hub.join_room(socket.id, room)``) or
        identify the user here. To refuse the connection, ``await
        hub.disconnect(socket.id)``: it closes with 1008.
        """

    async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
        """
        A complete message arrived from ``socket``: a ``SocketMessage.Text``
        or ``SocketMessage.Binary`` (``msg.as_json()`` decodes JSON text). With
        the route's ``message_model``, only text that fits it arrives here
        (``msg.as_json(Model)`` gives the instance).
        """

    async def on_request(self, hub: StreamHub, socket: WebSocket, data: Any) -> Any:
        """
        A library client's ``request(data)``: return the reply (any value
        ``SocketMessage.json`` takes). ``data`` is the decoded JSON, the text
        when it is not JSON, or an instance of the route's ``message_model``.
        Raise :class:`RequestError` to refuse with a code; by default every
        request is refused with ``not_found``.
        """
        raise RequestError("not_found", "this route answers no requests")

    async def on_disconnect(self, hub: StreamHub, socket_id: str) -> None:
        """
        The socket is gone (for whatever reason): it is already out of every
        room and unbound from its user, so only its id is left; clean up what
        you keep about it here.
        """

    async def on_subscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
        """
        A library client asks to subscribe to ``channel``: return True to let
        the socket join the room of that name (and get its history), anything
        else refuses it (``forbidden``). The default refuses every channel.
        """
        return False

    async def on_unsubscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
        """A library client asks to leave ``channel``; return False to keep it in."""
        return True
