"""
The coalescer under the Redis link: arrivals held while this node's publishes
are in flight, handed on together and in order. Plain calls on a scheduler
whose turns and time the test drives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import pytest

from nucleus.stream._coalesce import Coalescer


class Pending:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Turns:
    """A scheduler for tests: ``turn()`` runs one loop turn, ``advance()`` moves time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.soon: list[Pending] = []
        self.timers: list[Pending] = []

    def call_soon(self, callback: Callable[[], object]) -> Any:
        self.soon.append(Pending(self.now, callback))
        return self.soon[-1]

    def call_later(self, delay: float, callback: Callable[[], object]) -> Any:
        self.timers.append(Pending(self.now + delay, callback))
        return self.timers[-1]

    def turn(self) -> None:
        ready, self.soon = self.soon, []
        for pending in ready:
            if not pending.cancelled:
                pending.callback()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [t for t in self.timers if t.when <= self.now and not t.cancelled]
        self.timers = [t for t in self.timers if t not in due]
        for timer in due:
            timer.callback()


def coalescer(window: float = 0.005) -> tuple[Coalescer[int], list[int], Turns]:
    handled: list[int] = []
    turns = Turns()
    return Coalescer(handled.append, window, cast(Any, turns)), handled, turns


def test_nothing_is_held_while_nothing_is_published() -> None:
    arrivals, handled, _ = coalescer()
    arrivals.arrived(1)
    arrivals.arrived(2)
    assert handled == [1, 2]


def test_arrivals_during_a_publish_go_on_together_the_turn_after_its_reply() -> None:
    arrivals, handled, turns = coalescer()
    arrivals.begin()
    for n in (1, 2, 3):
        arrivals.arrived(n)
    assert handled == [] and arrivals.holding == 3
    arrivals.end()
    assert handled == []  # the publisher may publish again in this turn
    turns.turn()
    assert handled == [1, 2, 3] and arrivals.holding == 0
    arrivals.arrived(4)
    assert handled == [1, 2, 3, 4]


def test_a_publisher_draining_its_queue_keeps_one_batch() -> None:
    arrivals, handled, turns = coalescer()
    for n in range(1, 33):  # each reply is followed at once by the next publish
        arrivals.begin()
        turns.turn()
        arrivals.arrived(n)
        arrivals.end()
        turns.advance(0.0001)
    assert handled == []
    turns.turn()
    assert handled == list(range(1, 33))


def test_the_window_bounds_how_long_an_arrival_waits() -> None:
    arrivals, handled, turns = coalescer(window=0.005)
    arrivals.begin()  # never answered, or slowly
    arrivals.arrived(1)
    turns.advance(0.004)
    arrivals.arrived(2)
    assert handled == []
    turns.advance(0.001)
    assert handled == [1, 2]
    arrivals.arrived(3)  # still in flight: a new batch, a new window
    turns.advance(0.005)
    assert handled == [1, 2, 3]


def test_concurrent_publishes_hold_until_the_last_is_answered() -> None:
    arrivals, handled, turns = coalescer()
    arrivals.begin()
    arrivals.begin()
    arrivals.arrived(1)
    arrivals.end()
    turns.turn()
    assert handled == []
    arrivals.arrived(2)
    arrivals.end()
    turns.turn()
    assert handled == [1, 2]


def test_a_zero_window_holds_nothing() -> None:
    arrivals, handled, _ = coalescer(window=0)
    arrivals.begin()
    arrivals.arrived(1)
    assert handled == [1]


def test_release_hands_on_at_once_and_a_failure_loses_nothing_after_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[int] = []

    def handle(n: int) -> None:
        if n == 2:
            raise ValueError("a bug")
        handled.append(n)

    arrivals = Coalescer(handle, 0.005, cast(Any, Turns()))
    arrivals.begin()
    for n in (1, 2, 3):
        arrivals.arrived(n)
    with caplog.at_level(logging.ERROR, "nucleus.stream"):
        arrivals.release()  # the link closing: what it read goes on
    assert handled == [1, 3]
    assert "handling a broker arrival failed" in caplog.text
