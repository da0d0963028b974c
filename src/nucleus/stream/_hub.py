"""
``StreamHub``: rooms, users and sending, for every socket of a server.

The hub owns the :class:`Registry` (pure bookkeeping of this node's sockets)
and the :class:`Backend` (numbering, history, the other nodes and the
cluster-wide indexes). Sending never awaits a socket: a broadcast builds one
:class:`Outgoing` and queues the same bytes on every member's buffer. The hub
never iterates a live member set across an ``await``.

The hub is exact under a backend that suspends at every await. A library
client joining a room gets its ``joined`` frame, then the replay, then live
publications, each exactly once: while its join is in flight, publications
for that room are held for it and, once the replay is queued, those the
replay already covered are dropped; with a backend whose live stream may lag
its history (a broker), later arrivals the replay covered are dropped too.

Room presence works the same way: a socket that starts watching a room's
presence gets its state (``room_users``), and the changes that arrive while
that state is read are held and sent after it.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Collection, Mapping
from typing import Any

from ._backend import Backend, Delivery, MemoryBackend
from ._errors import BackendError, ChannelError, SocketClosed
from ._history import HistoryPolicy, Publication, Recovery
from ._message import SocketMessage, payload_size
from ._metrics import Metrics
from ._protocol import presence_diff, presence_state
from ._registry import Registry
from ._socket import WebSocket
from ._tasks import TaskOwner
from ._wire import Outgoing

__all__ = ["Channel", "StreamHub"]

logger = logging.getLogger("nucleus.stream")

MAX_ROOM_NAME = 200


def _check_room(room: object) -> str:
    if not isinstance(room, str) or not room or len(room) > MAX_ROOM_NAME:
        raise ChannelError(
            f"room names are non-empty strings of at most {MAX_ROOM_NAME} characters, "
            f"got {room!r:.60}"
        )
    return room


class Channel:
    """
    A room seen as an event channel: ``hub.channel("chat").broadcast("message", data)``.

    Get one from :meth:`StreamHub.channel`; it is a name, cheap to make and
    to drop. Plain WebSocket members of the room get each broadcast as
    ``{"channel", "event", "data"}``; library clients get ``data``, with the
    event name in its ``Meta``.
    """

    __slots__ = ("_hub", "name")

    def __init__(self, hub: StreamHub, name: str) -> None:
        self._hub = hub
        #: The room's name.
        self.name: str = _check_room(name)

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


class _Join:
    """A library client's join: publications held until its replay is queued, then a floor."""

    __slots__ = ("floor", "held", "reset")

    def __init__(self) -> None:
        self.held: list[Outgoing] | None = []
        self.floor = 0
        # The room lost history while this join was held: the new position,
        # and how many held publications came before it (they are void).
        self.reset: tuple[Recovery, int] | None = None


