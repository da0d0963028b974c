"""
Every Python snippet of docs/guide.md, run, and the server it defines checked.

The convention: a ```python block of the guide is preceded by a line
``<!-- run: NAME -->``. The blocks that share a name are run in order as one
module (later ones build on earlier ones), loaded afresh by :func:`load` for
the ``check_NAME`` function of this file. Each check drives what the snippets
define with ``nucleus.testing`` and asserts what the guide's text says it
does, so a snippet changed so that it breaks fails its check
(:func:`test_a_broken_snippet_fails_its_check` makes sure of a few). A block
without a marker, or a name without a check, fails
:func:`test_every_snippet_is_run_and_checked`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from nucleus.fortress import Fortress
from nucleus.stream import (
    BackendUnavailable,
    ConfigError,
    EncodeError,
    MemoryBackend,
    SocketClosed,
    SocketMessage,
    StreamError,
    StreamHandler,
    StreamHub,
    StreamServer,
)
from nucleus.testing import HandshakeRefused, TestClient, TestSocket

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"
SECRET = "a-guide-secret-of-at-least-thirty-two-bytes"

_RUN = re.compile(r"^<!-- run: ([\w-]+) -->\n```python\n(.*?)^```", re.S | re.M)
_PYTHON = re.compile(r"^```python\n", re.M)


@dataclass(frozen=True)
class Snippet:
    name: str
    line: int  # of the block's first line of code in guide.md
    code: str


def snippets(text: str) -> list[Snippet]:
    """The marked Python blocks of ``text``, in order."""
    return [Snippet(m.group(1), text.count("\n", 0, m.start(2)) + 1, m.group(2))
            for m in _RUN.finditer(text)]


#: Names of the modules :func:`load` registered, forgotten after each test.
_loaded: list[str] = []


def load(name: str, replace: tuple[str, str] | None = None) -> ModuleType:
    """
    Run the guide's blocks named ``name`` as a fresh module and return it.

    Tracebacks point at guide.md's own lines. ``replace=(old, new)`` edits the
    code first (the tests of this harness break snippets on purpose).
    """
    blocks = [s for s in snippets(GUIDE.read_text()) if s.name == name]
    assert blocks, f"docs/guide.md has no block marked <!-- run: {name} -->"
    module = ModuleType(f"guide_{name.replace('-', '_')}")
    module.__file__ = str(GUIDE)
    sys.modules[module.__name__] = module  # dataclasses, msgspec and FastAPI look it up
    _loaded.append(module.__name__)
    for block in blocks:
        code = block.code
        if replace is not None and replace[0] in code:
            code, replace = code.replace(*replace), None
        exec(compile("\n" * (block.line - 1) + code, str(GUIDE), "exec"), module.__dict__)
    assert replace is None, f"{replace[0]!r} is not in the {name!r} snippets"
    return module


@pytest.fixture(autouse=True)
def guide_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``SECRET_KEY`` for the snippets that read it; the loaded modules forgotten after."""
    monkeypatch.setenv("SECRET_KEY", SECRET)
    yield
    while _loaded:
        sys.modules.pop(_loaded.pop(), None)


class LogRecords(logging.Handler):
    """``with LogRecords("chat", logging.INFO) as log:`` then ``log.messages``."""

    def __init__(self, logger: str, level: int) -> None:
        super().__init__(level)
        self.logger = logging.getLogger(logger)
        self.messages: list[str] = []
        self._level = self.logger.level

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> LogRecords:
        self.logger.addHandler(self)
        self.logger.setLevel(min(self.level, self.logger.getEffectiveLevel()))
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)


def token(user_id: str) -> str:
    return Fortress.issue_token(user_id, SECRET)


async def frame(ws: TestSocket, kind: str) -> dict[str, Any]:
    """The next ``nucleus.v1`` frame of type ``kind``, skipping others (with deadlines)."""
    while True:
        got: dict[str, Any] = await ws.receive_json()
        if got["type"] == kind:
            return got


async def request(ws: TestSocket, request_id: int, data: Any) -> dict[str, Any]:
    await ws.send_json({"type": "req", "id": request_id, "data": data})
    reply = await frame(ws, "reply")
    assert reply["id"] == request_id
    return reply


# The checks, one per snippet name. Each takes the module the snippets made.


