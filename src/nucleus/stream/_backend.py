"""
The backend: what a hub shares with the other nodes of a cluster.

A :class:`Backend` numbers each room broadcast, keeps the room's history and
hands the numbered :class:`Publication` back to every node's hub through
:class:`Delivery`, including the node that published it. The hub never fans out
a broadcast itself before the backend has numbered it, so every node sees one
order per room. It also carries what must reach a socket or a user on another
node (``send_to``, ``disconnect``, ``identify``) and keeps the cluster-wide
indexes behind ``online_users``, ``room_members``, ``room_users``, ``rooms_of``
and ``connection_count``.

:class:`MemoryBackend` is the embedded default: one node, no I/O, delivery in
the same call; its indexes are the hub's own registry. ``RedisBackend``
implements the same interface across processes and
machines, with no change to handler code.

Every method may suspend (the hub is exact under a backend that yields at
every await); every failure is a :class:`~nucleus.stream.BackendError`.
"""

from __future__ import annotations

import abc
import os
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

from ._errors import ConfigError, SocketNotFound
from ._history import HistoryPolicy, Publication, Recovery, RoomLog
from ._message import SocketMessage

__all__ = ["BACKEND_ENV", "Backend", "Delivery", "MemoryBackend", "backend_from_url"]

#: Environment variable naming the backend when the code does not (``redis://...``).
BACKEND_ENV = "NUCLEUS_BACKEND"


class Delivery(Protocol):
    """The hub's side of the backend: act on the sockets of this node. Never awaits."""

    def deliver_room(self, publication: Publication, exclude: frozenset[str] | None) -> None:
        """A numbered publication for the room's members on this node."""

    def deliver_user(self, user_id: str, message: SocketMessage) -> None:
        """A direct message for every socket of ``user_id`` on this node."""

    def deliver_socket(self, socket_id: str, message: SocketMessage) -> bool:
        """A direct message for one socket of this node; False if it is not here."""

    def close_socket(self, socket_id: str, code: int | None, reason: str) -> bool:
        """Close one socket of this node; False if it is not here."""

    def close_user(self, user_id: str, code: int, reason: str) -> int:
        """Close every socket of ``user_id`` on this node; return how many."""

    def identify_socket(self, socket_id: str, user_id: str) -> bool:
        """Bind ``user_id`` to a socket of this node (asked by another node)."""

    def room_reset(self, room: str, recovery: Recovery) -> None:
        """
        This node missed publications of ``room`` that history no longer holds:
        tell its members (library clients report a ``gap``) and go on from
        ``recovery``'s position.
        """

    def presence_changed(self, room: str, user_id: str, present: bool) -> None:
        """
        ``user_id`` now has a socket in ``room`` on some node (``present``), or
        no longer has one on any node: tell this node's presence watchers.
        Called once per change of the cluster-wide answer of ``room_users``.
        """

    def presence_stale(self, room: str) -> None:
        """Changes of ``room``'s presence may have been missed: resend the state."""

    def local_members(self, room: str) -> Mapping[str, object]:
        """The room's sockets on this node."""

    def local_rooms(self, socket_id: str) -> frozenset[str] | None:
        """A socket's rooms, or None if it is not on this node."""

    def local_users(self) -> list[str]:
        """Sorted ids of users with a socket on this node."""

    def local_room_users(self, room: str) -> list[str]:
        """Sorted ids of users with a socket in ``room`` on this node."""

    def local_user_in_room(self, user_id: str, room: str) -> int:
        """How many sockets of ``user_id`` on this node are in ``room``."""

    def local_count(self) -> int:
        """Open sockets on this node."""

    def local_sockets(self) -> list[str]:
        """Ids of the sockets open on this node."""

    def local_state(self) -> list[tuple[str, str | None, frozenset[str]]]:
        """Every socket of this node with its user and rooms."""


