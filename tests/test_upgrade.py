"""
The handshake's fast path (``_upgrade``): it reads ordinary requests exactly
as websockets would, answers them as websockets would, and leaves everything
else (``None``) to websockets' full parser.
"""

from __future__ import annotations

import email.utils

import pytest
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from nucleus.stream._upgrade import (
    UpgradeRequest,
    accept_response,
    http_date,
    negotiate,
    parse_request,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example
BROWSER = (
    "GET /ws/chat?room=1 HTTP/1.1\r\n"
    "Host: app.example\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    "Upgrade: websocket\r\n"
    "Origin: https://app.example\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\n"
    "Sec-WebSocket-Protocol: nucleus.v1, nucleus.token.abc.def\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    "Cookie: a=1\r\n"
    "\r\n"
).encode()


def request_lines(*extra: str, first: str = "GET /ws HTTP/1.1") -> bytes:
    lines = [first, "Host: x", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def websockets_request(head: bytes) -> Request:
    """The request as websockets' own parser reads it."""
    reader = StreamReader()
    reader.feed_data(head)
    parser = Request.parse(reader.read_line)
    try:
        next(parser)
    except StopIteration as done:
        request: Request = done.value
        return request
    raise AssertionError("websockets wants more bytes")


def test_a_browser_upgrade_is_read_as_websockets_reads_it() -> None:
    request = parse_request(BROWSER)
    assert request is not None
    expected = websockets_request(BROWSER)
    assert request.target == expected.path == "/ws/chat?room=1"
    assert request.headers == tuple(expected.headers.raw_items())
    assert request.websocket and request.key == KEY
    assert request.subprotocols == ("nucleus.v1", "nucleus.token.abc.def")
    assert request.extensions == (("permessage-deflate", [("client_max_window_bits", None)]),)


def test_a_plain_get_is_read_as_a_plain_request() -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"
    assert parse_request(head) == UpgradeRequest(
        "/healthz", (("Host", "x"), ("Accept", "*/*")), websocket=False)


def test_header_values_are_stripped_and_obs_text_kept_as_latin_1() -> None:
    request = parse_request(request_lines("X-Name: \t caf\xe9 \t".replace("\xe9", "é")))
    # é in UTF-8 is two obs-text bytes: websockets decodes them as ISO-8859-1.
    assert request is not None
    assert request.headers[-1] == ("X-Name", "cafÃ©")
    assert request.headers == tuple(websockets_request(
        request_lines("X-Name: \t café \t")).headers.raw_items())


@pytest.mark.parametrize("head", [
    request_lines(first="POST /ws HTTP/1.1"),
    request_lines(first="GET /ws HTTP/1.0"),
    request_lines(first="get /ws HTTP/1.1"),
    request_lines(first="GET /caf\xe9 HTTP/1.1"),
    request_lines(first="GET  /ws HTTP/1.1"),
    request_lines("X-Folded: a", " continued"),
    request_lines("X-Bad: a\x01b"),
    request_lines("X Space: 1"),
    request_lines("NoColon"),
    request_lines("Content-Length: 0"),
    request_lines("Transfer-Encoding: chunked"),
    request_lines("Origin: https://a.example", "Origin: https://b.example"),
    request_lines("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="),
    request_lines("Sec-WebSocket-Version: 13"),
    request_lines("Sec-WebSocket-Protocol: a b"),
    request_lines("Sec-WebSocket-Extensions: permessage-deflate; =x"),
    request_lines("Upgrade: websocket"),
    request_lines(*(f"X-Many-{n}: 1" for n in range(130))),
    request_lines().replace(b"Upgrade: websocket", b"Upgrade: h2c"),
    request_lines().replace(b"Upgrade: websocket", b"Upgrade: websocket, h2c"),
    request_lines().replace(b"Connection: Upgrade", b"Connection: keep-alive"),
    request_lines().replace(b"Connection: Upgrade", b"Connection: ,,=,"),
    request_lines("Connection: ,,=,"),  # one value is fine, the other is not
    request_lines().replace(b"Connection: Upgrade\r\n", b""),
    request_lines().replace(KEY.encode(), b"not base64!"),
    request_lines().replace(KEY.encode(), b"c2hvcnQ="),
    request_lines().replace(b"Version: 13", b"Version: 8"),
    request_lines().replace(b"\r\n", b"\n"),
    request_lines() + b"\x81\x80abcd",
])
def test_anything_unusual_is_left_to_the_full_parser(head: bytes) -> None:
    assert parse_request(head) is None


def test_connection_options_are_parsed_when_not_just_upgrade() -> None:
    for value in ("upgrade", "UPGRADE", "keep-alive, Upgrade", "Upgrade , close"):
        head = request_lines().replace(b"Connection: Upgrade", f"Connection: {value}".encode())
        assert parse_request(head) is not None, value


def answer_lines(response: bytes) -> list[bytes]:
    return [line for line in response.split(b"\r\n") if not line.startswith(b"Date: ")]


@pytest.mark.parametrize(("extra", "subprotocol", "compression"), [
    ((), None, False),
    (("Sec-WebSocket-Protocol: x, nucleus.v1",), "nucleus.v1", False),
    (("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",), None, True),
    (("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",), None, False),
])
def test_the_101_is_the_one_websockets_writes(
    extra: tuple[str, ...], subprotocol: str | None, compression: bool
) -> None:
    head = request_lines(*extra)
    factory = ServerPerMessageDeflateFactory(server_no_context_takeover=True,
                                             client_no_context_takeover=True)
    protocol = ServerProtocol(
        extensions=[factory] if compression else None,
        select_subprotocol=lambda _, offered: (
            "nucleus.v1" if "nucleus.v1" in offered else None),  # type: ignore[arg-type,return-value]
    )
    reference = protocol.accept(websockets_request(head)).serialize()

    request = parse_request(head)
    assert request is not None
    answer, extensions = negotiate(request.extensions, [factory] if compression else [])
    ours = accept_response(request.key, subprotocol, answer, 1e9)
    assert answer_lines(ours) == answer_lines(reference)
    assert [type(e) for e in extensions] == [type(e) for e in protocol.extensions]
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in ours  # RFC 6455 §1.3


def test_the_date_header_is_formatted_once_per_second() -> None:
    assert http_date(1_000_000_000.1) == email.utils.formatdate(1_000_000_000, usegmt=True)
    assert http_date(1_000_000_000.9) is http_date(1_000_000_000.1)
    assert http_date(1_000_000_001.0) == "Sun, 09 Sep 2001 01:46:41 GMT"
