"""
permessage-deflate with a real headless Chromium, which always offers it: a
raw ``WebSocket`` and the ``stream.js`` client both negotiate it, receive
compressed broadcasts (one compression per message and format) and decode them
right, and what the page sends compressed arrives intact.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.async_api import Browser
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from nucleus.stream import SocketMessage, StreamServer

from .helpers import Recorder, within
from .test_browser import browser, chromium  # noqa: F401 - the fixtures
from .test_compression import deflate_calls, json_message  # noqa: F401 - a fixture

PAGE = b"""<!doctype html>
<script type="module">
  import { connect } from "/nucleus/stream.js";
  window.raw = [];
  window.tagged = [];
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onmessage = (event) => window.raw.push(event.data);
  ws.onopen = () => { window.rawOpen = true; };
  window.ws = ws;
  const stream = connect(`ws://${location.host}/ws`);
  stream.subscribe("room", (data) => window.tagged.push(data));
  window.stream = stream;
</script>
"""


async def test_chromium_negotiates_and_decodes_compressed_messages(
    browser: Browser, deflate_calls: list[int],  # noqa: F811 - the fixtures
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inbound: list[tuple[bool, int]] = []  # RSV1 and size on the wire of each data frame
    decode = PerMessageDeflate.decode

    def recording(self: PerMessageDeflate, frame: Frame, *, max_size: int | None = None) -> Frame:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            inbound.append((frame.rsv1, len(frame.data)))
        return decode(self, frame, max_size=max_size)

    monkeypatch.setattr(PerMessageDeflate, "decode", recording)
    handler = Recorder(rooms=("room",))
    server = StreamServer(compression=True)
    server.route("/ws", handler)
    server.static("/", PAGE, "text/html; charset=utf-8")
    host, port = await server.start("127.0.0.1", 0)
    try:
        page = await browser.new_page()
        cdp = await page.context.new_cdp_session(page)
        await cdp.send("Network.enable")
        handshakes: list[dict[str, Any]] = []
        cdp.on("Network.webSocketHandshakeResponseReceived",
               lambda event: handshakes.append(event["response"]))
        await page.goto(f"http://{host}:{port}/")
        await page.wait_for_function("window.rawOpen && window.stream.state === 'open'")
        sockets = [await within(handler.connected.get()) for _ in range(2)]

        sent = [json_message(n) for n in range(5)] + ["short", json_message(5)]
        for text in sent:
            await server.hub.broadcast_to_room("room", SocketMessage.Text(text))
        await page.wait_for_function(
            f"window.raw.length >= {len(sent)} && window.tagged.length >= {len(sent)}")
        assert await page.evaluate("window.raw") == sent
        assert await page.evaluate("window.tagged") == [
            json.loads(text) if text.startswith("{") else text for text in sent]

        # Both of the page's sockets negotiated it; every big message was
        # compressed once for raw peers and once for nucleus.v1 peers.
        assert len(handshakes) == 2
        for response in handshakes:
            headers = {name.lower(): value for name, value in response["headers"].items()}
            assert headers["sec-websocket-extensions"].startswith("permessage-deflate")
        assert all(socket._conn._deflate for socket in sockets)  # type: ignore[attr-defined]
        assert deflate_calls == [15] * 12

        # Chromium compresses what it sends (it honours client_no_context_takeover).
        big = json_message(99, 20_000)
        inbound.clear()
        await page.evaluate("(text) => window.ws.send(text)", big)
        event = await within(handler.events.get())
        while event[0] != "message":
            event = await within(handler.events.get())
        assert event[2] == SocketMessage.Text(big)
        # (the stream.js socket may send a heartbeat meanwhile)
        assert any(rsv1 and size < len(big) / 3 for rsv1, size in inbound), inbound
    finally:
        await server.aclose()


async def test_a_route_without_compression_sends_chromium_plain_frames(
    browser: Browser, deflate_calls: list[int]  # noqa: F811 - the fixtures
) -> None:
    handler = Recorder(rooms=("room",))
    server = StreamServer(compression=True)
    server.route("/ws", handler, compression=False)
    server.static("/", PAGE, "text/html; charset=utf-8")
    host, port = await server.start("127.0.0.1", 0)
    try:
        page = await browser.new_page()
        await page.goto(f"http://{host}:{port}/")
        await page.wait_for_function("window.rawOpen && window.stream.state === 'open'")
        for _ in range(2):
            await within(handler.connected.get())
        await server.hub.broadcast_to_room("room", SocketMessage.Text(json_message(1)))
        await page.wait_for_function("window.raw.length >= 1 && window.tagged.length >= 1")
        assert await page.evaluate("window.raw") == [json_message(1)]
        assert deflate_calls == []
        assert not any(socket._conn._deflate  # type: ignore[attr-defined]
                       for socket in handler.sockets.values())
    finally:
        await server.aclose()
