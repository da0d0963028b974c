"""
A test app whose routes declare message models of every kind ``nucleus types`` exports.

A msgspec Struct with an enum, a nested Struct, a tagged union, a tuple and a
dict; a pydantic model with a recursive one inside; a dataclass shared by two
routes. ``tests/typescript/typed_page.ts`` uses the types generated from it.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from typing import Annotated, Literal

import msgspec
import pydantic

from nucleus.stream import SocketMessage, StreamHandler, StreamHub, StreamServer, WebSocket


class Mood(enum.Enum):
    CALM = "calm"
    LOUD = "loud"


class Attachment(msgspec.Struct):
    """A file shown with a message."""

    url: str
    size: int


class Text(msgspec.Struct, tag="text"):
    body: str


class Sticker(msgspec.Struct, tag="sticker"):
    sticker_id: int


class ChatMessage(msgspec.Struct, forbid_unknown_fields=True):
    """One line of chat, as a page sends it."""

    user: str
    content: Text | Sticker
    mood: Mood = Mood.CALM
    reply_to: int | None = None
    attachments: list[Attachment] = []
    position: tuple[float, float] | None = None
    reactions: dict[str, int] = {}
    sent: datetime | None = None
    priority: Annotated[int, msgspec.Meta(ge=0, le=9, description="0 (low) to 9")] = 0


class Category(pydantic.BaseModel):
    name: str
    parent: Category | None = None


class Order(pydantic.BaseModel):
    """An order placed from the shop page."""

    item: str = pydantic.Field(description="the item's SKU")
    quantity: int = 1
    size: Literal["S", "M", "L"] | None = None
    category: Category | None = None
    note: str | None = None


@dataclasses.dataclass
class Cursor:
    x: float
    y: float
    label: str = ""


class Ignore(StreamHandler):
    async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
        pass


server = StreamServer()
server.route("/ws/chat", Ignore(), message_model=ChatMessage)
server.route("/ws/shop", Ignore(), message_model=Order)
server.route("/ws/board", Ignore(), message_model=Cursor)
server.route("/ws/board-replay", Ignore(), message_model=Cursor)
server.route("/ws/untyped", Ignore())
