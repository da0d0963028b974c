"""
What the client raises, under the package's one root::

    StreamError (nucleus.stream)
    └── ClientError             a client operation failed: ``code`` and ``message``
        ├── StreamClosed        the stream is closed, or ended for good (``unauthorized``...)
        ├── SubscriptionRefused the server refused a subscription (``forbidden``...)
        ├── RequestFailed       request() got an error reply, or none (``timeout``...)
        └── SendQueueFull       send() while not open, with ``max_queue`` messages held

Decoding a message into a subscription's model raises
:class:`nucleus.stream.InvalidMessage`. ``code`` is one of the protocol's error
codes (``docs/protocol.md`` §10) or the client's own, as in the browser client;
``message`` is for developers and never holds a token.
"""

from __future__ import annotations

from nucleus.stream import StreamError

__all__ = ["ClientError", "RequestFailed", "SendQueueFull", "StreamClosed", "SubscriptionRefused"]


class ClientError(StreamError):
    """A client operation failed; ``code`` says why in one word, ``message`` in a sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


class StreamClosed(ClientError):
    """
    The stream is closed: by :meth:`Stream.close` or the server's 1000
    (``closed``), or for good after a refusal: ``unauthorized`` (HTTP 401/403),
    ``policy_violation`` (1008), ``token_revoked`` (4003), ``token_expired``
    (4001 with no ``get_token``), ``connect_failed`` (a URL or token that cannot
    be used).
    """


class SubscriptionRefused(ClientError):
    """The server refused to subscribe this client to ``channel``; it is not retried."""

    def __init__(self, code: str, message: str, channel: str) -> None:
        super().__init__(code, message)
        self.channel = channel


class RequestFailed(ClientError):
    """
    A request got no answer: the handler refused it (its ``RequestError``
    code, ``invalid``, ``rate_limited``, ``not_found``, ``internal``), or the
    client gave up: ``timeout``, ``offline`` (not connected, and asked not to
    wait), ``disconnected`` (the link dropped after sending it: the server may
    or may not have acted) or ``closed``.
    """


class SendQueueFull(ClientError):
    """``send()`` while not open and ``max_queue`` messages are already waiting."""
