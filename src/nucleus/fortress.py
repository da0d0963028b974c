"""
Fortress: signed user tokens, and the handshake authentication built on them.

Owns
    * issuing and verifying HMAC JSON Web Tokens (HS256, HS384, HS512) with
      PyJWT: :meth:`Fortress.issue_token`, :meth:`Fortress.decode`,
      :meth:`Fortress.extract_user_id` (the guide's ``Fortress::extract_user_id``);
    * :class:`RevocationList`, token ids refused before they expire, in bounded memory;
    * :class:`TokenAuth`, the route authenticator the server awaits before it
      accepts a WebSocket upgrade. ``None`` means: answer HTTP 401.

Must never
    * put a token or a secret in a log line, a ``repr`` or an exception message;
    * verify with a missing, empty or short secret (RFC 7518 §3.2: the key is at
      least as long as the hash), or with an algorithm the caller did not allow
      (``alg: none``, asymmetric algorithms): verification fails closed;
    * raise while verifying: any bad token is ``None``;
    * do its own cryptography: signing and signature checks are PyJWT's.

Where the token travels, in the order :class:`TokenAuth` looks
    ``Sec-WebSocket-Protocol: nucleus.v1, nucleus.token.<jwt>`` (preferred)
        Browsers can send it (``new WebSocket(url, ["nucleus.v1", "nucleus.token." + jwt])``)
        and typical proxies and access logs don't record it. The server must select
        another offered subprotocol, never echo the token one; and as browsers fail a
        handshake that offered subprotocols and got none back, the client offers a
        real one next to the token.
    ``Authorization: Bearer <jwt>``
        For non-browser clients (and the browser client's refusal probe).
    ``?token=<jwt>``
        Works from any client, but URLs land in proxy and load-balancer access logs
        and in browser history. Keep such tokens short-lived.
    ``Cookie: nucleus_token=<jwt>``
        Sent automatically by the browser, so a page on another origin can open a
        socket that carries it (Cross-Site WebSocket Hijacking): a route that takes
        cookies must check ``Origin`` against an allow-list. Set the cookie
        ``HttpOnly; Secure; SameSite=Strict``.

The first source that holds a token decides; the others are not tried, so one
handshake costs at most one signature check.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from types import MappingProxyType
from typing import Any, Final

import jwt

from .stream._errors import ConfigError, EncodeError
from .stream._request import HandshakeRequest

__all__ = [
    "DEFAULT_COOKIE",
    "SECRET_ENV",
    "SYMMETRIC_ALGORITHMS",
    "TOKEN_SUBPROTOCOL_PREFIX",
    "Fortress",
    "RevocationList",
    "TokenAuth",
    "TokenClaims",
    "TokenSource",
]

logger = logging.getLogger(__name__)

#: The algorithms tokens may be signed with: HMAC only (``algorithms=`` picks among them).
SYMMETRIC_ALGORITHMS: Final = ("HS256", "HS384", "HS512")
# RFC 7518 §3.2: an HMAC key MUST be at least as long as the hash output.
_MIN_SECRET_BYTES: Final[Mapping[str, int]] = {"HS256": 32, "HS384": 48, "HS512": 64}
# Claims issue_token sets itself. "aud" is refused too: decode checks no
# audience, so PyJWT would refuse every token that carries one.
_RESERVED_CLAIMS: Final = frozenset({"sub", "iat", "nbf", "exp", "jti", "aud"})

#: The environment variable a ``secret=None`` reads: the key tokens are signed and
#: verified with (at least 32 bytes for HS256).
SECRET_ENV: Final = "SECRET_KEY"
#: A token offered as a subprotocol: ``nucleus.token.<jwt>``, next to ``nucleus.v1``.
TOKEN_SUBPROTOCOL_PREFIX: Final = "nucleus.token."
#: The cookie :meth:`Fortress.cookie_token` reads unless told another name.
DEFAULT_COOKIE: Final = "nucleus_token"
DEFAULT_LEEWAY: Final = 10.0
# Far above any real token; bounds the work an unauthenticated peer can ask for.
MAX_TOKEN_LENGTH: Final = 8192

_NO_SECRET: Final = (
    f"{SECRET_ENV} is not set: routes that authenticate need a secret to verify tokens. "
    f"Set the {SECRET_ENV} environment variable (for example to the output of "
    "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`) or pass secret=."
)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """
    A verified token: whose it is, until when, which one, and every claim it carried.

    ``expires_at`` is the ``exp`` claim (seconds since the epoch); pass it with
    ``jti`` to :meth:`RevocationList.revoke` to log the token out.
    """

    user_id: str
    expires_at: float
    jti: str | None
    claims: Mapping[str, Any]


class TokenSource(Enum):
    """Where :class:`TokenAuth` may look for a token, in the order it looks."""

    PROTOCOL = "protocol"
    HEADER = "header"
    QUERY = "query"
    COOKIE = "cookie"


class RevocationList:
    """
    Token ids (``jti``) refused before their tokens expire, held in memory.

    An entry lives until its token would have expired anyway, plus ``grace``
    seconds, which must cover the ``leeway`` given to :meth:`Fortress.decode`
    (an expired token is still accepted for ``leeway`` seconds). Memory is thus
    bounded by the tokens revoked within one token lifetime. Expired entries are
    purged lazily, oldest first, on every call: no background task.

    ``clock`` is wall-clock seconds since the epoch, the unit of ``exp``; not a
    monotonic clock. The list is per process: several nodes need a shared store.
    """

    __slots__ = ("_clock", "_grace", "_heap", "_until")

    def __init__(self, *, clock: Callable[[], float] = time.time, grace: float = 60.0) -> None:
        if not _is_number(grace) or grace < 0:
            raise ConfigError("grace must be a finite number of seconds, 0 or more")
        self._clock = clock
        self._grace = float(grace)
        self._until: dict[str, float] = {}
        # (forget_at, jti); an entry may be stale after a later revoke of the same jti.
        self._heap: list[tuple[float, str]] = []

    def revoke(self, jti: str, until: float) -> None:
        """Refuse token ``jti`` from now on; ``until`` is its ``exp``."""
        if not isinstance(jti, str) or not jti:
            raise ConfigError("jti must be a non-empty string")
        if not _is_number(until):
            raise ConfigError("until must be a finite timestamp: the token's exp")
        now = self._clock()
        self._purge(now)
        forget_at = until + self._grace
        if forget_at <= now or self._until.get(jti, -math.inf) >= forget_at:
            return  # no longer acceptable anyway, or already held at least as long
        self._until[jti] = forget_at
        heapq.heappush(self._heap, (forget_at, jti))

    def is_revoked(self, jti: str) -> bool:
        """Whether token ``jti`` has been revoked (and could otherwise still be valid)."""
        self._purge(self._clock())
        return jti in self._until

    def __len__(self) -> int:
        return len(self._until)

    def __repr__(self) -> str:
        return f"RevocationList(entries={len(self._until)}, grace={self._grace})"

    def _purge(self, now: float) -> None:
        heap, until = self._heap, self._until
        while heap and heap[0][0] <= now:
            forget_at, jti = heapq.heappop(heap)
            if until.get(jti) == forget_at:
                del until[jti]


class Fortress:
    """Issue and verify user tokens: HMAC JWTs signed with the app's secret."""

    @staticmethod
    def issue_token(
        user_id: str,
        secret: str,
        *,
        expires_in: float | timedelta = 3600,
        algorithm: str = "HS256",
        jti: str | None = None,
        claims: Mapping[str, Any] | None = None,
        now: Callable[[], float] | None = None,
    ) -> str:
        """
        A JWT for ``user_id`` with ``sub``, ``iat``, ``nbf``, ``exp`` and ``jti``.

        ``claims`` adds application claims (JSON values); it may not set the
        ones listed above, nor ``aud``. ``jti`` defaults to a random UUID.

        Raises :class:`ConfigError` for an empty user id or secret, a secret
        shorter than the algorithm's hash, an algorithm other than HS256, HS384
        or HS512, or a lifetime that is not positive; :class:`EncodeError` when
        ``claims`` can't be encoded.
        """
        if not isinstance(user_id, str) or not user_id.strip():
            raise ConfigError("user_id must be a non-empty string")
        (algorithm,) = _check_algorithms((algorithm,))
        _check_secret(secret, (algorithm,))
        lifetime = expires_in.total_seconds() if isinstance(expires_in, timedelta) else expires_in
        if not _is_number(lifetime) or lifetime <= 0:
            raise ConfigError("expires_in must be a positive number of seconds")
        if jti is None:
            jti = uuid.uuid4().hex
        elif not isinstance(jti, str) or not jti:
            raise ConfigError("jti must be a non-empty string")
        extra = dict(claims or {})
        if not all(isinstance(name, str) for name in extra):
            raise ConfigError("claim names must be strings")
        reserved = sorted(_RESERVED_CLAIMS.intersection(extra))
        if reserved:
            raise ConfigError(f"claims may not set {', '.join(reserved)}: issue_token sets those")

        issued = (now or time.time)()
        payload: dict[str, Any] = {
            **extra,
            "sub": user_id,
            "iat": int(issued),
            "nbf": int(issued),
            "exp": int(issued + lifetime),
            "jti": jti,
        }
        try:
            return jwt.encode(payload, secret, algorithm=algorithm)
        except TypeError as exc:
            raise EncodeError(f"claims could not be encoded: {exc}") from exc
        except jwt.InvalidKeyError:
            # ``from None``: the chained message would be about the secret itself.
            raise ConfigError(
                "the secret is not usable as an HMAC key (it looks like a PEM or JWK key)"
            ) from None

    @staticmethod
    def decode(
        token: str | None,
        secret: str | None,
        *,
        leeway: float | timedelta = DEFAULT_LEEWAY,
        algorithms: Sequence[str] = ("HS256",),
        revoked: RevocationList | None = None,
    ) -> TokenClaims | None:
        """
        The verified claims of ``token``, or ``None`` if it must not be trusted.

        Checks the signature with ``secret`` and one of ``algorithms`` (HMAC
        only), ``exp`` and ``nbf`` with ``leeway`` seconds of clock skew, that
        ``sub`` is a non-empty string and ``exp`` is present, and, given
        ``revoked``, that the token has a ``jti`` that is not revoked. Never
        raises; a refusal is logged at DEBUG with its reason only.
        """
        verdict = _verify(token, secret, leeway, algorithms, revoked)
        if isinstance(verdict, str):
            logger.debug("token refused: %s", verdict)
            return None
        return verdict

    @staticmethod
    def extract_user_id(
        token: str | None,
        secret: str | None,
        *,
        leeway: float | timedelta = DEFAULT_LEEWAY,
        algorithms: Sequence[str] = ("HS256",),
        revoked: RevocationList | None = None,
    ) -> str | None:
        """The user id (``sub``) of a valid token, else ``None``; see :meth:`decode`."""
        claims = Fortress.decode(
            token, secret, leeway=leeway, algorithms=algorithms, revoked=revoked
        )
        return None if claims is None else claims.user_id

    @staticmethod
    def query_token(
        secret: str | None = None,
        *,
        param: str = "token",
        cookie: str | None = None,
        leeway: float | timedelta = DEFAULT_LEEWAY,
        algorithms: Sequence[str] = ("HS256",),
        revoked: RevocationList | None = None,
    ) -> TokenAuth:
        """
        Authenticate from the subprotocol offer, then ``Authorization: Bearer``,
        then ``?param=`` (the guide's way), then, only if ``cookie`` names one,
        that cookie (the route must then declare ``origins``).

        ``secret`` defaults to the ``SECRET_KEY`` environment variable.
        """
        sources = [TokenSource.PROTOCOL, TokenSource.HEADER, TokenSource.QUERY]
        if cookie is not None:
            sources.append(TokenSource.COOKIE)
        return TokenAuth(
            secret,
            sources=sources,
            param=param,
            cookie=cookie or DEFAULT_COOKIE,
            leeway=leeway,
            algorithms=algorithms,
            revoked=revoked,
        )

    @staticmethod
    def protocol_token(
        secret: str | None = None,
        *,
        leeway: float | timedelta = DEFAULT_LEEWAY,
        algorithms: Sequence[str] = ("HS256",),
        revoked: RevocationList | None = None,
    ) -> TokenAuth:
        """Authenticate from the ``nucleus.token.<jwt>`` subprotocol offer only."""
        return TokenAuth(
            secret,
            sources=(TokenSource.PROTOCOL,),
            leeway=leeway,
            algorithms=algorithms,
            revoked=revoked,
        )

    @staticmethod
    def cookie_token(
        secret: str | None = None,
        *,
        cookie: str = DEFAULT_COOKIE,
        leeway: float | timedelta = DEFAULT_LEEWAY,
        algorithms: Sequence[str] = ("HS256",),
        revoked: RevocationList | None = None,
    ) -> TokenAuth:
        """Authenticate from the cookie only; the route must check ``Origin``."""
        return TokenAuth(
            secret,
            sources=(TokenSource.COOKIE,),
            cookie=cookie,
            leeway=leeway,
            algorithms=algorithms,
            revoked=revoked,
        )


