"""`stream.request()` in a real headless Chromium, against `on_request`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from nucleus.stream import RequestError, StreamHandler, StreamHub, StreamServer, WebSocket

from .test_browser import browser, chromium  # noqa: F401 - the fixtures

PAGE = b"""<!doctype html>
<script type="module">
  import { connect } from "/nucleus/stream.js";
  const stream = connect(`ws://${location.host}/ws`, { minDelay: 50, maxDelay: 200 });
  // Made before the socket is open: queued, then sent.
  window.early = stream.request({ item: "tea" });
  window.refused = stream.request("nope", { offline: "reject" }).catch((e) => e.code);
  window.ask = (data, options) =>
    stream.request(data, options).then(
      (data) => ({ data }), (e) => ({ code: e.code, message: e.message }));
  window.stream = stream;
</script>
"""


class Answers(StreamHandler):
    async def on_request(self, hub: StreamHub, socket: WebSocket, data: Any) -> Any:
        if data == "slow":
            await asyncio.sleep(1)
            return "late"
        if data == "drop":
            await socket.close(1012, "restarting")
            await asyncio.sleep(1)
            return "never seen"
        if data == "gold":
            raise RequestError("out_of_stock", "no gold left")
        if data == "boom":
            raise ValueError("a secret")
        return {"echo": data}


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:  # noqa: F811 - the fixture
    server = StreamServer()
    server.route("/ws", Answers())
    server.static("/", PAGE, "text/html; charset=utf-8")
    host, port = await server.start("127.0.0.1", 0)
    page = await browser.new_page()
    await page.goto(f"http://{host}:{port}/")
    await page.wait_for_function("window.stream && window.stream.state === 'open'")
    yield page
    await server.aclose()


async def test_requests_resolve_with_the_answer_or_reject_with_a_code(page: Page) -> None:
    assert await page.evaluate("window.early") == {"echo": {"item": "tea"}}
    assert await page.evaluate("window.refused") == "offline"
    assert await page.evaluate("ask([1, 'two'])") == {"data": {"echo": [1, "two"]}}
    assert await page.evaluate("ask('gold')") == {"code": "out_of_stock",
                                                  "message": "no gold left"}
    internal = await page.evaluate("ask('boom')")
    assert internal["code"] == "internal" and "secret" not in internal["message"]
    # Many at once: each reply reaches its own request.
    answers = await page.evaluate(
        "Promise.all(Array.from({length: 50}, (_, i) => window.ask(i)))")
    assert answers == [{"data": {"echo": i}} for i in range(50)]


async def test_a_timeout_rejects_and_the_late_reply_goes_nowhere(page: Page) -> None:
    assert await page.evaluate("ask('slow', { timeout: 100 })") == {
        "code": "timeout", "message": "no reply within 100 ms"}
    # The late reply arrives and is dropped; the next request still gets its own.
    assert await page.evaluate(
        "new Promise((r) => setTimeout(r, 1200)).then(() => ask('after'))"
    ) == {"data": {"echo": "after"}}


async def test_a_request_the_link_took_with_it_rejects_as_disconnected(page: Page) -> None:
    result = await page.evaluate("ask('drop')")
    assert result["code"] == "disconnected"
    await page.wait_for_function("window.stream.state === 'open'")
    assert await page.evaluate("ask('back')") == {"data": {"echo": "back"}}
