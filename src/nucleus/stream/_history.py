"""
Per-room offsets and bounded history: the pure core of missed-message recovery.

Each room has an *epoch* (a random token that changes whenever its history is
lost) and a monotonic *offset* (1, 2, 3... with no gaps). A client that knows
``(epoch, offset)`` can be given exactly the messages it missed, or be told
plainly that they are gone. No I/O; the clock is injected.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ._errors import ConfigError
from ._message import SocketMessage

__all__ = ["HistoryPolicy", "Publication", "Recovery", "RoomLog"]


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """
    How much of a room's past is kept for recovery: the last ``size`` messages,
    none older than ``ttl`` seconds. ``size=0`` turns history (and recovery) off.
    """

    size: int = 100
    ttl: float = 300.0

    def __post_init__(self) -> None:
        if not (self.size >= 0 and self.ttl >= 0):  # also refuses NaN
            raise ConfigError(f"history size and ttl must be >= 0, got {self.size}, {self.ttl}")


@dataclass(frozen=True, slots=True)
class Publication:
    """
    One room broadcast, numbered: what a :class:`Backend` hands to every node.

    ``offset`` counts the room's broadcasts (1, 2, 3... with no gaps within
    the room's epoch); ``event`` is the name given to ``Channel.broadcast``,
    ``None`` for ``hub.broadcast_to_room``.
    """

    room: str
    offset: int
    message: SocketMessage
    event: str | None = None


@dataclass(frozen=True, slots=True)
class Recovery:
    """
    The answer to "what did I miss in this room since (epoch, offset)?".

    ``epoch``/``offset`` are the room's current position *before* the replay;
    ``publications`` are the missed messages in order when ``recovered``.
    """

    epoch: str
    offset: int
    recovered: bool
    publications: tuple[Publication, ...] = ()


def new_epoch() -> str:
    return secrets.token_hex(4)


class RoomLog:
    """One room's epoch, last offset and bounded history."""

    __slots__ = ("_clock", "_entries", "epoch", "offset", "policy", "touched")

    def __init__(self, policy: HistoryPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.epoch = new_epoch()
        self.offset = 0
        self._clock = clock
        self._entries: deque[tuple[float, Publication]] = deque()
        self.touched = clock()

    def touch(self) -> None:
        """Note that a client may resume from the current position from now on."""
        self.touched = self._clock()

    def append(self, message: SocketMessage, room: str, event: str | None) -> Publication:
        """Number the message and remember it (within the policy's bounds)."""
        self.offset += 1
        publication = Publication(room, self.offset, message, event)
        now = self.touched = self._clock()
        if self.policy.size:
            self._entries.append((now, publication))
            self._trim(now)
        else:
            # Nothing may be kept across an unkept message: recovery must never
            # jump over an offset it does not hold.
            self._entries.clear()
        return publication

    def set_policy(self, policy: HistoryPolicy) -> None:
        """Apply a new policy now (a smaller one trims at once)."""
        self.policy = policy
        self._trim(self._clock())

    def _trim(self, now: float) -> None:
        entries = self._entries
        while len(entries) > self.policy.size:
            entries.popleft()
        self._expire(now)

    def _expire(self, now: float) -> None:
        horizon = now - self.policy.ttl
        entries = self._entries
        while entries and entries[0][0] < horizon:
            entries.popleft()

    def is_idle(self) -> bool:
        """
        True when the log can be dropped: nothing kept, and no client could still
        resume from its position (a new log gets a new epoch).
        """
        now = self._clock()
        self._expire(now)
        return not self._entries and now - self.touched > self.policy.ttl

    def recent(self, limit: int) -> tuple[Publication, ...]:
        """The last ``limit`` (or fewer) publications still kept, oldest first."""
        self._expire(self._clock())
        entries = self._entries
        start = max(0, len(entries) - limit)
        return tuple(entries[i][1] for i in range(start, len(entries)))

    def since(self, epoch: str | None, offset: int | None) -> Recovery:
        """Everything after ``offset`` in ``epoch``, if the history still holds it all."""
        if epoch is None or offset is None:
            return Recovery(self.epoch, self.offset, recovered=True)
        if epoch != self.epoch or offset > self.offset or offset < 0:
            return Recovery(self.epoch, self.offset, recovered=False)
        if offset == self.offset:
            return Recovery(self.epoch, self.offset, recovered=True)
        self._expire(self._clock())
        entries = self._entries
        if not entries or entries[0][1].offset > offset + 1:
            return Recovery(self.epoch, self.offset, recovered=False)
        first = entries[0][1].offset
        missed = tuple(entry[1] for entry in list(entries)[offset + 1 - first :])
        return Recovery(self.epoch, self.offset, recovered=True, publications=missed)