class Backend(abc.ABC):
    """
    Pub/sub, history and the cluster's indexes, behind one small interface.

    Apps pick one (``StreamServer(backend=...)``: :class:`MemoryBackend` by
    default, :class:`RedisBackend` for several processes) and never call it:
    the hub does. Subclass it only to put the cluster on another broker.
    Implementations raise :class:`~nucleus.stream.BackendError` (for an
    unreachable broker, :class:`~nucleus.stream.BackendUnavailable`) when an
    operation could not be done; they never drop a message silently.
    """

    #: True when every socket of the cluster is on this node (no broker).
    single_node: bool = False

    def __init__(self, history: HistoryPolicy | None = None) -> None:
        #: The history policy of rooms no rule of the hub names.
        self.default_policy = history or HistoryPolicy()
        #: Told ``(operation, seconds, failed)`` of each call that reaches a broker.
        self.observe: Callable[[str, float, bool], None] | None = None

    @abc.abstractmethod
    async def start(self, delivery: Delivery) -> None:
        """Begin delivering to ``delivery``."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop delivering, forget this node's sockets, release resources; idempotent."""

    # rooms

    @abc.abstractmethod
    async def publish(
        self,
        room: str,
        message: SocketMessage,
        event: str | None,
        exclude: frozenset[str] | None,
        policy: HistoryPolicy,
    ) -> int:
        """
        Number ``message`` in ``room``, keep it as ``policy`` says, deliver it
        on every node but to the ``exclude``d socket ids; return its offset.
        """

    @abc.abstractmethod
    async def room_active(self, room: str, policy: HistoryPolicy) -> None:
        """
        A socket of this node joins ``room``: return once every publication
        numbered from now on will be delivered here. Called for every join;
        cheap when the room is already active.
        """

    @abc.abstractmethod
    async def room_inactive(self, room: str) -> None:
        """The last socket of this node left ``room``."""

    @abc.abstractmethod
    async def recover(
        self, room: str, epoch: str | None, offset: int | None, policy: HistoryPolicy
    ) -> Recovery:
        """The room's position, and what was published after ``(epoch, offset)``."""

    @abc.abstractmethod
    async def recent(
        self, room: str, limit: int, policy: HistoryPolicy
    ) -> tuple[Publication, ...]:
        """The last ``limit`` (or fewer) publications ``room``'s history keeps, oldest first."""

    # sockets and users anywhere

    @abc.abstractmethod
    async def publish_user(self, user_id: str, message: SocketMessage) -> None:
        """Deliver ``message`` to every socket of ``user_id`` on every node."""

    @abc.abstractmethod
    async def send_to_socket(self, socket_id: str, message: SocketMessage) -> None:
        """Deliver to a socket of another node; :class:`SocketNotFound` if open nowhere."""

    @abc.abstractmethod
    async def disconnect(self, socket_id: str, code: int | None, reason: str) -> None:
        """Close a socket of another node; :class:`SocketNotFound` if open nowhere."""

    @abc.abstractmethod
    async def disconnect_user(self, user_id: str, code: int, reason: str) -> int:
        """Close the sockets of ``user_id`` on the other nodes; return how many."""

    @abc.abstractmethod
    async def identify(self, socket_id: str, user_id: str) -> None:
        """Bind a user to a socket of another node; :class:`SocketNotFound` if open nowhere."""

    # the index: what this node tells the cluster

    @abc.abstractmethod
    async def socket_opened(self, socket_id: str) -> None:
        """A socket opened on this node."""

    @abc.abstractmethod
    async def socket_closed(
        self, socket_id: str, user_id: str | None, rooms: Collection[str]
    ) -> None:
        """A socket of this node is gone, with the rooms it was in."""

    @abc.abstractmethod
    async def user_bound(
        self, socket_id: str, user_id: str, previous: str | None, rooms: Collection[str]
    ) -> None:
        """``user_id`` now owns a socket of this node (``previous`` owned it before)."""

    @abc.abstractmethod
    async def socket_joined(self, socket_id: str, room: str, user_id: str | None) -> None:
        """A socket of this node is now in ``room``."""

    @abc.abstractmethod
    async def socket_left(self, socket_id: str, room: str, user_id: str | None) -> None:
        """A socket of this node left ``room``."""

    # cluster-wide queries

    @abc.abstractmethod
    async def online_users(self) -> list[str]:
        """Sorted ids of users with at least one open socket on any node."""

    @abc.abstractmethod
    async def room_members(self, room: str) -> list[str]:
        """Ids of the sockets in ``room`` on any node, in join order."""

    @abc.abstractmethod
    async def room_users(self, room: str) -> list[str]:
        """Sorted ids of users with at least one socket in ``room`` on any node."""

    @abc.abstractmethod
    async def rooms_of(self, socket_id: str) -> frozenset[str]:
        """A socket's rooms, on any node; :class:`SocketNotFound` if open nowhere."""

    @abc.abstractmethod
    async def connection_count(self) -> int:
        """Open sockets on every node."""

    # operations

    def healthy(self) -> bool:
        """False while the broker is unreachable or its link stopped answering."""
        return True

    async def housekeeping(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Drop state that has expired; the server calls this periodically."""


class MemoryBackend(Backend):
    """
    The embedded, single-node backend. Nothing leaves the process.

    Every method completes without suspending; the indexes are the hub's
    registry, so queries cost what a dict lookup costs.
    """

    single_node = True

    def __init__(
        self,
        history: HistoryPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(history)
        self._clock = clock
        self._logs: dict[str, RoomLog] = {}
        self._active: set[str] = set()
        self._delivery: Delivery | None = None

    @property
    def delivery(self) -> Delivery:
        """The hub it delivers to; :class:`ConfigError` before :meth:`start`."""
        if self._delivery is None:
            raise ConfigError("the backend is not started (the server starts it)")
        return self._delivery

    async def start(self, delivery: Delivery) -> None:
        self._delivery = delivery

    async def aclose(self) -> None:
        self._delivery = None

    def _log(self, room: str, policy: HistoryPolicy) -> RoomLog:
        log = self._logs.get(room)
        if log is None:
            log = self._logs[room] = RoomLog(policy, self._clock)
        elif log.policy != policy:
            log.set_policy(policy)
        return log

    async def publish(
        self,
        room: str,
        message: SocketMessage,
        event: str | None,
        exclude: frozenset[str] | None,
        policy: HistoryPolicy,
    ) -> int:
        active = room in self._active
        if not active and room not in self._logs and not policy.size:
            return 0  # nobody listens and nothing is kept: don't allocate a log
        publication = self._log(room, policy).append(message, room, event)
        if active and self._delivery is not None:
            self._delivery.deliver_room(publication, exclude)
        return publication.offset  # an unwatched room's log goes at the next sweep

    async def room_active(self, room: str, policy: HistoryPolicy) -> None:
        self._active.add(room)
        self._log(room, policy)

    async def room_inactive(self, room: str) -> None:
        self._active.discard(room)
        log = self._logs.get(room)
        if log is not None:
            log.touch()  # its last members may come back and resume from here

    async def recover(
        self, room: str, epoch: str | None, offset: int | None, policy: HistoryPolicy
    ) -> Recovery:
        return self._log(room, policy).since(epoch, offset)

    async def recent(
        self, room: str, limit: int, policy: HistoryPolicy
    ) -> tuple[Publication, ...]:
        log = self._logs.get(room)
        if log is None:
            return ()
        if log.policy != policy:
            log.set_policy(policy)
        return log.recent(limit)

    async def publish_user(self, user_id: str, message: SocketMessage) -> None:
        if self._delivery is not None:
            self._delivery.deliver_user(user_id, message)

    # One node: a socket that is not on it is open nowhere.

    async def send_to_socket(self, socket_id: str, message: SocketMessage) -> None:
        raise _not_found(socket_id)

    async def disconnect(self, socket_id: str, code: int | None, reason: str) -> None:
        raise _not_found(socket_id)

    async def disconnect_user(self, user_id: str, code: int, reason: str) -> int:
        return 0

    async def identify(self, socket_id: str, user_id: str) -> None:
        raise _not_found(socket_id)

    async def socket_opened(self, socket_id: str) -> None:
        pass

    async def socket_closed(
        self, socket_id: str, user_id: str | None, rooms: Collection[str]
    ) -> None:
        if user_id is not None:
            for room in rooms:
                self._presence(room, user_id, False)

    async def user_bound(
        self, socket_id: str, user_id: str, previous: str | None, rooms: Collection[str]
    ) -> None:
        for room in rooms:
            if previous is not None:
                self._presence(room, previous, False)
            self._presence(room, user_id, True)

    async def socket_joined(self, socket_id: str, room: str, user_id: str | None) -> None:
        if user_id is not None:
            self._presence(room, user_id, True)

    async def socket_left(self, socket_id: str, room: str, user_id: str | None) -> None:
        if user_id is not None:
            self._presence(room, user_id, False)

    def _presence(self, room: str, user_id: str, arrived: bool) -> None:
        """
        A socket of ``user_id`` arrived in ``room`` or left it (the hub's
        registry already says so): the user arrived with its first socket
        there and left with its last.
        """
        delivery = self._delivery
        if delivery is not None:
            sockets = delivery.local_user_in_room(user_id, room)
            if sockets == (1 if arrived else 0):
                delivery.presence_changed(room, user_id, arrived)

    async def online_users(self) -> list[str]:
        return self.delivery.local_users()

    async def room_members(self, room: str) -> list[str]:
        return list(self.delivery.local_members(room))

    async def room_users(self, room: str) -> list[str]:
        return self.delivery.local_room_users(room)

    async def rooms_of(self, socket_id: str) -> frozenset[str]:
        rooms = self.delivery.local_rooms(socket_id)
        if rooms is None:
            raise _not_found(socket_id)
        return rooms

    async def connection_count(self) -> int:
        return self.delivery.local_count()

    async def housekeeping(self) -> None:
        self.sweep()

    def sweep(self) -> None:
        """Drop logs of rooms with no local member whose history has expired."""
        for room in [room for room in self._logs if room not in self._active]:
            if self._logs[room].is_idle():
                del self._logs[room]

    def room_logs(self) -> int:
        """How many room logs are held (for leak tests and metrics)."""
        return len(self._logs)


def _not_found(socket_id: str) -> SocketNotFound:
    return SocketNotFound(
        f"no open socket {socket_id!r}; it may have disconnected (on_disconnect tells you when)"
    )


#: ``RedisBackend`` options a backend URL may carry as query parameters, so that
#: ``$NUCLEUS_BACKEND`` alone configures a node: ``redis://h:6379/0?prefix=app&timeout=2``.
REDIS_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "prefix": str, "timeout": float, "presence_timeout": float, "probe_interval": float,
    "batch_window": float,
}


def _redis_options(spec: str) -> tuple[str, dict[str, Any]]:
    """Split the backend's own query parameters from those meant for the Redis client."""
    base, _, query = spec.partition("?")
    kept: list[tuple[str, str]] = []
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        convert = REDIS_URL_OPTIONS.get(name)
        if convert is None:
            kept.append((name, value))
            continue
        if name in options:
            raise ConfigError(f"a backend URL names at most one {name}=")
        try:
            options[name] = convert(value)
        except ValueError:
            raise ConfigError(f"invalid {name}={value!r} in the backend URL") from None
    return base + (f"?{urlencode(kept)}" if kept else ""), options


def backend_from_url(url: str | None = None) -> Backend:
    """
    The backend a URL names: ``memory://`` (the default) or ``redis://host:port/db``
    (also ``rediss://`` and ``unix://``). Without ``url``, ``$NUCLEUS_BACKEND``.

    A Redis URL may set ``prefix``, ``timeout``, ``presence_timeout``,
    ``probe_interval`` and ``batch_window`` of the :class:`RedisBackend` as
    query parameters; the other parameters go to the Redis client.
    """
    spec = (url if url is not None else os.environ.get(BACKEND_ENV, "")).strip()
    if spec in ("", "memory", "memory://"):
        return MemoryBackend()
    scheme = spec.partition("://")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        from ._redis import RedisBackend

        spec, options = _redis_options(spec)
        return RedisBackend(spec, **options)
    raise ConfigError(
        f"unknown backend {spec!r}: use memory:// or redis://host:port/db "
        f"(from the backend= argument, --backend or ${BACKEND_ENV})"
    )

