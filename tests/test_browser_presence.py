"""Room presence in a real headless Chromium: `stream.presence()` of the browser client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page

from nucleus.stream import StreamServer

from .test_browser import browser, chromium  # noqa: F401 - the fixtures
from .test_presence import Users

PAGE = b"""<!doctype html>
<script type="module">
  import { connect } from "/nucleus/stream.js";
  const params = new URLSearchParams(location.search);
  window.log = [];
  window.users = [];
  window.states = [];
  const stream = connect(`ws://${location.host}/ws?user=${params.get("user")}`,
                         { minDelay: 50, maxDelay: 200, presenceDelay: 1500 });
  stream.on("state", (s) => window.states.push(s));
  if (params.get("watch")) {
    stream.presence("chat", (users, change) => {
      window.users = users;
      window.log.push(change.user ? `${change.type} ${change.user}` : change.type);
    });
  } else {
    stream.subscribe("chat", () => {});
  }
  window.stream = stream;
</script>
"""


@pytest.fixture
async def base() -> AsyncIterator[str]:
    server = StreamServer()
    server.route("/ws", Users(), presence=True)
    server.static("/", PAGE, "text/html; charset=utf-8")
    host, port = await server.start("127.0.0.1", 0)
    yield f"http://{host}:{port}/"
    await server.aclose()


async def page_of(browser: Browser, url: str) -> Page:  # noqa: F811 - the fixture
    page = await browser.new_page()
    await page.goto(url)
    await page.wait_for_function("window.states && window.states.includes('open')")
    return page


async def log_has(page: Page, entry: str) -> None:
    await page.wait_for_function(f"window.log.includes({entry!r})", timeout=10_000)


async def test_a_page_sees_who_is_in_the_room_and_a_reload_is_not_a_departure(
    browser: Browser, base: str,  # noqa: F811 - the fixture
) -> None:
    ann = await page_of(browser, base + "?user=ann&watch=1")
    await log_has(ann, "state")
    assert await ann.evaluate("window.users") == ["ann"]

    bob = await page_of(browser, base + "?user=bob")
    await log_has(ann, "join bob")
    assert await ann.evaluate("window.users") == ["ann", "bob"]

    # bob reloads: his socket closes and a new one joins within the debounce.
    await bob.reload()
    await bob.wait_for_function("window.states && window.states.includes('open')")
    # cy comes and goes after the reload; her departure is reported presenceDelay
    # after she left, so by then bob's would have been too.
    cy = await page_of(browser, base + "?user=cy")
    await log_has(ann, "join cy")
    await cy.close()
    await log_has(ann, "leave cy")
    assert await ann.evaluate("window.log") == ["state", "join bob", "join cy", "leave cy"]
    assert await ann.evaluate("window.users") == ["ann", "bob"]

    await bob.close()
    await log_has(ann, "leave bob")
    assert await ann.evaluate("window.users") == ["ann"]
