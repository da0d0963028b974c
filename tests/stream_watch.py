"""Recording what a ``nucleus.client`` stream reports, and waiting for it with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

from nucleus.client import ErrorInfo, Gap, State, Stream

from .cluster import TcpProxy
from .helpers import DEADLINE, within

T = TypeVar("T")

#: connect() options that reconnect at once: tests wait on events, never on backoff.
FAST: dict[str, Any] = {"min_delay": 0.01, "max_delay": 0.1, "restart_delay": (0.01, 0.05)}


def url_of(proxy: TcpProxy, path: str = "/ws") -> str:
    """The WebSocket URL of ``path`` through ``proxy`` (``conftest.proxy_to``)."""
    return f"ws://127.0.0.1:{proxy.port}{path}"


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


class Collector(Generic[T]):
    """Consumes ``items`` in a task of its own, as an application would, into :attr:`items`."""

    def __init__(self, items: AsyncIterator[T]) -> None:
        self.items: list[T] = []
        self._grew = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._consume(items))

    async def _consume(self, items: AsyncIterator[T]) -> None:
        async for item in items:
            self.items.append(item)
            self._grew.set()

    async def until(self, count: int, seconds: float = DEADLINE) -> list[T]:
        """Wait until ``count`` items came (within ``seconds``); return them all."""
        async def wait() -> None:
            while len(self.items) < count:
                self._grew.clear()
                await self._grew.wait()

        await within(wait(), seconds)
        return self.items

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
