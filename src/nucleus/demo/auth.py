"""
The authenticated connection: a login form gets a token, the socket opens
only with a valid one, each user has a private room, and a refused token is
shown as such.

The route checks the token at the handshake (``auth=Fortress.query_token()``):
a missing, forged or expired token gets HTTP 401 before any socket opens. The
browser cannot see that status, so the client asks the same URL over HTTP and
reports ``unauthorized``, which the page shows. An accepted socket belongs to
the token's user (``socket.user_id``) and joins that user's private room
``user:<id>`` in ``on_connect``: the guide's pattern, with the check moved to
the door. Users message each other through those rooms; only the user's own
sockets can be in one.

Tokens come from ``GET /auth/token?user=<name>``, which asks no password: a
demo. An app issues them after its own login, with ``Fortress.issue_token``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from ..fortress import Fortress
from ..stream import (
    RequestError,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)
from ._rooms import Traffic, publish
from ._web import check_name, demo_secret, install_page, redirect, token_endpoint
from .notifications import USER_ROOMS

__all__ = ["PREFIX", "AuthHandler", "PrivateMessage", "create_app", "install"]

PREFIX = "/auth"


class PrivateMessage(msgspec.Struct, frozen=True):
    """A page's request: send ``text`` to user ``to`` (who may be oneself)."""

    to: Annotated[str, msgspec.Meta(max_length=32)]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class AuthHandler(StreamHandler):
    """Sockets are authenticated at the door: ``socket.user_id`` is the token's user."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic

    async def on_connect(self, hub: StreamHub, socket: WebSocket) -> None:
        await hub.join_room(socket.id, f"user:{socket.user_id}")

    async def on_subscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
        return channel == f"user:{socket.user_id}"

    async def on_request(self, hub: StreamHub, socket: WebSocket, data: Any) -> Any:
        self.traffic.received += 1
        sender = socket.user_id
        if not isinstance(data, PrivateMessage) or sender is None:
            raise RequestError("bad_request", "send {to, text}")
        to = check_name(data.to)
        if to is None:
            raise RequestError("invalid", "no such user name")
        line = {"from": sender, "to": to, "text": data.text, "at": datetime.now(UTC)}
        offset = await publish(hub, self.traffic, f"user:{to}", "private", line)
        if to != sender:  # the sender's other tabs see what was sent
            await publish(hub, self.traffic, f"user:{sender}", "private", line)
        return {"offset": offset}


def install(server: StreamServer, traffic: Traffic, secret: str | None = None) -> None:
    """
    Add the login demo to ``server``: the page at ``/auth/``, the socket at
    ``/auth/ws``, the token endpoint at ``/auth/token``. ``secret`` defaults
    to ``$SECRET_KEY``; without one the server refuses to start.
    """
    secret = demo_secret(secret)
    server.route(f"{PREFIX}/ws", AuthHandler(traffic), auth=Fortress.query_token(secret),
                 message_model=PrivateMessage)
    server.history("user:*", USER_ROOMS)
    server.http_route(f"{PREFIX}/token", token_endpoint(secret))
    install_page(server, PREFIX, "auth.html")


def create_app(secret: str | None = None) -> StreamServer:
    """The login demo alone, at http://127.0.0.1:3000/ (redirected to ``/auth/``)."""
    server = StreamServer()
    install(server, Traffic(), secret)
    redirect(server, "/", "auth/")
    return server
