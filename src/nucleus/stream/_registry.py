"""
Who is connected, which rooms they are in, and which user owns which sockets.

Pure bookkeeping for one node: no I/O, no awaits, no clocks. The hub owns one
:class:`Registry`; front doors never touch it directly. Every method leaves the
four indexes consistent, and removing a socket removes every trace of it, so a
server that has seen a million connections holds nothing for the closed ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from ._errors import SocketNotFound

__all__ = ["Departure", "Registry"]


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


S = TypeVar("S", bound=_Identified)

_EMPTY: Mapping[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Departure:
    """What removing a socket changed: rooms left empty, and whether its user went offline."""

    rooms: frozenset[str]
    emptied_rooms: frozenset[str]
    user_id: str | None
    user_offline: bool


class Registry(Generic[S]):
    """Sockets by id, room members, user sockets, and each socket's rooms and user."""

    __slots__ = ("_memberships", "_owners", "_rooms", "_sockets", "_users")

    def __init__(self) -> None:
        self._sockets: dict[str, S] = {}
        self._rooms: dict[str, dict[str, S]] = {}
        self._users: dict[str, dict[str, S]] = {}
        self._memberships: dict[str, set[str]] = {}
        self._owners: dict[str, str] = {}

    # sockets

    def add(self, socket: S) -> None:
        """Register a newly opened socket."""
        if socket.id in self._sockets:
            raise ValueError(f"socket id {socket.id!r} is already registered")
        self._sockets[socket.id] = socket

    def get(self, socket_id: str) -> S:
        """The socket with this id; :class:`SocketNotFound` if it is not open here."""
        try:
            return self._sockets[socket_id]
        except KeyError:
            raise SocketNotFound(
                f"no open socket {socket_id!r} on this node; it may have disconnected "
                "(on_disconnect tells you when)"
            ) from None

    def find(self, socket_id: str) -> S | None:
        """The socket with this id, or None if it is not open here."""
        return self._sockets.get(socket_id)

    def ids(self) -> list[str]:
        return list(self._sockets)

    def snapshot(self) -> list[tuple[str, str | None, frozenset[str]]]:
        """Every socket with its user and rooms."""
        return [
            (socket_id, self._owners.get(socket_id),
             frozenset(self._memberships.get(socket_id, ())))
            for socket_id in self._sockets
        ]

    def __contains__(self, socket_id: object) -> bool:
        return socket_id in self._sockets

    def __len__(self) -> int:
        return len(self._sockets)

    def remove(self, socket_id: str) -> Departure:
        """Forget a socket entirely: its rooms, its user binding, itself."""
        self._sockets.pop(socket_id, None)
        rooms = self._memberships.pop(socket_id, set())
        emptied = set()
        for room in rooms:
            members = self._rooms[room]
            del members[socket_id]
            if not members:
                del self._rooms[room]
                emptied.add(room)
        user_id = self._owners.pop(socket_id, None)
        offline = user_id is not None and self._unbind(user_id, socket_id)
        return Departure(frozenset(rooms), frozenset(emptied), user_id, offline)

    # rooms

    def join(self, socket_id: str, room: str) -> bool:
        """Add the socket to ``room``; True if it was not a member already."""
        socket = self.get(socket_id)
        members = self._rooms.setdefault(room, {})
        if socket_id in members:
            return False
        members[socket_id] = socket
        self._memberships.setdefault(socket_id, set()).add(room)
        return True

    def leave(self, socket_id: str, room: str) -> bool:
        """Remove the socket from ``room``; True if it was a member."""
        self.get(socket_id)
        members = self._rooms.get(room)
        if members is None or socket_id not in members:
            return False
        del members[socket_id]
        if not members:
            del self._rooms[room]
        joined = self._memberships[socket_id]
        joined.discard(room)
        if not joined:
            del self._memberships[socket_id]
        return True

    def members(self, room: str) -> Mapping[str, S]:
        """Live view of a room's sockets by id; do not hold it across an ``await``."""
        return self._rooms.get(room, _EMPTY)

    def rooms_of(self, socket_id: str) -> frozenset[str]:
        self.get(socket_id)
        return frozenset(self._memberships.get(socket_id, ()))

    def room_count(self) -> int:
        return len(self._rooms)

    # users

    def bind_user(self, socket_id: str, user_id: str) -> tuple[str | None, bool, bool]:
        """
        Bind ``user_id`` to the socket.

        Returns ``(previous_user, previous_went_offline, user_came_online)``.
        """
        socket = self.get(socket_id)
        previous = self._owners.get(socket_id)
        if previous == user_id:
            return previous, False, False
        went_offline = previous is not None and self._unbind(previous, socket_id)
        self._owners[socket_id] = user_id
        sockets = self._users.setdefault(user_id, {})
        came_online = not sockets
        sockets[socket_id] = socket
        return previous, went_offline, came_online

    def user_sockets(self, user_id: str) -> Mapping[str, S]:
        """Live view of a user's sockets on this node."""
        return self._users.get(user_id, _EMPTY)

    def users(self) -> list[str]:
        """Sorted ids of users with at least one socket here."""
        return sorted(self._users)

    def _unbind(self, user_id: str, socket_id: str) -> bool:
        sockets = self._users[user_id]
        del sockets[socket_id]
        if sockets:
            return False
        del self._users[user_id]
        return True

    def is_empty(self) -> bool:
        """True when nothing at all is held: no socket, room, user or binding."""
        held = (self._sockets, self._rooms, self._users, self._memberships, self._owners)
        return not any(held)