class StreamHub(Delivery):
    """
    Rooms, users, presence and sending for the sockets of one server (or cluster).

    A :class:`StreamServer` makes one (``server.hub``) and passes it to every
    handler call; HTTP endpoints, background tasks and jobs use the same one.
    ``join_room`` and ``leave_room`` take sockets of this node (call them from
    handlers); sending, ``disconnect``, ``identify`` and the queries reach
    sockets and users on every node of a shared backend (Redis). A process
    that serves no sockets can push with a hub of its own on the same backend:
    ``await hub.start()`` first, ``await hub.aclose()`` when done.

    Every call that needs the backend may raise :class:`BackendError`
    (:class:`BackendUnavailable` when the broker cannot be reached); none of
    them drops a message silently.
    """

    def __init__(self, backend: Backend | None = None) -> None:
        #: Where rooms, history and the cluster-wide indexes live
        #: (default: a :class:`MemoryBackend`, this process only).
        self.backend: Backend = backend or MemoryBackend()
        self._registry: Registry[WebSocket] = Registry()
        self._rules: list[tuple[str, HistoryPolicy]] = []
        self._policy_cache: dict[str, HistoryPolicy] = {}
        # Joins in flight, or whose live stream has not yet passed the replay:
        # room -> socket id -> join.
        self._pending: dict[str, dict[str, _Join]] = {}
        # Presence watchers: room -> socket id -> changes held while its state
        # is read, or None once it gets them live.
        self._watchers: dict[str, dict[str, list[tuple[str, bool]] | None]] = {}
        self._tasks = TaskOwner()
        #: The server's counters (None: not counted).
        self.metrics: Metrics | None = None

    async def start(self) -> None:
        """
        Connect the backend; the server calls this when it starts. A hub of
        your own (one that serves no sockets) must be started before use.
        """
        await self.backend.start(self)

    async def aclose(self) -> None:
        """Stop the hub's tasks and close the backend; the server calls this when it stops."""
        await self._tasks.cancel_all()
        await self.backend.aclose()

    # history policy, per room

    def set_history(self, pattern: str, policy: HistoryPolicy) -> None:
        """
        Keep ``policy`` for rooms whose name matches ``pattern`` (``"chat"``,
        ``"chat:*"``); the first matching rule wins, other rooms use the
        backend's default (last 100 messages, at most 5 minutes).
        """
        if not isinstance(policy, HistoryPolicy):
            raise TypeError(f"expected a HistoryPolicy, got {type(policy).__name__}")
        self._rules.append((pattern, policy))
        self._policy_cache.clear()

    def history_policy(self, room: str) -> HistoryPolicy:
        """The history policy of ``room``."""
        policy = self._policy_cache.get(room)
        if policy is None:
            policy = self.backend.default_policy
            for pattern, candidate in self._rules:
                if pattern == room or fnmatch.fnmatchcase(room, pattern):
                    policy = candidate
                    break
            if len(self._policy_cache) > 10_000:
                self._policy_cache.clear()
            self._policy_cache[room] = policy
        return policy

    # membership

    async def join_room(self, socket_id: str, room: str) -> None:
        """
        Add a socket of this node to a room; every broadcast made after this
        returns reaches it. Joining a room it is in already does nothing.

        Raises :class:`SocketNotFound` if the socket is not open on this node,
        :class:`ChannelError` for a name that is empty or longer than 200
        characters, or for a ``user:<id>`` room (private to that user) when the
        socket is not identified as ``<id>``; :class:`BackendError` if the
        backend failed, in which case the socket is not in the room.
        """
        socket = self._registry.get(socket_id)
        await self._join(socket, _check_room(room))

    async def leave_room(self, socket_id: str, room: str) -> None:
        """Remove a socket of this node from a room (no error if it was not a member)."""
        await self._leave(self._registry.get(socket_id), _check_room(room))

    async def _leave(self, socket: WebSocket, room: str, request_id: int | None = None) -> None:
        left = self._registry.leave(socket.id, room)
        pending = self._pending.get(room)
        if pending is not None:
            pending.pop(socket.id, None)  # its join, still in flight, is void
        self._unwatch(room, socket.id)
        protocol = socket._protocol
        if protocol is not None and (left or request_id is not None):
            socket.deliver_encoded(protocol.left(room, request_id))
        if left:
            if not self._registry.members(room):
                await self.backend.room_inactive(room)
            await self.backend.socket_left(socket.id, room, socket.user_id)

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
        if socket._protocol is not None and resume is None:
            resume = socket._protocol.take_position(room)  # from its hello
        if not self._registry.join(socket.id, room):
            if socket.tagged:
                await self._confirm(socket, room, request_id, resume)
            return
        policy = self.history_policy(room)
        join: _Join | None = None
        if socket.tagged:
            join = self._pending.setdefault(room, {})[socket.id] = _Join()
        try:
            await self.backend.room_active(room, policy)
            await self.backend.socket_joined(socket.id, room, socket.user_id)
            if join is None:
                return
            epoch, offset = resume if resume is not None else (None, None)
            recovery = await self.backend.recover(room, epoch, offset, policy)
        except BaseException:
            if join is not None and self._holding(room, socket.id) is join:
                self._unhold(room, socket.id)
            if socket.id in self._registry and self._registry.leave(socket.id, room):
                if not self._registry.members(room):
                    await self._quietly(self.backend.room_inactive(room))
                await self._quietly(self.backend.socket_left(socket.id, room, socket.user_id))
            raise
        if self._holding(room, socket.id) is not join:
            return  # it left (or its socket closed) while the join was in flight
        assert join is not None and join.held is not None
        held, join.held = join.held, None
        asked = epoch is not None and offset is not None
        recovered, replay = recovery.recovered, recovery.publications
        if join.reset is not None:
            # History was lost while the join was in flight: whatever it read
            # may predate that; the room goes on from the reset's position.
            recovery, before = join.reset
            held, recovered, replay = held[before:], False, ()
        self._joined(socket, room, recovery.epoch, recovery.offset,
                     recovered if asked else None, request_id)
        for publication in replay:
            socket.deliver(Outgoing(publication.message, room, publication.offset,
                                    publication.event))
        # Held live publications the replay (or the position) already covers go.
        last = recovery.offset
        if replay:
            last = max(last, replay[-1].offset)
        for out in held:
            if out.offset is not None and out.offset > last:
                socket.deliver(out)
                last = out.offset
        if self.backend.single_node or (held and held[-1].offset == last):
            self._unhold(room, socket.id)  # live is past the replay
        else:
            join.floor = last  # arrivals up to here were replayed: drop them

    async def _confirm(
        self, socket: WebSocket, room: str, request_id: int | None,
        resume: tuple[str | None, int | None] | None,
    ) -> None:
        """Already a member: say where the room stands (a resume there is a no-op)."""
        recovery = await self.backend.recover(room, None, None, self.history_policy(room))
        recovered = None
        if resume is not None and resume[0] is not None and resume[1] is not None:
            recovered = resume[0] == recovery.epoch and resume[1] <= recovery.offset
        self._joined(socket, room, recovery.epoch, recovery.offset, recovered, request_id)

    def _holding(self, room: str, socket_id: str) -> _Join | None:
        pending = self._pending.get(room)
        return None if pending is None else pending.get(socket_id)

    def _unhold(self, room: str, socket_id: str) -> _Join | None:
        pending = self._pending.get(room)
        if pending is None:
            return None
        held = pending.pop(socket_id, None)
        if not pending:
            del self._pending[room]
        return held

    @staticmethod
    async def _quietly(call: Any) -> None:
        try:
            await call
        except BackendError as exc:
            logger.warning("backend: %s", exc)

    def _joined(
        self, socket: WebSocket, room: str, epoch: str, offset: int,
        recovered: bool | None, request_id: int | None,
    ) -> None:
        protocol = socket._protocol
        assert protocol is not None
        socket.deliver_encoded(protocol.joined(room, epoch, offset, recovered, request_id))

    # room presence

    async def _watch(self, socket: WebSocket, room: str) -> None:
        """
        Send ``room``'s presence to a member socket, then every change of it.

        Raises :class:`BackendError` if the state could not be read (the
        socket does not watch then).
        """
        if room not in self._registry.rooms_of(socket.id):
            raise ChannelError(f"only members of {room!r} can watch its presence")
        await self._send_presence(room, (socket.id,))

    async def _send_presence(self, room: str, socket_ids: Collection[str]) -> None:
        watchers = self._watchers.setdefault(room, {})
        for socket_id in socket_ids:
            watchers[socket_id] = []
        try:
            users = await self.backend.room_users(room)
        except BaseException:
            for socket_id in socket_ids:
                if self._watchers.get(room, {}).get(socket_id) is not None:
                    self._unwatch(room, socket_id)
            raise
        state = presence_state(room, users)
        watchers = self._watchers.get(room, {})
        for socket_id in socket_ids:
            held = watchers.get(socket_id)
            socket = self._registry.find(socket_id)
            if held is None or socket is None:
                continue  # it stopped watching (or left) meanwhile
            watchers[socket_id] = None
            socket.deliver_encoded(state)
            for user_id, present in held:
                socket.deliver_encoded(presence_diff(room, user_id, present))

    def _unwatch(self, room: str, socket_id: str) -> None:
        watchers = self._watchers.get(room)
        if watchers is not None and watchers.pop(socket_id, False) is not False:
            if not watchers:
                del self._watchers[room]

    # sending

    async def broadcast_to_room(
        self,
        room: str,
        msg: SocketMessage,
        exclude: str | Collection[str] | None = None,
    ) -> int:
        """
        Send ``msg`` to every socket in ``room`` on every node (except
        ``exclude``); return its offset.

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
        return await self.backend.publish(room, msg, event, exclude, self.history_policy(room))

    def channel(self, name: str) -> Channel:
        """The room ``name`` as an event channel."""
        return Channel(self, name)

    async def send_to(self, socket_id: str, msg: SocketMessage) -> None:
        """Send ``msg`` to one socket on any node; :class:`SocketNotFound` if open nowhere."""
        if not isinstance(msg, SocketMessage):
            raise TypeError(f"expected a SocketMessage, got {type(msg).__name__}")
        socket = self._registry.find(socket_id)
        if socket is None:
            await self.backend.send_to_socket(socket_id, msg)
            return
        if not socket.is_open:
            raise SocketClosed(f"socket {socket_id} is closing; stop sending to it")
        socket.deliver(Outgoing(msg))
        if self.metrics is not None:
            self.metrics.delivered(1, payload_size(msg))

    async def send_to_user(self, user_id: str, msg: SocketMessage) -> None:
        """Send ``msg`` to every open socket of ``user_id`` on every node (all their devices)."""
        if not isinstance(msg, SocketMessage):
            raise TypeError(f"expected a SocketMessage, got {type(msg).__name__}")
        await self.backend.publish_user(user_id, msg)

    async def disconnect(self, socket_id: str, code: int | None = None, reason: str = "") -> None:
        """
        Close a socket on any node. ``on_disconnect`` follows.

        Without ``code``: 1008 (policy violation) while ``on_connect`` is still
        running, i.e. the connection is being refused; 1000 afterwards.
        """
        if not self.close_socket(socket_id, code, reason):
            await self.backend.disconnect(socket_id, code, reason)

    async def disconnect_user(self, user_id: str, code: int = 1008, reason: str = "") -> int:
        """Close every socket of ``user_id`` on every node; return how many."""
        here = self.close_user(user_id, code, reason)
        return here + await self.backend.disconnect_user(user_id, code, reason)

    async def identify(self, socket_id: str, user_id: str) -> None:
        """
        Bind ``user_id`` to a socket on any node (e.g. after checking a token).

        For a socket of this node it is done when this returns. For a socket of
        another node (Redis backend), this returns once the request is on its
        way; that node applies it when Redis delivers it, moments later.
        Raises :class:`SocketNotFound` if the socket is open nowhere.
        """
        if not isinstance(user_id, str) or not user_id:
            raise ChannelError("a user id is a non-empty string")
        socket = self._registry.find(socket_id)
        if socket is None:
            await self.backend.identify(socket_id, user_id)
            return
        await self._bind(socket, user_id)

    async def _bind(self, socket: WebSocket, user_id: str) -> None:
        previous, _, _ = self._registry.bind_user(socket.id, user_id)
        if previous == user_id:
            return
        if previous is not None and f"user:{previous}" in self._registry.rooms_of(socket.id):
            await self.leave_room(socket.id, f"user:{previous}")  # as the previous user
        socket.user_id = user_id
        await self.backend.user_bound(socket.id, user_id, previous,
                                      self._registry.rooms_of(socket.id))

    # cluster-wide queries

    async def recent(self, room: str, limit: int = 50) -> list[Publication]:
        """
        The last ``limit`` (or fewer) messages ``room``'s history still keeps,
        oldest first, each with its offset: what a page entering a chat shows.

        What is kept follows the room's :class:`HistoryPolicy` (set with
        ``server.history(...)``); with ``size=0`` there is none. Raises
        :class:`BackendError` if the backend could not read it.
        """
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        room = _check_room(room)
        if limit == 0:
            return []
        return list(await self.backend.recent(room, limit, self.history_policy(room)))

    async def online_users(self) -> list[str]:
        """Sorted ids of users with at least one open socket on any node."""
        return await self.backend.online_users()

    async def room_members(self, room: str) -> list[str]:
        """Ids of the sockets in ``room`` on any node (in join order on one node)."""
        return await self.backend.room_members(_check_room(room))

    async def room_users(self, room: str) -> list[str]:
        """Sorted ids of users with at least one socket in ``room``; many tabs count once."""
        return await self.backend.room_users(_check_room(room))

    async def rooms_of(self, socket_id: str) -> frozenset[str]:
        """The rooms a socket on any node is in; :class:`SocketNotFound` if open nowhere."""
        socket = self._registry.find(socket_id)
        if socket is not None:
            return self._registry.rooms_of(socket_id)
        return await self.backend.rooms_of(socket_id)

    async def connection_count(self) -> int:
        """Open sockets on every node."""
        return await self.backend.connection_count()

    def get_socket(self, socket_id: str) -> WebSocket:
        """The open socket of this node with this id; :class:`SocketNotFound` otherwise."""
        return self._registry.get(socket_id)

    def local_sockets(self) -> list[str]:
        """Ids of the sockets open on this node."""
        return self._registry.ids()

    # the Delivery protocol: what the backend asks of this node; never awaits

    def deliver_room(self, publication: Publication, exclude: frozenset[str] | None) -> None:
        room = publication.room
        members = self._registry.members(room)
        if not members:
            return
        out = Outgoing(publication.message, room, publication.offset, publication.event)
        pending = self._pending.get(room)
        if pending or exclude:
            sent = 0
            for socket_id, socket in members.items():
                if exclude and socket_id in exclude:
                    continue
                join = pending.get(socket_id) if pending else None
                if join is None:
                    socket.deliver(out)
                    sent += 1
                elif join.held is not None:
                    join.held.append(out)
                elif publication.offset > join.floor:
                    self._unhold(room, socket_id)  # live has passed the replay
                    socket.deliver(out)
                    sent += 1
        else:
            for socket in members.values():
                socket.deliver(out)
            sent = len(members)
        if self.metrics is not None:
            self.metrics.broadcasts.inc()
            self.metrics.delivered(sent, payload_size(publication.message))

    def deliver_user(self, user_id: str, message: SocketMessage) -> None:
        sockets = self._registry.user_sockets(user_id)
        if sockets:
            out = Outgoing(message)
            for socket in sockets.values():
                socket.deliver(out)
            if self.metrics is not None:
                self.metrics.delivered(len(sockets), payload_size(message))

    def deliver_socket(self, socket_id: str, message: SocketMessage) -> bool:
        socket = self._registry.find(socket_id)
        if socket is None:
            return False
        socket.deliver(Outgoing(message))
        if self.metrics is not None:
            self.metrics.delivered(1, payload_size(message))
        return True

    def close_socket(self, socket_id: str, code: int | None, reason: str) -> bool:
        socket = self._registry.find(socket_id)
        if socket is None:
            return False
        if code is None:
            code = 1008 if socket._connecting else 1000
        socket.close_nowait(code, reason)
        return True

    def close_user(self, user_id: str, code: int, reason: str) -> int:
        sockets = list(self._registry.user_sockets(user_id).values())
        for socket in sockets:
            socket.close_nowait(code, reason)
        return len(sockets)

    def identify_socket(self, socket_id: str, user_id: str) -> bool:
        socket = self._registry.find(socket_id)
        if socket is None:
            return False
        self._tasks.spawn(self._bind(socket, user_id), name=f"identify {socket_id}")
        return True

    def room_reset(self, room: str, recovery: Recovery) -> None:
        pending = self._pending.get(room)
        for socket in list(self._registry.members(room).values()):
            if not socket.tagged:
                continue
            join = pending.get(socket.id) if pending else None
            if join is not None:
                if join.held is not None:
                    # Its own joined frame, still to come, will carry the reset.
                    join.reset = (recovery, len(join.held))
                    continue
                # Past its replay: its floor counts offsets of the old epoch.
                self._unhold(room, socket.id)
            self._joined(socket, room, recovery.epoch, recovery.offset, False, None)

    def presence_changed(self, room: str, user_id: str, present: bool) -> None:
        watchers = self._watchers.get(room)
        if not watchers:
            return
        encoded: tuple[bytes, str] | None = None
        for socket_id, held in watchers.items():
            if held is not None:
                held.append((user_id, present))
                continue
            socket = self._registry.find(socket_id)
            if socket is not None:
                if encoded is None:
                    encoded = presence_diff(room, user_id, present)
                socket.deliver_encoded(encoded)

    def presence_stale(self, room: str) -> None:
        live = [sid for sid, held in self._watchers.get(room, {}).items() if held is None]
        if live:
            self._tasks.spawn(self._resend_presence(room, live), name=f"presence {room}")

    async def _resend_presence(self, room: str, socket_ids: list[str]) -> None:
        try:
            await self._send_presence(room, socket_ids)
        except BackendError as exc:
            logger.warning("room %r: presence could not be resent: %s", room, exc)

    def local_members(self, room: str) -> Mapping[str, object]:
        return self._registry.members(room)

    def local_rooms(self, socket_id: str) -> frozenset[str] | None:
        if socket_id not in self._registry:
            return None
        return self._registry.rooms_of(socket_id)

    def local_users(self) -> list[str]:
        return self._registry.users()

    def local_room_users(self, room: str) -> list[str]:
        members = self._registry.members(room).values()
        return sorted({s.user_id for s in members if s.user_id is not None})

    def local_user_in_room(self, user_id: str, room: str) -> int:
        members = self._registry.members(room)
        return sum(1 for socket_id in self._registry.user_sockets(user_id) if socket_id in members)

    def local_count(self) -> int:
        return len(self._registry)

    def local_room_count(self) -> int:
        """Rooms with a member on this node."""
        return self._registry.room_count()

    def local_state(self) -> list[tuple[str, str | None, frozenset[str]]]:
        """Every socket of this node with its user and rooms (for re-registering)."""
        return self._registry.snapshot()

    # lifecycle, called by the session driver

    async def _attach(self, socket: WebSocket) -> None:
        """
        Register a newly opened socket here and with the backend.

        On :class:`BackendError` nothing of it is left anywhere.
        """
        self._registry.add(socket)
        user_id, socket.user_id = socket.user_id, None
        try:
            await self.backend.socket_opened(socket.id)
            if user_id is not None:
                await self._bind(socket, user_id)
        except BaseException:
            departure = self._registry.remove(socket.id)
            await self._quietly(self.backend.socket_closed(
                socket.id, departure.user_id, departure.rooms))
            raise

    async def _detach(self, socket_id: str) -> None:
        """Forget a socket here, then in the backend (whose failure is logged, not raised)."""
        departure = self._registry.remove(socket_id)
        for room in departure.rooms:
            self._unhold(room, socket_id)
            self._unwatch(room, socket_id)
        for room in departure.emptied_rooms:
            await self._quietly(self.backend.room_inactive(room))
        await self._quietly(self.backend.socket_closed(
            socket_id, departure.user_id, departure.rooms))

    def _is_empty(self) -> bool:
        """True when no socket, room, user or join entry is held (leak checks)."""
        return self._registry.is_empty() and not self._pending and not self._watchers

