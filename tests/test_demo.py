"""
The demo apps (``nucleus.demo``, ``examples/apps``) without a browser: their
handlers through ``nucleus.testing``, their HTTP endpoints called directly,
the pure parts (traffic rates, CPU meter, recent history) with fake clocks,
and the whole demo mounted under a prefix in Starlette.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from examples.apps import auth as auth_example
from examples.apps import chat as chat_example
from examples.apps import dashboard as dashboard_example
from examples.apps import notifications as notifications_example
from nucleus.demo import auth, chat, create_app, dashboard, notifications
from nucleus.demo._rooms import Traffic
from nucleus.demo._web import check_name, token_endpoint
from nucleus.fortress import Fortress
from nucleus.stream import (
    ConfigError,
    HandshakeRequest,
    HttpResponse,
    StreamServer,
)
from nucleus.testing import HandshakeRefused, TestClient, TestSocket

from .conftest import UvicornRunner
from .helpers import within

SECRET = "a-test-secret-of-at-least-thirty-two-bytes!"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def get(server: StreamServer, target: str) -> HttpResponse:
    """A plain GET answered by one of the server's HTTP routes (synchronous ones)."""
    request = HandshakeRequest.from_target(target, [], ("127.0.0.1", 1))
    answer = server.http_routes[request.path](request)
    assert isinstance(answer, HttpResponse)
    return answer


async def get_async(server: StreamServer, target: str) -> HttpResponse:
    request = HandshakeRequest.from_target(target, [], ("127.0.0.1", 1))
    answer = server.http_routes[request.path](request)
    assert not isinstance(answer, HttpResponse)
    return await answer


async def request(
    socket: TestSocket, data: Any, request_id: int = 1, pubs: list[Any] | None = None,
) -> dict[str, Any]:
    """
    Send a nucleus.v1 ``req`` and return its ``reply`` frame; the data of
    publications on the way go to ``pubs``, other frames are skipped.
    """
    await socket.send_json({"type": "req", "id": request_id, "data": data})
    while True:
        frame = await socket.receive_json()
        if frame["type"] == "reply" and frame["id"] == request_id:
            return dict(frame)
        if frame["type"] == "pub" and pubs is not None:
            pubs.append(frame["data"])


async def send(socket: TestSocket, data: Any) -> None:
    """What the browser client's ``stream.send(data)`` sends."""
    await socket.send_json({"type": "msg", "data": data})


async def next_pub(socket: TestSocket) -> dict[str, Any]:
    while True:
        frame = await socket.receive_json()
        if frame["type"] == "pub":
            return dict(frame)


# the pure parts

def test_traffic_rates_are_per_second_since_the_last_reading() -> None:
    clock = Clock()
    traffic = Traffic(clock)
    traffic.received += 10
    traffic.sent += 40
    clock.now += 2
    assert traffic.rates() == (5.0, 20.0)
    clock.now += 1
    assert traffic.rates() == (0.0, 0.0)
    assert traffic.rates() == (0.0, 0.0)  # no time passed: no rate, no division by zero


def test_cpu_meter_is_a_percentage_of_one_core() -> None:
    clock, cpu = Clock(), Clock()
    meter = dashboard.ProcessMeter(clock, cpu)
    clock.now += 2
    cpu.now += 0.5
    assert meter.cpu_percent() == 25.0
    clock.now += 1
    assert meter.cpu_percent() == 0.0


def test_resident_memory_is_measured() -> None:
    assert dashboard.resident_memory() > 1_000_000


@pytest.mark.parametrize(("value", "ok"), [
    ("ann", True), ("Ann_Lee-2.0", True), ("a" * 32, True), ("", False), ("a" * 33, False),
    ("ann lee", False), ("ann:x", False), ("<b>", False), (None, False), (3, False),
])
def test_user_names(value: object, ok: bool) -> None:
    assert (check_name(value) is not None) is ok


# the chat

async def test_chat_refuses_a_socket_without_a_valid_name() -> None:
    async with TestClient(chat.create_app()) as client:
        for query in ({}, {"name": "not a name"}):
            socket = await client.connect("/chat/ws", protocol=True, query=query)
            assert await socket.wait_closed() == 1008


async def test_chat_members_talk_and_newcomers_get_recent_messages() -> None:
    async with TestClient(chat.create_app()) as client:
        ann = await client.connect("/chat/ws", protocol=True, query={"name": "ann"})
        await ann.subscribe("chat:lobby")
        for n in range(chat.RECENT + 5):
            await send(ann, {"type": "say", "room": "lobby", "text": f"line {n}"})
            pub = await next_pub(ann)
            assert pub["event"] == "message"
            assert pub["data"]["user"] == "ann" and pub["data"]["text"] == f"line {n}"
        bob = await client.connect("/chat/ws", protocol=True, query={"name": "bob"})
        await bob.subscribe("chat:lobby")
        reply = await request(bob, {"type": "history", "room": "lobby"})
        texts = [item["data"]["text"] for item in reply["data"]]
        assert texts == [f"line {n}" for n in range(5, chat.RECENT + 5)]
        assert [item["offset"] for item in reply["data"]] == list(range(6, chat.RECENT + 6))
        assert await client.server.hub.room_users("chat:lobby") == ["ann", "bob"]


