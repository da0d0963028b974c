"""A bot that answers in the chat room of examples/chat_room.py, with the Python client.

Run the room:  nucleus serve examples.chat_room:server
Run the bot:   python -m examples.chat_bot ws://127.0.0.1:3000/ws/chat
Then say "!help" in the room (from a page, or `python -m websockets ws://127.0.0.1:3000/ws/chat`).

The bot reads every line of the room once, in order, even across its own
reconnects (a line missed for good is a gap, reported and skipped), and
answers commands by sending to the room's handler, which broadcasts the answer.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from examples.chat_room import ROOM
from nucleus.client import connect


class Line(msgspec.Struct):
    """A line of the room, as ChatRoom broadcasts it."""

    user: str
    text: str
    timestamp: datetime


def answer(text: str) -> str | None:
    """The bot's answer to a line of chat, if it has one (never a command itself)."""
    command, _, rest = text.strip().partition(" ")
    if command == "!help":
        return "bot: I know !help, !echo <text> and !time"
    if command == "!echo":
        return f"bot: {rest}" if rest else "bot: echo what?"
    if command == "!time":
        return f"bot: it is {datetime.now(UTC):%H:%M:%S} UTC"
    return None


async def run_bot(url: str, ready: Callable[[], object] | None = None) -> None:
    """Answer in the room at ``url`` until cancelled; ``ready()`` once subscribed."""
    async with connect(url) as stream:
        stream.on("gap", lambda gap: print(f"missed lines of {gap.channel}; carrying on"))
        lines = await stream.subscribe(ROOM, model=Line)
        if ready is not None:
            ready()
        async for line in lines:
            reply = answer(line.text)
            if reply is not None:
                await stream.send(reply)


if __name__ == "__main__":
    asyncio.run(run_bot(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:3000/ws/chat"))
