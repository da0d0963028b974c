"""
The opening handshake's fast path: a tight check of an ordinary request, and the 101 answer.

Nearly every request a WebSocket port receives is the same few lines: ``GET``,
HTTP/1.1, a handful of well-formed headers, no body. :func:`parse_request`
checks such a request with one regular expression and reads it in a few
string operations, far cheaper than a general HTTP parser. Anything it does
not recognise as ordinary (another method or version, an odd byte, a header
websockets would refuse or that needs a judgement, a body, a long head) comes
back ``None``, and the native door hands the bytes to websockets' full parser
(``ServerProtocol``), which stays the reference for every refusal (400, 405,
426, 431...). So the fast path only ever accepts what websockets would accept
and answers it the same way.

Pure functions: no socket, no clock but the one passed in, nothing per
connection beyond the parsed request.
"""

from __future__ import annotations

import binascii
import email.utils
import hashlib
import re
from collections.abc import Sequence
from typing import NamedTuple

from websockets.exceptions import InvalidHeaderFormat, NegotiationError
from websockets.extensions import Extension, ServerExtensionFactory
from websockets.headers import build_extension, parse_connection, parse_extension, parse_subprotocol
from websockets.typing import ExtensionHeader

__all__ = ["MAX_HEAD", "UpgradeRequest", "accept_response", "http_date", "negotiate",
           "parse_request"]

#: A request head longer than this goes to the full parser (RFC 6455 §4.1 heads are ~200-500 B).
MAX_HEAD = 4096

#: websockets' limit on the number of headers (``http11.MAX_NUM_HEADERS``).
_MAX_HEADERS = 128

# RFC 9112 §3 and §5 as websockets reads them (``http11.Request.parse``): the
# request line, then header lines of a token, a colon and visible characters,
# spaces, tabs or obs-text. Stricter than websockets about the target (visible
# ASCII only) and the version (1.1 only): anything else takes the full path.
_HEAD = re.compile(
    rb"GET ([\x21-\x7e]+) HTTP/1\.1\r\n"
    rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*)\r\n"
)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3

# Headers the check reads, by lower-case name.
_UPGRADE = "upgrade"
_CONNECTION = "connection"
_KEY = "sec-websocket-key"
_VERSION = "sec-websocket-version"
_ORIGIN = "origin"
_PROTOCOL = "sec-websocket-protocol"
_EXTENSIONS = "sec-websocket-extensions"
_BODY = frozenset(("content-length", "transfer-encoding"))
_READ = frozenset((_UPGRADE, _CONNECTION, _KEY, _VERSION, _ORIGIN, _PROTOCOL, _EXTENSIONS, *_BODY))


# One header line of a head _HEAD matched: its name, and its value without the
# spaces and tabs before it (RFC 9112 §5.1); those after it are rare, and
# stripped apart (a lazy match would cost every line a backtrack).
_HEADER = re.compile(r"([^:]+):[ \t]*([^\r]*)\r\n")


class UpgradeRequest(NamedTuple):
    """
    An ordinary ``GET`` request: an upgrade whose handshake is valid
    (``websocket``), or a plain one (no ``Upgrade`` header). A named tuple,
    not a dataclass: one is made per connection, and a tuple is made fastest.
    """

    target: str
    headers: tuple[tuple[str, str], ...]
    websocket: bool
    key: str = ""
    subprotocols: tuple[str, ...] = ()
    extensions: tuple[ExtensionHeader, ...] = ()


