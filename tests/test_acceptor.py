"""
The acceptor: one decision flow for every request on the server's port.

First with plain calls (no sockets, a hand-set clock), then through both front
doors for real, including the ASGI one mounted under a prefix in Starlette.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from nucleus.stream import HandshakeRequest, HttpResponse, StreamHandler, StreamServer
from nucleus.stream._acceptor import Accept, Pending

from .conftest import Serve, UvicornRunner
from .helpers import Recorder, within

SECRET = "db password is hunter2"


def request(path: str, *headers: tuple[str, str]) -> HandshakeRequest:
    return HandshakeRequest.from_target(path, headers, ("127.0.0.1", 50000))


async def failing_auth(request: HandshakeRequest) -> str:
    raise RuntimeError(SECRET)


def http(base: str) -> str:
    return base.replace("ws://", "http://")


# -- the decision, with plain calls ----------------------------------------------------


def test_a_route_without_authenticator_is_accepted_at_once() -> None:
    server = StreamServer()
    route = server.route("/ws", StreamHandler())
    decision = server.acceptor.decide(request("/ws?room=a"), 0.0, websocket=True)
    assert isinstance(decision, Accept)
    assert decision.route is route and decision.request.query == {"room": "a"}
    assert decision.admission.client_ip == "127.0.0.1" and decision.admission.user_id is None


def test_unknown_paths_get_404_naming_the_full_path() -> None:
    server = StreamServer()
    decision = server.acceptor.decide(request("/nope"), 0.0, websocket=True,
                                      full_path="/realtime/nope")
    assert decision == HttpResponse(404, b"No route for /realtime/nope\n",
                                    "text/plain; charset=utf-8")


def test_plain_http_to_a_websocket_route_gets_426_and_other_methods_405() -> None:
    server = StreamServer()
    server.route("/ws", StreamHandler())
    upgrade = server.acceptor.decide(request("/ws"), 0.0, websocket=False)
    assert isinstance(upgrade, HttpResponse) and upgrade.status == 426
    assert ("Upgrade", "websocket") in upgrade.headers
    post = server.acceptor.decide(request("/ws"), 0.0, websocket=False, method="POST")
    assert isinstance(post, HttpResponse) and post.status == 405
    assert ("Allow", "GET") in post.headers


def test_an_http_endpoint_answers_plain_requests_and_a_route_may_share_its_path() -> None:
    server = StreamServer()
    page = HttpResponse(200, b"<p>hi</p>", "text/html")
    server.http_route("/", lambda request: page)
    server.route("/", StreamHandler())
    assert server.acceptor.decide(request("/"), 0.0, websocket=False) is page
    assert isinstance(server.acceptor.decide(request("/"), 0.0, websocket=True), Accept)


def test_an_upgrade_to_an_http_endpoint_is_404() -> None:
    server = StreamServer()
    decision = server.acceptor.decide(request("/nucleus/stream.js"), 0.0, websocket=True)
    assert isinstance(decision, HttpResponse) and decision.status == 404


async def test_an_authenticator_runs_only_once_the_decision_is_awaited() -> None:
    server = StreamServer()
    server.route("/ws", StreamHandler(), auth=failing_auth)
    server.route("/anon", StreamHandler(), auth=lambda request: asyncio.sleep(0, None))
    pending = server.acceptor.decide(request("/ws"), 0.0, websocket=True)
    assert isinstance(pending, Pending)
    refused = await pending
    assert refused == HttpResponse(500, b"authentication error\n", "text/plain; charset=utf-8")
    anonymous = server.acceptor.decide(request("/anon"), 0.0, websocket=True)
    assert isinstance(anonymous, Pending)
    assert await anonymous == HttpResponse(401, b"authentication required\n",
                                           "text/plain; charset=utf-8",
                                           (("WWW-Authenticate", "Bearer"),))


def test_the_door_refuses_before_the_authenticator_runs() -> None:
    server = StreamServer()
    server.route("/ws", StreamHandler(), auth=failing_auth, origins=["https://app.example"])
    decision = server.acceptor.decide(request("/ws", ("Origin", "https://evil.example")), 0.0,
                                      websocket=True)
    assert isinstance(decision, HttpResponse) and decision.status == 403


APP = "https://app.example"
PREFLIGHT = (("Origin", APP), ("Access-Control-Request-Method", "GET"),
             ("Access-Control-Request-Headers", "authorization"))


def test_the_probe_preflight_is_answered_for_a_get_with_a_token() -> None:
    server = StreamServer()
    server.route("/listed", StreamHandler(), origins=[APP])
    server.route("/any", StreamHandler())
    evil = "https://evil.example"
    # Even for an origin the route refuses: the GET that follows only reads its 403.
    for path, origin in (("/listed", APP), ("/any", APP), ("/listed", evil)):
        answer = server.acceptor.decide(request(path, ("Origin", origin), *PREFLIGHT[1:]),
                                        0.0, websocket=False, method="OPTIONS")
        assert isinstance(answer, HttpResponse) and answer.status == 200
        assert ("Access-Control-Allow-Origin", origin) in answer.headers
        assert ("Access-Control-Allow-Headers", "Authorization") in answer.headers
        assert ("Access-Control-Allow-Methods", "GET") in answer.headers
        assert not any(name == "Access-Control-Allow-Credentials" for name, _ in answer.headers)
    not_a_preflight = (("Origin", APP),)
    answer = server.acceptor.decide(request("/listed", *not_a_preflight), 0.0, websocket=False,
                                    method="OPTIONS")
    assert isinstance(answer, HttpResponse) and answer.status == 405
    assert not any(name.startswith("Access-Control") for name, _ in answer.headers)


async def test_a_routes_refusals_are_readable_by_the_page_that_asked() -> None:
    server = StreamServer()
    server.route("/listed", StreamHandler(), auth=lambda request: asyncio.sleep(0, None),
                 origins=[APP])
    server.route("/any", StreamHandler(), auth=lambda request: asyncio.sleep(0, None))

    async def answer(path: str, origin: str) -> HttpResponse:
        decision = server.acceptor.decide(request(path, ("Origin", origin)), 0.0,
                                          websocket=False)
        if isinstance(decision, Pending):
            decision = await decision
        assert isinstance(decision, HttpResponse)
        return decision

    refused = await answer("/listed", APP)
    assert refused.status == 401 and ("Access-Control-Allow-Origin", APP) in refused.headers
    assert ("Vary", "Origin") in refused.headers
    # Any origin allowed: the page's own is reflected (never "*").
    other = "http://localhost:8000"
    refused = await answer("/any", other)
    assert refused.status == 401 and ("Access-Control-Allow-Origin", other) in refused.headers
    # An origin the route refuses reads only that refusal (the authenticator
    # never ran), so a page there can stop dialing.
    forbidden = await answer("/listed", "https://evil.example")
    assert forbidden.status == 403 and forbidden.body == b"origin not allowed\n"
    assert ("Access-Control-Allow-Origin", "https://evil.example") in forbidden.headers


async def test_an_endpoint_that_returns_something_else_is_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = StreamServer()
    server.http_route("/odd", lambda request: "not a response")  # type: ignore[arg-type,return-value]
    decision = server.acceptor.decide(request("/odd"), 0.0, websocket=False)
    assert isinstance(decision, HttpResponse) and decision.status == 500
    assert "returned str, not an HttpResponse" in caplog.text


def test_http_route_paths_are_checked_and_declared_once() -> None:
    from nucleus.stream import RouteError

    server = StreamServer()
    with pytest.raises(RouteError, match="starts with '/'"):
        server.http_route("healthz", lambda request: HttpResponse(200, b"", "text/plain"))
    with pytest.raises(RouteError, match="serve_client=False"):
        server.static("/nucleus/stream.js", b"", "text/javascript")
    with pytest.raises(RouteError, match="serve_client=False"):
        server.static("/nucleus/stream.d.ts", b"", "application/typescript")
    StreamServer(serve_client=False).static("/nucleus/stream.js", b"", "text/javascript")


def test_default_headers_give_way_to_the_handlers() -> None:
    plain = HttpResponse(200, b"ok", "text/plain")
    assert plain.header_list() == [("Content-Type", "text/plain"), ("Content-Length", "2"),
                                   ("Cache-Control", "no-cache")]
    cached = HttpResponse(200, b"ok", "text/plain", (("cache-control", "max-age=60"),))
    assert ("Cache-Control", "no-cache") not in cached.header_list()
    assert ("cache-control", "max-age=60") in cached.header_list()


# -- through both front doors -----------------------------------------------------------


async def test_an_http_route_answers_with_its_body_type_and_headers(serve: Serve) -> None:
    server = StreamServer()
    server.http_route("/hello", lambda request: HttpResponse(
        200, f"hello {request.query.get('name', '?')}\n".encode(), "text/plain; charset=utf-8",
        (("X-Served-By", "nucleus"),)))
    base = http(await serve(server))
    async with httpx.AsyncClient() as client:
        response = await within(client.get(f"{base}/hello?name=ann"))
    assert response.status_code == 200
    assert response.content == b"hello ann\n"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["x-served-by"] == "nucleus"


async def test_an_async_http_route_is_awaited(serve: Serve) -> None:
    async def metrics(request: HandshakeRequest) -> HttpResponse:
        await asyncio.sleep(0)
        return HttpResponse(201, b'{"sockets": 0}', "application/json")

    server = StreamServer()
    server.http_route("/numbers", metrics)
    base = http(await serve(server))
    async with httpx.AsyncClient() as client:
        response = await within(client.get(f"{base}/numbers"))
    assert response.status_code == 201
    assert response.json() == {"sockets": 0}
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_http_route_that_raises_is_a_500_that_keeps_the_text(
    serve: Serve, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    def broken(request: HandshakeRequest) -> HttpResponse:
        raise RuntimeError(SECRET)

    async def broken_later(request: HandshakeRequest) -> HttpResponse:
        raise RuntimeError(SECRET)

    server = StreamServer()
    server.http_route("/broken", broken if kind == "sync" else broken_later)
    base = http(await serve(server))
    async with httpx.AsyncClient() as client:
        response = await within(client.get(f"{base}/broken"))
    assert response.status_code == 500
    assert response.content == b"internal server error\n"
    assert SECRET not in response.text
    logged = [r for r in caplog.records if r.name == "nucleus.stream" and r.exc_info]
    assert len(logged) == 1 and "/broken" in logged[0].getMessage()


async def test_the_browser_client_is_served_and_an_upgrade_there_is_404(serve: Serve) -> None:
    server = StreamServer()
    base = await serve(server)
    async with httpx.AsyncClient() as client:
        response = await within(client.get(f"{http(base)}/nucleus/stream.js"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert b"export" in response.content
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{base}/nucleus/stream.js")
    assert refused.value.response.status_code == 404


async def test_the_client_types_are_served_next_to_it_unless_serve_client_is_off(
    serve: Serve,
) -> None:
    served, bare = await serve(StreamServer()), await serve(StreamServer(serve_client=False))
    async with httpx.AsyncClient() as client:
        response = await within(client.get(f"{http(served)}/nucleus/stream.d.ts"))
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/typescript; charset=utf-8"
        assert b"export function connect<Out = unknown>" in response.content
        for path in ("/nucleus/stream.js", "/nucleus/stream.d.ts"):
            assert (await within(client.get(f"{http(bare)}{path}"))).status_code == 404


async def test_an_authenticator_that_raises_gets_the_same_500_on_both_doors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    native, asgi = StreamServer(), StreamServer()
    for server in (native, asgi):
        server.route("/ws", Recorder(), auth=failing_auth)
    host, port = await native.start("127.0.0.1", 0)
    runner = UvicornRunner(asgi)
    await runner.start()
    answers = []
    try:
        for base in (f"ws://{host}:{port}", f"ws://127.0.0.1:{runner.port}"):
            with pytest.raises(InvalidStatus) as refused:
                await within(connect(f"{base}/ws?token=abc"))
            response = refused.value.response
            answers.append((response.status_code, response.body,
                            response.headers.get("Content-Type")))
    finally:
        await native.aclose()
        await runner.stop()
    assert answers[0] == answers[1] == (500, b"authentication error\n",
                                        "text/plain; charset=utf-8")
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 2  # one line per door, with the exception, without the token
    for record in logged:
        assert record.name == "nucleus.stream" and record.exc_info is not None
        assert "/ws" in record.getMessage() and "abc" not in record.getMessage()


async def test_under_a_mount_the_404_names_the_prefixed_path() -> None:
    stream = StreamServer()
    stream.route("/ws", Recorder())
    stream.http_route("/hello", lambda request: HttpResponse(200, b"mounted", "text/plain"))
    app = Starlette(routes=[Mount("/realtime", app=stream)])
    runner = UvicornRunner(app)  # type: ignore[arg-type]
    await runner.start()
    base = f"127.0.0.1:{runner.port}/realtime"
    try:
        async with httpx.AsyncClient() as client:
            missing = await within(client.get(f"http://{base}/nope"))
            hello = await within(client.get(f"http://{base}/hello"))
        assert missing.status_code == 404
        assert missing.content == b"No route for /realtime/nope\n"
        assert (hello.status_code, hello.content) == (200, b"mounted")
        with pytest.raises(InvalidStatus) as refused:
            await within(connect(f"ws://{base}/nope"))
        assert refused.value.response.status_code == 404
        assert refused.value.response.body == b"No route for /realtime/nope\n"
    finally:
        await runner.stop()
        await stream.aclose()
