"""
Nucleus Stream's Python client: the browser client's guarantees, for bots,
workers, gateways and tests.

    from nucleus.client import connect

    async with connect("ws://127.0.0.1:3000/ws/chat", token=jwt) as stream:
        chat = await stream.subscribe("chat")
        async for data in chat:
            await stream.send({"text": f"seen: {data}"})

Every message of a subscribed channel arrives exactly once and in order
across reconnects, within the server's history window; beyond it the stream
reports a ``gap`` (``stream.on("gap", ...)``). It speaks ``nucleus.v1``
(``docs/protocol.md``) over the websockets library, with the server's own
frame definitions; ``_protocol`` is its Sans-I/O core.
"""

from nucleus.stream import InvalidMessage, StreamError

from ._connect import connect
from ._errors import (
    ClientError,
    RequestFailed,
    SendQueueFull,
    StreamClosed,
    SubscriptionRefused,
)
from ._events import ErrorInfo, Gap, Meta, State
from ._stream import Stream
from ._subscription import DirectMessages, Subscription

__all__ = [
    "ClientError",
    "DirectMessages",
    "ErrorInfo",
    "Gap",
    "InvalidMessage",
    "Meta",
    "RequestFailed",
    "SendQueueFull",
    "State",
    "Stream",
    "StreamClosed",
    "StreamError",
    "Subscription",
    "SubscriptionRefused",
    "connect",
]