async def test_chat_ignores_non_members_and_keeps_typing_out_of_history() -> None:
    async with TestClient(chat.create_app()) as client:
        ann = await client.connect("/chat/ws", protocol=True, query={"name": "ann"})
        bob = await client.connect("/chat/ws", protocol=True, query={"name": "bob"})
        await ann.subscribe("chat:lobby")
        await ann.subscribe("typing:lobby")
        # bob is in no room: what he says goes nowhere.
        await send(bob, {"type": "say", "room": "lobby", "text": "sneaky"})
        await bob.subscribe("typing:lobby")
        await bob.subscribe("chat:lobby")
        await send(bob, {"type": "typing", "room": "lobby"})
        typing = await next_pub(ann)
        assert (typing["channel"], typing["event"], typing["data"]) == (
            "typing:lobby", "typing", {"user": "bob"})
        await send(bob, {"type": "say", "room": "lobby", "text": "hello"})
        said = await next_pub(ann)
        assert said["channel"] == "chat:lobby" and said["data"]["text"] == "hello"
        reply = await request(ann, {"type": "history", "room": "lobby"})
        assert [item["data"]["text"] for item in reply["data"]] == ["hello"]
        # Unknown rooms and malformed frames are refused.
        with pytest.raises(Exception, match="refused"):
            await ann.subscribe("chat:elsewhere")
        assert (await request(ann, {"type": "history", "room": "nowhere"}, 2))["error"][
            "code"] == "not_found"
        assert (await request(ann, {"type": "say", "room": "lobby"}, 3))["error"][
            "code"] == "bad_request"
        await send(ann, {"type": "shout", "room": "lobby"})
        error = await ann.receive_json()
        assert (error["type"], error["code"]) == ("error", "invalid")


# notifications

async def test_notifications_reach_only_their_user_and_are_kept() -> None:
    server = notifications.create_app(SECRET)
    async with TestClient(server) as client:
        ann_token = Fortress.issue_token("ann", SECRET)
        tabs = [await client.connect("/notifications/ws", protocol=True, token=ann_token,
                                     token_in="protocol") for _ in range(2)]
        bob = await client.connect("/notifications/ws", protocol=True,
                                   token=Fortress.issue_token("bob", SECRET))
        for tab in tabs:
            await tab.subscribe("user:ann")
        await bob.subscribe("user:bob")
        with pytest.raises(Exception, match="refused"):
            await bob.subscribe("user:ann")
        answer = await get_async(server, "/notifications/notify?user=ann&text=Your+order+shipped")
        assert answer.status == 200 and json.loads(answer.body) == {"user": "ann", "offset": 1}
        for tab in tabs:
            pub = await next_pub(tab)
            assert pub["event"] == "notification" and pub["data"]["text"] == "Your order shipped"
        await get_async(server, "/notifications/notify?user=bob&text=for+bob")
        assert (await next_pub(bob))["data"]["text"] == "for bob"  # and nothing of ann's before
        reply = await request(tabs[0], {"type": "recent"})
        assert [item["data"]["text"] for item in reply["data"]] == ["Your order shipped"]
        for bad in ("user=ann", "text=hi", "user=a+b&text=hi", "user=ann&text=" + "x" * 501):
            assert (await get_async(server, f"/notifications/notify?{bad}")).status == 400


async def test_token_endpoint_issues_tokens_for_valid_names_only() -> None:
    issue = token_endpoint(SECRET)
    answer = issue(HandshakeRequest.from_target("/token?user=ann", [], None))
    body = json.loads(answer.body)
    assert answer.status == 200 and ("Cache-Control", "no-store") in answer.headers
    assert Fortress.extract_user_id(body["token"], SECRET) == "ann"
    assert issue(HandshakeRequest.from_target("/token?user=", [], None)).status == 400
    assert token_endpoint(None)(HandshakeRequest.from_target("/token?user=ann", [], None)
                                ).status == 503


