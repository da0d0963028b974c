"""Rate limits: token buckets per socket and per user, strikes, and bounded memory."""

from __future__ import annotations

from typing import Any

import pytest

from nucleus.stream._errors import ConfigError
from nucleus.stream._ratelimit import RateLimit, RateLimiter, TokenBucket, Verdict


def socket_only(rate: float, burst: int, strikes: int = 100) -> RateLimit:
    """Limits without a per-user bucket."""
    return RateLimit(rate, burst, per_user_rate=None, per_user_burst=None, strikes=strikes)


def verdicts(
    limiter: RateLimiter, socket_id: str, user_id: str | None, now: float, n: int
) -> list[Verdict]:
    return [limiter.check(socket_id, user_id, now) for _ in range(n)]


# -- the bucket ---------------------------------------------------------------


def test_bucket_starts_full_then_refuses() -> None:
    bucket = TokenBucket(rate=1.0, capacity=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_with_time_up_to_its_capacity() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4)
    while bucket.take(0.0):
        pass
    assert bucket.take(0.25) is False  # half a token
    assert bucket.take(0.5) is True
    assert bucket.take(0.5) is False
    assert bucket.available(1000.0) == 4  # a long pause never saves more than a burst


def test_bucket_charges_the_cost() -> None:
    bucket = TokenBucket(rate=1.0, capacity=10)
    assert bucket.take(0.0, cost=7)
    assert not bucket.take(0.0, cost=4)
    assert bucket.take(0.0, cost=3)


def test_time_running_backwards_mints_nothing() -> None:
    bucket = TokenBucket(rate=10.0, capacity=5)
    while bucket.take(100.0):
        pass
    assert not bucket.take(50.0)
    assert not bucket.take(100.0)
    assert bucket.take(100.2)


@pytest.mark.parametrize("cost", [-1.0, float("nan"), float("inf")])
def test_bucket_refuses_a_bad_cost(cost: float) -> None:
    with pytest.raises(ConfigError):
        TokenBucket(rate=1.0, capacity=1).take(0.0, cost)


# -- one socket ---------------------------------------------------------------


def test_burst_then_reject() -> None:
    limiter = RateLimiter(socket_only(rate=1.0, burst=5))
    assert verdicts(limiter, "s1", None, 0.0, 5) == [Verdict.ALLOW] * 5
    assert limiter.check("s1", None, 0.0) is Verdict.REJECT


def test_refill_over_injected_time() -> None:
    limiter = RateLimiter(socket_only(rate=2.0, burst=4))
    verdicts(limiter, "s1", None, 0.0, 4)
    assert limiter.check("s1", None, 0.0) is Verdict.REJECT
    assert verdicts(limiter, "s1", None, 1.0, 3) == [Verdict.ALLOW, Verdict.ALLOW, Verdict.REJECT]
    allowed = verdicts(limiter, "s1", None, 60.0, 10).count(Verdict.ALLOW)
    assert allowed == 4


def test_sockets_have_their_own_buckets() -> None:
    limiter = RateLimiter(socket_only(rate=1.0, burst=2))
    verdicts(limiter, "s1", None, 0.0, 3)
    assert limiter.check("s1", None, 0.0) is Verdict.REJECT
    assert limiter.check("s2", None, 0.0) is Verdict.ALLOW


def test_a_human_pace_is_never_limited_by_the_defaults() -> None:
    limiter = RateLimiter()
    now = 0.0
    for _ in range(10 * 600):  # ten messages a second for ten minutes
        assert limiter.check("s1", "alice", now) is Verdict.ALLOW
        now += 0.1
    # plus a reconnect that re-subscribes to 50 rooms at once
    assert verdicts(limiter, "s2", "alice", now, 50) == [Verdict.ALLOW] * 50


def test_a_flood_is_rejected_then_closed_by_the_defaults() -> None:
    limiter = RateLimiter()
    seen = verdicts(limiter, "s1", "alice", 0.0, 1000)
    assert seen[0] is Verdict.ALLOW
    assert Verdict.REJECT in seen
    assert seen[-1] is Verdict.CLOSE


# -- per user -----------------------------------------------------------------


def test_user_bucket_is_shared_across_their_sockets() -> None:
    limiter = RateLimiter(
        RateLimit(rate=100.0, burst=100, per_user_rate=1.0, per_user_burst=3, strikes=100)
    )
    assert verdicts(limiter, "a", "alice", 0.0, 2) == [Verdict.ALLOW] * 2
    assert limiter.check("b", "alice", 0.0) is Verdict.ALLOW
    assert limiter.check("b", "alice", 0.0) is Verdict.REJECT
    assert limiter.check("a", "alice", 0.0) is Verdict.REJECT
    # Other users and anonymous sockets are not affected.
    assert limiter.check("c", "bob", 0.0) is Verdict.ALLOW
    assert limiter.check("d", None, 0.0) is Verdict.ALLOW
    # The shared bucket refills for everyone.
    assert limiter.check("b", "alice", 1.0) is Verdict.ALLOW
    assert limiter.check("a", "alice", 1.0) is Verdict.REJECT


