"""
Live notifications: a user's notifications reach every tab they have open,
and no one else's, including those sent while a tab was offline.

A notification is a broadcast to the user's private room ``user:<id>``,
which keeps them (the last 100, for a day): a tab that reconnects resumes
from its position and gets what it missed, in order. (``hub.send_to_user``
reaches every open tab too, but direct messages are not stored: a tab offline
at that moment would never get it.) A page that loads asks for the recent
ones with a request.

Pages log in with a development token (``GET /notifications/token?user=ann``,
see :func:`._web.token_endpoint`); the socket route verifies it at the
handshake, and a socket may subscribe only to its own user's room.
Notifications are sent with ``GET /notifications/notify?user=ann&text=hi``:
GET, because that is what ``StreamServer.http_route`` serves. In an app, send
them from a POST route of its web framework, behind its own authorization
(``examples/fastapi_app.py``); this one lets anyone notify anyone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ..fortress import Fortress
from ..stream import (
    HandshakeRequest,
    HistoryPolicy,
    HttpResponse,
    RequestError,
    StreamHandler,
    StreamHub,
    StreamServer,
    WebSocket,
)
from ._rooms import Traffic, publish, recent_json
from ._web import check_name, demo_secret, install_page, json_response, redirect, token_endpoint

__all__ = ["PREFIX", "RECENT", "NotificationsHandler", "create_app", "install", "notify_endpoint"]

PREFIX = "/notifications"
#: How many recent notifications a page gets when it loads.
RECENT = 20
MAX_TEXT = 500
USER_ROOMS = HistoryPolicy(size=100, ttl=24 * 3600)


class NotificationsHandler(StreamHandler):
    """Sockets are authenticated at the door: ``socket.user_id`` is the token's user."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic

    async def on_subscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
        return channel == f"user:{socket.user_id}"

    async def on_request(self, hub: StreamHub, socket: WebSocket, data: Any) -> Any:
        self.traffic.received += 1
        if data != {"type": "recent"}:
            raise RequestError("bad_request", 'ask {"type": "recent"}')
        return await recent_json(hub, f"user:{socket.user_id}", RECENT)


def notify_endpoint(
    hub: StreamHub, traffic: Traffic,
) -> Callable[[HandshakeRequest], Awaitable[HttpResponse]]:
    """``GET ...?user=<name>&text=<text>``: notify ``user``; answers the notification's offset."""

    async def notify(request: HandshakeRequest) -> HttpResponse:
        user = check_name(request.query.get("user"))
        text = request.query.get("text", "").strip()
        if user is None or not text or len(text) > MAX_TEXT:
            return json_response(
                {"error": f"give user=<name> and text=<1 to {MAX_TEXT} characters>"}, 400)
        note = {"text": text, "at": datetime.now(UTC)}
        offset = await publish(hub, traffic, f"user:{user}", "notification", note)
        return json_response({"user": user, "offset": offset})

    return notify


def install(server: StreamServer, traffic: Traffic, secret: str | None = None) -> None:
    """
    Add the notifications to ``server``: the page at ``/notifications/``, the
    socket at ``/notifications/ws``, and the ``token`` and ``notify`` endpoints.
    ``secret`` defaults to ``$SECRET_KEY``; without one the server refuses to start.
    """
    secret = demo_secret(secret)
    server.route(f"{PREFIX}/ws", NotificationsHandler(traffic),
                 auth=Fortress.query_token(secret))
    server.history("user:*", USER_ROOMS)
    server.http_route(f"{PREFIX}/token", token_endpoint(secret))
    server.http_route(f"{PREFIX}/notify", notify_endpoint(server.hub, traffic))
    install_page(server, PREFIX, "notifications.html")


def create_app(secret: str | None = None) -> StreamServer:
    """The notifications alone, at http://127.0.0.1:3000/ (redirected to ``/notifications/``)."""
    server = StreamServer()
    install(server, Traffic(), secret)
    redirect(server, "/", "notifications/")
    return server
