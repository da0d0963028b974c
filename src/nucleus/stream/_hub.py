"""
``StreamHub``: rooms, users and sending, for every socket of a server.

The hub owns the :class:`Registry` (pure bookkeeping) and the :class:`Backend`
(numbering, history, other nodes). Sending never awaits a socket: a broadcast
builds one :class:`Outgoing` and queues the same bytes on every member's
buffer. The hub never iterates a live member set across an ``await``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ._backend import Backend, MemoryBackend
from ._errors import ChannelError, SocketClosed
from ._history import HistoryPolicy, Publication
from ._message import SocketMessage
from ._registry import Registry
from ._socket import WebSocket
from ._wire import Outgoing, control_frame

__all__ = ["Channel", "StreamHub"]

MAX_ROOM_NAME = 200


def _check_room(room: object) -> str:
    if not isinstance(room, str) or not room or len(room) > MAX_ROOM_NAME:
        raise ChannelError(
            f"room names are non-empty strings of at most {MAX_ROOM_NAME} characters, "
            f"got {room!r:.60}"
        )
    return room


class Channel:
    """A room seen as an event channel: ``hub.channel("chat").broadcast("message", data)``."""

    __slots__ = ("_hub", "name")

    def __init__(self, hub: StreamHub, name: str) -> None:
        self._hub = hub
        self.name = _check_room(name)

    async def broadcast(self, event: str, data: Any) -> int:
        """
        Send ``{"channel", "event", "data"}`` to every socket in the room; return its offset.

        Raises :class:`EncodeError` when ``data`` is not JSON-encodable and
        :class:`BackendError` when the backend could not publish it.
        """
        if not isinstance(event, str) or not event:
            raise ChannelError("an event name is a non-empty string")
        return await self._hub._publish(self.name, SocketMessage.json(data), event, None)

    def __repr__(self) -> str:
        return f"<Channel {self.name!r}>"


class StreamHub:
    """Rooms, users, presence and sending for the sockets of one server."""

    def __init__(self, backend: Backend | None = None) -> None:
        self.backend: Backend = backend or MemoryBackend()
        self._registry: Registry[WebSocket] = Registry()
        self._policies: dict[str, HistoryPolicy] = {}
        # Resume positions a tagged client announced in its hello, per socket.
        self._positions: dict[str, dict[str, tuple[str | None, int | None]]] = {}

    async def start(self) -> None:
        await self.backend.start(self)

    async def aclose(self) -> None:
        await self.backend.aclose()

    # membership

    async def join_room(self, socket_id: str, room: str) -> None:
        """Add a socket to a room. ``user:<id>`` rooms admit only that user's sockets."""
        socket = self._registry.get(socket_id)
        await self._join(socket, _check_room(room))

    async def leave_room(self, socket_id: str, room: str) -> None:
        """Remove a socket from a room (no error if it was not a member)."""
        await self._leave(self._registry.get(socket_id), _check_room(room))

    async def _leave(self, socket: WebSocket, room: str, request_id: int | None = None) -> None:
        left = self._registry.leave(socket.id, room)
        if socket._conn.tagged and (left or request_id is not None):
            answer: dict[str, Any] = {"type": "left", "channel": room}
            if request_id is not None:
                answer["id"] = request_id
            self._control(socket, answer)
        if left and not self._registry.members(room):
            await self.backend.room_inactive(room)

    async def _join(
        self,
        socket: WebSocket,
        room: str,
        request_id: int | None = None,
        resume: tuple[str | None, int | None] | None = None,
    ) -> None:
        if room.startswith("user:") and room[5:] != socket.user_id:
            raise ChannelError(
                f"{room!r} is a private user room: only sockets identified as that user "
                "may join it (call hub.identify() first)"
            )
        newly = self._registry.join(socket.id, room)
        if newly and len(self._registry.members(room)) == 1:
            await self.backend.room_active(room, self._policies.get(socket.route))
        if not socket._conn.tagged:
            return
        if resume is None:
            resume = self._positions.get(socket.id, {}).pop(room, None)
        if not newly and resume is None:
            # Already a member: just confirm where the room stands.
            recovery = await self.backend.recover(room, None, None)
            self._joined(socket, room, recovery.epoch, recovery.offset, None, request_id)
            return
        # No await between reading history and queueing the replay (the memory
        # backend never suspends), so no live broadcast can slip in between.
        epoch, offset = resume if resume is not None else (None, None)
        recovery = await self.backend.recover(room, epoch, offset)
        asked = epoch is not None and offset is not None
        self._joined(
            socket, room, recovery.epoch, recovery.offset,
            recovery.recovered if asked else None, request_id,
        )
        conn = socket._conn
        for publication in recovery.publications:
            conn.deliver(Outgoing(publication.message, room, publication.offset,
                                  publication.event))

    def _joined(
        self, socket: WebSocket, room: str, epoch: str, offset: int,
        recovered: bool | None, request_id: int | None,
    ) -> None:
        frame: dict[str, Any] = {"type": "joined", "channel": room, "epoch": epoch,
                                 "offset": offset}
        if recovered is not None:
            frame["recovered"] = recovered
        if request_id is not None:
            frame["id"] = request_id
        self._control(socket, frame)

    def _control(self, socket: WebSocket, payload: dict[str, Any]) -> None:
        frame, text = control_frame(payload)
        socket._conn.deliver_frame(frame, text)

    # sending

    async def broadcast_to_room(
        self,
        room: str,
        msg: SocketMessage,
        exclude: str | Collection[str] | None = None,
    ) -> int:
        """
        Send ``msg`` to every socket in ``room`` (except ``exclude``); return its offset.

        Raises :class:`BackendError` if the backend could not publish it.
        """
        excluded = frozenset((exclude,) if isinstance(exclude, str) else exclude or ())
        return await self._publish(_check_room(room), msg, None, excluded or None)

    async def _publish(
        self, room: str, msg: SocketMessage, event: str | None,
        exclude: frozenset[str] | None,
    ) -> int:
        if not isinstance(msg, SocketMessage):
            raise TypeError(f"expected a SocketMessage, got {type(msg).__name__}")
        return await self.backend.publish(room, msg, event, exclude)

    def channel(self, name: str) -> Channel:
        """The room ``name`` as an event channel."""
        return Channel(self, name)

    async def send_to(self, socket_id: str, msg: SocketMessage) -> None:
        """Send ``msg`` to one socket; :class:`SocketNotFound` if it is not open."""
        socket = self._registry.get(socket_id)
        if not socket._conn.is_open:
            raise SocketClosed(f"socket {socket_id} is closing; stop sending to it")
        socket._conn.deliver(Outgoing(msg))

    async def send_to_user(self, user_id: str, msg: SocketMessage) -> None:
        """Send ``msg`` to every open socket of ``user_id`` (all their devices)."""
        await self.backend.publish_user(user_id, msg)

    async def online_users(self) -> list[str]:
        """Sorted ids of users with at least one open socket."""
        return await self.backend.online_users()

    async def disconnect(self, socket_id: str, code: int | None = None, reason: str = "") -> None:
        """
        Close a socket. ``on_disconnect`` follows.

        Without ``code``: 1008 (policy violation) while ``on_connect`` is still
        running, i.e. the connection is being refused; 1000 afterwards.
        """
        socket = self._registry.get(socket_id)
        if code is None:
            code = 1008 if socket._connecting else 1000
        socket._conn.close(code, reason)

    async def disconnect_user(self, user_id: str, code: int = 1008, reason: str = "") -> int:
        """Close every socket of ``user_id`` on this node; return how many."""
        sockets = list(self._registry.user_sockets(user_id).values())
        for socket in sockets:
            socket._conn.close(code, reason)
        return len(sockets)

    async def identify(self, socket_id: str, user_id: str) -> None:
        """Bind ``user_id`` to the socket (e.g. after checking a token)."""
        if not isinstance(user_id, str) or not user_id:
            raise ChannelError("a user id is a non-empty string")
        socket = self._registry.get(socket_id)
        previous, went_offline, came_online = self._registry.bind_user(socket_id, user_id)
        socket.user_id = user_id
        if previous is not None and previous != user_id:
            for room in self._registry.rooms_of(socket_id):
                if room == f"user:{previous}":
                    await self.leave_room(socket_id, room)
        if went_offline and previous is not None:
            await self.backend.user_offline(previous)
        if came_online:
            await self.backend.user_online(user_id)

    # introspection (this node)

    def room_members(self, room: str) -> list[str]:
        """Ids of the sockets in ``room`` on this node, in join order."""
        return list(self._registry.members(room))

    def rooms_of(self, socket_id: str) -> frozenset[str]:
        """The rooms a socket is in."""
        return self._registry.rooms_of(socket_id)

    def get_socket(self, socket_id: str) -> WebSocket:
        """The open socket with this id; :class:`SocketNotFound` otherwise."""
        return self._registry.get(socket_id)

    @property
    def connection_count(self) -> int:
        """Open sockets on this node."""
        return len(self._registry)

    # delivery from the backend (the Delivery protocol): never awaits

    def deliver_room(self, publication: Publication, exclude: frozenset[str] | None) -> None:
        members = self._registry.members(publication.room)
        if not members:
            return
        out = Outgoing(publication.message, publication.room, publication.offset,
                       publication.event)
        if exclude:
            for socket_id, socket in members.items():
                if socket_id not in exclude:
                    socket._conn.deliver(out)
        else:
            for socket in members.values():
                socket._conn.deliver(out)

    def deliver_user(self, user_id: str, message: SocketMessage) -> None:
        sockets = self._registry.user_sockets(user_id)
        if sockets:
            out = Outgoing(message)
            for socket in sockets.values():
                socket._conn.deliver(out)

    # lifecycle, called by the session driver

    async def _attach(self, socket: WebSocket) -> None:
        self._registry.add(socket)
        if socket.user_id is not None:
            user_id, socket.user_id = socket.user_id, None
            await self.identify(socket.id, user_id)

    async def _detach(self, socket_id: str) -> None:
        self._positions.pop(socket_id, None)
        departure = self._registry.remove(socket_id)
        for room in departure.emptied_rooms:
            await self.backend.room_inactive(room)
        if departure.user_offline and departure.user_id is not None:
            await self.backend.user_offline(departure.user_id)

    def _is_empty(self) -> bool:
        """True when no socket, room or user entry is held (leak checks)."""
        return self._registry.is_empty() and not self._positions
