"""Rate-limit token allowances against the real RateLimiter object's bucket: no node lets through
more than the bucket holds, one node lets through exactly what it holds, and every token is
accounted for (in the bucket, in a allowance, or spent)."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.allowances import ALLOWANCE_S, MAX_CLIENTS, MAX_ALLOWANCE, Refused, TokenAllowances
from gateway.limits import Limit
from gateway.objects.rate_limiter import RateLimiter

KEY = "base:read:ip:198.51.100.7"
# refill is time.time()-driven in the object; at this rate a test run refills well under 0.01 token
SLOW = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryStorage:
    """The two storage calls the bucket makes, in memory (the object's own code is under test)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def get(self, key: str) -> Any:
        return self.data.get(key)

    async def put(self, key: str, value: Any, **_: Any) -> None:
        self.data[key] = dict(value)


class Ctx:
    def __init__(self) -> None:
        self.storage = MemoryStorage()


def bucket() -> RateLimiter:
    return RateLimiter(Ctx(), None)


def tokens_in(limiter: RateLimiter) -> float:
    assert limiter._bucket is not None
    return limiter._bucket["tokens"]


async def request(allowances: TokenAllowances, limiter: RateLimiter, limit: Limit) -> int | None:
    """One request as the gateway makes it: its RateLimit-Remaining, or None when refused."""
    quota = allowances.spend(KEY, limit)
    if quota is None:
        try:
            quota = await allowances.take(KEY, limit, limiter.take)
        except Refused as refused:
            assert refused.retry_after >= 1 and refused.headers()["RateLimit-Remaining"] == "0"
            assert refused.headers()["Retry-After"] == str(refused.retry_after)
            return None
    return quota.remaining


async def test_a_busy_client_spends_from_an_allowance_that_grows_with_its_pace_and_reports_exactly() -> None:
    clock, limiter = Clock(), bucket()
    allowances, limit = TokenAllowances(clock), Limit(1000, SLOW)
    asks: list[tuple[int, int]] = []
    real_take = limiter.take

    async def counted(*args: Any) -> dict[str, Any]:
        asks.append((args[2], args[3]))
        return await real_take(*args)

    remaining = []
    for _ in range(200):
        quota = allowances.spend(KEY, limit) or await allowances.take(KEY, limit, counted)
        remaining.append(quota.remaining)
    assert remaining == list(range(999, 799, -1))  # what the bucket alone would have said
    wants = [want for want, _ in asks]
    assert wants[:5] == [1, 2, 4, 8, 16] and max(wants) == min(MAX_ALLOWANCE, 1000 // 20) == 50
    assert len(asks) < 12  # 200 requests, a handful of calls to the object


async def test_one_node_lets_through_exactly_the_limit_and_refuses_the_rest() -> None:
    allowances, limiter, limit = TokenAllowances(Clock()), bucket(), Limit(100, SLOW)
    outcomes = [await request(allowances, limiter, limit) for _ in range(130)]
    assert outcomes[:100] == list(range(99, -1, -1)) and outcomes[100:] == [None] * 30


async def test_a_client_past_its_limit_is_refused_here_until_the_bucket_could_hold_a_token() -> None:
    clock, limiter = Clock(), bucket()
    allowances, limit = TokenAllowances(clock), Limit(5, 3600.0)  # a token every 720 s
    calls = 0
    real_take = limiter.take

    async def counted(*args: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return await real_take(*args)

    async def one() -> Refused | None:
        try:
            allowances.spend(KEY, limit) or await allowances.take(KEY, limit, counted)
        except Refused as refused:
            return refused
        return None

    assert [await one() for _ in range(5)] == [None] * 5 and calls == 5  # a limit of 5 is never given an allowance
    refusals = [await one() for _ in range(50)]
    assert all(r is not None for r in refusals) and calls == 6  # the first refusal asked; 49 did not
    first = refusals[0]
    assert first is not None and 715 <= first.retry_after <= 720 and 3595 <= first.reset <= 3600
    clock.now += 700
    later = await one()
    assert later is not None and later.retry_after == first.retry_after - 700 and calls == 6
    clock.now += 30  # past the time the bucket gave: ask again (it has refilled by real time only)
    assert await one() is not None and calls == 7


async def test_an_expired_allowance_is_not_spent_and_goes_back_with_the_next_ask() -> None:
    clock, limiter = Clock(), bucket()
    allowances, limit = TokenAllowances(clock), Limit(1000, SLOW)
    for _ in range(4):  # allowances of 1, 2 and 4: 3 tokens left here
        await request(allowances, limiter, limit)
    assert allowances._allowances[KEY].tokens == 3 and tokens_in(limiter) == pytest.approx(993, abs=0.01)
    clock.now += ALLOWANCE_S
    assert allowances.spend(KEY, limit) is None  # not spendable once its time is up
    assert await request(allowances, limiter, limit) == 995  # the 3 went back, then this one was spent
    assert tokens_in(limiter) + allowances._allowances[KEY].tokens == pytest.approx(995, abs=0.01)
    clock.now += 3 * ALLOWANCE_S  # quiet: the next ask starts small again
    assert allowances.ask(KEY, limit)[0] == 1


def test_low_limits_are_never_given_allowances() -> None:
    allowances, limit = TokenAllowances(Clock()), Limit(5, 3600)
    allowances.settle(KEY, limit, {"granted": 1, "remaining": 4})
    allowances._allowances[KEY].served = 10
    assert allowances.ask(KEY, limit) == (1, 0)  # 5% of 5 is under one token


def test_allowances_are_bounded_in_number() -> None:
    allowances, limit = TokenAllowances(Clock()), Limit(1000, 60)
    for i in range(MAX_CLIENTS + 5):
        allowances.settle(f"k{i}", limit, {"granted": 2, "remaining": 900})
    assert len(allowances._allowances) == MAX_CLIENTS and "k0" not in allowances._allowances


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from("AB"), st.sampled_from([0.0, 0.0, 0.0, 0.3, 1.1])),
                      min_size=1, max_size=150),
       limit_count=st.integers(1, 120))
async def test_two_nodes_never_let_through_more_than_the_bucket_and_lose_no_token(
        steps: list[tuple[str, float]], limit_count: int) -> None:
    clock, limiter, limit = Clock(), bucket(), Limit(limit_count, SLOW)
    nodes = {"A": TokenAllowances(clock), "B": TokenAllowances(clock)}
    admitted = 0
    for node, pause in steps:
        clock.now += pause
        if await request(nodes[node], limiter, limit) is not None:
            admitted += 1
        held = sum(n._allowances[KEY].tokens for n in nodes.values() if KEY in n._allowances)
        assert admitted <= limit_count
        assert tokens_in(limiter) + held + admitted == pytest.approx(limit_count, abs=0.01)
