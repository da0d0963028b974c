"""
End to end in a real headless Chromium: the browser client, Signal rendering,
reconnection and recovery. Debian's chromium is driven through playwright.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright
from websockets.asyncio.client import connect

from nucleus.stream import HistoryPolicy, RedisBackend, SocketMessage, StreamServer

from .apps.relay import PAGE
from .apps.relay import create_app as create_relay
from .backends import REDIS_URL, require_redis
from .cluster import Cluster
from .helpers import eventually, within

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def chromium() -> str:
    assert Path(CHROMIUM).exists(), "Chromium is missing: `make test` installs it (apt)"
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=ARGS)
        yield browser
        await browser.close()


async def rendered(page: Page) -> list[str]:
    return await page.locator("#list li").all_inner_texts()


async def wait_rendered(page: Page, count: int) -> list[str]:
    await page.wait_for_function(
        f"document.querySelectorAll('#list li').length >= {count}", timeout=20_000)
    return await rendered(page)


async def open_relay_page(browser: Browser, base: str) -> Page:
    page = await browser.new_page()
    await page.goto(base)
    await page.wait_for_function("window.states && window.states.includes('open')")
    return page


async def test_messages_sent_while_dropped_arrive_once_in_order(browser: Browser) -> None:
    app = create_relay()
    host, port = await app.start("127.0.0.1", 0)
    try:
        page = await open_relay_page(browser, f"http://{host}:{port}/")
        hub = app.hub
        await page.wait_for_function("window.stream && true")
        for n in range(5):
            await hub.broadcast_to_room("general", SocketMessage.Text(f"m{n}"))
        await wait_rendered(page, 5)
        # The server drops the page's connection, then keeps broadcasting at once.
        (socket_id,) = await hub.room_members("general")
        hub.get_socket(socket_id)._conn._abort()  # type: ignore[attr-defined]
        for n in range(5, 15):
            await hub.broadcast_to_room("general", SocketMessage.Text(f"m{n}"))
        await page.wait_for_function("window.states.filter(s => s === 'open').length >= 2",
                                     timeout=20_000)
        for n in range(15, 20):
            await hub.broadcast_to_room("general", SocketMessage.Text(f"m{n}"))
        got = await wait_rendered(page, 20)
        assert got == [f"m{n}" for n in range(20)]
        assert await page.evaluate("window.messages.get().length") == 20
        assert await page.evaluate("window.gaps") == []
        assert "reconnecting" in await page.evaluate("window.states")
    finally:
        await app.aclose()


async def test_page_away_longer_than_history_gets_a_gap(browser: Browser) -> None:
    app = StreamServer()
    relay = create_relay()
    app.route("/ws", relay.routes["/ws"].handler)
    app.history("*", HistoryPolicy(size=5, ttl=60))
    app.static("/", PAGE, "text/html; charset=utf-8")
    host, port = await app.start("127.0.0.1", 0)
    try:
        page = await open_relay_page(browser, f"http://{host}:{port}/")
        await app.hub.broadcast_to_room("general", SocketMessage.Text("before"))
        await wait_rendered(page, 1)
        (socket_id,) = await app.hub.room_members("general")
        app.hub.get_socket(socket_id)._conn._abort()  # type: ignore[attr-defined]
        for n in range(10):  # more than the 5 kept
            await app.hub.broadcast_to_room("general", SocketMessage.Text(f"lost{n}"))
        await page.wait_for_function("window.gaps.length === 1", timeout=20_000)
        assert await page.evaluate("window.gaps") == ["general"]
        await app.hub.broadcast_to_room("general", SocketMessage.Text("after"))
        assert await wait_rendered(page, 2) == ["before", "after"]
    finally:
        await app.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_relay_process(port: int) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nucleus", "serve", "tests.apps.relay:server", "--port", str(port),
        stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT)
    assert proc.stderr is not None
    while b"listening on" not in await within(proc.stderr.readline(), 20):
        pass
    return proc


async def test_page_survives_a_server_process_restart(browser: Browser) -> None:
    port = free_port()
    base = f"ws://127.0.0.1:{port}/ws"
    proc = await start_relay_process(port)
    try:
        page = await open_relay_page(browser, f"http://127.0.0.1:{port}/")
        async with connect(base) as publisher:
            for n in range(3):
                await publisher.send(f"a{n}")
            await wait_rendered(page, 3)
        proc.send_signal(signal.SIGTERM)
        assert await within(proc.wait(), 15) == 0
        await page.wait_for_function("window.states.at(-1) === 'reconnecting'")
        proc = await start_relay_process(port)
        # The embedded backend's history died with the process: the page is told.
        await page.wait_for_function("window.gaps.length === 1", timeout=20_000)
        assert await page.evaluate("window.states.at(-1)") == "open"
        async with connect(base) as publisher:
            for n in range(3):
                await publisher.send(f"b{n}")
            assert await wait_rendered(page, 6) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await within(proc.wait(), 15)


async def test_plain_browser_websocket_gets_exact_text_and_binary(browser: Browser) -> None:
    app = create_relay()  # relays each frame to the room's other sockets, unchanged
    host, port = await app.start("127.0.0.1", 0)
    try:
        page = await browser.new_page()
        await page.goto(f"http://{host}:{port}/")
        result = await page.evaluate("""async (url) => {
            const open = () => new Promise((resolve) => {
                const ws = new WebSocket(url);
                ws.binaryType = "arraybuffer";
                ws.onopen = () => resolve(ws);
            });
            const [a, b] = [await open(), await open()];
            const next = (ws) => new Promise((resolve) => {
                ws.onmessage = (e) => resolve(e.data);
            });
            const text = JSON.stringify({ type: "join", room: "général", n: [1, 2.5, null] });
            let got = next(b); a.send(text); const gotText = await got;
            got = next(b); a.send(new Uint8Array([0, 1, 2, 253, 254, 255]));
            const gotBinary = await got;
            const binary = gotBinary instanceof ArrayBuffer ? [...new Uint8Array(gotBinary)] : null;
            return { text, gotText, textType: typeof gotText, binary };
        }""", f"ws://{host}:{port}/ws")
        assert result["gotText"] == result["text"] and result["textType"] == "string"
        assert result["binary"] == [0, 1, 2, 253, 254, 255]
    finally:
        await app.aclose()


AUTH_PAGE = b"""<!doctype html><ul id="list"></ul><script type="module">
  import { connect } from "/nucleus/stream.js";
  window.states = [];
  window.errors = [];
  window.tokens = 0;
  const stream = connect(`ws://${location.host}/ws`, {
    minDelay: 100, maxDelay: 500,
    getToken: async () => { window.tokens += 1; return await window.issueToken(); },
  });
  stream.on("state", (s) => window.states.push(s));
  stream.on("error", (e) => window.errors.push(e.code));
  stream.on("message", (m) => { const li = document.createElement("li"); li.textContent = m;
                               document.getElementById("list").append(li); });