class TokenAuth:
    """
    A route's authenticator: finds the token in the handshake and verifies it.

    The server calls :meth:`check_config` at startup, so a route that needs a
    secret refuses to start without one, then awaits the instance with each
    :class:`HandshakeRequest`: :class:`TokenClaims` accept, ``None`` answer 401.
    ``secret=None`` reads ``SECRET_KEY`` from the environment, once, here.
    """

    __slots__ = ("_algorithms", "_cookie", "_leeway", "_param", "_revoked", "_secret", "_sources")

    def __init__(
        self,
        secret: str | None = None,
        *,
        sources: Iterable[TokenSource] = tuple(TokenSource),
        param: str = "token",
        cookie: str = DEFAULT_COOKIE,
        leeway: float | timedelta = DEFAULT_LEEWAY,
        algorithms: Sequence[str] = ("HS256",),
        revoked: RevocationList | None = None,
    ) -> None:
        wanted = frozenset(sources)
        if not wanted:
            raise ConfigError("TokenAuth needs at least one token source")
        if not isinstance(param, str) or not param:
            raise ConfigError("param must be a non-empty query parameter name")
        if not isinstance(cookie, str) or not cookie:
            raise ConfigError("cookie must be a non-empty cookie name")
        self._secret = os.environ.get(SECRET_ENV) if secret is None else secret
        self._sources = tuple(source for source in TokenSource if source in wanted)
        self._param = param
        self._cookie = cookie
        self._leeway = _check_leeway(leeway)
        self._algorithms = _check_algorithms(algorithms)
        self._revoked = revoked

    @property
    def secret(self) -> str | None:
        """The secret tokens are verified with; ``None`` or empty when missing."""
        return self._secret

    @property
    def sources(self) -> tuple[TokenSource, ...]:
        """Where tokens are looked for, in order."""
        return self._sources

    def check_config(self) -> None:
        """Raise :class:`ConfigError` unless the secret can verify tokens."""
        _check_secret(self._secret, self._algorithms)

    async def __call__(self, request: HandshakeRequest) -> TokenClaims | None:
        return self.verify(self._find_token(request))

    def verify(self, token: str | None) -> TokenClaims | None:
        """Verify one token with this route's settings (used for in-band refresh)."""
        if not self._secret or token is None:
            return None  # fail closed; check_config() reports a missing secret at startup
        return Fortress.decode(
            token,
            self._secret,
            leeway=self._leeway,
            algorithms=self._algorithms,
            revoked=self._revoked,
        )

    def _find_token(self, request: HandshakeRequest) -> str | None:
        for source in self._sources:
            if source is TokenSource.PROTOCOL:
                for offer in request.subprotocols:
                    if offer.startswith(TOKEN_SUBPROTOCOL_PREFIX):
                        return offer[len(TOKEN_SUBPROTOCOL_PREFIX) :]
            elif source is TokenSource.HEADER:
                scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
                if scheme.lower() == "bearer" and credentials.strip():
                    return credentials.strip()
            elif source is TokenSource.QUERY:
                if self._param in request.query:
                    return request.query[self._param]
            elif self._cookie in request.cookies:
                return request.cookies[self._cookie]
        return None

    def __repr__(self) -> str:
        sources = ", ".join(source.value for source in self._sources)
        secret = "set" if self._secret else "missing"
        return (
            f"TokenAuth(sources=[{sources}], param={self._param!r}, cookie={self._cookie!r}, "
            f"algorithms={list(self._algorithms)!r}, secret={secret})"
        )


