"""Recording what a ``nucleus.client`` stream reports, and waiting for it with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from nucleus.client import ErrorInfo, Gap, State, Stream

from .helpers import DEADLINE, within

T = TypeVar("T")


class Watch:
    """Every state, gap and error of ``stream`` from now on; ``until()`` waits for a condition."""

    def __init__(self, stream: Stream) -> None:
        self.states: list[State] = []
        self.gaps: list[Gap] = []
        self.errors: list[ErrorInfo] = []
        self._changed = asyncio.Event()
        stream.on("state", self._record(self.states))
        stream.on("gap", self._record(self.gaps))
        stream.on("error", self._record(self.errors))

    def _record(self, into: list[Any]) -> Callable[[Any], None]:
        def record(value: Any) -> None:
            into.append(value)
            self._changed.set()

        return record

    @property
    def reopened(self) -> int:
        """How many times the stream opened again since the watch began."""
        return self.states.count(State.OPEN)

    @property
    def codes(self) -> list[str]:
        return [error.code for error in self.errors]

    async def until(self, condition: Callable[[], bool], seconds: float = DEADLINE) -> None:
        async def wait() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await within(wait(), seconds)


async def take(items: AsyncIterator[T], count: int, seconds: float = DEADLINE) -> list[T]:
    """The next ``count`` items, within ``seconds`` in all."""
    async def collect() -> list[T]:
        return [await anext(items) for _ in range(count)]

    result: list[T] = await within(collect(), seconds)
    return result
