"""Room history and recovery (RoomLog, HistoryPolicy) and the MemoryBackend over it."""

from __future__ import annotations

import pytest

from nucleus.stream import ConfigError, HistoryPolicy, MemoryBackend, Publication, SocketMessage
from nucleus.stream._history import RoomLog

from .helpers import Clock


def text(n: int) -> SocketMessage:
    return SocketMessage.Text(f"m{n}")


def log_with(count: int, policy: HistoryPolicy, clock: Clock) -> RoomLog:
    log = RoomLog(policy, clock)
    for n in range(1, count + 1):
        log.append(text(n), "room", None)
    return log


def offsets(publications: tuple[Publication, ...]) -> list[int]:
    return [publication.offset for publication in publications]


class RecordingDelivery:
    """The hub's side of the backend, reduced to two lists."""

    def __init__(self) -> None:
        self.rooms: list[tuple[Publication, frozenset[str] | None]] = []
        self.users: list[tuple[str, SocketMessage]] = []

    def deliver_room(self, publication: Publication, exclude: frozenset[str] | None) -> None:
        self.rooms.append((publication, exclude))

    def deliver_user(self, user_id: str, message: SocketMessage) -> None:
        self.users.append((user_id, message))


# -- HistoryPolicy -----------------------------------------------------------------


def test_policy_defaults() -> None:
    assert HistoryPolicy() == HistoryPolicy(size=100, ttl=300.0)
    HistoryPolicy(size=0, ttl=0)  # both bounds may be zero


@pytest.mark.parametrize(("size", "ttl"), [(-1, 10.0), (10, -0.5), (-1, -1.0)])
def test_policy_refuses_negative_bounds(size: int, ttl: float) -> None:
    with pytest.raises(ConfigError, match=">= 0"):
        HistoryPolicy(size=size, ttl=ttl)


def test_policy_refuses_a_nan_ttl() -> None:
    with pytest.raises(ConfigError):
        HistoryPolicy(ttl=float("nan"))


# -- RoomLog: numbering ------------------------------------------------------------


def test_offsets_count_from_one_without_gaps() -> None:
    log = RoomLog(HistoryPolicy(size=3), Clock())
    published = [log.append(text(n), "room", "ev" if n % 2 else None) for n in range(1, 8)]
    assert [p.offset for p in published] == list(range(1, 8))
    assert log.offset == 7
    assert published[0] == Publication("room", 1, text(1), "ev")
    assert published[1].event is None


def test_size_zero_numbers_messages_but_keeps_none() -> None:
    clock = Clock()
    log = log_with(5, HistoryPolicy(size=0), clock)
    assert log.offset == 5
    assert log.since(log.epoch, 4).recovered is False
    assert log.since(log.epoch, 5).recovered is True


# -- RoomLog: since ------------------------------------------------------------------


def test_without_a_position_there_is_nothing_to_recover() -> None:
    log = log_with(3, HistoryPolicy(), Clock())
    recovery = log.since(None, None)
    assert (recovery.epoch, recovery.offset, recovery.publications) == (log.epoch, 3, ())


def test_up_to_date_position_recovers_nothing() -> None:
    log = log_with(3, HistoryPolicy(), Clock())
    recovery = log.since(log.epoch, 3)
    assert recovery.recovered is True
    assert recovery.publications == ()
    assert (recovery.epoch, recovery.offset) == (log.epoch, 3)


def test_fresh_log_position_zero_is_up_to_date() -> None:
    log = RoomLog(HistoryPolicy(), Clock())
    recovery = log.since(log.epoch, 0)
    assert (recovery.recovered, recovery.offset, recovery.publications) == (True, 0, ())


@pytest.mark.parametrize("seen", [0, 1, 4, 8])
def test_older_position_recovers_exactly_the_missed_messages_in_order(seen: int) -> None:
    log = log_with(9, HistoryPolicy(size=100), Clock())
    recovery = log.since(log.epoch, seen)
    assert recovery.recovered is True
    assert offsets(recovery.publications) == list(range(seen + 1, 10))
    assert [p.message for p in recovery.publications] == [text(n) for n in range(seen + 1, 10)]
    assert recovery.offset == 9  # the position before the replay