def _verify(
    token: object,
    secret: object,
    leeway: float | timedelta,
    algorithms: Sequence[str],
    revoked: RevocationList | None,
) -> TokenClaims | str:
    """The claims of a token that passes every check, else why it fails."""
    if not isinstance(token, str) or not token:
        return "no token"
    if len(token) > MAX_TOKEN_LENGTH:
        return "token too long"
    try:
        allowed = _check_algorithms(algorithms)
        key = _check_secret(secret, allowed)
        skew = _check_leeway(leeway)
    except ConfigError as exc:
        return str(exc)  # our own messages, which never hold the secret
    try:
        payload = jwt.decode(
            token, key, algorithms=list(allowed), leeway=skew, options={"require": ["exp", "sub"]}
        )
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as exc:
        return type(exc).__name__  # third-party messages are not vetted: the class only

    user_id = payload.get("sub")
    if not isinstance(user_id, str) or not user_id.strip():
        return "sub is not a non-empty string"
    if not all(_is_number(payload[name]) for name in ("exp", "nbf", "iat") if name in payload):
        return "a time claim is not a number"
    jti = payload.get("jti")
    if jti is not None and (not isinstance(jti, str) or not jti):
        return "jti is not a non-empty string"
    if revoked is not None:
        if jti is None:
            return "no jti, so it cannot be revoked"
        if revoked.is_revoked(jti):
            return "revoked"
    return TokenClaims(
        user_id=user_id,
        expires_at=float(payload["exp"]),
        jti=jti,
        claims=MappingProxyType(payload),
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_algorithms(algorithms: Sequence[str]) -> tuple[str, ...]:
    # A bare string is a Sequence[str] too; "HS256" must not mean ("H", "S", ...).
    chosen = (algorithms,) if isinstance(algorithms, str) else tuple(algorithms)
    if not chosen or not all(name in SYMMETRIC_ALGORITHMS for name in chosen):
        raise ConfigError(f"algorithms must be some of {', '.join(SYMMETRIC_ALGORITHMS)}")
    return chosen


def _check_secret(secret: object, algorithms: tuple[str, ...]) -> str:
    if not isinstance(secret, str) or not secret:
        raise ConfigError(_NO_SECRET)
    needed = max(_MIN_SECRET_BYTES[name] for name in algorithms)
    if len(secret.encode()) < needed:
        raise ConfigError(
            f"{SECRET_ENV} is too short for {', '.join(algorithms)}: use at least "
            f"{needed} bytes (RFC 7518 §3.2), for example secrets.token_urlsafe({needed})"
        )
    return secret


def _check_leeway(leeway: float | timedelta) -> float:
    seconds = leeway.total_seconds() if isinstance(leeway, timedelta) else leeway
    if not _is_number(seconds) or seconds < 0:
        raise ConfigError("leeway must be a finite number of seconds, 0 or more")
    return float(seconds)