@pytest.mark.parametrize("make", [notifications.create_app, auth.create_app])
async def test_apps_with_tokens_refuse_to_start_without_a_secret(
    make: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        async with TestClient(make()):
            pass


# the authenticated connection

async def test_auth_refuses_bad_tokens_at_the_door() -> None:
    async with TestClient(auth.create_app(SECRET)) as client:
        forged = Fortress.issue_token("admin", "another-secret-of-at-least-32-bytes!!")
        for token in (None, "garbage", forged):
            with pytest.raises(HandshakeRefused) as refused:
                await client.connect("/auth/ws", protocol=True, token=token)
            assert refused.value.status == 401


async def test_auth_users_have_private_rooms() -> None:
    server = auth.create_app(SECRET)
    async with TestClient(server) as client:
        ann = await client.connect("/auth/ws", protocol=True,
                                   token=Fortress.issue_token("ann", SECRET))
        bob = await client.connect("/auth/ws", protocol=True,
                                   token=Fortress.issue_token("bob", SECRET))
        assert await server.hub.room_users("user:ann") == ["ann"]  # joined on connect
        for socket, user in ((ann, "ann"), (bob, "bob")):
            await socket.subscribe(f"user:{user}")
        with pytest.raises(Exception, match="refused"):
            await ann.subscribe("user:bob")
        sent: list[Any] = []
        reply = await request(ann, {"to": "bob", "text": "hi bob"}, pubs=sent)
        assert "error" not in reply
        received = (await next_pub(bob))["data"]
        assert sent == [received]  # the sender's own room gets it too, for its other tabs
        assert (received["from"], received["to"], received["text"]) == ("ann", "bob", "hi bob")
        assert (await request(ann, {"to": "no one", "text": "x"}, 2))["error"]["code"] == "invalid"
        assert (await request(ann, {"to": "bob", "text": ""}, 3))["error"]["code"] == "invalid"


# the dashboard

async def test_dashboard_publishes_samples_and_keeps_the_recent_ones() -> None:
    async with TestClient(dashboard.create_app(interval=0.05)) as client:
        page = await client.connect("/dashboard/ws", protocol=True)
        await page.subscribe("metrics")
        first = (await next_pub(page))["data"]
        second = (await next_pub(page))["data"]
        assert set(first) == {"t", "connections", "in", "out", "cpu", "memory"}
        assert second["t"] > first["t"] and second["connections"] == 1
        assert second["out"] > 0 and second["memory"] > 0  # the samples it got are counted
        reply = await request(page, {"type": "recent"})
        kept = [item["data"]["t"] for item in reply["data"]]
        assert first["t"] in kept and second["t"] in kept and kept == sorted(kept)
        assert {item["event"] for item in reply["data"]} == {"sample"}


# the demo and the examples

def test_demo_serves_every_page_and_asset() -> None:
    server = create_app(SECRET)
    landing = get(server, "/")
    assert landing.status == 200 and landing.content_type.startswith("text/html")
    for app in ("chat", "notifications", "dashboard", "auth"):
        assert f'href="{app}/"'.encode() in landing.body
        page = get(server, f"/{app}/")
        assert page.status == 200 and b"../nucleus/stream.js" in page.body
        assert get(server, f"/{app}").headers == (("Location", f"{app}/"),)
        assert f"/{app}/ws" in server.routes
    assert get(server, "/demo.css").content_type.startswith("text/css")
    assert b"class LineChart" in get(server, "/dashboard/charts.js").body
    assert get(server, "/nucleus/stream.js").status == 200


async def test_demo_makes_a_secret_when_none_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    one, other = create_app(), create_app()
    token = json.loads(get(one, "/auth/token?user=ann").body)["token"]
    async with TestClient(one) as client:
        await client.connect("/auth/ws", protocol=True, token=token)
    # One random secret per process (here, per app): another one refuses its tokens.
    async with TestClient(other) as client:
        with pytest.raises(HandshakeRefused):
            await client.connect("/auth/ws", protocol=True, token=token)


@pytest.mark.parametrize(("example", "home"), [
    (chat_example, "chat/"), (notifications_example, "notifications/"),
    (dashboard_example, "dashboard/"), (auth_example, "auth/"),
])
def test_each_example_serves_one_app(example: Any, home: str) -> None:
    server = example.server
    assert isinstance(server, StreamServer)
    assert get(server, "/").headers == (("Location", home),)
    assert get(server, f"/{home}").status == 200


async def test_the_demo_works_mounted_under_a_prefix() -> None:
    server = create_app(SECRET)
    app = Starlette(routes=[Mount("/realtime", app=server)], lifespan=server.lifespan)
    runner = UvicornRunner(app)  # type: ignore[arg-type]
    await runner.start()
    base = f"127.0.0.1:{runner.port}/realtime"
    try:
        async with httpx.AsyncClient() as http:
            landing = await within(http.get(f"http://{base}/"))
            assert landing.status_code == 200 and 'href="chat/"' in landing.text
            moved = await within(http.get(f"http://{base}/chat"))
            assert moved.status_code == 302
            assert str(moved.url.join(moved.headers["location"])) == f"http://{base}/chat/"
            page = await within(http.get(f"http://{base}/chat/"))
            # Relative links resolve under the prefix.
            for link in ("../nucleus/stream.js", "../demo.css"):
                assert link in page.text
                asset = await within(http.get(str(page.url.join(link))))
                assert asset.status_code == 200
        hello = '{"type":"hello","channels":{"chat:lobby":{}}}'
        async with connect(f"ws://{base}/chat/ws?name=ann",
                           subprotocols=[Subprotocol("nucleus.v1")]) as ann:
            await ann.send(hello)
            assert '"channel":"chat:lobby"' in await within(ann.recv())
    finally:
        await runner.stop()
