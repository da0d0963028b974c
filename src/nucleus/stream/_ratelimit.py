"""
Inbound message rate limits: token buckets per socket and per user, and strikes.

Pure bookkeeping with an injected clock: every call takes ``now`` (seconds, from
one monotonic clock such as ``loop.time()``); nothing here reads the clock,
sleeps, sends or starts a task. The socket loop calls :meth:`RateLimiter.check`
once per inbound message and acts on the :class:`Verdict`:

* ``ALLOW``  handle the message;
* ``REJECT`` drop it and answer an error frame: the client is over its budget;
* ``CLOSE``  sustained abuse: close with :data:`RATE_LIMITED` (4029), then call
  :meth:`RateLimiter.forget_socket` as for any closed socket. Not 1008 (policy
  violation): clients take that as final, and a client over its budget may come
  back once it slows down.

Must never grow with traffic: memory is bounded by the open sockets and their
users, and a user's bucket goes with the user's last socket. A client that
disconnects and reconnects starts with full buckets, so limiting how fast one
address may open sockets belongs to the handshake, not here.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final

from ._errors import ConfigError

__all__ = ["RATE_LIMITED", "RateLimit", "RateLimiter", "SocketBudget", "TokenBucket", "Verdict"]

#: Close code for a socket that kept sending past its budget: back off, then
#: reconnect (4000-4999 are the application's, RFC 6455 §7.4.2; 29 as in HTTP 429).
RATE_LIMITED: Final = 4029


@dataclass(frozen=True, slots=True)
class RateLimit:
    """
    How many messages a socket, and a user across all their sockets, may send.

    ======================  =======  ==================================================
    setting                 default  meaning
    ======================  =======  ==================================================
    ``rate``                50.0     messages per second a socket may sustain
    ``burst``               200      messages a socket may send at once after a pause
    ``per_user_rate``       100.0    messages per second shared by a user's sockets
    ``per_user_burst``      400      burst shared by a user's sockets
    ``strikes``             20       rejected messages within ``strike_window``...
    ``strike_window``       10.0     ...seconds that close the socket with 4029
    ======================  =======  ==================================================

    ``per_user_rate`` and ``per_user_burst`` are both set or both ``None`` (no
    per-user limit); anonymous sockets only have their own bucket.

    Why an app driven by people never meets them: a person types, clicks or
    drags a few times a second, and chat, presence and typing indicators stay
    under 10 messages a second; a page that reconnects and re-subscribes sends
    a few dozen frames at once, well inside the burst; four busy tabs of one user
    fit the per-user budget. What does meet them is a script in a loop, or a
    client that streams pointer or scroll events at display rate (60 Hz and
    more, above ``rate``): throttle those to 30 Hz on the client, or raise
    ``rate``. One overflow costs the client a rejected message; only a client
    that keeps sending after ``strikes`` error frames is closed.
    """

    rate: float = 50.0
    burst: int = 200
    per_user_rate: float | None = 100.0
    per_user_burst: int | None = 400
    strikes: int = 20
    strike_window: float = 10.0

    def __post_init__(self) -> None:
        _require_rate("rate", self.rate)
        _require_count("burst", self.burst)
        if (self.per_user_rate is None) != (self.per_user_burst is None):
            raise ConfigError("per_user_rate and per_user_burst must both be set, or both None")
        if self.per_user_rate is not None:
            _require_rate("per_user_rate", self.per_user_rate)
        if self.per_user_burst is not None:
            _require_count("per_user_burst", self.per_user_burst)
        _require_count("strikes", self.strikes)
        _require_rate("strike_window", self.strike_window)


class Verdict(Enum):
    """What the socket loop does with one inbound message."""

    ALLOW = "allow"
    REJECT = "reject"
    CLOSE = "close"


class TokenBucket:
    """
    ``capacity`` tokens, refilled at ``rate`` per second; a message takes ``cost``.

    Starts full. Time that runs backwards refills nothing.
    """

    __slots__ = ("_tokens", "_updated", "capacity", "rate")

    def __init__(self, rate: float, capacity: float) -> None:
        _require_rate("rate", rate)
        _require_rate("capacity", capacity)
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._tokens = self.capacity
        self._updated: float | None = None

    def available(self, now: float) -> float:
        """Tokens left at ``now``."""
        self._refill(now)
        return self._tokens

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if there are that many; whether it did."""
        _require_cost(cost)
        self._refill(now)
        if self._tokens < cost:
            return False
        self._tokens -= cost
        return True

    def _refill(self, now: float) -> None:
        last = self._updated
        if last is None or now > last:
            if last is not None:
                self._tokens = min(self.capacity, self._tokens + (now - last) * self.rate)
            self._updated = now

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, capacity={self.capacity}, tokens={self._tokens:g})"


