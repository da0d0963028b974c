"""
The demo apps' HTTP side: pages and assets from package data, JSON answers,
user names, and the development token endpoint.

Pages link to everything relatively (``../nucleus/stream.js``, ``ws``), so an
app works at any prefix, mounted or not. This module never logs a token.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from importlib import resources
from typing import Any

from ..fortress import SECRET_ENV, Fortress
from ..stream import HandshakeRequest, HttpResponse, SocketMessage, StreamServer

__all__ = [
    "TOKEN_LIFETIME",
    "check_name",
    "demo_secret",
    "install_asset",
    "install_page",
    "json_response",
    "redirect",
    "token_endpoint",
]

#: Seconds a development token lives; the pages fetch a new one to reconnect.
TOKEN_LIFETIME = 3600.0

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8"}


def check_name(value: object) -> str | None:
    """``value`` if it is a usable user name (1-32 of ``A-Z a-z 0-9 _ . -``), else None."""
    if isinstance(value, str) and _NAME.fullmatch(value):
        return value
    return None


def _asset(name: str) -> bytes:
    return (resources.files("nucleus.demo") / "static" / name).read_bytes()


def install_asset(server: StreamServer, path: str, name: str) -> None:
    """Serve the packaged file ``static/<name>`` at ``path``, unless something already is."""
    if path not in server.http_routes:
        server.static(path, _asset(name), _TYPES[os.path.splitext(name)[1]])


def redirect(server: StreamServer, path: str, location: str) -> None:
    """Answer GET ``path`` with a 302 to ``location`` (relative: any mount prefix stays)."""
    response = HttpResponse(302, b"", "text/plain", (("Location", location),))
    server.http_route(path, lambda request: response)


def install_page(server: StreamServer, prefix: str, name: str) -> None:
    """Serve page ``name`` at ``<prefix>/``, ``<prefix>`` redirecting there, plus the shared CSS."""
    server.static(f"{prefix}/", _asset(name), _TYPES[".html"])
    redirect(server, prefix, f"{prefix.rsplit('/', 1)[-1]}/")
    install_asset(server, "/demo.css", "demo.css")


def json_response(value: Any, status: int = 200) -> HttpResponse:
    body = SocketMessage.json(value).text.encode()
    return HttpResponse(status, body, "application/json",
                        (("Cache-Control", "no-store"),))


def demo_secret(secret: str | None = None, *, generate: bool = False) -> str | None:
    """
    The secret tokens are signed with: ``secret``, else ``$SECRET_KEY``, else
    (``generate=True``, for ``nucleus demo`` only) a random one for this process,
    so that tokens die with it. Without one, the apps refuse to start.
    """
    secret = secret or os.environ.get(SECRET_ENV) or None
    if secret is None and generate:
        secret = secrets.token_urlsafe(48)
    return secret


def token_endpoint(secret: str | None) -> Callable[[HandshakeRequest], HttpResponse]:
    """
    ``GET ...?user=<name>``: a token for any name, no password asked.

    A DEMO ONLY: a real app issues tokens after its own login (a session, a
    password, OAuth) with :meth:`Fortress.issue_token`, over POST.
    """

    def issue(request: HandshakeRequest) -> HttpResponse:
        user = check_name(request.query.get("user"))
        if user is None:
            return json_response({"error": "user: 1 to 32 letters, digits, '_', '.' or '-'"}, 400)
        if not secret:
            return json_response({"error": f"{SECRET_ENV} is not set"}, 503)
        token = Fortress.issue_token(user, secret, expires_in=TOKEN_LIFETIME)
        return json_response({"user": user, "token": token, "expires_in": TOKEN_LIFETIME})

    return issue
