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
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
