"""
When to try again, when to stop, when to renew the token: the browser
client's rules (``docs/protocol.md`` §7-9) as pure functions of their inputs.
No clock and no randomness of their own: both are passed in.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ._events import ErrorInfo

__all__ = [
    "AfterClose",
    "after_close",
    "backoff",
    "fits_subprotocol",
    "refresh_delay",
    "refresh_retry_delay",
    "token_expiry",
]

#: Close codes (RFC 6455 §7.4 and the protocol's own).
NORMAL: Final = 1000
GOING_AWAY: Final = 1001
POLICY_VIOLATION: Final = 1008
MESSAGE_TOO_BIG: Final = 1009
SERVICE_RESTART: Final = 1012
TOKEN_EXPIRED: Final = 4001
TOKEN_REVOKED: Final = 4003
RATE_LIMITED: Final = 4029


def backoff(attempt: int, min_delay: float, max_delay: float,
            random: Callable[[], float], at_least: float = 0.0) -> float:
    """
    Seconds before retry number ``attempt`` (0, 1, 2...): full jitter under the
    ceiling ``c = min(max_delay, min_delay * 2**attempt)``, so that clients a
    server dropped together do not come back together; ``at_least`` of ``c``
    whatever the draw (a rate-limited client waits ``random(c/2, c)``).
    """
    ceiling: float = min(max_delay, min_delay * 2.0 ** min(attempt, 64))
    return ceiling * (at_least + (1.0 - at_least) * random())


@dataclass(frozen=True, slots=True)
class AfterClose:
    """
    What a close code means for the client: stop for good (``final``), or retry,
    after the restart delay (``restart``) or the backoff, at least half of its
    ceiling when ``throttled``; ``error`` is reported either way.
    """

    final: bool = False
    restart: bool = False
    throttled: bool = False
    error: ErrorInfo | None = None


def after_close(code: int, reason: str, renewable: bool) -> AfterClose:
    """
    The client's action after the server closed with ``code`` (``renewable``:
    there is a ``get_token`` to get a new token with), as ``docs/protocol.md``
    §7 tabulates it. A code the table does not name is retried.
    """
    if code == NORMAL:
        return AfterClose(final=True)
    if code == POLICY_VIOLATION:
        return AfterClose(True, error=ErrorInfo(
            "policy_violation", reason or "the server refused this connection"))
    if code == TOKEN_REVOKED:
        return AfterClose(True, error=ErrorInfo("token_revoked", reason or "the token was revoked"))
    if code == TOKEN_EXPIRED and not renewable:
        return AfterClose(True, error=ErrorInfo(
            "token_expired", "the token expired and there is no get_token() to renew it"))
    if code == MESSAGE_TOO_BIG:
        return AfterClose(error=ErrorInfo("message_too_big", reason or "a message was too big"))
    if code == RATE_LIMITED:  # back off for real: never at once
        return AfterClose(throttled=True, error=ErrorInfo(
            "rate_limited", reason or "closed for sending too fast"))
    # A restarting server: its clients come back spread over the restart delay.
    return AfterClose(restart=code in (GOING_AWAY, SERVICE_RESTART))


def token_expiry(token: str | None) -> float | None:
    """
    A JWT's ``exp`` (seconds since the epoch), or ``None``. The payload is
    decoded, never verified: it only times the refresh.
    """
    if not token:
        return None
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


def refresh_delay(token: str | None, now: float, refresh_before: float) -> float | None:
    """
    Seconds until the token should be renewed: ``refresh_before`` ahead of its
    ``exp``, but at least half-way through what is left of its life, so that a
    short-lived token cannot cause a refresh loop. ``None``: it does not expire
    (or has expired; the server will close with 4001).
    """
    exp = token_expiry(token)
    if exp is None or exp <= now:
        return None
    left = exp - now
    return max(left - refresh_before, left / 2)


def refresh_retry_delay(token: str | None, now: float) -> float | None:
    """
    Seconds until a failed refresh (``get_token`` failed, or the server refused
    the new token) is tried again: a quarter of what is left of ``token`` (the
    one the server holds), between 1 and 30 s. ``None``: it has expired.
    """
    exp = token_expiry(token)
    if exp is None or exp <= now:
        return None
    return max(1.0, min(30.0, (exp - now) / 4))


_TCHARS: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def fits_subprotocol(token: str) -> bool:
    """Whether ``token`` can travel as a subprotocol: RFC 7230 ``tchar`` s only (JWTs do)."""
    return _TCHARS.fullmatch(token) is not None
