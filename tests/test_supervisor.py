"""The supervisor's decisions, with plain calls and a time the test chooses."""

from __future__ import annotations

import pytest

from nucleus._supervisor import Backoff, Exit, Kill, Spawn, Supervision, Terminate
from nucleus.stream import ConfigError


def running(workers: int = 2, backoff: Backoff | None = None) -> Supervision:
    """A supervision whose workers have all started (pids 100, 101, ...) and serve."""
    machine = Supervision(workers, 30.0, backoff)
    assert machine.start() == [Spawn(slot) for slot in range(workers)]
    for slot in range(workers):
        machine.spawned(slot, 100 + slot)
    for slot in range(workers):
        assert machine.ready(slot, 0.0) is (slot == workers - 1)
    return machine


def test_needs_a_worker() -> None:
    with pytest.raises(ConfigError):
        Supervision(0, 1.0)


def test_the_first_death_restarts_at_once() -> None:
    machine = running()
    assert machine.exited(0, -9, 50.0) == [Spawn(0)]
    assert machine.deadline() is None


def test_a_crash_loop_backs_off_doubling_up_to_the_maximum() -> None:
    machine = running(backoff=Backoff(first=0.5, maximum=4.0, stable=10.0))
    now, delays = 1.0, []
    for pid in range(200, 207):
        actions = machine.exited(0, 1, now)
        due = machine.restart_at(0)
        if due is None:
            assert actions == [Spawn(0)]
            delays.append(0.0)
        else:
            assert actions == []
            assert machine.deadline() == due
            assert machine.tick(due - 0.01) == []
            assert machine.tick(due) == [Spawn(0)]
            delays.append(due - now)
            now = due
        machine.spawned(0, pid)
        machine.ready(0, now)
        now += 1.0  # dies a second after serving: quickly, again
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_worker_that_served_long_enough_is_restarted_at_once_again() -> None:
    machine = running(backoff=Backoff(first=0.5, maximum=30.0, stable=10.0))
    assert machine.exited(0, 1, 1.0) == [Spawn(0)]
    machine.spawned(0, 200)
    machine.ready(0, 1.5)
    assert machine.exited(0, 1, 2.0) == []  # second quick failure: waits
    assert machine.restart_at(0) == 2.5
    assert machine.tick(2.5) == [Spawn(0)]
    machine.spawned(0, 201)
    machine.ready(0, 3.0)
    assert machine.exited(0, 1, 13.0) == [Spawn(0)]  # served 10 s: the count starts over


def test_stop_drains_every_worker_then_exits_0() -> None:
    machine = running(3)
    assert machine.stop(5.0) == [Terminate(0), Terminate(1), Terminate(2)]
    assert machine.deadline() == 35.0
    assert machine.exited(1, 0, 6.0) == []
    assert machine.exited(0, 0, 6.0) == []
    assert machine.exited(2, 0, 7.0) == [Exit(0)]


def test_no_restart_while_stopping_and_pending_restarts_are_dropped() -> None:
    machine = running()
    machine.exited(0, 1, 1.0)
    machine.spawned(0, 200)
    assert machine.exited(0, 1, 1.5) == []  # waiting for a restart
    assert machine.stop(2.0) == [Terminate(1)]
    assert machine.tick(100.0) == [Kill(1)]  # the drain overran: kill; no Spawn(0)
    assert machine.exited(1, -9, 100.1) == [Exit(0)]


def test_workers_that_overrun_the_drain_are_killed_once() -> None:
    machine = running()
    machine.stop(0.0)
    assert machine.tick(29.9) == []
    assert machine.tick(30.0) == [Kill(0), Kill(1)]
    assert machine.deadline() is None
    assert machine.exited(0, -9, 30.1) == []
    assert machine.exited(1, 0, 30.1) == [Exit(0)]


def test_a_second_stop_kills_at_once() -> None:
    machine = running()
    machine.stop(0.0)
    assert machine.exited(0, 0, 0.5) == []
    assert machine.stop(1.0) == [Kill(1)]


def test_a_worker_that_never_served_stops_the_server_with_its_status() -> None:
    machine = Supervision(2, 30.0)
    machine.start()
    machine.spawned(0, 100)
    machine.spawned(1, 101)
    assert machine.ready(0, 0.1) is False
    assert machine.exited(1, 2, 0.2) == [Terminate(0)]  # e.g. the app cannot start
    assert machine.exited(0, 0, 0.3) == [Exit(2)]


def test_a_worker_killed_before_it_served_stops_the_server_with_status_1() -> None:
    machine = Supervision(1, 30.0)
    machine.start()
    machine.spawned(0, 100)
    assert machine.exited(0, -9, 0.2) == [Exit(1)]


def test_a_restart_that_fails_to_start_is_retried_with_backoff() -> None:
    machine = running(backoff=Backoff(first=0.5, maximum=30.0, stable=10.0))
    assert machine.exited(0, -9, 1.0) == [Spawn(0)]
    machine.spawned(0, 200)
    assert machine.exited(0, 1, 1.2) == []  # it served once: not fatal now (Redis down?)
    assert machine.restart_at(0) == 1.7


def test_ready_after_a_stop_began_changes_nothing() -> None:
    machine = Supervision(1, 30.0)
    machine.start()
    machine.spawned(0, 100)
    assert machine.stop(0.0) == [Terminate(0)]
    assert machine.ready(0, 0.1) is False
    assert machine.exited(0, 0, 0.2) == [Exit(0)]
