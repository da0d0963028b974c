"""
The backend: how broadcasts reach every node, and where room offsets live.

A :class:`Backend` numbers each room broadcast, keeps the room's history and
hands the numbered :class:`Publication` back to every node's hub through
:class:`Delivery`, including the node that published it. The hub never fans out
a broadcast itself before the backend has numbered it, so every node sees one
order per room.

:class:`MemoryBackend` is the embedded default: one node, no I/O, delivery in
the same call. A multi-node backend (Redis) implements the same interface and
needs no change to handler code.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from typing import Protocol

from ._history import HistoryPolicy, Publication, Recovery, RoomLog
from ._message import SocketMessage

__all__ = ["Backend", "Delivery", "MemoryBackend"]


class Delivery(Protocol):
    """The hub's side of the backend: deliver to the sockets on this node."""

    def deliver_room(self, publication: Publication, exclude: frozenset[str] | None) -> None: ...

    def deliver_user(self, user_id: str, message: SocketMessage) -> None: ...


class Backend(abc.ABC):
    """
    Pub/sub and history for rooms, and presence for users, across nodes.

    Implementations raise :class:`~nucleus.stream.BackendError` when a message
    could not be published; they never drop one silently.
    """

    @abc.abstractmethod
    async def start(self, delivery: Delivery) -> None:
        """Begin delivering publications to ``delivery``."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop delivering and release resources; idempotent."""

    @abc.abstractmethod
    async def publish(
        self,
        room: str,
        message: SocketMessage,
        event: str | None = None,
        exclude: frozenset[str] | None = None,
    ) -> int:
        """
        Number ``message`` in ``room``, store it, deliver it everywhere but to
        the ``exclude``d socket ids; return its offset.
        """

    @abc.abstractmethod
    async def publish_user(self, user_id: str, message: SocketMessage) -> None:
        """Deliver ``message`` to every socket of ``user_id`` on every node."""

    @abc.abstractmethod
    async def room_active(self, room: str, policy: HistoryPolicy | None) -> None:
        """The first socket on this node joined ``room``: start receiving it."""

    @abc.abstractmethod
    async def room_inactive(self, room: str) -> None:
        """The last socket on this node left ``room``."""

    @abc.abstractmethod
    async def recover(self, room: str, epoch: str | None, offset: int | None) -> Recovery:
        """The room's position, and what was published after ``(epoch, offset)``."""

    @abc.abstractmethod
    async def user_online(self, user_id: str) -> None:
        """``user_id`` has its first socket on this node."""

    @abc.abstractmethod
    async def user_offline(self, user_id: str) -> None:
        """``user_id`` has no socket left on this node."""

    @abc.abstractmethod
    async def online_users(self) -> list[str]:
        """Sorted ids of users with at least one open socket on any node."""

    async def housekeeping(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Drop state that has expired; the server calls this periodically."""


class MemoryBackend(Backend):
    """
    The embedded, single-node backend. Nothing leaves the process.

    Every method completes without suspending, which makes a join and its
    history replay atomic with respect to broadcasts.
    """

    def __init__(
        self,
        history: HistoryPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default_policy = history or HistoryPolicy()
        self._clock = clock
        self._logs: dict[str, RoomLog] = {}
        self._active: set[str] = set()
        self._online: set[str] = set()
        self._delivery: Delivery | None = None

    async def start(self, delivery: Delivery) -> None:
        self._delivery = delivery

    async def aclose(self) -> None:
        self._delivery = None

    def _log(self, room: str) -> RoomLog:
        log = self._logs.get(room)
        if log is None:
            log = self._logs[room] = RoomLog(self.default_policy, self._clock)
        return log

    async def publish(
        self,
        room: str,
        message: SocketMessage,
        event: str | None = None,
        exclude: frozenset[str] | None = None,
    ) -> int:
        active = room in self._active
        if not active and room not in self._logs and not self.default_policy.size:
            return 0  # nobody listens and nothing is kept: don't allocate a log
        publication = self._log(room).append(message, room, event)
        if active and self._delivery is not None:
            self._delivery.deliver_room(publication, exclude)
        return publication.offset  # an unwatched room's log goes at the next sweep

    async def publish_user(self, user_id: str, message: SocketMessage) -> None:
        if self._delivery is not None:
            self._delivery.deliver_user(user_id, message)

    async def room_active(self, room: str, policy: HistoryPolicy | None) -> None:
        self._active.add(room)
        log = self._log(room)
        if policy is not None and policy != log.policy:
            log.set_policy(policy)

    async def room_inactive(self, room: str) -> None:
        self._active.discard(room)
        log = self._logs.get(room)
        if log is not None:
            log.touch()  # its last members may come back and resume from here

    async def recover(self, room: str, epoch: str | None, offset: int | None) -> Recovery:
        return self._log(room).since(epoch, offset)

    async def user_online(self, user_id: str) -> None:
        self._online.add(user_id)

    async def user_offline(self, user_id: str) -> None:
        self._online.discard(user_id)

    async def online_users(self) -> list[str]:
        return sorted(self._online)

    async def housekeeping(self) -> None:
        self.sweep()

    def sweep(self) -> None:
        """Drop logs of rooms with no local member whose history has expired."""
        for room in [room for room, log in self._logs.items() if room not in self._active]:
            if self._logs[room].is_idle():
                del self._logs[room]

    def room_logs(self) -> int:
        """How many room logs are held (for leak tests and metrics)."""
        return len(self._logs)