async def check_quick(guide: ModuleType) -> None:
    async with TestClient(guide.server) as client:
        async with client.connect("/ws/chat") as ann, client.connect("/ws/chat") as bob:
            await ann.send_text("hello general")
            assert await ann.receive_text() == "hello general"
            assert await bob.receive_text() == "hello general"
            await bob.send_bytes(b"binary is ignored")
            await bob.send_text("after binary")
            assert await ann.receive_text() == "after binary"
    # The Testing section's test, run as pytest would.
    await guide.test_everyone_in_general_gets_it()


async def check_handler(guide: ModuleType) -> None:
    with LogRecords("chat", logging.INFO) as log:
        async with TestClient(guide.server) as client:
            async with client.connect("/ws/chat") as page, client.connect("/ws/chat") as other:
                await page.send_json({"text": "hello"})  # what the guide's page sends
                assert await page.receive_json() == {"text": "hello"}
                assert await other.receive_json() == {"text": "hello"}
                await other.send_text("not JSON: ignored")
                await other.send_json([1, 2])
                assert await page.receive_json() == [1, 2]
                page_id = (await guide.server.hub.room_members("chat"))[0]
            # closed: on_disconnect has run
            assert log.messages.count(f"client connected: {page_id}") == 1
            assert log.messages.count(f"client disconnected: {page_id}") == 1


async def check_requests(guide: ModuleType) -> None:
    async with TestClient(guide.server) as client, \
            client.connect("/ws/shop", protocol=True) as page:
        assert (await request(page, 1, {"item": "tea", "quantity": 2}))["data"] == {
            "item": "tea", "left": 1}
        refused = await request(page, 2, {"item": "tea", "quantity": 2})
        assert refused["error"] == {"code": "out_of_stock", "message": "1 tea left"}
        invalid = await request(page, 3, {"item": 5})
        assert invalid["error"]["code"] == "invalid" and "$.item" in invalid["error"]["message"]
        assert (await request(page, 4, {"item": "tea"}))["data"] == {"item": "tea", "left": 0}


async def check_rooms(guide: ModuleType) -> None:
    # Library clients (protocol=True), whose joined and left frames say when
    # the handler has acted; what they send with "msg" is what a page sends.
    async def send(ws: TestSocket, **command: str) -> None:
        await ws.send_json({"type": "msg", "data": command})

    async def join(ws: TestSocket, room: str) -> None:
        await send(ws, type="join", room=room)
        assert (await frame(ws, "joined"))["channel"] == room

    hub = guide.server.hub
    async with TestClient(guide.server) as client:
        ann, bob, cat = [await client.connect("/ws/rooms", protocol=True) for _ in range(3)]
        await join(ann, "python")
        await join(bob, "python")
        await join(cat, "random")
        await send(ann, type="join", room="secret")  # not one of ROOMS: ignored
        await send(ann, type="say", room="random", text="not a member: dropped")
        await send(ann, type="say", room="python", text="hi python")
        assert await bob.receive_data() == {"room": "python", "text": "hi python"}
        await send(bob, type="say", room="python", text="hi ann")
        # ann's next message is bob's: she was not sent her own line
        assert await ann.receive_data() == {"room": "python", "text": "hi ann"}
        await join(cat, "python")
        await send(bob, type="say", room="python", text="hi cat")
        # cat's first message: nothing from python before it joined, nor ann's "dropped"
        assert await cat.receive_data() == {"room": "python", "text": "hi cat"}
        assert await ann.receive_data() == {"room": "python", "text": "hi cat"}
        await send(bob, type="leave", room="python")
        assert (await frame(bob, "left"))["channel"] == "python"
        await send(ann, type="say", room="python", text="bob left")
        assert await cat.receive_data() == {"room": "python", "text": "bob left"}
        await join(bob, "lobby")
        await join(cat, "lobby")
        await send(cat, type="say", room="lobby", text="bob, are you there?")
        # bob's next message is from the lobby: "bob left" did not reach him
        assert await bob.receive_data() == {"room": "lobby", "text": "bob, are you there?"}
        (cat_id,) = await hub.room_members("random")
        assert await hub.rooms_of(cat_id) == {"lobby", "python", "random"}
        await cat.close()  # on_disconnect has run: cat left every room
        assert cat_id not in await hub.room_members("python") + await hub.room_members("lobby")


