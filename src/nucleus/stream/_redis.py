"""
``RedisBackend``: every hub operation across processes and machines, on Redis.

Each hub operation is one Lua script (one round trip, atomic; see
:mod:`._redis_lua` for the keys). Calls share one pipelined connection
(:mod:`._redis_pipe`): those made in one loop turn go to Redis in one write.
Each node holds one pub/sub connection with one subscription per active room
plus one for itself; fan-out to a room's members stays local, so Redis
carries one message per broadcast per node, never one per member. What the
link delivers while this node's own publishes are in flight is handed to the
hub in batches (:mod:`._coalesce`), so that one socket write carries many
messages.

Exactness: rooms are numbered in Redis, and a :class:`RoomFeed` per room
checks that every publication arrives once and in order; a hole (a dropped
link) is filled from the room's history, or the members are told (``gap``).
Presence: each node renews a lease; a node whose lease runs out (SIGKILL,
power loss) is reaped by the others within ``presence_timeout``. A node that
finds itself reaped, or whose index updates failed during an outage,
re-registers its sockets.

Outages: calls that need Redis fail within ``timeout`` seconds with
:class:`BackendUnavailable`; the link reconnects with backoff and resubscribes
every room. An outage and its end are logged once each.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Awaitable, Collection
from typing import Any
from urllib.parse import urlsplit

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from . import _redis_lua as lua
from ._backend import Backend, Delivery
from ._coalesce import Coalescer
from ._errors import BackendError, BackendUnavailable, ConfigError, SocketNotFound
from ._feed import Arrival, FeedVerdict, RoomFeed
from ._history import HistoryPolicy, Publication, Recovery, new_epoch
from ._message import Binary, SocketMessage, Text
from ._redis_pipe import CommandPipe
from ._tasks import TaskOwner

__all__ = ["RedisBackend"]

logger = logging.getLogger("nucleus.stream.redis")

_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.decode
_LINK_ERRORS = (RedisError, OSError, TimeoutError)


def _pack(message: SocketMessage) -> tuple[bool, str | bytes]:
    if isinstance(message, Binary):
        return True, message.data
    assert isinstance(message, Text)
    return False, message.text


def _unpack(binary: bool, payload: Any) -> SocketMessage:
    return Binary(bytes(payload)) if binary else Text(str(payload))


class RedisBackend(Backend):
    """
    The cluster backend: ``RedisBackend("redis://127.0.0.1:6379/0")``, or
    ``StreamServer(backend="redis://...")``.

    - ``prefix``: of every key and channel, so that several apps (or tests)
      share one Redis.
    - ``history``: the default history policy of rooms.
    - ``timeout``: seconds a call may wait for Redis before
      :class:`BackendUnavailable` (3).
    - ``presence_timeout``: a node that stops renewing its lease is reaped,
      its users and sockets removed from every index, within this many
      seconds (10).
    - ``probe_interval``: how often the pub/sub link is probed (2 s); the link
      is unhealthy after three silent intervals.
    - ``meta_ttl``: how long a room's epoch and offset outlive its last
      publication or recovery (1 day); after it, the room starts a new epoch.
    - ``batch_window``: while this node's own publishes are in flight, what
      Redis delivers is held and fanned out together once they are answered,
      at most this many seconds after it arrived (0.01; 0 holds nothing).
      One socket write then carries many messages, as with the memory backend;
      a publisher's queued messages take a round trip each, so a shorter
      window cuts the batch short.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "nucleus",
        history: HistoryPolicy | None = None,
        timeout: float = 3.0,
        presence_timeout: float = 10.0,
        probe_interval: float = 2.0,
        meta_ttl: float = 86400.0,
        max_connections: int = 32,
        batch_window: float = 0.01,
    ) -> None:
        super().__init__(history)
        if not prefix or any(c in prefix for c in " {}"):
            raise ConfigError(
                f"a Redis key prefix is non-empty, without spaces or braces: {prefix!r}")
        if not (timeout > 0 and probe_interval > 0 and presence_timeout > 2 * probe_interval):
            raise ConfigError("timeout and probe_interval must be positive, and "
                              "presence_timeout more than twice probe_interval")
        if not 0 <= batch_window < timeout:
            raise ConfigError("batch_window must be at least 0 and less than timeout")
        self.url = url
        self._shown_url = _without_password(url)
        self.prefix = prefix
        self.timeout = timeout
        self.presence_timeout = presence_timeout
        self.probe_interval = probe_interval
        self.meta_ttl = meta_ttl
        self.batch_window = batch_window
        self.node_id = new_epoch() + new_epoch()
        self._max_connections = max_connections
        self._client: aioredis.Redis | None = None
        self._pipe: CommandPipe | None = None  # every call but re-registering's
        self._delivery: Delivery | None = None
        self._tasks = TaskOwner()
        self._closing = False
        # pub/sub link
        self._conn: AbstractConnection | None = None
        self._node_channel = f"{prefix}:n:{self.node_id}".encode()
        self._room_prefix = f"{prefix}:r:".encode()
        self._wanted: dict[str, bytes] = {}  # room -> channel
        self._sent: dict[bytes, int] = {}  # (un)subscribe commands sent per channel
        self._acked: dict[bytes, int] = {}  # their confirmations
        self._sub_seq: dict[bytes, int] = {}  # the last SUBSCRIBE's number
        self._waiters: dict[bytes, list[tuple[int, asyncio.Future[None]]]] = {}
        self._feeds: dict[str, RoomFeed] = {}
        self._policies: dict[str, HistoryPolicy] = {}
        self._rooms_by_channel: dict[bytes, str] = {}
        self._arrivals: Coalescer[Any] | None = None  # what the link read, batched
        self._linked_before = False
        self._reconnected = False  # this link replaces a lost one: repair every room
        # health
        self._available = True
        self._back_at = 0.0  # when Redis was last seen back after an outage (loop time)
        self._link_up = False
        self._probe_seen = 0.0
        self._registered = False
        self._resync_needed = False

    def __repr__(self) -> str:
        return f"<RedisBackend {self._shown_url} prefix={self.prefix!r} node={self.node_id}>"

    # lifecycle

    async def start(self, delivery: Delivery) -> None:
        self._delivery = delivery
        self._closing = False
        try:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=self._max_connections, timeout=self.timeout,
                # Every call is bounded by our own asyncio.timeout instead: with a
                # socket_timeout, redis-py writes through asyncio.wait_for, which
                # on Python 3.11 swallows most cancellations of a busy caller.
                socket_timeout=None, socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
                # RESP2: pub/sub messages are plain replies this link reads itself.
                protocol=2,
            )
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL {self.url!r}: {exc}") from None
        self._client = aioredis.Redis.from_pool(pool)  # owns it: aclose() closes it
        self._pipe = CommandPipe(pool.make_connection, self.timeout)
        self._scripts = {
            name: self._client.register_script(getattr(lua, name))
            for name in lua.__all__
        }
        self._shas = {
            name: hashlib.sha1(getattr(lua, name).encode()).hexdigest() for name in lua.__all__
        }
        await self._heartbeat()
        loop = asyncio.get_running_loop()
        self._arrivals = Coalescer(self._on_reply, self.batch_window, loop)
        self._probe_seen = loop.time()
        ready = self._subscribe(self._node_channel)
        self._tasks.spawn(self._run_link(), name="redis link")
        self._tasks.spawn(self._pulse(), name="redis pulse")
        await self._wait(ready)

    async def aclose(self) -> None:
        if self._closing:
            return
        self._closing = True
        await self._tasks.cancel_all()
        if self._arrivals is not None:
            self._arrivals.release()  # read before the close: handed on, not lost
        if self._client is not None:
            try:
                await self._call("LEAVE", self.node_id)
            except BackendError as exc:
                logger.warning("could not unregister node %s: %s", self.node_id, exc)
            if self._pipe is not None:
                await self._pipe.aclose()
                self._pipe = None
            await self._client.aclose()
            self._client = None
        self._conn = None
        self._delivery = None
        for waiters in self._waiters.values():
            for _, future in waiters:
                if not future.done():
                    future.cancel()
        self._waiters.clear()

    # calls

    async def _call(self, script: str, *args: Any) -> Any:
        if self._pipe is None:
            raise BackendUnavailable("the Redis backend is not started")
        return await self._guarded(script, self._eval(self._pipe, script, self.prefix, *args))

    async def _eval(self, pipe: CommandPipe, script: str, *args: Any) -> Any:
        try:
            return await pipe.execute("EVALSHA", self._shas[script], 0, *args)
        except NoScriptError:  # a restarted (or flushed) Redis: EVAL caches it again
            return await pipe.execute("EVAL", getattr(lua, script), 0, *args)

    async def _command(self, *args: Any) -> Any:
        if self._pipe is None:
            raise BackendUnavailable("the Redis backend is not started")
        return await self._guarded(str(args[0]), self._pipe.execute(*args))

    async def _guarded(self, name: str, call: Awaitable[Any]) -> Any:
        """
        Await ``call`` (which the pipe bounds by ``timeout``), translating
        Redis failures to BackendError.
        """
        loop = asyncio.get_running_loop()
        began, failed = loop.time(), True
        try:
            result = await call
            failed = False
        except ResponseError as exc:
            raise BackendError(f"Redis refused {name}: {exc}") from exc
        except _LINK_ERRORS as exc:
            self._outage(exc, began)
            raise BackendUnavailable(
                f"Redis at {self._shown_url} is unreachable ({type(exc).__name__}); retry later"
            ) from exc
        finally:
            if self.observe is not None:
                self.observe(name, loop.time() - began, failed)
        self._recovered()
        return result

    def _outage(self, exc: BaseException, began: float) -> None:
        """A call begun at ``began`` (loop time) failed: log an outage, once."""
        self._resync_needed = True
        # A call that began before Redis was seen back, and fails only now, is
        # the end of the outage just logged, not a new one.
        if self._available and began >= self._back_at:
            self._available = False
            logger.error("Redis at %s is unreachable (%s: %s); serving local sockets only "
                         "until it is back", self._shown_url, type(exc).__name__, exc)

    def _recovered(self) -> None:
        if not self._available:
            self._available = True
            self._back_at = asyncio.get_running_loop().time()
            logger.warning("Redis at %s is reachable again", self._shown_url)

    def healthy(self) -> bool:
        if self._client is None or not self._available or not self._link_up:
            return False
        loop = asyncio.get_running_loop()
        return loop.time() - self._probe_seen < 3 * self.probe_interval

    # rooms

    def _ttl_ms(self, policy: HistoryPolicy) -> int:
        return max(1, int(policy.ttl * 1000))

    def _meta_ms(self, policy: HistoryPolicy) -> int:
        return max(1, int(max(self.meta_ttl, policy.ttl) * 1000))

    async def publish(
        self,
        room: str,
        message: SocketMessage,
        event: str | None,
        exclude: frozenset[str] | None,
        policy: HistoryPolicy,
    ) -> int:
        body = _encode((event, *_pack(message)))
        excluded = _encode(sorted(exclude)) if exclude else b""
        _, offset = await self._echoed(self._call(
            "PUBLISH", room, body, excluded, policy.size, self._ttl_ms(policy),
            self._meta_ms(policy), new_epoch()))
        return int(offset)

    async def _echoed(self, call: Awaitable[Any]) -> Any:
        """A call whose effect comes back on the link: arrivals are batched meanwhile."""
        arrivals = self._arrivals
        if arrivals is None:
            return await call
        arrivals.begin()
        try:
            return await call
        finally:
            arrivals.end()

    async def recover(
        self, room: str, epoch: str | None, offset: int | None, policy: HistoryPolicy
    ) -> Recovery:
        asked = epoch is not None and offset is not None
        reply = await self._call(
            "RECOVER", room, epoch if asked else "", offset if asked else 0,
            self._ttl_ms(policy), self._meta_ms(policy), new_epoch())
        current, position, recovered = reply[0].decode(), int(reply[1]), bool(reply[2])
        publications: tuple[Publication, ...] = ()
        if recovered and len(reply) > 3:
            publications = tuple(_entries(room, reply[3]))
        return Recovery(current, position, recovered, publications)

    async def recent(
        self, room: str, limit: int, policy: HistoryPolicy
    ) -> tuple[Publication, ...]:
        if limit <= 0 or not policy.size:
            return ()
        reply = await self._call("RECENT", room, limit, self._ttl_ms(policy))
        return tuple(reversed(_entries(room, reply)))

    async def room_active(self, room: str, policy: HistoryPolicy) -> None:
        self._policies[room] = policy
        channel = self._wanted.get(room)
        if channel is None:
            channel = self._wanted[room] = self._room_prefix + room.encode()
            self._rooms_by_channel[channel] = room
            self._feeds[room] = RoomFeed()
            ready = self._subscribe(channel)
        else:
            ready = self._ready(channel, self._sub_seq.get(channel, 0))
        await self._wait(ready)
        feed = self._feeds.get(room)
        if feed is not None and feed.epoch is None and not feed.repairing:
            # Where the room stands now: a publication at or before it was
            # numbered before this join returns, and later ones arrive here.
            recovery = await self.recover(room, None, None, policy)
            feed = self._feeds.get(room)
            if feed is not None:
                feed.baseline(recovery.epoch, recovery.offset)

    async def room_inactive(self, room: str) -> None:
        channel = self._wanted.pop(room, None)
        self._feeds.pop(room, None)
        self._policies.pop(room, None)
        if channel is None:
            return
        self._rooms_by_channel.pop(channel, None)
        conn = self._conn
        if conn is not None:
            self._sent[channel] = self._sent.get(channel, 0) + 1
            try:
                async with asyncio.timeout(self.timeout):
                    await conn.send_command("UNSUBSCRIBE", channel)
            except _LINK_ERRORS as exc:
                logger.debug("unsubscribe of %s failed: %s", room, exc)

    def _subscribe(self, channel: bytes) -> asyncio.Future[None]:
        """Send SUBSCRIBE (now, or at the next reconnect); resolved when confirmed."""
        seq = self._sent[channel] = self._sent.get(channel, 0) + 1
        self._sub_seq[channel] = seq
        conn = self._conn
        if conn is not None:
            self._tasks.spawn(self._send(conn, "SUBSCRIBE", channel), name="subscribe")
        return self._ready(channel, seq)

    def _ready(self, channel: bytes, seq: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._acked.get(channel, 0) >= seq and self._conn is not None:
            future.set_result(None)
        else:
            self._waiters.setdefault(channel, []).append((seq, future))
        return future

    async def _wait(self, ready: asyncio.Future[None]) -> None:
        if ready.done() and not ready.cancelled():
            return  # already subscribed: most joins
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(ready)
        except TimeoutError:
            ready.cancel()
            raise BackendUnavailable(
                f"Redis at {self._shown_url} did not confirm a subscription within {self.timeout}s"
            ) from None

    async def _send(self, conn: AbstractConnection, *args: Any) -> None:
        try:
            await conn.send_command(*args)
        except _LINK_ERRORS as exc:
            logger.debug("%s failed: %s", args[0], exc)  # the link reconnects and resends

    # sockets and users anywhere

    async def publish_user(self, user_id: str, message: SocketMessage) -> None:
        await self._echoed(self._call(
            "SEND_USER", user_id, _encode(("u", user_id, *_pack(message))), ""))

    async def send_to_socket(self, socket_id: str, message: SocketMessage) -> None:
        payload = _encode(("s", socket_id, *_pack(message)))
        if not await self._call("SEND_NODE", socket_id, payload):
            raise SocketNotFound(f"no open socket {socket_id!r} on any node; it may have "
                                 "disconnected (on_disconnect tells you when)")

    async def disconnect(self, socket_id: str, code: int | None, reason: str) -> None:
        if not await self._call("SEND_NODE", socket_id, _encode(("c", socket_id, code, reason))):
            raise SocketNotFound(f"no open socket {socket_id!r} on any node")

    async def disconnect_user(self, user_id: str, code: int, reason: str) -> int:
        payload = _encode(("cu", user_id, code, reason))
        return int(await self._call("SEND_USER", user_id, payload, self.node_id))

    async def identify(self, socket_id: str, user_id: str) -> None:
        if not await self._call("SEND_NODE", socket_id, _encode(("i", socket_id, user_id))):
            raise SocketNotFound(f"no open socket {socket_id!r} on any node")

    # the index

    async def _index(self, script: str, *args: Any) -> None:
        try:
            await self._call(script, *args)
        except BackendError:
            self._resync_needed = True
            raise

    async def socket_opened(self, socket_id: str) -> None:
        await self._index("SOCKET_OPEN", socket_id, self.node_id)

    async def socket_closed(
        self, socket_id: str, user_id: str | None, rooms: Collection[str]
    ) -> None:
        await self._index("SOCKET_CLOSE", socket_id)

    async def user_bound(
        self, socket_id: str, user_id: str, previous: str | None, rooms: Collection[str]
    ) -> None:
        await self._index("SOCKET_BIND", socket_id, user_id)

    async def socket_joined(self, socket_id: str, room: str, user_id: str | None) -> None:
        await self._index("SOCKET_JOIN", socket_id, room)

    async def socket_left(self, socket_id: str, room: str, user_id: str | None) -> None:
        await self._index("SOCKET_LEAVE", socket_id, room)

    # queries: indexes kept in Redis, one round trip each

    async def online_users(self) -> list[str]:
        members = await self._command("SMEMBERS", f"{self.prefix}:online")
        return sorted(m.decode() for m in members)

    async def room_members(self, room: str) -> list[str]:
        members = await self._command("ZRANGE", f"{self.prefix}:room:{room}:members", 0, -1)
        return [m.decode() for m in members]

    async def room_users(self, room: str) -> list[str]:
        users = await self._command("HKEYS", f"{self.prefix}:room:{room}:users")
        return sorted(u.decode() for u in users)

    async def rooms_of(self, socket_id: str) -> frozenset[str]:
        key = f"{self.prefix}:sock:{socket_id}"
        if not await self._command("EXISTS", key):
            raise SocketNotFound(f"no open socket {socket_id!r} on any node")
        rooms = await self._command("SMEMBERS", f"{key}:rooms")
        return frozenset(r.decode() for r in rooms)

    async def connection_count(self) -> int:
        count = await self._command("GET", f"{self.prefix}:count")
        return max(0, int(count or 0))

    # the pub/sub link

    async def _run_link(self) -> None:
        backoff = 0.05
        arrivals = self._arrivals
        assert self._client is not None and arrivals is not None
        while not self._closing:
            conn = self._client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                async with asyncio.timeout(self.timeout):
                    await conn.connect()
                self._resubscribe_all(conn)
                backoff = 0.05
                silence = 3 * self.probe_interval
                while True:
                    reply = await conn.read_response(timeout=silence)
                    if reply is None:  # redis-py's answer to a read timeout
                        raise TimeoutError(f"no probe came back within {silence}s")
                    arrivals.arrived(reply)
            except asyncio.CancelledError:
                raise
            except _LINK_ERRORS as exc:
                self._link_down(exc)
            except Exception:
                # Never let a bug end this node's deliveries for good: reconnect.
                logger.exception("the Redis pub/sub link failed; reconnecting")
            finally:
                arrivals.release()  # what this link read comes before the next link's
                self._conn = None
                self._link_up = False
                await self._quietly_disconnect(conn)
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 2.0)

    @staticmethod
    async def _quietly_disconnect(conn: AbstractConnection) -> None:
        try:
            await conn.disconnect()
        except Exception:  # already failed; nothing left to do
            pass

    def _resubscribe_all(self, conn: AbstractConnection) -> None:
        """A new link: every wanted channel is subscribed anew, and waiters wait for that."""
        self._conn = conn
        channels = [self._node_channel, *self._wanted.values()]
        self._sent.clear()
        self._acked.clear()
        for channel in channels:
            self._sent[channel] = self._sub_seq[channel] = 1
        for channel, waiters in self._waiters.items():
            self._waiters[channel] = [(1, future) for _, future in waiters]
        self._reconnected = self._linked_before
        self._linked_before = True
        self._tasks.spawn(self._send(conn, "SUBSCRIBE", *channels), name="resubscribe")

    def _link_down(self, exc: BaseException) -> None:
        if self._closing:
            return
        self._outage(exc, self._probe_seen)  # the link was silent since its last probe
        logger.debug("Redis pub/sub link lost: %r", exc)

    def _on_reply(self, reply: Any) -> None:
        kind = reply[0]
        if kind == b"message":
            channel, data = reply[1], reply[2]
            if channel == self._node_channel:
                self._on_node_message(data)
            else:
                self._on_room_message(channel, data)
        elif kind in (b"subscribe", b"unsubscribe"):
            self._on_confirmation(kind, reply[1])

    def _on_confirmation(self, kind: bytes, channel: bytes) -> None:
        acked = self._acked[channel] = self._acked.get(channel, 0) + 1
        if channel == self._node_channel and kind == b"subscribe":
            self._link_up = True
            self._recovered()
            self._probe_seen = asyncio.get_running_loop().time()
        waiters = self._waiters.get(channel)
        if waiters:
            keep = []
            for seq, future in waiters:
                if future.done():
                    continue
                if acked >= seq:
                    future.set_result(None)
                else:
                    keep.append((seq, future))
            if keep:
                self._waiters[channel] = keep
            else:
                del self._waiters[channel]
        if kind == b"subscribe" and self._reconnected:
            room = self._rooms_by_channel.get(channel)
            if room is not None:
                self._repair(room)
                if self._delivery is not None:
                    self._delivery.presence_stale(room)

    def _on_room_message(self, channel: bytes, data: bytes) -> None:
        room = self._rooms_by_channel.get(channel)
        feed = self._feeds.get(room) if room is not None else None
        if room is None or feed is None or self._delivery is None:
            return
        if data[:1] in (b"+", b"-"):
            self._delivery.presence_changed(room, data[1:].decode(), data[:1] == b"+")
            return
        try:
            epoch, offset, size, rest = data.split(b" ", 3)
            length = int(size)
            exclude = frozenset(_decode(rest[:length])) if length else None
            event, binary, payload = _decode(rest[length:])
            publication = Publication(room, int(offset), _unpack(binary, payload), event)
        except (ValueError, msgspec.DecodeError, TypeError):
            logger.error("ignored a malformed publication on %r", channel)
            return
        arrival = Arrival(epoch.decode(), publication, exclude)
        verdict = feed.accept(arrival)
        if verdict is FeedVerdict.DELIVER:
            self._delivery.deliver_room(publication, exclude)
        elif verdict is FeedVerdict.REPAIR:
            self._tasks.spawn(self._run_repair(room, feed), name=f"repair {room}")

    def _repair(self, room: str) -> None:
        feed = self._feeds.get(room)
        if feed is not None and feed.begin_repair() is not None:
            self._tasks.spawn(self._run_repair(room, feed), name=f"repair {room}")

    async def _run_repair(self, room: str, feed: RoomFeed) -> None:
        """Fill this node's hole in ``room`` from history, or reset the room (a gap)."""
        delay = 0.05
        while self._feeds.get(room) is feed and feed.repairing:
            position = feed.position()
            if position is None:
                return
            try:
                recovery = await self.recover(room, *position, self._policies[room])
            except BackendError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if self._feeds.get(room) is not feed or self._delivery is None:
                return
            arrivals, reset, again = feed.repaired(recovery)
            if reset:
                logger.warning("room %r: publications were lost with the Redis link and "
                               "history cannot replace them; its members get a gap", room)
                self._delivery.room_reset(room, recovery)
            for arrival in arrivals:
                self._delivery.deliver_room(arrival.publication, arrival.exclude)
            if not again:
                return

    def _on_node_message(self, data: bytes) -> None:
        delivery = self._delivery
        if delivery is None:
            return
        try:
            op, *args = _decode(data)
            if op == "p":
                self._probe_seen = asyncio.get_running_loop().time()
            elif op == "u":
                delivery.deliver_user(args[0], _unpack(args[1], args[2]))
            elif op == "s":
                delivery.deliver_socket(args[0], _unpack(args[1], args[2]))
            elif op == "c":
                delivery.close_socket(args[0], args[1], args[2])
            elif op == "cu":
                delivery.close_user(args[0], args[1], args[2])
            elif op == "i":
                delivery.identify_socket(args[0], args[1])
            else:
                logger.error("ignored an unknown node message %r", op)
        except (ValueError, msgspec.DecodeError, TypeError, IndexError):
            logger.error("ignored a malformed node message")

    # the pulse: lease, reaping, probe, re-registering

    async def _heartbeat(self) -> None:
        lease = int((self.presence_timeout - self.probe_interval) * 1000)
        known, _ = await self._call("HEARTBEAT", self.node_id, lease, 5000)
        if not known and self._registered:
            logger.warning("node %s was forgotten by Redis (reaped or restarted); "
                           "registering its sockets again", self.node_id)
            self._resync_needed = True
        self._registered = True

    async def _pulse(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval)
            try:
                await self._heartbeat()
                if self._resync_needed:
                    await self._resync()
                await self._command("PUBLISH", self._node_channel, _encode(("p",)))
            except BackendError:
                pass  # logged once by _outage; the next pulse tries again

    async def _resync(self) -> None:
        """Register every local socket again (idempotent), and forget stale ones."""
        assert self._client is not None and self._delivery is not None
        self._resync_needed = False
        try:
            for chunk in _chunks(self._delivery.local_state(), 500):
                # The context gives the pipeline's connection back to the pool
                # even when loading scripts or executing fails or is cancelled.
                async with self._client.pipeline(transaction=False) as pipe:
                    for socket_id, user_id, rooms in chunk:
                        await self._scripts["SOCKET_OPEN"](
                            args=[self.prefix, socket_id, self.node_id], client=pipe)
                        if user_id is not None:
                            await self._scripts["SOCKET_BIND"](
                                args=[self.prefix, socket_id, user_id], client=pipe)
                        for room in rooms:
                            await self._scripts["SOCKET_JOIN"](
                                args=[self.prefix, socket_id, room], client=pipe)
                    async with asyncio.timeout(self.timeout * 4):
                        await pipe.execute()
            listed = await self._command("SMEMBERS", f"{self.prefix}:node:{self.node_id}")
            local = set(self._delivery.local_sockets())
            for stale in (s.decode() for s in listed):
                if stale not in local:
                    await self._call("SOCKET_CLOSE", stale)
        except (*_LINK_ERRORS, BackendError) as exc:
            self._resync_needed = True
            logger.debug("re-registering sockets failed: %r", exc)


def _entries(room: str, entries: list[Any]) -> list[Publication]:
    """Stream entries of a room's history (``<offset>-0``: ``t``, ``b``) as publications."""
    publications = []
    for entry_id, fields in entries:
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        event, binary, payload = _decode(values[b"b"])
        publications.append(Publication(
            room, int(entry_id.split(b"-")[0]), _unpack(binary, payload), event))
    return publications


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _without_password(url: str) -> str:
    """The URL for logs and errors: a password in it is masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
