"""The opening handshake as handlers see it: headers, query, cookies, subprotocols."""

from __future__ import annotations

import pytest

from nucleus.stream import HandshakeRequest, Headers


def request(
    target: str = "/ws", headers: list[tuple[str, str]] | None = None
) -> HandshakeRequest:
    return HandshakeRequest.from_target(target, headers or [], ("127.0.0.1", 50000))


# -- Headers -------------------------------------------------------------------------


def test_headers_are_case_insensitive_and_give_the_first_value() -> None:
    headers = Headers([("X-Trace", "one"), ("Host", "example.com"), ("x-trace", "two")])
    assert headers["x-trace"] == headers["X-TRACE"] == "one"
    assert headers.get("HOST") == "example.com"
    assert headers.get("missing") is None
    assert "host" in headers and "X-Trace" in headers
    assert 42 not in headers
    with pytest.raises(KeyError):
        headers["missing"]


def test_get_all_returns_every_value_in_order() -> None:
    headers = Headers([("Accept", "a"), ("Host", "h"), ("ACCEPT", "b"), ("accept", "c")])
    assert headers.get_all("accept") == ["a", "b", "c"]
    assert headers.get_all("nope") == []


def test_headers_iterate_once_per_name_and_keep_the_raw_items() -> None:
    items = [("X-A", "1"), ("x-a", "2"), ("Host", "h")]
    headers = Headers(items)
    assert len(headers) == 2
    assert dict(headers) == {"x-a": "1", "host": "h"}
    assert headers.raw_items() == tuple(items)


# -- target and query ----------------------------------------------------------------


def test_path_and_query_string_are_split() -> None:
    req = request("/ws/chat?room=lobby&token=abc")
    assert req.path == "/ws/chat"
    assert req.query_string == "room=lobby&token=abc"
    assert req.query == {"room": "lobby", "token": "abc"}
    assert req.remote_address == ("127.0.0.1", 50000)


@pytest.mark.parametrize(("target", "path"), [("", "/"), ("?x=1", "/"), ("/", "/")])
def test_an_empty_path_is_the_root(target: str, path: str) -> None:
    assert request(target).path == path


def test_query_keeps_the_first_value_of_a_repeated_parameter() -> None:
    assert request("/ws?token=first&token=second").query == {"token": "first"}


def test_query_keeps_blank_values() -> None:
    assert request("/ws?a=&b&c=3").query == {"a": "", "b": "", "c": "3"}


def test_query_values_are_percent_decoded() -> None:
    assert request("/ws?name=caf%C3%A9&sum=1%2B1&space=a+b").query == {
        "name": "café", "sum": "1+1", "space": "a b",
    }


def test_a_target_starting_with_two_slashes_keeps_its_path() -> None:
    assert request("//ws/chat").path == "//ws/chat"


# -- cookies -------------------------------------------------------------------------


def test_cookies_from_one_and_several_headers() -> None:
    req = request(headers=[("Cookie", "session=abc; theme=dark"), ("cookie", "lang=fr")])
    assert req.cookies == {"session": "abc", "theme": "dark", "lang": "fr"}


def test_no_cookie_header_means_no_cookies() -> None:
    assert request().cookies == {}


@pytest.mark.parametrize("malformed", ["bad key=1", "a=\x00", 'k="unterminated'])
def test_a_malformed_cookie_header_is_ignored_and_others_still_read(malformed: str) -> None:
    req = request(headers=[("Cookie", malformed), ("Cookie", "session=abc")])
    assert req.cookies == {"session": "abc"}


@pytest.mark.parametrize("neighbour", ['prefs={"dark":true}', "flag", "path=/"])
def test_one_odd_cookie_does_not_hide_the_others_in_its_header(neighbour: str) -> None:
    req = request(headers=[("Cookie", f"{neighbour}; session=abc")])
    assert req.cookies.get("session") == "abc"


# -- subprotocols and origin ---------------------------------------------------------


def test_subprotocols_are_split_across_headers_and_commas_in_order() -> None:
    req = request(headers=[
        ("Sec-WebSocket-Protocol", "nucleus.v1, nucleus.token.abc"),
        ("sec-websocket-protocol", " , chat ,"),
    ])
    assert req.subprotocols == ("nucleus.v1", "nucleus.token.abc", "chat")


def test_no_subprotocol_header_means_none_offered() -> None:
    assert request().subprotocols == ()


def test_origin_is_the_origin_header_or_none() -> None:
    assert request(headers=[("ORIGIN", "https://app.example")]).origin == "https://app.example"
    assert request().origin is None


def test_a_handshake_request_is_immutable() -> None:
    req = request("/ws?a=1")
    with pytest.raises(AttributeError):
        req.path = "/admin"  # type: ignore[misc]
