"""
How the browser client acts on the server's refusals, in a real headless Chromium:
a refused token on another origin, the close codes that end a stream or only
pause it, and a refused request matched to the request that caused it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright
from websockets.asyncio.client import connect

from nucleus.fortress import Fortress
from nucleus.stream import StreamServer

from .apps.relay import Relay
from .conftest import Serve
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


@pytest.mark.parametrize("allowed", ["any origin", "listed origin"])
async def test_a_refused_token_on_another_origin_ends_with_unauthorized(
    browser: Browser, serve: Serve, allowed: str,
) -> None:
    pages = StreamServer()
    pages.static("/", CROSS_ORIGIN_PAGE, "text/html; charset=utf-8")
    _, page_port = await pages.start("127.0.0.1", 0)
    page_origin = f"http://localhost:{page_port}"
    try:
        api = StreamServer()
        origins = [page_origin] if allowed == "listed origin" else None
        api.route("/ws", Relay(), auth=Fortress.query_token(SECRET), origins=origins)
        attempts = 0
        check = api.door.check

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal attempts
            attempts += 1
            return check(*args, **kwargs)

        api.door.check = counting  # type: ignore[method-assign]
        base = await serve(api)
        forged = Fortress.issue_token("eve", "f" * 32, expires_in=60)
        page = await browser.new_page()
        # The token travels as a subprotocol, so the probe sends it as an
        # Authorization header: a request that needs a CORS preflight.
        await page.goto(f"{page_origin}/?api={base}/ws&token={forged}")
        await page.wait_for_function("window.states.at(-1) === 'closed'", timeout=15_000)
        assert await page.evaluate("window.errors") == ["unauthorized"]
        settled = attempts
        # Closed for good: a connection of our own reaches the server's door,
        # and the page has not dialed again meanwhile.
        ok = Fortress.issue_token("ok", SECRET)
        async with connect(f"{base}/ws?token={ok}", origin=page_origin):
            pass
        assert attempts == settled + 1
        assert await page.evaluate("window.states") == ["closed"]
    finally:
        await pages.aclose()
