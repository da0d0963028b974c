"""
A room whose history is lost (a broker outage the backend cannot repair) while
a library client's join is in flight, or just after it: the client must end in
the room's new epoch and get every publication of it, never a frame of the old
one after the reset and never a new publication dropped as already replayed.

The backend is the memory backend made to behave like a broker (its live
stream may lag its history) with its ``recover`` held at a gate; the reset and
the new epoch's first publication are what the Redis backend hands the hub
through the ``Delivery`` protocol after a failed repair.
"""

from __future__ import annotations

import asyncio

import pytest

from nucleus.stream import HistoryPolicy, MemoryBackend, SocketMessage, StreamServer
from nucleus.stream._history import Publication, Recovery

from .conftest import Serve
from .helpers import Recorder, within
from .tagged_client import TaggedClient


class GatedBroker(MemoryBackend):
    """The memory backend as a broker would be, with ``recover`` able to wait."""

    single_node = False

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.waiting = asyncio.Event()

    async def recover(
        self, room: str, epoch: str | None, offset: int | None, policy: HistoryPolicy
    ) -> Recovery:
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        return await super().recover(room, epoch, offset, policy)


@pytest.fixture
def broker() -> GatedBroker:
    return GatedBroker()


async def start(serve: Serve, broker: GatedBroker) -> tuple[StreamServer, str]:
    server = StreamServer(backend=broker)
    server.route("/ws", Recorder(rooms=("chat",)))
    return server, f"{await serve(server)}/ws"


def reset_then_publish(server: StreamServer, data: str) -> None:
    """What the Redis backend does after a repair that could not fill a hole."""
    server.hub.room_reset("chat", Recovery("fresh", 40, False))
    server.hub.deliver_room(Publication("chat", 41, SocketMessage.json(data)), None)


async def test_a_join_held_across_a_reset_gets_one_joined_frame_in_the_new_epoch(
    serve_native: Serve, broker: GatedBroker
) -> None:
    server, url = await start(serve_native, broker)
    broker.gate = asyncio.Event()
    joining = TaggedClient(url)
    await joining.open("chat")
    await within(broker.waiting.wait())  # its join is reading history now
    await server.hub.broadcast_to_room("chat", SocketMessage.json("old epoch"))
    reset_then_publish(server, "new epoch")
    broker.gate.set()

    assert await within(joining.pubs.get()) == ("chat", 41, "new epoch")
    joined = [f for f in joining.frames if f["type"] == "joined"]
    assert [(f["epoch"], f["offset"]) for f in joined] == [("fresh", 40)]
    await server.hub.broadcast_to_room("chat", SocketMessage.json("later"))
    assert (await within(joining.pubs.get()))[2] == "later"
    assert [f.get("data") for f in joining.frames if f["type"] == "pub"] == [
        "new epoch", "later"]
    await joining.close()


async def test_a_join_past_its_replay_keeps_the_new_epochs_first_publications(
    serve_native: Serve, broker: GatedBroker
) -> None:
    server, url = await start(serve_native, broker)
    first = TaggedClient(url)
    await first.open("chat")
    await first.next_control("joined")
    for n in range(5):
        await server.hub.broadcast_to_room("chat", SocketMessage.json(n))
    for _ in range(5):
        await within(first.pubs.get())
    late = TaggedClient(url)  # its replay ends at offset 5: arrivals up to 5 are dropped
    await late.open("chat")
    assert (await late.next_control("joined"))["offset"] == 5

    server.hub.room_reset("chat", Recovery("fresh", 0, False))
    server.hub.deliver_room(Publication("chat", 1, SocketMessage.json("new epoch")), None)

    for client in (first, late):
        joined = await client.next_control("joined")
        assert (joined["epoch"], joined["offset"], joined["recovered"]) == ("fresh", 0, False)
        assert await within(client.pubs.get()) == ("chat", 1, "new epoch")
        await client.close()