def test_a_rejected_message_spends_neither_bucket() -> None:
    # Sockets refill very slowly, the user's bucket quickly.
    limiter = RateLimiter(
        RateLimit(rate=0.001, burst=2, per_user_rate=1.0, per_user_burst=2, strikes=100)
    )
    assert verdicts(limiter, "a", "alice", 0.0, 2) == [Verdict.ALLOW] * 2
    # "b" is refused by the user's bucket; its own bucket must stay full.
    assert verdicts(limiter, "b", "alice", 0.0, 5) == [Verdict.REJECT] * 5
    assert verdicts(limiter, "b", "alice", 2.0, 3) == [Verdict.ALLOW, Verdict.ALLOW, Verdict.REJECT]


def test_socket_that_authenticates_later_joins_its_user_bucket() -> None:
    limiter = RateLimiter(
        RateLimit(rate=100.0, burst=100, per_user_rate=1.0, per_user_burst=1, strikes=100)
    )
    assert verdicts(limiter, "a", None, 0.0, 3) == [Verdict.ALLOW] * 3
    assert limiter.check("b", "alice", 0.0) is Verdict.ALLOW
    assert limiter.check("a", "alice", 0.0) is Verdict.REJECT
    assert (limiter.socket_count, limiter.user_count) == (2, 1)
    limiter.for_socket("a", "bob")
    assert limiter.user_count == 2
    limiter.forget_socket("b")
    assert limiter.user_count == 1


# -- strikes ------------------------------------------------------------------


def test_repeated_rejections_close_the_socket() -> None:
    limiter = RateLimiter(RateLimit(rate=0.001, burst=1, strikes=3, strike_window=10.0))
    assert limiter.check("s1", "alice", 0.0) is Verdict.ALLOW
    assert verdicts(limiter, "s1", "alice", 1.0, 3) == [
        Verdict.REJECT,
        Verdict.REJECT,
        Verdict.CLOSE,
    ]
    # Once told to close, it stays closed, even if its bucket refilled.
    assert limiter.check("s1", "alice", 10_000.0) is Verdict.CLOSE
    assert limiter.check("s2", "alice", 10_000.0) is Verdict.ALLOW


def test_rejections_spread_beyond_the_window_never_close() -> None:
    limiter = RateLimiter(RateLimit(rate=0.0001, burst=1, strikes=3, strike_window=10.0))
    limiter.check("s1", None, 0.0)
    seen = [limiter.check("s1", None, 6.0 * i) for i in range(1, 50)]
    assert seen == [Verdict.REJECT] * 49


def test_strikes_count_within_the_window_only() -> None:
    limiter = RateLimiter(RateLimit(rate=0.0001, burst=1, strikes=3, strike_window=10.0))
    limiter.check("s1", None, 0.0)
    assert limiter.check("s1", None, 1.0) is Verdict.REJECT
    assert limiter.check("s1", None, 2.0) is Verdict.REJECT
    assert limiter.check("s1", None, 11.5) is Verdict.REJECT  # the strike at 1.0 is old
    assert limiter.check("s1", None, 11.9) is Verdict.CLOSE  # 2.0, 11.5, 11.9


# -- bounded memory -----------------------------------------------------------


def test_forget_socket_cleans_up() -> None:
    limiter = RateLimiter()
    limiter.check("a", "alice", 0.0)
    limiter.check("b", "alice", 0.0)
    limiter.check("c", None, 0.0)
    assert (limiter.socket_count, limiter.user_count) == (3, 1)
    limiter.forget_socket("a")
    assert (limiter.socket_count, limiter.user_count) == (2, 1)  # "b" still holds it
    limiter.forget_socket("b")
    limiter.forget_socket("c")
    limiter.forget_socket("c")  # twice is harmless
    limiter.forget_socket("never-seen")
    assert (limiter.socket_count, limiter.user_count) == (0, 0)


def test_many_sockets_come_and_go_and_nothing_is_left() -> None:
    limiter = RateLimiter()
    now = 0.0
    for round_ in range(20):
        ids = [f"r{round_}-s{i}" for i in range(500)]
        for i, socket_id in enumerate(ids):
            user = None if i % 5 == 0 else f"user-{i % 37}"
            for _ in range(3):
                limiter.check(socket_id, user, now)
            now += 0.001
        assert limiter.socket_count == 500
        for socket_id in ids:
            limiter.forget_socket(socket_id)
    assert (limiter.socket_count, limiter.user_count) == (0, 0)


def test_forgotten_user_starts_again_with_a_full_bucket() -> None:
    limiter = RateLimiter(
        RateLimit(rate=100.0, burst=100, per_user_rate=1.0, per_user_burst=1, strikes=100)
    )
    assert limiter.check("a", "alice", 0.0) is Verdict.ALLOW
    assert limiter.check("a", "alice", 0.0) is Verdict.REJECT
    limiter.forget_socket("a")
    assert limiter.check("b", "alice", 0.0) is Verdict.ALLOW


# -- settings -----------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"rate": 0},
        {"rate": -1.0},
        {"rate": float("inf")},
        {"rate": float("nan")},
        {"rate": True},
        {"burst": 0},
        {"burst": 2.5},
        {"burst": True},
        {"per_user_rate": None},
        {"per_user_burst": None},
        {"per_user_rate": 0.0},
        {"per_user_burst": 0},
        {"strikes": 0},
        {"strike_window": 0.0},
        {"strike_window": float("inf")},
    ],
)
def test_bad_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RateLimit(**settings)


def test_per_user_limit_can_be_turned_off() -> None:
    limiter = RateLimiter(socket_only(rate=1.0, burst=2))
    for i in range(10):
        assert verdicts(limiter, f"s{i}", "alice", 0.0, 2) == [Verdict.ALLOW] * 2
    assert limiter.user_count == 0
