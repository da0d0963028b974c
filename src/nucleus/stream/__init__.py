"""
Nucleus Stream: real-time WebSockets for Python web apps.

Handlers (:class:`StreamHandler`) react to sockets (:class:`WebSocket`)
connecting, sending messages (:class:`SocketMessage`) and leaving; the
:class:`StreamHub` puts sockets in rooms and sends to rooms, sockets and
users; :class:`StreamServer` serves routes natively or as an ASGI app.
"""

from ._acceptor import HttpResponse
from ._backend import Backend, MemoryBackend, backend_from_url
from ._errors import (
    BackendError,
    BackendUnavailable,
    ChannelError,
    ConfigError,
    EncodeError,
    InvalidMessage,
    MessageError,
    RequestError,
    RouteError,
    SocketClosed,
    SocketNotFound,
    StreamError,
)
from ._handler import StreamHandler
from ._history import HistoryPolicy, Publication, Recovery
from ._hub import Channel, StreamHub
from ._message import SocketMessage, decode_as
from ._ratelimit import RateLimit
from ._redis import RedisBackend
from ._request import HandshakeRequest, Headers
from ._routing import Limits
from ._server import CLIENT_JS_ROUTE, CLIENT_TYPES_ROUTE, StreamServer, client_js_path
from ._socket import WebSocket
from ._wire import SUBPROTOCOL

__all__ = [
    "CLIENT_JS_ROUTE",
    "CLIENT_TYPES_ROUTE",
    "SUBPROTOCOL",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "Channel",
    "ChannelError",
    "ConfigError",
    "EncodeError",
    "HandshakeRequest",
    "Headers",
    "HistoryPolicy",
    "HttpResponse",
    "InvalidMessage",
    "Limits",
    "MemoryBackend",
    "MessageError",
    "Publication",
    "RateLimit",
    "Recovery",
    "RedisBackend",
    "RequestError",
    "RouteError",
    "SocketClosed",
    "SocketMessage",
    "SocketNotFound",
    "StreamError",
    "StreamHandler",
    "StreamHub",
    "StreamServer",
    "WebSocket",
    "backend_from_url",
    "client_js_path",
    "decode_as",
]
