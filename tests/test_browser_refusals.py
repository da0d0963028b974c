"""
How the browser client acts on the server's refusals, in a real headless Chromium:
a refused token on another origin, the close codes that end a stream or only
pause it, and a refused request matched to the request that caused it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright
from websockets.asyncio.client import connect

from nucleus.fortress import Fortress
from nucleus.stream import (
    MemoryBackend,
    RateLimit,
    Recovery,
    SocketMessage,
    StreamHub,
    StreamServer,
    WebSocket,
)

from .apps.relay import Relay
from .conftest import Serve
from .helpers import Recorder, eventually, within
from .test_browser import ARGS, chromium  # noqa: F401 - the fixture

SECRET = "c" * 32


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:  # noqa: F811 - the fixture
    # Pages here talk to a server on another origin, both on this machine.
    args = [*ARGS, "--disable-features=LocalNetworkAccessChecks"]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=args)
        yield browser
        await browser.close()


CROSS_ORIGIN_PAGE = b"""<!doctype html><script type="module">
  import { connect } from "/nucleus/stream.js";
  const params = new URLSearchParams(location.search);
  window.states = [];
  window.errors = [];
  const stream = connect(params.get("api"),
                         { token: params.get("token"), minDelay: 100, maxDelay: 500 });
  stream.on("state", (s) => window.states.push(s));
  stream.on("error", (e) => window.errors.push(e.code));
</script>"""


@pytest.mark.parametrize("allowed", ["any origin", "listed origin", "refused origin"])
async def test_a_refused_token_or_origin_on_another_origin_ends_with_unauthorized(
    browser: Browser, serve: Serve, allowed: str,
) -> None:
    pages = StreamServer()
    pages.static("/", CROSS_ORIGIN_PAGE, "text/html; charset=utf-8")
    _, page_port = await pages.start("127.0.0.1", 0)
    page_origin = f"http://localhost:{page_port}"
    try:
        api = StreamServer()
        origins = {"any origin": None, "listed origin": [page_origin],
                   "refused origin": ["https://app.example"]}[allowed]
        api.route("/ws", Relay(), auth=Fortress.query_token(SECRET), origins=origins)
        attempts = 0
        check = api.door.check

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal attempts
            attempts += 1
            return check(*args, **kwargs)

        api.door.check = counting  # type: ignore[method-assign]
        base = await serve(api)
        # A forged token, or a good one from an origin the route refuses.
        token = (Fortress.issue_token("ann", SECRET) if allowed == "refused origin"
                 else Fortress.issue_token("eve", "f" * 32, expires_in=60))
        page = await browser.new_page()
        # The token travels as a subprotocol, so the probe sends it as an
        # Authorization header: a request that needs a CORS preflight.
        await page.goto(f"{page_origin}/?api={base}/ws&token={token}")
        await page.wait_for_function("window.states.at(-1) === 'closed'", timeout=15_000)
        assert await page.evaluate("window.errors") == ["unauthorized"]
        settled = attempts
        # Closed for good: a connection of our own reaches the server's door,
        # and the page has not dialed again meanwhile.
        ok = Fortress.issue_token("ok", SECRET)
        async with connect(f"{base}/ws?token={ok}", origin=origins[0] if origins else page_origin):
            pass
        assert attempts == settled + 1
        assert await page.evaluate("window.states") == ["closed"]
    finally:
        await pages.aclose()


CLOSE_PAGE = b"""<!doctype html><script type="module">
  import { connect } from "/nucleus/stream.js";
  window.states = [];
  window.errors = [];
  window.closes = [];  // every close code this page's sockets saw
  const Native = WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("close", (event) => window.closes.push(event.code));
    }
  };
  const stream = connect(`ws://${location.host}/ws`, { minDelay: 100, maxDelay: 500 });
  stream.on("state", (s) => window.states.push(s));
  stream.on("error", (e) => window.errors.push(e.code));
  window.stream = stream;
