"""
Backends for tests: the memory backend made to suspend at every await, and a
real Redis backend under a key prefix of its own.

``YieldingBackend`` is the memory backend with a yield (or a small delay)
before and after every call, the way a networked backend behaves: the hub must
stay exact under it. ``redis_backend`` connects to the test Redis (database 15
unless ``NUCLEUS_TEST_REDIS`` says otherwise); without one, tests using it are
skipped loudly, except on CI (``CI=true``) where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Collection
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from nucleus.stream import HistoryPolicy, MemoryBackend, RedisBackend, SocketMessage
from nucleus.stream._history import Recovery

REDIS_URL = os.environ.get("NUCLEUS_TEST_REDIS", "redis://127.0.0.1:6379/15")


class YieldingBackend(MemoryBackend):
    """The memory backend, suspending before and after every call."""

    def __init__(self, delay: float = 0.0, **options: Any) -> None:
        super().__init__(**options)
        self.delay = delay

    async def _pause(self) -> None:
        await asyncio.sleep(self.delay)

    async def publish(
        self, room: str, message: SocketMessage, event: str | None,
        exclude: frozenset[str] | None, policy: HistoryPolicy,
    ) -> int:
        await self._pause()
        offset = await super().publish(room, message, event, exclude, policy)
        await self._pause()
        return offset

    async def room_active(self, room: str, policy: HistoryPolicy) -> None:
        await self._pause()
        await super().room_active(room, policy)
        await self._pause()

    async def room_inactive(self, room: str) -> None:
        await self._pause()
        await super().room_inactive(room)
        await self._pause()

    async def recover(
        self, room: str, epoch: str | None, offset: int | None, policy: HistoryPolicy
    ) -> Recovery:
        await self._pause()
        recovery = await super().recover(room, epoch, offset, policy)
        await self._pause()
        return recovery

    async def socket_opened(self, socket_id: str) -> None:
        await self._pause()

    # The memory backend reports presence from the registry as it is during
    # the call, so the yield comes after it.

    async def socket_closed(
        self, socket_id: str, user_id: str | None, rooms: Collection[str]
    ) -> None:
        await super().socket_closed(socket_id, user_id, rooms)
        await self._pause()

    async def user_bound(
        self, socket_id: str, user_id: str, previous: str | None, rooms: Collection[str]
    ) -> None:
        await super().user_bound(socket_id, user_id, previous, rooms)
        await self._pause()

    async def socket_joined(self, socket_id: str, room: str, user_id: str | None) -> None:
        await super().socket_joined(socket_id, room, user_id)
        await self._pause()

    async def socket_left(self, socket_id: str, room: str, user_id: str | None) -> None:
        await super().socket_left(socket_id, room, user_id)
        await self._pause()


def redis_reachable() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def require_redis() -> None:
    if redis_reachable():
        return
    message = f"Redis is not reachable at {REDIS_URL}: the Redis backend tests cannot run"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must start it: see .ci/run)")
    pytest.skip("!!! " + message + " (start redis-server to run them)")


def new_prefix() -> str:
    return f"nucleus-test-{uuid.uuid4().hex[:12]}"


async def delete_prefix(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def redis_backend(prefix: str, url: str = REDIS_URL, **options: Any) -> RedisBackend:
    options.setdefault("presence_timeout", 3.0)
    options.setdefault("probe_interval", 0.5)
    return RedisBackend(url, prefix=prefix, **options)