def test_trimmed_history_is_not_recovered() -> None:
    log = log_with(10, HistoryPolicy(size=3), Clock())  # keeps 8, 9, 10
    assert offsets(log.since(log.epoch, 7).publications) == [8, 9, 10]
    recovery = log.since(log.epoch, 6)
    assert recovery.recovered is False
    assert recovery.publications == ()
    assert (recovery.epoch, recovery.offset) == (log.epoch, 10)


def test_expired_history_is_not_recovered() -> None:
    clock = Clock()
    log = RoomLog(HistoryPolicy(size=100, ttl=60.0), clock)
    log.append(text(1), "room", None)
    clock.now += 30
    log.append(text(2), "room", None)
    clock.now += 30  # message 1 is exactly ttl old: still kept
    assert offsets(log.since(log.epoch, 0).publications) == [1, 2]
    clock.now += 0.5
    assert log.since(log.epoch, 0).recovered is False
    assert offsets(log.since(log.epoch, 1).publications) == [2]
    clock.now += 30
    assert log.since(log.epoch, 1).recovered is False
    assert log.since(log.epoch, 2).recovered is True  # nothing was missed


@pytest.mark.parametrize("seen", [4, 100, -1])
def test_offset_outside_the_epoch_is_not_recovered(seen: int) -> None:
    log = log_with(3, HistoryPolicy(), Clock())
    recovery = log.since(log.epoch, seen)
    assert recovery.recovered is False
    assert recovery.publications == ()


def test_another_epoch_is_not_recovered() -> None:
    log = log_with(3, HistoryPolicy(), Clock())
    recovery = log.since("not-" + log.epoch, 1)
    assert recovery.recovered is False
    assert (recovery.epoch, recovery.offset) == (log.epoch, 3)


# -- MemoryBackend ----------------------------------------------------------------


async def publish(
    backend: MemoryBackend, room: str, message: SocketMessage, event: str | None = None,
    exclude: frozenset[str] | None = None, policy: HistoryPolicy | None = None,
) -> int:
    return await backend.publish(room, message, event, exclude, policy or backend.default_policy)


async def started(backend: MemoryBackend) -> RecordingDelivery:
    delivery = RecordingDelivery()
    await backend.start(delivery)
    return delivery


async def test_publish_numbers_each_room_separately() -> None:
    backend = MemoryBackend(clock=Clock())
    await started(backend)
    await backend.room_active("a", backend.default_policy)
    await backend.room_active("b", backend.default_policy)
    numbers = [await publish(backend, room, text(0)) for room in ("a", "a", "b", "a", "b")]
    assert numbers == [1, 2, 1, 3, 2]


async def test_publish_delivers_only_while_the_room_is_active() -> None:
    backend = MemoryBackend(clock=Clock())
    delivery = await started(backend)
    assert await publish(backend, "r", text(1)) == 1  # numbered and kept, delivered nowhere
    assert delivery.rooms == []
    await backend.room_active("r", backend.default_policy)
    await publish(backend, "r", text(2), event="ev", exclude=frozenset({"s1"}))
    assert delivery.rooms == [(Publication("r", 2, text(2), "ev"), frozenset({"s1"}))]
    await backend.room_inactive("r")
    await publish(backend, "r", text(3))
    assert len(delivery.rooms) == 1


async def test_nothing_is_delivered_after_aclose() -> None:
    backend = MemoryBackend(clock=Clock())
    delivery = await started(backend)
    await backend.room_active("r", backend.default_policy)
    await backend.aclose()
    await publish(backend, "r", text(1))
    await backend.publish_user("ada", text(1))
    assert (delivery.rooms, delivery.users) == ([], [])


async def test_publish_user_is_handed_to_the_delivery() -> None:
    backend = MemoryBackend(clock=Clock())
    delivery = await started(backend)
    await backend.publish_user("ada", text(1))
    assert delivery.users == [("ada", text(1))]


async def test_recover_after_members_return_within_the_ttl() -> None:
    clock = Clock()
    backend = MemoryBackend(HistoryPolicy(size=10, ttl=60.0), clock=clock)
    await started(backend)
    await backend.room_active("r", backend.default_policy)
    for n in range(1, 4):
        await publish(backend, "r", text(n))
    epoch = (await backend.recover("r", None, None, backend.default_policy)).epoch
    await backend.room_inactive("r")
    clock.now += 59
    backend.sweep()
    await backend.room_active("r", backend.default_policy)
    recovery = await backend.recover("r", epoch, 1, backend.default_policy)
    assert (recovery.epoch, recovery.recovered) == (epoch, True)
    assert offsets(recovery.publications) == [2, 3]