def parse_request(head: bytes) -> UpgradeRequest | None:
    """
    Read ``head`` (a whole request head, its blank line included) if it is
    ordinary; ``None`` means: let the full parser read it.
    """
    match = _HEAD.fullmatch(head)
    if match is None:
        return None
    block = match.group(2).decode("latin-1")
    headers: list[tuple[str, str]] = _HEADER.findall(block)
    if len(headers) > _MAX_HEADERS:
        return None
    if " \r\n" in block or "\t\r\n" in block:
        headers = [(name, value.rstrip(" \t")) for name, value in headers]
    read: dict[str, list[str]] = {}
    for name, value in headers:
        key = name.lower()
        if key in _READ:
            values = read.get(key)
            if values is None:
                read[key] = [value]
            else:
                values.append(value)
    if not read.keys().isdisjoint(_BODY):
        return None  # websockets refuses bodies and transfer codings: let it say so
    target = match.group(1).decode("ascii")
    upgrade = read.get(_UPGRADE)
    if upgrade is None:
        return UpgradeRequest(target, tuple(headers), False)
    return _websocket(target, tuple(headers), upgrade, read)


def _websocket(
    target: str,
    headers: tuple[tuple[str, str], ...],
    upgrade: list[str],
    read: dict[str, list[str]],
) -> UpgradeRequest | None:
    """
    The checks of websockets' ``ServerProtocol.process_request`` (RFC 6455
    §4.2.1), on the safe side: a request they might not pass goes to websockets.
    """
    if len(upgrade) != 1 or upgrade[0].lower() != "websocket":
        return None
    keys, connection = read.get(_KEY), read.get(_CONNECTION)
    if keys is None or len(keys) != 1 or connection is None or read.get(_VERSION) != ["13"]:
        return None
    origins = read.get(_ORIGIN)
    if origins is not None and len(origins) > 1:
        return None
    key = keys[0]
    try:
        # Each value must parse (websockets refuses the request otherwise).
        if not (len(connection) == 1 and connection[0].lower() == "upgrade") and not any(
            [option.lower() == "upgrade" for value in connection
             for option in parse_connection(value)]
        ):
            return None
        if len(key) != 24 or len(binascii.a2b_base64(key, strict_mode=True)) != 16:
            return None
        protocols = read.get(_PROTOCOL)
        subprotocols = () if protocols is None else tuple(
            protocol for value in protocols for protocol in parse_subprotocol(value))
        offers = read.get(_EXTENSIONS)
        extensions = () if offers is None else tuple(
            extension for value in offers for extension in parse_extension(value))
    except (InvalidHeaderFormat, ValueError):  # binascii.Error is a ValueError
        return None
    return UpgradeRequest(target, headers, True, key, subprotocols, extensions)


def negotiate(
    offered: Sequence[ExtensionHeader], available: Sequence[ServerExtensionFactory]
) -> tuple[str | None, list[Extension]]:
    """
    Accept the offered extensions a factory agrees to, in the client's order
    (websockets' ``ServerProtocol.process_extensions``): the
    ``Sec-WebSocket-Extensions`` answer and the extensions in use.
    """
    answer: list[ExtensionHeader] = []
    accepted: list[Extension] = []
    for name, params in offered:
        for factory in available:
            if factory.name != name:
                continue
            try:
                response_params, extension = factory.process_request_params(params, accepted)
            except NegotiationError:
                continue
            answer.append((name, response_params))
            accepted.append(extension)
            break
    return (build_extension(answer) if answer else None), accepted


_date_second = -1
_date_text = ""


def http_date(now: float) -> str:
    """The ``Date`` header for ``now`` (seconds since the epoch), formatted once per second."""
    global _date_second, _date_text
    second = int(now)
    if second != _date_second:
        _date_text = email.utils.formatdate(second, usegmt=True)
        _date_second = second
    return _date_text


def accept_response(
    key: str, subprotocol: str | None, extensions: str | None, now: float
) -> bytes:
    """The 101 answer to a valid handshake (RFC 6455 §4.2.2), as websockets writes it."""
    digest = hashlib.sha1(key.encode() + _GUID).digest()
    accept = binascii.b2a_base64(digest, newline=False).decode()
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        f"Date: {http_date(now)}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept}",
    ]
    if extensions is not None:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    if subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode()
