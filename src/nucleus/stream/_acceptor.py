"""
The acceptor: what the server answers to one HTTP request on its port, whichever door took it.

Both front doors turn what they received into a :class:`HandshakeRequest` and
ask :meth:`Acceptor.decide`. The answer is an :class:`Accept` (open a WebSocket
on this route, for this user) or an :class:`HttpResponse` to send instead:
a plain HTTP endpoint's answer, 404, 405, 426, or the door's refusal (403, 429,
401, 500). A decision that needs no I/O comes back at once, so the native door
accepts a route without an authenticator without starting a task; one that
must await (an authenticator, an async HTTP endpoint) comes back
:class:`Pending`, to be awaited by the door's owner.

A WebSocket route's own HTTP answers (refusals, 426) are readable by the page
that asked (CORS), and its CORS preflight is answered: the browser client asks
why a handshake failed with a ``fetch`` that carries an ``Authorization``
header, which another origin may only send after a preflight. A page of an
origin the route refuses can read only that refusal (403, or 429 from the
address caps checked before it), so it stops dialing instead of retrying
forever; no credentials are ever allowed across origins.

This module never touches a socket and never sends an exception's text to a
peer: the doors only translate its answers into bytes or ASGI messages.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

from ._gate import Admission, DoorPolicy
from ._request import HandshakeRequest
from ._routing import Route

__all__ = ["BUSY", "Accept", "Acceptor", "Decision", "HttpHandler", "HttpResponse", "Pending"]

logger = logging.getLogger("nucleus.stream")

_TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """
    A plain HTTP response: what an :meth:`StreamServer.http_route` handler returns.

    ``headers`` are sent after ``Content-Type`` and ``Content-Length``;
    ``Cache-Control: no-cache`` is added unless they name a ``Cache-Control``.
    """

    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()

    def header_list(self) -> list[tuple[str, str]]:
        """Every header this response carries, in order (the door adds transport ones)."""
        headers = [("Content-Type", self.content_type), ("Content-Length", str(len(self.body)))]
        if not any(name.lower() == "cache-control" for name, _ in self.headers):
            headers.append(("Cache-Control", "no-cache"))
        headers.extend(self.headers)
        return headers


#: Answers a plain HTTP GET; may be a coroutine function.
HttpHandler: TypeAlias = Callable[[HandshakeRequest], HttpResponse | Awaitable[HttpResponse]]


class Accept(NamedTuple):
    """
    Open a WebSocket on ``route``: ``admission`` holds the user, its expiry, the
    client IP. (A named tuple, like :class:`Admission`: one per handshake.)
    """

    route: Route
    request: HandshakeRequest
    admission: Admission


Decision: TypeAlias = Accept | HttpResponse


class Pending:
    """A decision that waits on I/O: ``await`` it (once) for the :data:`Decision`."""

    __slots__ = ("_decision",)

    def __init__(self, decision: Coroutine[Any, Any, Decision]) -> None:
        self._decision = decision

    def __await__(self) -> Generator[Any, None, Decision]:
        return self._decision.__await__()


def _text(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    return HttpResponse(status, f"{text}\n".encode(), _TEXT, headers)


_AUTH_ERROR = _text(500, "authentication error")
_INTERNAL_ERROR = _text(500, "internal server error")
_ONLY_GET = _text(405, "only GET is served here", (("Allow", "GET"),))
#: The answer to a handshake while too many others wait for theirs: come back shortly.
BUSY = _text(503, "too many handshakes in progress: try again shortly", (("Retry-After", "1"),))
_UPGRADE_REQUIRED = _text(
    426, "This is a WebSocket endpoint: connect with a WebSocket client.",
    (("Upgrade", "websocket"),))


#: How long a browser may reuse a preflight's answer, in seconds.
PREFLIGHT_MAX_AGE = 600


def cors_headers(request: HandshakeRequest) -> tuple[tuple[str, str], ...]:
    """
    What lets the page of ``request``'s origin read the route's answer: its
    ``Origin`` reflected. Safe for every origin because the door refuses an
    origin the route does not allow before anything else is decided, so such
    a page only ever reads its refusal; cookies are never allowed to travel.
    """
    origin = request.origin
    if origin is None:
        return ()
    return (("Access-Control-Allow-Origin", origin), ("Vary", "Origin"))


def preflight(route: Route, request: HandshakeRequest) -> HttpResponse:
    """
    The answer to an ``OPTIONS`` request on a WebSocket route: a CORS preflight
    for a GET with an ``Authorization`` header (the browser client's refusal
    probe) succeeds; anything else is 405. The GET that follows is refused at
    once if the route does not allow the page's origin.
    """
    cors = cors_headers(request)
    if not cors or request.headers.get("access-control-request-method") != "GET":
        return _ONLY_GET
    return HttpResponse(200, b"", _TEXT, (
        *cors,
        ("Access-Control-Allow-Methods", "GET"),
        ("Access-Control-Allow-Headers", "Authorization"),
        ("Access-Control-Max-Age", str(PREFLIGHT_MAX_AGE)),
    ))


def _readable(route: Route, request: HandshakeRequest, response: HttpResponse) -> HttpResponse:
    cors = cors_headers(request)
    return dataclasses.replace(response, headers=response.headers + cors) if cors else response


def refusal(admission: Admission) -> HttpResponse:
    """The HTTP answer to a door that said no (``admission.status`` is not 101)."""
    challenge = (("WWW-Authenticate", "Bearer"),) if admission.status == 401 else ()
    return _text(admission.status, admission.reason, challenge)


class Acceptor:
    """
    The decision flow for an incoming request, over the server's routes and door policy.

    The mappings are the server's own, read at each request, so routes declared
    later are served.
    """

    __slots__ = ("_door", "_http_routes", "_routes", "refused")

    def __init__(
        self,
        routes: Mapping[str, Route],
        http_routes: Mapping[str, HttpHandler],
        door: DoorPolicy,
    ) -> None:
        self._routes = routes
        self._http_routes = http_routes
        self._door = door
        #: Told the status of every refused upgrade (for metrics).
        self.refused: Callable[[int], None] | None = None

    def decide(
        self,
        request: HandshakeRequest,
        now: float,
        *,
        websocket: bool,
        method: str = "GET",
        full_path: str | None = None,
    ) -> Decision | Pending:
        """
        What to answer ``request``, received at ``now`` (the door policy's clock).

        ``websocket`` says whether it asks for an upgrade: plain HTTP endpoints
        answer only requests that don't, and a WebSocket route asked without one
        answers 426 once the door admits it (so a client can learn why it was
        refused). ``full_path`` is the path the client asked for, mount prefix
        included, when it differs from ``request.path``.
        """
        path = request.path
        endpoint = None if websocket else self._http_routes.get(path)
        route = self._routes.get(path)
        if endpoint is None and route is None:
            return _text(404, f"No route for {full_path or path}")
        if method != "GET":
            if method == "OPTIONS" and endpoint is None and route is not None:
                return preflight(route, request)
            return _ONLY_GET
        if endpoint is not None:
            return self._answer(path, endpoint, request)
        assert route is not None
        admission = self._door.check(request, route.origins, now)
        if admission.status != 101:
            return _readable(route, request, self._refusal(admission, websocket))
        if route.authenticator is None:
            if websocket:
                return Accept(route, request, admission)
            return _readable(route, request, _UPGRADE_REQUIRED)
        return Pending(self._authenticate(route, request, admission.client_ip, websocket))

    async def _authenticate(
        self, route: Route, request: HandshakeRequest, ip: str | None, websocket: bool
    ) -> Decision:
        authenticate = route.authenticator
        assert authenticate is not None
        try:
            admission = await self._door.authenticate(request, authenticate, ip)
        except Exception:
            logger.exception("authentication failed with an error on route %s", route.path)
            if websocket and self.refused is not None:
                self.refused(_AUTH_ERROR.status)
            return _readable(route, request, _AUTH_ERROR)
        if admission.status != 101:
            return _readable(route, request, self._refusal(admission, websocket))
        if websocket:
            return Accept(route, request, admission)
        return _readable(route, request, _UPGRADE_REQUIRED)

    def _refusal(self, admission: Admission, websocket: bool) -> HttpResponse:
        if websocket and self.refused is not None:
            self.refused(admission.status)
        return refusal(admission)

    @staticmethod
    def _answer(path: str, endpoint: HttpHandler, request: HandshakeRequest) -> Decision | Pending:
        try:
            answer = endpoint(request)
        except Exception:
            logger.exception("HTTP endpoint %s failed", path)
            return _INTERNAL_ERROR
        if isinstance(answer, HttpResponse):
            return answer
        if inspect.isawaitable(answer):
            return Pending(_awaited(path, answer))
        return _not_a_response(path, answer)


async def _awaited(path: str, answer: Awaitable[HttpResponse]) -> Decision:
    try:
        response = await answer
    except Exception:
        logger.exception("HTTP endpoint %s failed", path)
        return _INTERNAL_ERROR
    if isinstance(response, HttpResponse):
        return response
    return _not_a_response(path, response)


def _not_a_response(path: str, answer: object) -> HttpResponse:
    logger.error("HTTP endpoint %s returned %s, not an HttpResponse", path, type(answer).__name__)
    return _INTERNAL_ERROR
