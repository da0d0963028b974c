"""Fortress: issuing, verifying and revoking tokens, and finding them in a handshake."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import jwt
import pytest

from nucleus.fortress import (
    TOKEN_SUBPROTOCOL_PREFIX,
    Fortress,
    RevocationList,
    TokenAuth,
    TokenSource,
)
from nucleus.stream._errors import ConfigError, EncodeError, StreamError
from nucleus.stream._request import HandshakeRequest

SECRET = secrets.token_urlsafe(32)  # 43 bytes: enough for HS256
LONG_SECRET = secrets.token_urlsafe(64)  # 86 bytes: enough for HS512


def b64url(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims_now(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "nbf": now, "exp": now + 3600, **extra}


def at(offset: float) -> float:
    """A clock ``offset`` seconds from the real one (PyJWT checks with the real one)."""
    return time.time() + offset


def request(target: str = "/ws", headers: Iterable[tuple[str, str]] = ()) -> HandshakeRequest:
    return HandshakeRequest.from_target(target, list(headers), ("127.0.0.1", 50000))


# -- issue and verify ---------------------------------------------------------


def test_round_trip() -> None:
    before = time.time()
    token = Fortress.issue_token("alice", SECRET, expires_in=600)
    claims = Fortress.decode(token, SECRET)
    assert claims is not None
    assert claims.user_id == "alice"
    assert before + 598 <= claims.expires_at <= time.time() + 600
    assert claims.jti is not None and len(claims.jti) == 32
    assert claims.claims["sub"] == "alice"
    assert Fortress.extract_user_id(token, SECRET) == "alice"


def test_each_token_has_its_own_jti() -> None:
    first = Fortress.decode(Fortress.issue_token("alice", SECRET), SECRET)
    second = Fortress.decode(Fortress.issue_token("alice", SECRET), SECRET)
    assert first is not None and second is not None
    assert first.jti != second.jti


def test_custom_claims_jti_and_timedelta_round_trip() -> None:
    token = Fortress.issue_token(
        "bob",
        SECRET,
        expires_in=timedelta(minutes=5),
        jti="session-42",
        claims={"role": "admin", "rooms": ["a", "b"]},
    )
    claims = Fortress.decode(token, SECRET)
    assert claims is not None
    assert claims.jti == "session-42"
    assert claims.claims["role"] == "admin"
    assert claims.claims["rooms"] == ["a", "b"]
    assert claims.expires_at <= time.time() + 300


def test_claims_are_read_only() -> None:
    claims = Fortress.decode(Fortress.issue_token("alice", SECRET), SECRET)
    assert claims is not None
    with pytest.raises(TypeError):
        claims.claims["sub"] = "mallory"  # type: ignore[index]


def test_expired_token_is_refused() -> None:
    token = Fortress.issue_token("alice", SECRET, expires_in=60, now=lambda: at(-3600))
    assert Fortress.decode(token, SECRET) is None
    assert Fortress.extract_user_id(token, SECRET) is None


def test_token_not_yet_valid_is_refused() -> None:
    token = Fortress.issue_token("alice", SECRET, now=lambda: at(3600))
    assert Fortress.decode(token, SECRET) is None


def test_leeway_covers_small_clock_skew_only() -> None:
    # Expired about 6 s ago; valid in about 5 s.
    expired = Fortress.issue_token("alice", SECRET, expires_in=60, now=lambda: at(-65))
    early = Fortress.issue_token("alice", SECRET, now=lambda: at(5))
    for token in (expired, early):
        assert Fortress.extract_user_id(token, SECRET) == "alice"  # default leeway: 10 s
        assert Fortress.extract_user_id(token, SECRET, leeway=timedelta(seconds=30)) == "alice"
        assert Fortress.extract_user_id(token, SECRET, leeway=0) is None


def test_tampered_payload_is_refused() -> None:
    header, _, signature = Fortress.issue_token("alice", SECRET).split(".")
    forged = f"{header}.{b64url(claims_now(sub='mallory'))}.{signature}"
    assert Fortress.decode(forged, SECRET) is None


def test_tampered_signature_is_refused() -> None:
    token = Fortress.issue_token("alice", SECRET)
    head, signature = token.rsplit(".", 1)
    flipped = "A" if signature[10] != "A" else "B"
    assert Fortress.decode(f"{head}.{signature[:10]}{flipped}{signature[11:]}", SECRET) is None
    assert Fortress.decode(f"{head}.", SECRET) is None


def test_wrong_secret_is_refused() -> None:
    token = Fortress.issue_token("alice", SECRET)
    assert Fortress.decode(token, secrets.token_urlsafe(32)) is None


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(alg: str) -> None:
    unsigned = f"{b64url({'alg': alg, 'typ': 'JWT'})}.{b64url(claims_now())}."
    assert Fortress.decode(unsigned, SECRET) is None
    # Even a caller who asks for it gets no unsigned tokens.
    assert Fortress.decode(unsigned, SECRET, algorithms=["none"]) is None


def test_algorithm_outside_the_allowed_list_is_refused() -> None:
    token = Fortress.issue_token("alice", LONG_SECRET, algorithm="HS512")
    assert Fortress.decode(token, LONG_SECRET) is None  # default: HS256 only
    claims = Fortress.decode(token, LONG_SECRET, algorithms=("HS512",))
    assert claims is not None and claims.user_id == "alice"
    # A bare string is one algorithm, not a list of letters.
    assert Fortress.extract_user_id(token, LONG_SECRET, algorithms="HS512") == "alice"


def test_asymmetric_algorithms_are_never_allowed() -> None:
    token = Fortress.issue_token("alice", SECRET)
    assert Fortress.decode(token, SECRET, algorithms=("HS256", "RS256")) is None
    assert Fortress.decode(token, SECRET, algorithms=()) is None


@pytest.mark.parametrize(
    "payload",
    [
        {"exp": int(time.time()) + 3600},  # no sub
        {"sub": "", "exp": int(time.time()) + 3600},
        {"sub": "   ", "exp": int(time.time()) + 3600},
        {"sub": 42, "exp": int(time.time()) + 3600},
        {"sub": "alice"},  # no exp
        {"sub": "alice", "exp": str(int(time.time()) + 3600)},
        {"sub": "alice", "exp": True},
        {"sub": "alice", "exp": int(time.time()) + 3600, "jti": 7},
        {"sub": "alice", "exp": int(time.time()) + 3600, "aud": "elsewhere"},
    ],
)
def test_signed_tokens_with_bad_claims_are_refused(payload: dict[str, Any]) -> None:
    token = jwt.encode(payload, SECRET, algorithm="HS256")
    assert Fortress.decode(token, SECRET) is None


def test_a_well_formed_foreign_token_is_accepted() -> None:
    # Another issuer with the same secret: only sub and exp are required.
    token = jwt.encode({"sub": "carol", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    claims = Fortress.decode(token, SECRET)
    assert claims is not None and claims.user_id == "carol" and claims.jti is None


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "...",
        "eyJ.eyJ.",
        "ü.ü.ü",
        "\x00.\x00.\x00",
        "Bearer " + "x" * 40,
        f"{b64url({'alg': 'HS256'})}.!!!!.AAAA",
        base64.urlsafe_b64encode(b"[" * 3000).decode() + ".e30.AAAA",
        "x" * 100_000,
        "a." * 5000,
    ],
)
def test_garbage_is_refused_without_raising(garbage: str) -> None:
    assert Fortress.decode(garbage, SECRET) is None


@pytest.mark.parametrize("value", [None, 42, 3.5, b"bytes", ["a.b.c"], {"t": 1}, object()])
def test_non_str_tokens_and_secrets_are_refused(value: Any) -> None:
    token = Fortress.issue_token("alice", SECRET)
    assert Fortress.decode(value, SECRET) is None
    assert Fortress.decode(token, value) is None
    assert Fortress.extract_user_id(value, value) is None


def test_missing_or_short_secret_never_verifies() -> None:
    token = Fortress.issue_token("alice", SECRET)
    assert Fortress.decode(token, "") is None
    assert Fortress.decode(token, SECRET[:31]) is None
    # Long enough for HS256 is too short once HS512 tokens are allowed.
    assert Fortress.decode(token, SECRET, algorithms=("HS256", "HS512")) is None


def test_secret_and_token_never_leak(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = Fortress.issue_token("alice", SECRET)
    head, signature = token.rsplit(".", 1)
    attempts = [
        (token, secrets.token_urlsafe(32)),
        (f"{head}.{signature[::-1]}", SECRET),
        (token, SECRET[:20]),
        (token[:-1], SECRET),
        (Fortress.issue_token("alice", SECRET, now=lambda: at(-7200)), SECRET),
    ]
    for candidate, key in attempts:
        assert Fortress.decode(candidate, key) is None
    assert caplog.records, "refusals are logged at DEBUG"
    errors: list[StreamError] = []
    calls: list[Callable[[], object]] = [
        lambda: Fortress.issue_token("", SECRET),
        lambda: Fortress.issue_token("alice", SECRET[:20]),
        lambda: Fortress.issue_token("alice", SECRET, algorithm="none"),
        lambda: Fortress.issue_token("alice", SECRET, claims={"sub": token}),
        lambda: Fortress.issue_token("alice", SECRET, expires_in=-1),
    ]
    for call in calls:
        with pytest.raises(StreamError) as info:
            call()
        errors.append(info.value)
    auth = Fortress.query_token(SECRET)
    texts = [caplog.text, repr(auth), str(auth), *map(str, errors), *map(repr, errors)]
    for text in texts:
        assert SECRET not in text and SECRET[:20] not in text
        assert token not in text and signature not in text


# -- issue_token refuses bad settings -----------------------------------------


@pytest.mark.parametrize("user_id", ["", "   ", None, 42])
def test_issue_needs_a_user_id(user_id: Any) -> None:
    with pytest.raises(ConfigError, match="user_id"):
        Fortress.issue_token(user_id, SECRET)


@pytest.mark.parametrize("secret", ["", None, "x" * 31])
def test_issue_needs_a_long_enough_secret(secret: Any) -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Fortress.issue_token("alice", secret)


def test_issue_checks_the_secret_against_the_algorithm() -> None:
    with pytest.raises(ConfigError, match="HS512"):
        Fortress.issue_token("alice", SECRET, algorithm="HS512")


@pytest.mark.parametrize("algorithm", ["none", "RS256", "ES256", "hs256", ""])
def test_issue_only_signs_with_hmac(algorithm: str) -> None:
    with pytest.raises(ConfigError, match="HS256"):
        Fortress.issue_token("alice", SECRET, algorithm=algorithm)


@pytest.mark.parametrize("expires_in", [0, -5, float("inf"), float("nan"), timedelta(0)])
def test_issue_needs_a_positive_lifetime(expires_in: Any) -> None:
    with pytest.raises(ConfigError, match="expires_in"):
        Fortress.issue_token("alice", SECRET, expires_in=expires_in)


@pytest.mark.parametrize("name", ["sub", "exp", "nbf", "iat", "jti", "aud"])
def test_issue_refuses_to_override_registered_claims(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Fortress.issue_token("alice", SECRET, claims={name: "x"})


def test_issue_translates_unencodable_claims() -> None:
    with pytest.raises(EncodeError):
        Fortress.issue_token("alice", SECRET, claims={"tags": {"a", "b"}})


def test_issue_refuses_a_pem_key_as_secret() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\n" + "A" * 64 + "\n-----END PUBLIC KEY-----"
    with pytest.raises(ConfigError, match="HMAC"):
        Fortress.issue_token("alice", pem)


# -- revocation ---------------------------------------------------------------


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_revoked_token_is_refused_and_others_are_not() -> None:
    revoked = RevocationList()
    token = Fortress.issue_token("alice", SECRET)
    other = Fortress.issue_token("alice", SECRET)
    claims = Fortress.decode(token, SECRET, revoked=revoked)
    assert claims is not None and claims.jti is not None
    revoked.revoke(claims.jti, claims.expires_at)
    assert Fortress.decode(token, SECRET, revoked=revoked) is None
    assert Fortress.extract_user_id(token, SECRET, revoked=revoked) is None
    assert Fortress.extract_user_id(other, SECRET, revoked=revoked) == "alice"


def test_tokens_without_jti_are_refused_where_revocation_applies() -> None:
    token = jwt.encode({"sub": "carol", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert Fortress.decode(token, SECRET) is not None
    assert Fortress.decode(token, SECRET, revoked=RevocationList()) is None


def test_revocation_outlives_expiry_by_the_grace_then_is_forgotten() -> None:
    clock = Clock(1_000_000.0)
    revoked = RevocationList(clock=clock, grace=30)
    revoked.revoke("t1", until=clock.now + 100)
    clock.now += 100 + 29  # expired, but decode's leeway could still accept it
    assert revoked.is_revoked("t1")
    clock.now += 2
    assert not revoked.is_revoked("t1")
    assert len(revoked) == 0


def test_revoking_again_extends_never_shortens() -> None:
    clock = Clock(0.0)
    revoked = RevocationList(clock=clock, grace=0)
    revoked.revoke("t", until=100)
    revoked.revoke("t", until=50)
    clock.now = 75
    assert revoked.is_revoked("t")
    revoked.revoke("t", until=200)
    clock.now = 150
    assert revoked.is_revoked("t")
    clock.now = 201
    assert not revoked.is_revoked("t")


def test_revocation_memory_stays_bounded() -> None:
    clock = Clock(0.0)
    revoked = RevocationList(clock=clock, grace=10)
    for i in range(10_000):
        clock.now = i / 10
        revoked.revoke(f"jti-{i}", until=clock.now + 60)
        # At any moment only tokens that could still be valid are held.
        assert len(revoked) <= 60 * 10 + 10 * 10 + 1
    revoked.revoke("already-expired", until=clock.now - 3600)
    assert not revoked.is_revoked("already-expired")
    clock.now += 71
    assert not revoked.is_revoked("jti-9999")
    assert len(revoked) == 0


@pytest.mark.parametrize(("jti", "until"), [("", 10.0), ("t", float("inf")), ("t", float("nan"))])
def test_revoke_refuses_bad_entries(jti: str, until: float) -> None:
    with pytest.raises(ConfigError):
        RevocationList().revoke(jti, until)


# -- TokenAuth: where the handshake carries the token -------------------------


def protocol_header(token: str) -> tuple[str, str]:
    return ("Sec-WebSocket-Protocol", f"nucleus.v1, {TOKEN_SUBPROTOCOL_PREFIX}{token}")


async def test_token_in_the_subprotocol_offer() -> None:
    token = Fortress.issue_token("alice", SECRET)
    claims = await Fortress.query_token(SECRET)(request(headers=[protocol_header(token)]))
    assert claims is not None and claims.user_id == "alice"


async def test_token_in_the_query_string() -> None:
    token = Fortress.issue_token("alice", SECRET)
    claims = await Fortress.query_token(SECRET)(request(f"/ws?room=1&token={token}"))
    assert claims is not None and claims.user_id == "alice"
    custom = Fortress.query_token(SECRET, param="access_token")
    assert await custom(request(f"/ws?token={token}")) is None
    assert await custom(request(f"/ws?access_token={token}")) is not None


async def test_token_in_the_cookie() -> None:
    token = Fortress.issue_token("alice", SECRET)
    cookie = ("Cookie", f"theme=dark; nucleus_token={token}")
    # Cookies are read only when the route names one (it must then check Origin).
    assert await Fortress.query_token(SECRET)(request(headers=[cookie])) is None
    claims = await Fortress.query_token(SECRET, cookie="nucleus_token")(request(headers=[cookie]))
    assert claims is not None and claims.user_id == "alice"
    renamed = Fortress.query_token(SECRET, cookie="sid")
    assert await renamed(request(headers=[cookie])) is None
    assert await renamed(request(headers=[("Cookie", f"sid={token}")])) is not None


async def test_bearer_header_is_read_after_the_protocol_offer() -> None:
    token = Fortress.issue_token("dan", SECRET)
    auth = Fortress.query_token(SECRET)
    claims = await auth(request(headers=[("Authorization", f"Bearer {token}")]))
    assert claims is not None and claims.user_id == "dan"
    assert await auth(request(headers=[("Authorization", f"Basic {token}")])) is None


async def test_protocol_offer_wins_then_query_then_cookie() -> None:
    alice = Fortress.issue_token("alice", SECRET)
    bob = Fortress.issue_token("bob", SECRET)
    carol = Fortress.issue_token("carol", SECRET)
    auth = Fortress.query_token(SECRET, cookie="nucleus_token")
    everything = request(
        f"/ws?token={bob}", [protocol_header(alice), ("Cookie", f"nucleus_token={carol}")]
    )
    no_protocol = request(f"/ws?token={bob}", [("Cookie", f"nucleus_token={carol}")])
    claims = await auth(everything)
    assert claims is not None and claims.user_id == "alice"
    claims = await auth(no_protocol)
    assert claims is not None and claims.user_id == "bob"


async def test_the_first_token_found_decides() -> None:
    good = Fortress.issue_token("alice", SECRET)
    auth = Fortress.query_token(SECRET)
    assert await auth(request(f"/ws?token={good}", [protocol_header("garbage")])) is None


async def test_single_source_variants_ignore_the_others() -> None:
    token = Fortress.issue_token("alice", SECRET)
    in_query = request(f"/ws?token={token}")
    in_cookie = request(headers=[("Cookie", f"nucleus_token={token}")])
    in_protocol = request(headers=[protocol_header(token)])
    protocol_only = Fortress.protocol_token(SECRET)
    cookie_only = Fortress.cookie_token(SECRET)
    assert protocol_only.sources == (TokenSource.PROTOCOL,)
    assert await protocol_only(in_query) is None
    assert await protocol_only(in_cookie) is None
    assert await protocol_only(in_protocol) is not None
    assert await cookie_only(in_protocol) is None
    assert await cookie_only(in_cookie) is not None


async def test_no_token_bad_token_and_revoked_token_are_refused() -> None:
    revoked = RevocationList()
    token = Fortress.issue_token("alice", SECRET)
    auth = Fortress.query_token(SECRET, revoked=revoked)
    assert await auth(request()) is None
    assert await auth(request("/ws?token=")) is None
    assert await auth(request("/ws?token=not.a.jwt")) is None
    claims = await auth(request(f"/ws?token={token}"))
    assert claims is not None and claims.jti is not None
    revoked.revoke(claims.jti, claims.expires_at)
    assert await auth(request(f"/ws?token={token}")) is None


async def test_missing_secret_key_fails_at_startup_and_closed_at_runtime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    auth = Fortress.query_token()
    assert auth.secret is None
    with pytest.raises(ConfigError, match="SECRET_KEY is not set"):
        auth.check_config()
    token = Fortress.issue_token("alice", SECRET)
    assert await auth(request(f"/ws?token={token}")) is None
    assert "missing" in repr(auth)


async def test_empty_secret_key_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "")
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Fortress.query_token().check_config()
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        TokenAuth("").check_config()


def test_short_secret_key_fails_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "changeme")
    with pytest.raises(ConfigError, match="SECRET_KEY is too short") as info:
        Fortress.query_token().check_config()
    assert "changeme" not in str(info.value)


async def test_secret_key_is_read_from_the_environment_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SECRET_KEY", SECRET)
    auth = Fortress.query_token()
    monkeypatch.delenv("SECRET_KEY")
    auth.check_config()
    assert auth.secret == SECRET
    token = Fortress.issue_token("alice", SECRET)
    claims = await auth(request(f"/ws?token={token}"))
    assert claims is not None and claims.user_id == "alice"
    assert SECRET not in repr(auth)


def test_token_auth_refuses_bad_settings_at_construction() -> None:
    with pytest.raises(ConfigError):
        TokenAuth(SECRET, sources=())
    with pytest.raises(ConfigError):
        TokenAuth(SECRET, algorithms=("RS256",))
    with pytest.raises(ConfigError):
        TokenAuth(SECRET, param="")
    with pytest.raises(ConfigError):
        TokenAuth(SECRET, leeway=-1)
