"""
The one exception root of Nucleus Stream, and its tree.

Every error this package raises on purpose derives from :class:`StreamError`::

    StreamError
    ├── MessageError            a message could not be encoded or decoded
    │   ├── EncodeError         SocketMessage.json() got a value JSON can't hold
    │   └── InvalidMessage      a payload failed validation against a model
    ├── SocketNotFound          no open socket has that id (on this node)
    ├── SocketClosed            the socket was closed before the call
    ├── ChannelError            a channel name or channel operation is invalid
    ├── RouteError              a route is declared wrongly (bad path, duplicate)
    ├── ConfigError             a setting is missing or out of range
    ├── RequestError            on_request refuses a request (code, message for the client)
    └── BackendError            the backend failed; the operation was not done
        └── BackendUnavailable  the broker is unreachable or timed out; retry later

Messages say what the caller should do next. They never hold secrets, tokens
or a peer's payload.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ChannelError",
    "ConfigError",
    "EncodeError",
    "InvalidMessage",
    "MessageError",
    "RequestError",
    "RouteError",
    "SocketClosed",
    "SocketNotFound",
    "StreamError",
]


class StreamError(Exception):
    """Root of every error raised by Nucleus Stream."""


class MessageError(StreamError):
    """A message could not be encoded or decoded."""


class EncodeError(MessageError):
    """A value could not be encoded as JSON."""


class InvalidMessage(MessageError):
    """
    A payload is not valid for the model it was decoded into.

    ``path`` names the offending field (``"$.user.age"``) when it is known, so
    the error can be reported to the client without revealing anything else.
    """

    def __init__(self, reason: str, path: str | None = None) -> None:
        super().__init__(f"{reason} at {path}" if path else reason)
        self.reason = reason
        self.path = path


class SocketNotFound(StreamError):
    """No open socket with this id is known to the hub."""


class SocketClosed(StreamError):
    """The socket is closed (or closing); nothing more can be sent to it."""


class ChannelError(StreamError):
    """A channel name or a channel operation is invalid."""


class RouteError(StreamError):
    """A route is declared wrongly."""


class ConfigError(StreamError):
    """A setting is missing, or out of its allowed range."""


class BackendError(StreamError):
    """The backend failed; the operation (a broadcast, a query) was not done."""


class BackendUnavailable(BackendError):
    """
    The broker (Redis) could not be reached within the backend's timeout.

    Local sockets keep working; the backend reconnects by itself. When the
    request had been sent and only the answer is missing (a stalled network),
    the operation may still take effect once the network heals: a broadcast
    retried after this error may then reach the room twice.
    """


class RequestError(StreamError):
    """
    Raised by :meth:`StreamHandler.on_request` to refuse a request: the client's
    ``request()`` rejects with ``code`` and ``message`` (both sent as given, so
    keep secrets out of them). Any other exception reaches the client as
    ``internal``, without its text.
    """

    def __init__(self, code: str, message: str = "") -> None:
        if not isinstance(code, str) or not code:
            raise TypeError("a request error code is a non-empty string, e.g. 'not_allowed'")
        super().__init__(message or code)
        self.code = code
        self.message = message or code