async def check_users(guide: ModuleType) -> None:
    async with TestClient(guide.server) as client:
        ann_phone = await client.connect("/ws/messenger", token=token("ann"))
        assert await ann_phone.receive_json() == {"online": ["ann"]}
        ann_laptop = await client.connect("/ws/messenger", token=token("ann"))
        assert await ann_laptop.receive_json() == {"online": ["ann"]}  # ann counts once
        bob = await client.connect("/ws/messenger", token=token("bob"))
        assert await bob.receive_json() == {"online": ["ann", "bob"]}
        await bob.send_json({"to": "ann", "text": "lunch?"})
        for device in (ann_phone, ann_laptop):
            assert await device.receive_json() == {"from": "bob", "text": "lunch?"}
        await ann_laptop.send_json({"to": "bob", "text": "yes"})
        assert await bob.receive_json() == {"from": "ann", "text": "yes"}  # not his own
        with pytest.raises(HandshakeRefused) as refused:
            await client.connect("/ws/messenger")
        assert refused.value.status == 401


async def check_channels(guide: ModuleType) -> None:
    hub = guide.server.hub
    async with TestClient(guide.server) as client:
        page = await client.connect("/ws/news", protocol=True)
        with pytest.raises(StreamError, match="refused"):
            await page.subscribe("secrets")
        joined = await page.subscribe("news")
        before = set(hub.local_sockets())
        raw = await client.connect("/ws/news")
        (raw_id,) = set(hub.local_sockets()) - before
        await hub.join_room(raw_id, "news")  # a plain WebSocket cannot subscribe itself
        offset = await guide.publish_headline(hub, "First")
        pub = await frame(page, "pub")
        assert pub == {"type": "pub", "channel": "news", "offset": offset,
                       "event": "headline", "data": {"title": "First"}}
        assert await raw.receive_json() == {
            "channel": "news", "event": "headline", "data": {"title": "First"}}
        await page.close()  # the page goes away; two headlines are published meanwhile
        await guide.publish_headline(hub, "Second")
        await guide.publish_headline(hub, "Third")
        back = await client.connect("/ws/news", protocol=True)
        await back.send_json({"type": "sub", "id": 1, "channel": "news",
                              "epoch": joined["epoch"], "offset": offset})
        rejoined = await frame(back, "joined")
        assert rejoined["recovered"] is True
        missed = [(await frame(back, "pub"))["data"]["title"] for _ in range(2)]
        assert missed == ["Second", "Third"]  # in order, nothing twice
        # "typing" keeps nothing: a client that was away is told of the gap.
        typing = await back.subscribe("typing")
        await hub.channel("typing").broadcast("typing", {"user": "ann"})
        await back.close()
        again = await client.connect("/ws/news", protocol=True)
        await again.send_json({"type": "sub", "id": 2, "channel": "typing",
                               "epoch": typing["epoch"], "offset": typing["offset"]})
        assert (await frame(again, "joined"))["recovered"] is False


async def check_auth(guide: ModuleType) -> None:
    hub = guide.server.hub
    async with TestClient(guide.server) as client:
        for bad in (None, "forged", Fortress.issue_token("ann", "another-secret-" * 3),
                    Fortress.issue_token("ann", SECRET, now=lambda: time.time() - 7200)):
            with pytest.raises(HandshakeRefused) as refused:
                await client.connect("/ws/private", token=bad)
            assert refused.value.status == 401
        ann_token = guide.token_for("ann")
        claims = Fortress.decode(ann_token, SECRET)
        assert claims is not None and claims.expires_at - time.time() <= 15 * 60
        ann = await client.connect("/ws/private", token=ann_token)
        await hub.broadcast_to_room("user:ann", SocketMessage.json({"for": "ann"}))
        assert await ann.receive_json() == {"for": "ann"}
        bob = await client.connect("/ws/private", token=guide.token_for("bob"), protocol=True)
        with pytest.raises(StreamError):  # the Private handler allows no subscriptions
            await bob.subscribe("user:ann")
        await guide.logout(hub, ann_token)
        assert await ann.wait_closed() == 4003
        with pytest.raises(HandshakeRefused) as refused:
            await client.connect("/ws/private", token=ann_token)
        assert refused.value.status == 401
        await client.connect("/ws/private", token=guide.token_for("ann"))  # a new login works
    server = StreamServer()
    server.route("/ws", guide.Private(), auth=Fortress.query_token(""))
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        async with TestClient(server):
            pass


