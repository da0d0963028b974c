"""
Ownership of background tasks: every task the server starts has an owner that
keeps a reference, logs its failure and can wait for all of them at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["TaskOwner"]

logger = logging.getLogger("nucleus.stream")

#: Seconds after which cancel_all() cancels again a task that is still running.
RECANCEL_AFTER = 0.5


class TaskOwner:
    """A set of running tasks with one owner (like a nursery that never blocks spawn)."""

    __slots__ = ("_idle", "_tasks")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.Event | None = None

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task %s failed", task.get_name(),
                         exc_info=task.exception())
        if not self._tasks and self._idle is not None:
            self._idle.set()

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait_idle(self) -> None:
        """Return once no task is running."""
        while self._tasks:
            self._idle = asyncio.Event()
            await self._idle.wait()

    async def cancel_all(self) -> None:
        """Cancel every task and wait until each has finished its cleanup."""
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            # Cancel again what still runs after a while: on Python 3.11, a task
            # can swallow a cancellation and go on (asyncio.wait_for returns the
            # result of an inner future that finished just then; redis-py writes
            # through wait_for), and waiting on it once would hang forever.
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_AFTER)
