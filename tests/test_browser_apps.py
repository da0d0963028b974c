"""
The demo apps in a real headless Chromium, as ``nucleus demo`` serves them:
two pages chatting, a notification in two tabs of one user and not another's,
the dashboard's charts moving, the login flow and a refused token.

Each test saves a screenshot in its tmp dir; ``NUCLEUS_SCREENSHOTS=1`` also
writes them to docs/screenshots/ (how the README's images are made:
``make screenshots``).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page

from nucleus.demo import create_app
from nucleus.fortress import Fortress
from nucleus.stream import StreamServer

from .helpers import eventually
from .test_browser import browser, chromium  # noqa: F401 - the fixtures

ROOT = Path(__file__).resolve().parents[1]
SECRET = "a-test-secret-of-at-least-thirty-two-bytes!"
VIEWPORT = {"width": 1100, "height": 620}
WAIT = 15_000  # ms


@pytest.fixture
async def demo() -> AsyncIterator[tuple[StreamServer, str]]:
    server = create_app(SECRET, interval=0.25)
    host, port = await server.start("127.0.0.1", 0)
    yield server, f"http://{host}:{port}"
    await server.aclose()


@pytest.fixture
def shot(tmp_path: Path) -> object:
    async def save(page: Page, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        if os.environ.get("NUCLEUS_SCREENSHOTS"):
            keep = ROOT / "docs" / "screenshots"
            keep.mkdir(parents=True, exist_ok=True)
            (keep / path.name).write_bytes(path.read_bytes())
        assert path.stat().st_size > 10_000  # a page was drawn, not a blank
        return path

    return save


async def context(browser: Browser) -> BrowserContext:  # noqa: F811 - the fixture
    """A browser profile of its own: one person, with their own storage."""
    return await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]


async def open_page(ctx: BrowserContext, url: str) -> Page:
    page = await ctx.new_page()
    await page.goto(url)
    return page


async def state_is(page: Page, state: str) -> None:
    await page.wait_for_function(
        f"document.getElementById('state').textContent === {state!r}", timeout=WAIT)


async def texts(page: Page, selector: str) -> list[str]:
    return await page.locator(selector).all_inner_texts()


async def count_is(page: Page, selector: str, n: int) -> None:
    await page.wait_for_function(
        f"document.querySelectorAll({selector!r}).length === {n}", timeout=WAIT)


async def test_two_pages_chat_in_a_room_and_see_each_other_online(
    browser: Browser, demo: tuple[StreamServer, str], shot,  # noqa: F811 - the fixture
) -> None:
    _, base = demo
    ann = await open_page(await context(browser), f"{base}/")
    await ann.click("a[href='chat/']")
    await ann.fill("#name", "ann")  # the join form
    await ann.click("#join button")
    await state_is(ann, "open")
    await ann.fill("#text", "Anyone here?")
    await ann.press("#text", "Enter")
    await count_is(ann, "#messages li", 1)

    # bob arrives later: he gets the room's recent messages, and both see who is online.
    bob = await open_page(await context(browser), f"{base}/chat/?name=bob&room=lobby")
    await state_is(bob, "open")
    await count_is(bob, "#messages li", 1)
    assert await texts(bob, "#messages .text") == ["Anyone here?"]
    await count_is(ann, "#online li", 2)
    assert await texts(ann, "#online li") == ["ann (you)", "bob"]
    assert await texts(bob, "#online li") == ["ann", "bob (you)"]

    await bob.fill("#text", "Hi ann! Just arrived.")
    await bob.press("#text", "Enter")
    await ann.fill("#text", "Welcome, bob")
    await ann.press("#text", "Enter")
    for page in (ann, bob):
        await count_is(page, "#messages li", 3)
        assert await texts(page, "#messages li b") == ["ann", "bob", "ann"]
        assert await texts(page, "#messages .text") == [
            "Anyone here?", "Hi ann! Just arrived.", "Welcome, bob"]

    # bob starts typing: ann sees it.
    await bob.type("#text", "How does the history work")
    await ann.wait_for_function(
        "document.getElementById('typing').textContent === 'bob is typing…'", timeout=WAIT)
    await shot(ann, "chat")

    # Another room is another conversation; coming back shows this one again.
    await ann.click("#rooms button[value=python]")
    await count_is(ann, "#messages li", 0)
    await ann.wait_for_function("document.querySelectorAll('#online li').length === 1")
    await ann.click("#rooms button[value=lobby]")
    await count_is(ann, "#messages li", 3)


async def test_a_notification_reaches_both_tabs_of_its_user_and_no_one_else(
    browser: Browser, demo: tuple[StreamServer, str], shot,  # noqa: F811 - the fixture
) -> None:
    server, base = demo
    page = f"{base}/notifications/"
    ann = await context(browser)
    ann_tabs = [await open_page(ann, f"{page}?user=ann"), await open_page(ann, page)]
    bob = await open_page(await context(browser), f"{page}?user=bob")
    for tab in [*ann_tabs, bob]:
        await state_is(tab, "open")
    assert await ann_tabs[1].inner_text("#who") == "signed in as ann"  # the second tab too

    async def notify(user: str, text: str) -> None:
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"{page}notify", params={"user": user, "text": text})
        assert answer.status_code == 200

    await notify("ann", "Your order #1024 has shipped")
    for tab in ann_tabs:
        await count_is(tab, "#notifications li", 1)
        assert (await texts(tab, "#notifications li"))[0].endswith("Your order #1024 has shipped")

    # Both tabs go offline; what is sent meanwhile arrives when they are back.
    await ann.set_offline(True)
    for tab in ann_tabs:
        await tab.wait_for_function(
            "document.getElementById('state').textContent !== 'open'", timeout=WAIT)
    async def gone() -> bool:
        return not await server.hub.room_members("user:ann")

    await eventually(gone)  # the server saw both tabs go: what follows must be recovered
    await notify("ann", "bob commented on your photo")
    await notify("ann", "Your invoice is ready")
    await ann.set_offline(False)
    for tab in ann_tabs:
        await state_is(tab, "open")
        await count_is(tab, "#notifications li", 3)
        assert [line.split("\n")[-1] for line in await texts(tab, "#notifications li")] == [
            "Your invoice is ready", "bob commented on your photo",
            "Your order #1024 has shipped"]
    await ann_tabs[0].fill("#text", "hello")
    await shot(ann_tabs[0], "notifications")

    # bob got none of them; his own arrives (after all of ann's were delivered).
    await notify("bob", "Welcome, bob")
    await count_is(bob, "#notifications li", 1)
    assert (await texts(bob, "#notifications li"))[0].endswith("Welcome, bob")
    # A tab opened now shows the recent ones at once.
    late = await open_page(ann, page)
    await count_is(late, "#notifications li", 3)


async def test_the_dashboard_charts_update_live(
    browser: Browser, demo: tuple[StreamServer, str], shot,  # noqa: F811 - the fixture
) -> None:
    _, base = demo
    ctx = await context(browser)
    dashboard = await open_page(ctx, f"{base}/dashboard/")
    await state_is(dashboard, "open")
    # Some traffic to chart: a chat page talking.
    chat = await open_page(ctx, f"{base}/chat/?name=ann")
    await state_is(chat, "open")
    for n in range(12):
        await chat.fill("#text", f"message {n}")
        await chat.press("#text", "Enter")
        await count_is(chat, "#messages li", n + 1)

    points = "+document.getElementById('chart-messages').dataset.points"
    await dashboard.wait_for_function(f"{points} >= 4", timeout=WAIT)
    before = await dashboard.evaluate(
        "[document.getElementById('chart-messages').toDataURL(), " + points + "]")
    await dashboard.wait_for_function(f"{points} >= {before[1] + 3}", timeout=WAIT)
    after = await dashboard.evaluate("document.getElementById('chart-messages').toDataURL()")
    assert after != before[0]  # the chart was redrawn with new points
    assert int(await dashboard.inner_text("#connections")) == 2
    assert float(await dashboard.inner_text("#out")) > 0
    assert (await dashboard.inner_text("#memory")).endswith(" MB")
    assert (await dashboard.inner_text("#cpu")).endswith("%")
    for chart in ("connections", "cpu", "memory"):
        assert await dashboard.evaluate(
            f"+document.getElementById('chart-{chart}').dataset.points") >= 4
    await dashboard.wait_for_function(f"{points} >= 20", timeout=WAIT)
    await shot(dashboard, "dashboard")


async def test_login_gives_a_private_room_and_a_forged_token_is_refused(
    browser: Browser, demo: tuple[StreamServer, str], shot,  # noqa: F811 - the fixture
) -> None:
    _, base = demo
    pages = []
    for name in ("ann", "bob"):
        page = await open_page(await context(browser), f"{base}/auth/")
        await state_is(page, "signed out")
        await page.fill("#name", name)
        await page.click("#login button")
        await state_is(page, "open")
        assert await page.inner_text("#room") == f"user:{name}"
        pages.append(page)
    ann, bob = pages
    assert "server verified the token" in await ann.inner_text("#status")

    await ann.fill("#to", "bob")
    await ann.fill("#text", "Lunch at noon?")
    await ann.click("#send button")
    await count_is(bob, "#inbox li", 1)
    assert await texts(bob, "#inbox li b") == ["ann → you"]
    assert await texts(bob, "#inbox .text") == ["Lunch at noon?"]
    await count_is(ann, "#inbox li", 1)  # the sender's room has it too
    assert await texts(ann, "#inbox li b") == ["you → bob"]
    await bob.fill("#to", "ann")
    await bob.fill("#text", "Sure, see you there")
    await bob.click("#send button")
    await count_is(ann, "#inbox li", 2)
    assert await texts(ann, "#inbox li b") == ["you → bob", "bob → you"]
    await shot(ann, "auth")

    # A token claiming to be "admin" with ann's signature: the server refuses it.
    await ann.click("#forge")
    await state_is(ann, "refused")
    status = await ann.inner_text("#status")
    assert "Refused" in status and "“admin”" in status and "unauthorized" in status
    assert await ann.is_visible("#login")
    await shot(ann, "auth-refused")

    # A token signed with another secret (a server that restarted with a new one).
    stale = Fortress.issue_token("bob", "some-other-secret-of-at-least-32-bytes!")
    await bob.evaluate(f"sessionStorage.setItem('nucleus-demo.token', {json.dumps(stale)})")
    await bob.reload()
    await state_is(bob, "refused")
    assert "“bob”" in await bob.inner_text("#status")


async def test_the_landing_page_leads_to_every_app(
    browser: Browser, demo: tuple[StreamServer, str], shot,  # noqa: F811 - the fixture
) -> None:
    _, base = demo
    ctx = await context(browser)
    page = await open_page(ctx, f"{base}/")
    await shot(page, "demo")
    titles = {"chat": "Chat", "notifications": "Notifications", "dashboard": "Live dashboard",
              "auth": "Authenticated connection"}
    for app, title in titles.items():
        await page.goto(f"{base}/")
        await page.click(f"a[href='{app}/']")
        await page.wait_for_function(
            f"document.querySelector('h1').textContent === {title!r}", timeout=WAIT)
    # The pages load nothing from elsewhere.
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    for app in ("chat/?name=ann", "notifications/?user=ann", "dashboard/", "auth/"):
        await page.goto(f"{base}/{app}")
        await page.wait_for_load_state("networkidle")
    assert requested and all(url.startswith(base) or url.startswith("data:") for url in requested)
