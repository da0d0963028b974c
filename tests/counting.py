"""
Counting every message: a publisher that numbers its messages, and the check
that a ``nucleus.v1`` client got each one exactly once, in order, or was told
of a gap.

The publisher sends ``m0``, ``m1``... and records the offset of each
publication the backend acknowledged. :func:`check_exact` walks everything
the client received, in order: offsets must run without a hole between its
``joined`` frames, no message may come twice or out of order, and every
acknowledged message published after the client's first join must be there,
except those a reported gap (``recovered: false``) covers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from nucleus.stream import BackendUnavailable, SocketMessage, StreamHub

from .helpers import eventually, within
from .tagged_client import TaggedClient

ROOM = "chat"


@dataclass
class Publisher:
    """Publishes ``m0``, ``m1``... to ``room`` through a hub until stopped."""

    hub: StreamHub
    room: str = ROOM
    acked: dict[int, int] = field(default_factory=dict)  # sequence -> offset
    failed: dict[int, float] = field(default_factory=dict)  # sequence -> seconds it took
    sent: int = 0
    _task: asyncio.Task[None] | None = None
    _stopping: bool = False

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            seq = self.sent
            self.sent += 1
            began = loop.time()
            try:
                self.acked[seq] = await self.hub.broadcast_to_room(
                    self.room, SocketMessage.Text(f"m{seq}"))
            except BackendUnavailable:
                self.failed[seq] = loop.time() - began
            await asyncio.sleep(0.003)  # a steady stream, not a flood

    async def stop(self) -> None:
        """Stop after the publication in flight (so that its outcome is known)."""
        if self._task is not None:
            self._stopping = True
            await within(self._task)

    async def wait_acked(self, more: int) -> None:
        """Wait until ``more`` further messages have been published."""
        target = len(self.acked) + more

        async def enough() -> bool:
            return len(self.acked) >= target

        await eventually(enough, what=f"{more} more publications")

    @property
    def last(self) -> int:
        return max(self.acked)


def sequence(data: Any) -> int | None:
    """The publisher's number of a message, None for another (a test's own)."""
    if isinstance(data, str) and data[:1] == "m" and data[1:].isdigit():
        return int(data[1:])
    return None


async def wait_received(client: TaggedClient, seq: int, room: str = ROOM) -> None:
    async def got() -> bool:
        return any(sequence(d) == seq for _, d in client.channels[room].received)

    await eventually(got, what=f"message m{seq} at {client.url}")


@dataclass
class Tally:
    received: list[int]
    gaps: int


def check_exact(client: TaggedClient, publisher: Publisher) -> Tally:
    """
    Every message published after the client's first join reached it once, in
    order, except those a reported gap covers; offsets run without a hole
    between gaps.
    """
    room = publisher.room
    frames = [f for f in client.frames if f.get("channel") == room]
    joins = [f for f in frames if f["type"] == "joined"]
    since = joins[0]["offset"]  # (tests that restart Redis join before any publication)
    expect: int | None = None
    received: list[int] = []
    lost: list[tuple[int, int]] = []  # (last seen, first seen after) around each gap
    gap_at: int | None = None
    for frame in frames:
        if frame["type"] == "joined":
            if frame.get("recovered") is True:
                assert expect is None or frame["offset"] >= expect - 1, frame
            else:
                expect = frame["offset"] + 1
                if frame.get("recovered") is False:
                    gap_at = received[-1] if received else -1
        elif frame["type"] == "pub":
            if expect is not None:
                assert frame["offset"] == expect, (
                    f"offset {frame['offset']} where {expect} was due: {client.url}")
            expect = frame["offset"] + 1
            seq = sequence(frame.get("text", frame.get("data")))
            if seq is None:
                continue
            if gap_at is not None:
                lost.append((gap_at, seq))
                gap_at = None
            received.append(seq)
    assert received == sorted(set(received)), "a duplicate or a message out of order"
    seen = set(received)
    for seq, offset in publisher.acked.items():
        if offset <= since or seq in seen or any(a < seq < b for a, b in lost):
            continue
        raise AssertionError(f"m{seq} (offset {offset}) never reached {client.url}; "
                             f"got {received}")
    return Tally(received, client.channels[room].gaps)