class SocketBudget:
    """
    One socket's bucket, its user's shared bucket, and its recent strikes.

    Got from :meth:`RateLimiter.for_socket`; not to be used after
    :meth:`RateLimiter.forget_socket`.
    """

    __slots__ = (
        "_bucket",
        "_closing",
        "_strikes",
        "_user_bucket",
        "_window",
        "socket_id",
        "user_id",
    )

    def __init__(
        self,
        socket_id: str,
        user_id: str | None,
        limit: RateLimit,
        user_bucket: TokenBucket | None,
    ) -> None:
        self.socket_id = socket_id
        self.user_id = user_id
        self._bucket = TokenBucket(limit.rate, limit.burst)
        self._user_bucket = user_bucket
        # Times of the last ``strikes`` rejections: bounded whatever the traffic.
        self._strikes: deque[float] = deque(maxlen=limit.strikes)
        self._window = limit.strike_window
        self._closing = False

    def check(self, now: float, cost: float = 1.0) -> Verdict:
        """The verdict on one inbound message costing ``cost`` at ``now``."""
        _require_cost(cost)
        if self._closing:
            return Verdict.CLOSE
        user = self._user_bucket
        # Take from both buckets or from neither: a message refused by one
        # budget must not spend the other.
        if self._bucket.available(now) >= cost and (user is None or user.available(now) >= cost):
            self._bucket.take(now, cost)
            if user is not None:
                user.take(now, cost)
            return Verdict.ALLOW
        strikes = self._strikes
        strikes.append(now)
        if len(strikes) == strikes.maxlen and now - strikes[0] <= self._window:
            self._closing = True
            return Verdict.CLOSE
        return Verdict.REJECT


class _UserEntry:
    __slots__ = ("bucket", "sockets")

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self.sockets = 0


class RateLimiter:
    """
    Owns every bucket: one per open socket, one per user with open sockets.

    Single-threaded, like the event loop that calls it.
    """

    __slots__ = ("_sockets", "_users", "limit")

    def __init__(self, limit: RateLimit | None = None) -> None:
        self.limit = RateLimit() if limit is None else limit
        self._sockets: dict[str, SocketBudget] = {}
        self._users: dict[str, _UserEntry] = {}

    def for_socket(self, socket_id: str, user_id: str | None) -> SocketBudget:
        """
        The budget of ``socket_id``, created on first use.

        A socket that authenticates later (``user_id`` changes) moves to its new
        user's shared bucket and keeps its own.
        """
        budget = self._sockets.get(socket_id)
        if budget is None:
            budget = SocketBudget(socket_id, user_id, self.limit, self._attach(user_id))
            self._sockets[socket_id] = budget
        elif budget.user_id != user_id:
            self._detach(budget.user_id)
            budget._user_bucket = self._attach(user_id)
            budget.user_id = user_id
        return budget

    def check(self, socket_id: str, user_id: str | None, now: float, cost: float = 1.0) -> Verdict:
        """The verdict on one message from ``socket_id`` (of ``user_id``) at ``now``."""
        return self.for_socket(socket_id, user_id).check(now, cost)

    def forget_socket(self, socket_id: str) -> None:
        """Drop the socket's budget, and its user's when it was their last socket."""
        budget = self._sockets.pop(socket_id, None)
        if budget is not None:
            self._detach(budget.user_id)

    @property
    def socket_count(self) -> int:
        """Sockets with a budget."""
        return len(self._sockets)

    @property
    def user_count(self) -> int:
        """Users with a shared bucket."""
        return len(self._users)

    def _attach(self, user_id: str | None) -> TokenBucket | None:
        limit = self.limit
        if user_id is None or limit.per_user_rate is None or limit.per_user_burst is None:
            return None
        entry = self._users.get(user_id)
        if entry is None:
            entry = self._users[user_id] = _UserEntry(
                TokenBucket(limit.per_user_rate, limit.per_user_burst)
            )
        entry.sockets += 1
        return entry.bucket

    def _detach(self, user_id: str | None) -> None:
        if user_id is None or (entry := self._users.get(user_id)) is None:
            return
        entry.sockets -= 1
        if entry.sockets <= 0:
            del self._users[user_id]

    def __repr__(self) -> str:
        return f"RateLimiter(sockets={len(self._sockets)}, users={len(self._users)})"


def _require_rate(name: str, value: object) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{name} must be a finite number above 0")


def _require_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a whole number, 1 or more")


def _require_cost(cost: float) -> None:
    if not cost >= 0 or not math.isfinite(cost):
        raise ConfigError("cost must be a finite number, 0 or more")