async def test_idle_logs_of_inactive_rooms_are_swept_after_the_ttl() -> None:
    clock = Clock()
    backend = MemoryBackend(HistoryPolicy(size=10, ttl=60.0), clock=clock)
    await started(backend)
    for room in ("gone", "kept"):
        await backend.room_active(room, backend.default_policy)
        await publish(backend, room, text(1))
    old_epoch = (await backend.recover("gone", None, None, backend.default_policy)).epoch
    await backend.room_inactive("gone")
    assert backend.room_logs() == 2
    clock.now += 60
    backend.sweep()
    assert backend.room_logs() == 2  # a returning member may still resume
    clock.now += 1
    await backend.housekeeping()
    assert backend.room_logs() == 1  # an active room is never swept, however old
    await backend.room_active("gone", backend.default_policy)
    recovery = await backend.recover("gone", old_epoch, 1, backend.default_policy)
    assert (recovery.recovered, recovery.offset) == (False, 0)  # a new log, a new epoch
    assert recovery.epoch != old_epoch


async def test_a_room_just_left_keeps_its_position_even_with_its_history_expired() -> None:
    clock = Clock()
    backend = MemoryBackend(HistoryPolicy(size=10, ttl=60.0), clock=clock)
    await started(backend)
    await backend.room_active("r", backend.default_policy)
    await publish(backend, "r", text(1))
    epoch = (await backend.recover("r", None, None, backend.default_policy)).epoch
    clock.now += 600  # message 1 expired long ago
    await backend.room_inactive("r")
    clock.now += 30
    backend.sweep()
    await backend.room_active("r", backend.default_policy)
    # a client that saw everything:
    recovery = await backend.recover("r", epoch, 1, backend.default_policy)
    assert (recovery.epoch, recovery.offset, recovery.recovered) == (epoch, 1, True)
    await backend.room_inactive("r")
    clock.now += 61
    backend.sweep()
    assert backend.room_logs() == 0


async def test_publishing_to_an_unwatched_room_without_history_allocates_nothing() -> None:
    backend = MemoryBackend(HistoryPolicy(size=0), clock=Clock())
    delivery = await started(backend)
    await publish(backend, "nobody-here", text(1))
    assert backend.room_logs() == 0
    assert delivery.rooms == []


async def test_the_policy_given_with_each_call_applies() -> None:
    backend = MemoryBackend(HistoryPolicy(size=100), clock=Clock())
    await started(backend)
    small = HistoryPolicy(size=2)
    await backend.room_active("r", small)
    for n in range(1, 6):
        await publish(backend, "r", text(n), policy=small)
    epoch = (await backend.recover("r", None, None, small)).epoch
    assert (await backend.recover("r", epoch, 2, small)).recovered is False
    assert offsets((await backend.recover("r", epoch, 3, small)).publications) == [4, 5]


async def test_a_smaller_policy_trims_the_history_at_once() -> None:
    backend = MemoryBackend(HistoryPolicy(size=100), clock=Clock())
    await started(backend)
    await backend.room_active("r", backend.default_policy)
    for n in range(1, 6):
        await publish(backend, "r", text(n))
    epoch = (await backend.recover("r", None, None, backend.default_policy)).epoch
    small = HistoryPolicy(size=2)
    await backend.room_inactive("r")
    await backend.room_active("r", small)
    await publish(backend, "r", text(6), policy=small)
    recovery = await backend.recover("r", epoch, 1, small)
    assert recovery.recovered is False


async def test_recovery_never_skips_messages_that_were_not_kept() -> None:
    backend = MemoryBackend(HistoryPolicy(size=10), clock=Clock())
    await started(backend)
    await backend.room_active("r", backend.default_policy)
    for n in range(1, 4):
        await publish(backend, "r", text(n))
    epoch = (await backend.recover("r", None, None, backend.default_policy)).epoch
    for policy in (HistoryPolicy(size=0), HistoryPolicy(size=10)):
        await backend.room_inactive("r")
        await backend.room_active("r", policy)  # the room's rule changed meanwhile
        for n in range(2):
            await publish(backend, "r", text(n), policy=policy)
    recovery = await backend.recover("r", epoch, 2, backend.default_policy)  # missed 3..7
    assert not recovery.recovered or offsets(recovery.publications) == [3, 4, 5, 6, 7]
