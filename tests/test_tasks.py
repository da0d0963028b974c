"""TaskOwner: every task has an owner that can cancel them all, whatever they do."""

from __future__ import annotations

import asyncio

from nucleus.stream._tasks import TaskOwner

from .helpers import within


async def test_cancel_all_ends_a_task_that_swallowed_a_cancellation() -> None:
    """
    On Python 3.11, ``asyncio.wait_for`` returns the inner result instead of
    raising when it is cancelled just as its inner future finishes, so a loop
    over it (redis-py writes that way) can survive one cancel; cancel_all()
    must still end it, not wait forever.
    """
    owner = TaskOwner()
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()  # and go on, as wait_for does in that case
        await asyncio.sleep(3600)

    task = owner.spawn(stubborn())
    await asyncio.sleep(0)
    await within(owner.cancel_all(), 5)
    assert swallowed.is_set() and task.cancelled()
    assert len(owner) == 0


async def test_cancel_all_lets_a_task_finish_its_cleanup() -> None:
    owner = TaskOwner()
    cleaned = asyncio.Event()

    async def tidy() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.05)
            cleaned.set()

    owner.spawn(tidy())
    await asyncio.sleep(0)
    await within(owner.cancel_all())
    assert cleaned.is_set()
