"""
The demo apps served by ``nucleus demo``: the guide's four patterns, each a
page using the browser client, on one :class:`StreamServer` with the embedded
(memory) backend, behind a landing page at ``/``.

=================  ==================  ==========================================
app                page                module
=================  ==================  ==========================================
Chat               ``/chat/``          :mod:`nucleus.demo.chat`
Notifications      ``/notifications/`` :mod:`nucleus.demo.notifications`
Live dashboard     ``/dashboard/``     :mod:`nucleus.demo.dashboard`
Authenticated      ``/auth/``          :mod:`nucleus.demo.auth`
=================  ==================  ==========================================

Each module also has ``create_app()`` serving that app alone (``examples/apps/``).
Pages and assets are package data in ``static/``; they load nothing from
elsewhere. The apps count their own traffic into one :class:`Traffic`, which
the dashboard charts.
"""

from __future__ import annotations

from ..stream import StreamServer
from . import auth, chat, dashboard, notifications
from ._rooms import Traffic
from ._web import demo_secret, install_asset

__all__ = ["create_app"]


def create_app(secret: str | None = None, *, interval: float = dashboard.INTERVAL) -> StreamServer:
    """
    Every demo app on one server. Tokens are signed with ``secret``, else
    ``$SECRET_KEY``, else a random secret made for this process (tokens then
    die with it: a page holding one is refused after a restart, and says so).
    ``interval``: seconds between dashboard samples.
    """
    secret = demo_secret(secret, generate=True)
    server = StreamServer()
    traffic = Traffic()
    chat.install(server, traffic)
    notifications.install(server, traffic, secret)
    dashboard.install(server, traffic, interval)
    auth.install(server, traffic, secret)
    install_asset(server, "/", "index.html")
    return server
