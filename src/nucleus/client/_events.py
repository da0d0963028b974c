"""
What a stream tells its application besides the messages themselves: its
state, a message's whereabouts, gaps and errors. Plain values, no behaviour,
named as the browser client names them (``stream.js``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ErrorInfo", "Gap", "Meta", "State"]


class State(enum.StrEnum):
    """
    ``connecting`` (the first attempt) → ``open`` → ``reconnecting`` (waiting
    or retrying, after any failure) → ``open`` … → ``closed`` (for good).
    """

    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Meta:
    """Where a message comes from: its channel and offset (``None`` for a direct message)."""

    channel: str | None = None
    event: str | None = None
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class Gap:
    """
    Messages of ``channel`` were missed for good (the client was away longer
    than the history, or the history started over); from ``epoch``/``offset``
    on, delivery is complete again. Reload what you show from elsewhere.
    """

    channel: str
    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """
    An error for ``stream.on("error")`` listeners: the server's (``forbidden``,
    ``bad_request``, ``invalid``, ``rate_limited``, ``unauthorized``,
    ``not_found``, ``unavailable``) or the client's (``bad_frame``,
    ``unsupported_protocol``, ``policy_violation``, ``message_too_big``,
    ``token_expired``, ``token_revoked``, ``token_unavailable``,
    ``connect_failed``). ``id``: the frame it answers; ``channel``: a
    subscription to it was refused; ``presence``: watching it was refused.
    """

    code: str
    message: str
    id: int | None = None
    channel: str | None = None
    presence: str | None = None