async def check_ratelimit(guide: ModuleType) -> None:
    async with TestClient(guide.server) as client, client.connect("/ws/public") as ws:
        for n in range(10):  # the burst
            await ws.send_text(f"m{n}")
        for n in range(10):
            assert await ws.receive_text() == f"m{n}"
        for n in range(10, 40):  # a script in a loop
            await ws.send_text(f"m{n}")
        echoed, errors = 0, 0
        while True:
            try:
                got = await ws.receive_text()
            except SocketClosed:
                break
            if got.startswith("{"):
                error = json.loads(got)
                assert (error["type"], error["code"]) == ("error", "rate_limited")
                errors += 1
            else:
                echoed += 1
        # The fifth drop closes instead of answering; what the bucket refilled
        # meanwhile (5 a second) was echoed.
        assert errors == 4 and echoed < 30
        assert ws.close_code == 4029


async def check_validation(guide: ModuleType) -> None:
    async with TestClient(guide.server) as client:
        async with client.connect("/ws/chat") as ann, client.connect("/ws/chat") as bob:
            for bad in ({"text": ""}, {"text": 5}, {"reply_to": 1}, "no JSON at all"):
                await (ann.send_json(bad) if isinstance(bad, dict) else ann.send_text(bad))
                error = await ann.receive_json()
                assert (error.get("type"), error.get("code")) == ("error", "invalid"), error
                assert error["message"].startswith("invalid ChatMessage: ")
                if isinstance(bad, dict):
                    assert error["message"].endswith("$.text") or "`text`" in error["message"]
            await ann.send_json({"text": "hi", "reply_to": 3})
            line = {"user": "anon", "text": "hi", "reply_to": 3}
            assert await bob.receive_json() == line  # bob got nothing invalid before it
            assert await ann.receive_json() == line  # the socket stayed open


async def check_chat_room(guide: ModuleType) -> None:
    failures = LogRecords("nucleus.stream", logging.ERROR)
    with failures:
        async with TestClient(guide.server) as client:
            refused = await client.connect("/ws/chat", query={"room": "nowhere"})
            await refused.send_text("sent before the refusal: never handled")
            assert await refused.wait_closed() == 1008
            ann = await client.connect("/ws/chat")  # lobby
            bob = await client.connect("/ws/chat", query={"room": "lobby"})
            cat = await client.connect("/ws/chat", query={"room": "python"})
            await ann.send_text("hi lobby")
            for ws in (ann, bob):
                line = await ws.receive_json()
                assert (line["user"], line["text"]) == ("anon", "hi lobby")
                sent_at = datetime.fromisoformat(line["timestamp"])
                assert sent_at.tzinfo is not None
                assert abs((datetime.now(UTC) - sent_at).total_seconds()) < 60
            await cat.send_text("hi python")
            assert (await cat.receive_json())["text"] == "hi python"  # nothing from the lobby
    assert failures.messages == []  # on_message never ran without socket.state["room"]