</script>"""


async def test_get_token_is_called_on_reconnect_and_before_expiry(browser: Browser) -> None:
    from nucleus.fortress import Fortress

    secret = "b" * 32
    app = StreamServer()
    handler = create_relay().routes["/ws"].handler
    app.route("/ws", handler, auth=Fortress.query_token(secret))
    app.static("/", AUTH_PAGE, "text/html; charset=utf-8")
    host, port = await app.start("127.0.0.1", 0)
    try:
        page = await browser.new_page()
        # Tokens live 3 s: the page must refresh in-band to outlive the first one.
        await page.expose_function(
            "issueToken", lambda: Fortress.issue_token("ann", secret, expires_in=3))
        await page.goto(f"http://{host}:{port}/")
        await page.wait_for_function("window.states.includes('open')")
        (socket_id,) = await app.hub.room_members("general")
        assert app.hub.get_socket(socket_id).user_id == "ann"
        # Refreshes come at half of each token's remaining life (1.5 s, 3 s, 3.75 s
        # after connecting): by the fourth token the first one (3 s) has expired,
        # and the same socket is still served.
        await page.wait_for_function("window.tokens >= 4", timeout=15_000)
        assert await app.hub.room_members("general") == [socket_id]
        await app.hub.send_to(socket_id, SocketMessage.Text("still served"))
        assert await wait_rendered(page, 1) == ["still served"]
        # A reconnect asks for a fresh token again.
        before = await page.evaluate("window.tokens")
        app.hub.get_socket(socket_id)._conn._abort()  # type: ignore[attr-defined]
        await page.wait_for_function(f"window.tokens > {before}", timeout=10_000)
        await page.wait_for_function("window.states.filter(s => s === 'open').length >= 2",
                                     timeout=10_000)
        assert await page.evaluate("window.errors") == []
    finally:
        await app.aclose()


async def test_a_failed_refresh_is_tried_again_before_the_token_expires(
    browser: Browser,
) -> None:
    from nucleus.fortress import Fortress

    secret = "b" * 32
    app = StreamServer()
    app.route("/ws", create_relay().routes["/ws"].handler, auth=Fortress.query_token(secret))
    app.static("/", AUTH_PAGE, "text/html; charset=utf-8")
    host, port = await app.start("127.0.0.1", 0)
    calls = 0

    def issue() -> str:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first in-band refresh: the token service is down
            raise RuntimeError("token service unavailable")
        return Fortress.issue_token("ann", secret, expires_in=4)

    try:
        page = await browser.new_page()
        await page.expose_function("issueToken", issue)
        await page.goto(f"http://{host}:{port}/")
        await page.wait_for_function("window.states.includes('open')")
        (socket_id,) = await app.hub.room_members("general")
        # Refresh at 2 s fails; the retry (1 s later) succeeds; the socket outlives
        # the first token (4 s) without a reconnect.
        await page.wait_for_function("window.tokens >= 3", timeout=10_000)
        assert await page.evaluate("window.errors") == ["token_unavailable"]
        await page.wait_for_function("window.tokens >= 4", timeout=15_000)
        assert await app.hub.room_members("general") == [socket_id]
        assert await page.evaluate("window.states.filter(s => s === 'open').length") == 1
    finally:
        await app.aclose()


async def test_sends_queued_while_away_arrive_in_order_and_offline_pauses(
    browser: Browser,
) -> None:
    app = create_relay()
    host, port = await app.start("127.0.0.1", 0)
    try:
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"http://{host}:{port}/")
        await page.wait_for_function("window.states.includes('open')")
        async with connect(f"ws://{host}:{port}/ws", max_queue=None) as listener:
            # The browser goes offline: the client stops retrying and queues sends.
            await context.set_offline(True)
            await page.evaluate("window.dispatchEvent(new Event('offline'))")
            await page.wait_for_function("window.stream.state === 'reconnecting'")
            await page.evaluate("for (let i = 0; i < 5; i++) window.stream.send(`q${i}`)")
            full = await page.evaluate("""() => {
                try { for (let i = 0; i < 2000; i++) window.stream.send('x'); return null; }
                catch (e) { return e.message; }
            }""")
            assert full is not None and "queue is full" in full
            assert await app.hub.connection_count() == 1  # only the listener: no retries offline
            # Back online: it reconnects at once and flushes the queue in order.
            await context.set_offline(False)
            await page.evaluate("window.dispatchEvent(new Event('online'))")
            got = [await within(listener.recv()) for _ in range(5)]
            assert got == [f"q{i}" for i in range(5)]
        await context.close()
    finally:
        await app.aclose()


async def test_a_refused_token_stops_reconnecting(browser: Browser) -> None:
    from nucleus.fortress import Fortress

    secret = "r" * 32
    app = StreamServer()
    app.route("/ws", create_relay().routes["/ws"].handler, auth=Fortress.query_token(secret))
    app.static("/", AUTH_PAGE, "text/html; charset=utf-8")
    attempts = 0
    original = app.door.check

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal attempts
        attempts += 1
        return original(*args, **kwargs)

    app.door.check = counting  # type: ignore[method-assign]
    host, port = await app.start("127.0.0.1", 0)
    try:
        page = await browser.new_page()
        # Every token this page gets is forged: the server answers 401.
        await page.expose_function(
            "issueToken", lambda: Fortress.issue_token("eve", "f" * 32, expires_in=60))
        await page.goto(f"http://{host}:{port}/")
        await page.wait_for_function("window.states.at(-1) === 'closed'", timeout=15_000)
        assert "unauthorized" in await page.evaluate("window.errors")
        settled = attempts
        # Closed for good: another connection to the page's server proves
        # the loop is alive, and the page has not tried again meanwhile.
        async with connect(f"ws://{host}:{port}/ws?token={Fortress.issue_token('ok', secret)}"):
            pass
        assert attempts == settled + 1
        assert await app.hub.connection_count() == 0
    finally:
        await app.aclose()


async def test_page_keeps_its_chat_when_its_node_is_killed(
    browser: Browser, cluster: Cluster,
) -> None:
    """
    Two relay nodes on Redis behind a load balancer (which tries node A, then
    B, as nginx's proxy_next_upstream does). The page is on A when A is
    SIGKILLed while a third node publishes: the page reconnects through the
    balancer to B, resumes, and shows every message once, in order, no gap.
    """
    require_redis()
    backend = f"{REDIS_URL}?prefix={cluster.prefix}&presence_timeout=2&probe_interval=0.25"
    a, b = await cluster.spawn("tests.apps.relay:server", backend, 2)
    balancer = await cluster.proxy(("127.0.0.1", a.port), ("127.0.0.1", b.port))
    publisher = StreamServer(backend=RedisBackend(REDIS_URL, prefix=cluster.prefix))
    await cluster.serve(publisher)
    page = await open_relay_page(browser, f"http://127.0.0.1:{balancer.port}/")

    async def page_joined() -> bool:
        return len(await publisher.hub.room_members("general")) == 1

    await eventually(page_joined, what="the page in the room")
    published: list[str] = []
    burst = [0]  # messages to publish back to back

    async def publish() -> None:
        while True:
            text = f"m{len(published)}"
            await publisher.hub.broadcast_to_room("general", SocketMessage.Text(text))
            published.append(text)
            if burst[0]:
                burst[0] -= 1
            else:
                await asyncio.sleep(0.02)  # 50 a second: the default history (100) covers 2 s

    sending = asyncio.ensure_future(publish())
    try:
        await wait_rendered(page, 20)
        await a.kill()
        burst[0] = 10  # while the page is still finding its way to B
        await page.wait_for_function("window.states.filter(s => s === 'open').length >= 2",
                                     timeout=20_000)
        await wait_rendered(page, len(published) + 20)
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
    # (A publication cancelled in flight may still be delivered: wait for what
    # was acknowledged, then compare everything shown.)
    shown = await wait_rendered(page, len(published))
    assert shown[: len(published)] == published
    assert len(shown) <= len(published) + 1 and len(set(shown)) == len(shown)
    assert await page.evaluate("window.gaps") == []


HEARTBEAT_PAGE = b"""<!doctype html><ul id="list"></ul><script type="module">
  import { connect, Signal, renderList } from "/nucleus/stream.js";
  const messages = new Signal([]);
  window.gaps = [];
  window.states = [];
  const port = new URLSearchParams(location.search).get("via");
  const stream = connect(`ws://127.0.0.1:${port}/ws`,
                         { minDelay: 100, maxDelay: 300, heartbeat: 300, connectTimeout: 1000 });
  stream.subscribe("general", (m) => messages.modify((list) => list.push(m)));
  stream.on("gap", (gap) => window.gaps.push(gap.channel));
  stream.on("state", (state) => window.states.push(state));
  renderList(messages, document.getElementById("list"), (m) => String(m));
</script>"""


async def test_a_blackholed_link_is_noticed_by_the_heartbeat_and_recovered(
    browser: Browser,
) -> None:
    from .cluster import TcpProxy

    app = create_relay()
    app.static("/heartbeat", HEARTBEAT_PAGE, "text/html; charset=utf-8")
    host, port = await app.start("127.0.0.1", 0)
    proxy = TcpProxy(("127.0.0.1", port))
    await proxy.start()
    try:
        page = await browser.new_page()
        await page.goto(f"http://{host}:{port}/heartbeat?via={proxy.port}")
        await page.wait_for_function("window.states.includes('open')")
        await app.hub.broadcast_to_room("general", SocketMessage.Text("m0"))
        await wait_rendered(page, 1)
        # The link goes silent without closing (a phone changing networks): only
        # the page's heartbeat can tell.
        proxy.stall()
        for n in range(1, 6):
            await app.hub.broadcast_to_room("general", SocketMessage.Text(f"m{n}"))
        await page.wait_for_function("window.states.includes('reconnecting')", timeout=10_000)
        proxy.resume()
        await page.wait_for_function("window.states.filter(s => s === 'open').length >= 2",
                                     timeout=20_000)
        assert await wait_rendered(page, 6) == [f"m{n}" for n in range(6)]
        assert await page.evaluate("window.gaps") == []
    finally:
        await proxy.aclose()
        await app.aclose()
