"""
The Redis backend's command pipe: calls of one loop turn written together,
each reply to its own caller, in order; failures reach every caller they touch.

Real Redis (the test database, under a prefix of the test's own); a TCP proxy
stands in for a network that can be cut or stalled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from nucleus.stream._redis_pipe import CommandPipe

from .backends import REDIS_URL
from .cluster import TcpProxy, host_port_db
from .helpers import eventually, within


class Writes:
    """Connections made for a pipe, counting what is written on them."""

    async def past(self, count: int) -> None:
        """Wait until more than ``count`` writes were made (what was queued is written)."""

        async def written() -> bool:
            return self.writes > count

        await eventually(written, what=f"write {count + 1}")

    def __init__(self, url: str) -> None:
        self.pool = aioredis.ConnectionPool.from_url(url, protocol=2, socket_timeout=None)
        self.writes = 0
        self.made = 0

    def connect(self) -> AbstractConnection:
        conn: AbstractConnection = self.pool.make_connection()
        send = conn.send_packed_command

        async def counted(command: Any, check_health: bool = True) -> None:
            self.writes += 1
            await send(command, check_health)

        conn.send_packed_command = counted  # type: ignore[method-assign]
        self.made += 1
        return conn


async def proxied(proxy_to: Callable[[int], Awaitable[TcpProxy]]) -> tuple[TcpProxy, str]:
    """A proxy to the test Redis (to cut or stall), and its URL."""
    _, port, db = host_port_db(REDIS_URL)
    proxy = await proxy_to(port)
    return proxy, f"redis://127.0.0.1:{proxy.port}/{db}"


@pytest.fixture
async def pipe_to() -> AsyncIterator[Callable[..., tuple[CommandPipe, Writes]]]:
    pipes: list[CommandPipe] = []

    def make(url: str = REDIS_URL, timeout: float = 3.0) -> tuple[CommandPipe, Writes]:
        writes = Writes(url)
        pipes.append(CommandPipe(writes.connect, timeout))
        return pipes[-1], writes

    yield make
    for pipe in pipes:
        await pipe.aclose()


async def test_calls_of_one_turn_go_in_one_write_each_with_its_reply(
    redis_prefix: str, pipe_to: Callable[..., tuple[CommandPipe, Writes]],
) -> None:
    pipe, writes = pipe_to()
    key = f"{redis_prefix}:n"
    assert await pipe.execute("SET", key, 0) == b"OK"
    before = writes.writes
    replies = await within(asyncio.gather(*(pipe.execute("INCR", key) for _ in range(200))))
    # In call order, each its own: Redis ran them in the order they were made.
    assert replies == list(range(1, 201))
    assert writes.writes - before == 2  # the first at once (the pipe was idle), the rest together
    assert writes.made == 1


async def test_an_error_reply_reaches_its_caller_only(
    redis_prefix: str, pipe_to: Callable[..., tuple[CommandPipe, Writes]],
) -> None:
    pipe, _ = pipe_to()
    text, number = f"{redis_prefix}:text", f"{redis_prefix}:number"
    await pipe.execute("SET", text, "abc")
    results = await within(asyncio.gather(
        pipe.execute("INCR", number), pipe.execute("INCR", text),
        pipe.execute("INCR", number), return_exceptions=True))
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], ResponseError)
    assert await pipe.execute("GET", number) == b"2"  # the connection goes on


async def test_a_lost_connection_fails_every_call_written_on_it_then_reconnects(
    redis_prefix: str, proxy_to: Any, pipe_to: Callable[..., tuple[CommandPipe, Writes]],
) -> None:
    proxy, url = await proxied(proxy_to)
    pipe, writes = pipe_to(url)
    key = f"{redis_prefix}:n"
    await pipe.execute("SET", key, 0)
    proxy.stall()  # written, never answered: then the link is cut
    before = writes.writes
    calls = [asyncio.ensure_future(pipe.execute("INCR", key)) for _ in range(20)]
    await writes.past(before)
    await proxy.stop()
    results = await within(asyncio.gather(*calls, return_exceptions=True))
    assert all(isinstance(result, RedisError | OSError) for result in results), results
    proxy.resume()
    await proxy.start()
    # Some of the lost calls may have run (their replies were lost); the next
    # call gets a new connection and its own reply.
    count = int(await within(pipe.execute("INCR", key)))
    assert 1 <= count <= 21
    assert writes.made == 2


async def test_a_call_unanswered_within_the_timeout_replaces_the_connection(
    redis_prefix: str, proxy_to: Any, pipe_to: Callable[..., tuple[CommandPipe, Writes]],
) -> None:
    proxy, url = await proxied(proxy_to)
    pipe, writes = pipe_to(url, timeout=0.3)
    key = f"{redis_prefix}:n"
    await pipe.execute("SET", key, 0)
    proxy.stall()  # a partition: bytes held back, no reset
    before = writes.writes
    first = asyncio.ensure_future(pipe.execute("INCR", key))
    await writes.past(before)
    second = asyncio.ensure_future(pipe.execute("INCR", key))
    with pytest.raises(TimeoutError):
        await within(first)
    # The connection is replaced: what was written on it fails too, at once.
    with pytest.raises((TimeoutError, RedisError)):
        await within(second, 0.05)
    proxy.resume()
    assert int(await within(pipe.execute("INCR", key))) >= 1
    assert writes.made == 2


async def test_a_caller_that_gives_up_leaves_the_others_their_own_replies(
    redis_prefix: str, proxy_to: Any, pipe_to: Callable[..., tuple[CommandPipe, Writes]],
) -> None:
    proxy, url = await proxied(proxy_to)
    pipe, writes = pipe_to(url)
    key = f"{redis_prefix}:n"
    await pipe.execute("SET", key, 0)
    proxy.stall()
    before = writes.writes
    calls = [asyncio.ensure_future(pipe.execute("INCR", key)) for _ in range(10)]
    await writes.past(before)  # all written (one write), none answered
    calls[3].cancel()
    proxy.resume()
    results = await within(asyncio.gather(*calls, return_exceptions=True))
    assert isinstance(results[3], asyncio.CancelledError)
    # It ran (its reply was read and dropped); every other caller got its own.
    assert [r for i, r in enumerate(results) if i != 3] == [1, 2, 3, 5, 6, 7, 8, 9, 10]


async def test_closing_fails_what_is_pending_and_refuses_more(
    pipe_to: Callable[..., tuple[CommandPipe, Writes]],
) -> None:
    pipe, writes = pipe_to()
    blocked = asyncio.ensure_future(pipe.execute("BLPOP", "nucleus-test-pipe-never", 0))
    await writes.past(0)  # written: Redis holds it
    await within(pipe.aclose())
    await within(pipe.aclose())  # idempotent
    with pytest.raises(RedisError):
        await within(blocked)
    with pytest.raises(RedisError):
        await pipe.execute("PING")