async def check_notifications(guide: ModuleType) -> None:
    server, hub = guide.server, guide.server.hub
    async with TestClient(server) as client:
        ann_tabs = [await client.connect("/ws/notifications", token=token("ann")) for _ in "ab"]
        bob = await client.connect("/ws/notifications", token=token("bob"))
        await guide.send_notification(hub, "ann", guide.Notification("mention", "hi ann"))
        for tab in ann_tabs:
            assert await tab.receive_json() == {"kind": "mention", "text": "hi ann"}
        # Through the web app: FastAPI's endpoint, to the sockets of the mounted server.
        transport = httpx.ASGITransport(app=guide.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            answer = await http.post("/users/bob/notifications",
                                     json={"kind": "reply", "text": "hi bob"})
        assert answer.json() == {"sent": True}
        assert await bob.receive_json() == {"kind": "reply", "text": "hi bob"}  # not ann's
        # Kept notifications: the user's own room, and nobody else's.
        page = await client.connect("/ws/notifications", token=token("ann"), protocol=True)
        joined = await page.subscribe("user:ann")
        nosy = await client.connect("/ws/notifications", token=token("bob"), protocol=True)
        for channel in ("user:ann", "news"):
            with pytest.raises(StreamError, match="refused"):
                await nosy.subscribe(channel)
        await page.close()
        offset = await guide.send_kept_notification(hub, "ann", guide.Notification("x", "kept"))
        assert hub.history_policy("user:ann").ttl == 24 * 3600
        back = await client.connect("/ws/notifications", token=token("ann"), protocol=True)
        await back.send_json({"type": "sub", "id": 1, "channel": "user:ann",
                              "epoch": joined["epoch"], "offset": joined["offset"]})
        assert (await frame(back, "joined"))["recovered"] is True
        assert await frame(back, "pub") == {
            "type": "pub", "channel": "user:ann", "offset": offset, "event": "notification",
            "data": {"kind": "x", "text": "kept"}}


async def check_dashboard(guide: ModuleType) -> None:
    async with TestClient(guide.server) as client, client.connect("/ws/metrics") as page:
        first = await page.receive_json()  # sent by on_connect, at once
        assert first.keys() == {"time", "connections", "load"} and first["connections"] == 1
        second = await page.receive_json(timeout=5)  # the background task's next tick
        third = await page.receive_json(timeout=5)
        assert first["time"] <= second["time"] < third["time"]
        assert 0.5 < third["time"] - second["time"] < 5  # about a second apart


async def check_authenticated(guide: ModuleType) -> None:
    hub = guide.server.hub
    async with TestClient(guide.server) as client:
        for query in ({}, {"token": "forged"}):
            refused = await client.connect("/ws/notifications", query=query)
            await refused.send_text("sent before the refusal: never handled")
            assert await refused.wait_closed() == 1008
        ann = await client.connect("/ws/notifications", token=token("ann"))
        bob = await client.connect("/ws/notifications", token=token("bob"))
        await hub.broadcast_to_room("user:ann", SocketMessage.json({"n": "for ann"}))
        await hub.send_to_user("bob", SocketMessage.json({"n": "for bob"}))
        assert await ann.receive_json() == {"n": "for ann"}
        assert await bob.receive_json() == {"n": "for bob"}  # not ann's
        assert await hub.online_users() == ["ann", "bob"]


async def check_errors(guide: ModuleType) -> None:
    server = StreamServer()
    server.route("/ws", StreamHandler())
    async with TestClient(server) as client, client.connect("/ws") as ws:
        socket_id = server.hub.local_sockets()[0]
        assert await guide.tell(server.hub, socket_id, {"hi": 1}) is True
        assert await ws.receive_json() == {"hi": 1}
        assert await guide.tell(server.hub, "gone.1", {"hi": 2}) is False
        with pytest.raises(EncodeError):
            await guide.tell(server.hub, socket_id, {"not JSON": object()})
        assert await guide.announce(server.hub, "hello") == 1

    class Down(MemoryBackend):
        async def publish(self, *args: Any, **kwargs: Any) -> int:
            raise BackendUnavailable("redis is down")

    with LogRecords("app", logging.WARNING) as warnings:
        assert await guide.announce(StreamHub(Down()), "hello") is None
    assert warnings.messages == ["announcement not sent: redis is down"]


CHECKS: dict[str, Callable[[ModuleType], Awaitable[None]]] = {
    name.removeprefix("check_").replace("_", "-"): check
    for name, check in list(globals().items()) if name.startswith("check_")
}


@pytest.mark.parametrize("name", sorted(CHECKS))
async def test_the_guides_snippets_do_what_it_says(name: str) -> None:
    await CHECKS[name](load(name))


def test_every_snippet_is_run_and_checked() -> None:
    text = GUIDE.read_text()
    names = {s.name for s in snippets(text)}
    assert len(_PYTHON.findall(text)) == len(snippets(text)), (
        "every ```python block of docs/guide.md needs a <!-- run: NAME --> line before it")
    assert names == set(CHECKS), (f"snippets without a check: {names - set(CHECKS)}; "
                                  f"checks without snippets: {set(CHECKS) - names}")


@pytest.mark.parametrize(("name", "old", "new"), [
    ("quick", "SocketMessage.Text(text))", "SocketMessage.Text(text.upper()))"),
    ("rooms", "exclude=socket.id", "exclude=None"),
    ("users", '"from": socket.user_id', '"from": note.to'),
    ("chat-room", '"user": socket.user_id or "anon"', '"user": socket.user_id'),
    ("authenticated", "extract_user_id(token, secret)", 'extract_user_id(token, "x" * 32)'),
    ("validation", "min_length=1", "min_length=0"),
])
async def test_a_broken_snippet_fails_its_check(name: str, old: str, new: str) -> None:
    with pytest.raises((AssertionError, TimeoutError, SocketClosed)):
        await CHECKS[name](load(name, replace=(old, new)))


def test_tracebacks_point_at_the_guides_lines() -> None:
    text = GUIDE.read_text()
    for snippet in snippets(text):
        assert text.splitlines()[snippet.line - 1] == snippet.code.splitlines()[0]
