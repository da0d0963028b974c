"""
Ownership of background tasks: every task the server starts has an owner that
keeps a reference, logs its failure and can wait for all of them at shutdown.

:meth:`TaskOwner.start` starts a task *eagerly* where Python can (3.12+): its
coroutine runs at once, inside its task, up to its first suspension, and one
that never suspends (an ``on_connect`` that only joins a room) is done before
``start`` returns, with no loop turn and no task left to keep. Python 3.11
cannot: a coroutine step taken before its task exists would see no
``asyncio.current_task()`` (or the caller's), which ``asyncio.timeout``,
``TaskGroup``, anyio's cancel scopes and redis-py rely on; there ``start`` is
``spawn``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
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

    def start(
        self, coro: Coroutine[Any, Any, Any], name: str | None = None
    ) -> asyncio.Task[Any] | None:
        """
        Run ``coro`` in a task started eagerly (see the module docstring);
        return the task, or None when it finished within its first step.
        """
        if sys.version_info >= (3, 12):
            loop = asyncio.get_running_loop()
            task = asyncio.Task(coro, loop=loop, name=name, eager_start=True)
            if task.done():
                self._log_failure(task)
                return None
            self._tasks.add(task)
            task.add_done_callback(self._done)
            return task
        return self.spawn(coro, name)

    @staticmethod
    def _log_failure(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task %s failed", task.get_name(),
                         exc_info=task.exception())

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._log_failure(task)
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