</script>"""


class Bouncer(Recorder):
    """Closes a socket that sends "leave" with 1008."""

    async def on_message(self, hub: StreamHub, socket: WebSocket, msg: SocketMessage) -> None:
        await super().on_message(hub, socket, msg)
        if msg == SocketMessage.Text("leave"):
            await socket.close(1008, "not welcome")


@pytest.fixture
async def bouncer() -> AsyncIterator[tuple[str, Bouncer]]:
    handler = Bouncer()
    server = StreamServer()
    server.route("/ws", handler, rate_limit=RateLimit(
        rate=5, burst=5, per_user_rate=None, per_user_burst=None, strikes=3, strike_window=10))
    server.static("/", CLOSE_PAGE, "text/html; charset=utf-8")
    host, port = await server.start("127.0.0.1", 0)
    yield f"http://{host}:{port}/", handler
    await server.aclose()


async def open_page(browser: Browser, url: str) -> Page:
    page = await browser.new_page()
    await page.goto(url)
    await page.wait_for_function("window.states && window.states.includes('open')")
    return page


async def test_a_rate_limited_page_is_closed_with_4029_and_comes_back(
    browser: Browser, bouncer: tuple[str, Bouncer],
) -> None:
    url, handler = bouncer
    page = await open_page(browser, url)
    # Over the burst: the server drops the excess, then closes on the third strike.
    await page.evaluate("for (let i = 0; i < 50; i++) window.stream.send(`flood ${i}`)")
    await page.wait_for_function("window.states.filter((s) => s === 'open').length === 2",
                                 timeout=10_000)
    assert await page.evaluate("window.closes") == [4029]
    assert await page.evaluate("window.states") == ["open", "reconnecting", "open"]
    assert "rate_limited" in await page.evaluate("window.errors")
    for _ in range(2):
        await within(handler.connected.get())


async def test_a_page_closed_with_1008_stays_closed(
    browser: Browser, bouncer: tuple[str, Bouncer],
) -> None:
    url, handler = bouncer
    page = await open_page(browser, url)
    await within(handler.connected.get())
    await page.evaluate("window.stream.send('leave')")
    await page.wait_for_function("window.states.at(-1) === 'closed'")
    assert await page.evaluate("window.closes") == [1008]
    assert await page.evaluate("window.errors") == ["policy_violation"]
    # Closed for good: a connection of our own gets in, and the page's did not come back.
    async with connect(url.replace("http", "ws") + "ws"):
        ours = await within(handler.connected.get())
    assert handler.connected.empty() and ours.subprotocol is None  # a raw client: not the page
    assert await page.evaluate("window.states") == ["open", "closed"]


SUBSCRIBE_PAGE = b"""<!doctype html><script type="module">
  import { connect } from "/nucleus/stream.js";
  window.states = [];
  window.errors = [];
  window.got = [];
  const stream = connect(`ws://${location.host}/ws`, { minDelay: 100, maxDelay: 500 });
  stream.on("state", (s) => window.states.push(s));
  stream.on("error", (e) => window.errors.push(e.code));
  window.listen = () => stream.subscribe("news", (m) => window.got.push(m));
  window.stop = window.listen();
</script>"""


class StickyNews(Recorder):
    """Anyone may subscribe; nobody may unsubscribe."""

    async def on_subscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
        return True

    async def on_unsubscribe(self, hub: StreamHub, socket: WebSocket, channel: str) -> bool:
        return False


class HeldRecovery(MemoryBackend):
    """While ``release`` is an unset event, every look-up of a channel's position waits for it."""

    def __init__(self) -> None:
        super().__init__()
        self.release: asyncio.Event | None = None

    async def recover(self, *args: Any, **kwargs: Any) -> Recovery:
        if self.release is not None:
            await self.release.wait()
        return await super().recover(*args, **kwargs)


async def test_a_refused_unsubscribe_does_not_refuse_the_subscription_made_since(
    browser: Browser,
) -> None:
    backend = HeldRecovery()
    server = StreamServer(backend=backend)
    server.route("/ws", StickyNews())
    server.static("/", SUBSCRIBE_PAGE, "text/html; charset=utf-8")
    host, port = await server.start("127.0.0.1", 0)
    hub = server.hub

    async def subscribed() -> str:
        members: list[str] = []

        async def joined() -> bool:
            members[:] = await hub.room_members("news")
            return len(members) == 1

        await eventually(joined)
        return members[0]

    try:
        page = await open_page(browser, f"http://{host}:{port}/")
        first = await subscribed()
        # The page unsubscribes (refused: the socket stays in "news") and subscribes
        # again at once; the new subscription's answer is held back, so the
        # refusal of the unsub arrives while it waits.
        backend.release = asyncio.Event()
        await page.evaluate("() => { window.stop(); window.stop = window.listen(); }")
        await page.wait_for_function("window.errors.includes('forbidden')")
        # The connection drops before the answer: the page must resume "news".
        hub.get_socket(first)._conn._abort()  # type: ignore[attr-defined]
        backend.release.set()
        backend.release = None
        await page.wait_for_function("window.states.filter((s) => s === 'open').length === 2")
        second = await subscribed()
        assert second != first
        await hub.broadcast_to_room("news", SocketMessage.Text("still subscribed"))
        await page.wait_for_function("window.got.length === 1")
        assert await page.evaluate("window.got") == ["still subscribed"]
    finally:
        await server.aclose()
