"""Per-key limits with a fake clock: requests and tokens per minute (in this process and in
Redis), the token budget, headers, and snapshots that do not double count."""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import threading
import uuid

import pytest

from serving.engine.limits import (
    MAX_RETRY_AFTER,
    LimitExceeded,
    RateLimiter,
    format_duration,
)
from serving.engine.types import KeySpec

START = 1_800_000_000.0


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_key(key_id: int = 1, **limits) -> KeySpec:
    return KeySpec(key_id=key_id, key_hash="h" * 64, project_id=1, **limits)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def redis_url() -> str | None:
    return os.environ.get("REDIS_URL") or None


@pytest.fixture
def redis_prefix():
    """A fresh key prefix in the REDIS_URL database, its keys deleted afterwards."""
    if not redis_url():
        pytest.skip("REDIS_URL is not set")
    import redis

    prefix = f"llmhub-test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url())
    names = list(client.scan_iter(match=f"{prefix}*"))
    if names:
        client.delete(*names)


@pytest.fixture(params=["local", "redis"])
def make_limiter(request, clock):
    """Builds limiters on one backend; several built by one test share the Redis windows, as
    several inference processes do."""
    if request.param == "local":
        return lambda: RateLimiter(clock=clock)
    prefix = request.getfixturevalue("redis_prefix")
    return lambda: RateLimiter(clock=clock, redis_url=redis_url(), redis_prefix=prefix)


def refusal(limiter: RateLimiter, key: KeySpec, reserve: int = 0) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as info:
        limiter.admit(key, reserve_tokens=reserve)
    return info.value


# -- requests per minute ------------------------------------------------------------------


def test_rpm_refuses_the_next_request_until_the_oldest_leaves_the_window(make_limiter, clock):
    limiter = make_limiter()
    key = make_key(requests_per_minute=3)
    limiter.admit(key, reserve_tokens=10)
    clock.advance(10)
    limiter.admit(key, reserve_tokens=10)
    clock.advance(5)
    limiter.admit(key, reserve_tokens=10)
    clock.advance(5)  # t = 20: the first request leaves the window at t = 60

    error = refusal(limiter, key)
    assert error.kind == "requests"
    assert error.retry_after == pytest.approx(40.0)
    assert error.headers["retry-after"] == "40"
    assert error.headers["retry-after-ms"] == "40000"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-should-retry" not in error.headers
    assert "3 requests per minute" in error.message and "40s" in error.message
    assert error.code == "rate_limit_exceeded" and error.retryable

    clock.now = START + 59.9
    assert refusal(limiter, key).retry_after == 1.0  # 0.1 s left: never under a second
    clock.now = START + 60
    admission = limiter.admit(key, reserve_tokens=10)  # the first request left
    assert admission.headers["x-ratelimit-remaining-requests"] == "0"
    # The next slot frees when the second request (t = 10) leaves: at t = 70.
    assert refusal(limiter, key).retry_after == pytest.approx(10.0)


def test_a_refused_request_takes_no_slot(make_limiter, clock):
    limiter = make_limiter()
    key = make_key(requests_per_minute=1)
    limiter.admit(key, reserve_tokens=0)
    for _ in range(5):
        refusal(limiter, key)
    clock.advance(60)
    limiter.admit(key, reserve_tokens=0)


def test_keys_have_their_own_windows(make_limiter):
    limiter = make_limiter()
    one, two = make_key(1, requests_per_minute=1), make_key(2, requests_per_minute=1)
    limiter.admit(one, reserve_tokens=0)
    limiter.admit(two, reserve_tokens=0)
    refusal(limiter, one)


def test_processes_share_the_window_through_redis(clock, redis_prefix):
    first = RateLimiter(clock=clock, redis_url=redis_url(), redis_prefix=redis_prefix)
    second = RateLimiter(clock=clock, redis_url=redis_url(), redis_prefix=redis_prefix)
    key = make_key(requests_per_minute=2, tokens_per_minute=100)
    a = first.admit(key, reserve_tokens=60)
    assert second.admit(key, reserve_tokens=0).headers["x-ratelimit-remaining-tokens"] == "40"
    assert refusal(first, key).kind == "requests"
    first.settle(a, used_tokens=10)  # settled by the process that admitted it
    assert second.headers(key)["x-ratelimit-remaining-tokens"] == "90"


def test_concurrent_admissions_never_overshoot(make_limiter):
    """Eight threads race for 30 requests per minute: exactly 30 get in. With Redis the
    threads use four limiters, as four processes would; else one limiter."""
    first = make_limiter()
    limiters = [first] + [make_limiter() if first._redis else first for _ in range(3)]
    key = make_key(requests_per_minute=30, tokens_per_minute=10**6)
    admitted, refused = [], []

    def hammer(limiter: RateLimiter) -> None:
        for _ in range(10):
            try:
                admitted.append(limiter.admit(key, reserve_tokens=5))
            except LimitExceeded:
                refused.append(1)

    threads = [threading.Thread(target=hammer, args=(limiters[i % 4],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 30 and len(refused) == 50


def test_redis_down_falls_back_to_this_process(clock):
    limiter = RateLimiter(clock=clock, redis_url="redis://127.0.0.1:1/0")  # nothing listens
    key = make_key(requests_per_minute=1, tokens_per_minute=50)
    admission = limiter.admit(key, reserve_tokens=20)
    assert refusal(limiter, key).kind == "requests"
    limiter.settle(admission, used_tokens=5)
    assert limiter.headers(key)["x-ratelimit-remaining-tokens"] == "45"


# -- tokens per minute --------------------------------------------------------------------


def test_tpm_reserves_at_admission_and_settle_gives_the_rest_back(make_limiter, clock):
    limiter = make_limiter()
    key = make_key(tokens_per_minute=1000)
    first = limiter.admit(key, reserve_tokens=600)
    assert first.reserved_tokens == 600
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    assert first.headers["x-ratelimit-remaining-tokens"] == "400"
    clock.advance(1)
    # A burst of long requests cannot overshoot: the reservation counts before any settle.
    error = refusal(limiter, key, reserve=500)
    assert error.kind == "tokens"
    assert error.retry_after == pytest.approx(59.0)  # when the 600 reserved at t=0 leave
    assert "1000 tokens per minute" in error.message

    limiter.settle(first, used_tokens=150)  # the answer was short
    second = limiter.admit(key, reserve_tokens=500)
    assert second.headers["x-ratelimit-remaining-tokens"] == "350"
    limiter.settle(first, used_tokens=999)  # a second settle changes nothing
    assert limiter.headers(key)["x-ratelimit-remaining-tokens"] == "350"


def test_tpm_retry_after_is_when_enough_tokens_leave(make_limiter, clock):
    limiter = make_limiter()
    key = make_key(tokens_per_minute=100)
    for tokens in (30, 30, 30):
        limiter.settle(limiter.admit(key, reserve_tokens=tokens), used_tokens=tokens)
        clock.advance(10)
    # t = 30, 90 used; 50 more need 20 to leave: the first two entries (t = 0 and t = 10).
    assert refusal(limiter, key, reserve=30).retry_after == pytest.approx(30.0)
    assert refusal(limiter, key, reserve=50).retry_after == pytest.approx(40.0)
    clock.advance(30)
    limiter.admit(key, reserve_tokens=30)


def test_a_request_larger_than_the_tpm_limit_is_not_retryable(make_limiter):
    limiter = make_limiter()
    key = make_key(tokens_per_minute=100)
    error = refusal(limiter, key, reserve=101)
    assert error.kind == "tokens" and not error.retryable
    assert error.headers["x-should-retry"] == "false"
    assert "needs 101 tokens" in error.message and "max_tokens" in error.message


def test_a_limit_of_zero_refuses_everything_without_retry(make_limiter):
    limiter = make_limiter()
    error = refusal(limiter, make_key(requests_per_minute=0))
    assert error.kind == "requests" and error.headers["x-should-retry"] == "false"


def test_an_aborted_stream_settles_what_it_produced(make_limiter, clock):
    limiter = make_limiter()
    key = make_key(tokens_per_minute=1000, token_budget=10_000)
    admission = limiter.admit(key, reserve_tokens=800)
    limiter.settle(admission, used_tokens=37)  # the client went away after 37 tokens
    headers = limiter.headers(key)
    assert headers["x-ratelimit-remaining-tokens"] == "963"
    assert headers["x-ratelimit-remaining-budget"] == str(10_000 - 37)


def test_the_windows_agree_with_a_brute_force_count(make_limiter, clock):
    """Random admissions, settles and waits; after each step the limiter's figures are the
    ones counted from scratch over the last 60 s (the running sums never drift)."""
    rng = random.Random(14)
    rpm = 15
    limiter = make_limiter()
    key = make_key(requests_per_minute=rpm, tokens_per_minute=3000)
    log: list[list] = []  # [time, tokens, admission or None]
    refused: set[str] = set()
    for _ in range(400):
        now = clock()
        live = [entry for entry in log if entry[0] > now - 60]
        used = sum(entry[1] for entry in live)
        action = rng.random()
        if action < 0.5:
            reserve = rng.randint(1, 400)
            if len(live) >= rpm:
                error = refusal(limiter, key, reserve)
                assert error.kind == "requests"
                refused.add(error.kind)
                oldest_to_leave = live[len(live) - rpm][0]
                assert error.retry_after == pytest.approx(max(1.0, oldest_to_leave + 60 - now))
            elif used + reserve > 3000:
                error = refusal(limiter, key, reserve)
                assert error.kind == "tokens"
                refused.add(error.kind)
                # The oldest entries leave first: the window frees enough when the entry that
                # brings the freed tokens to the excess leaves.
                freed = itertools.accumulate(entry[1] for entry in live)
                excess = used + reserve - 3000
                stamp = next(e[0] for e, total in zip(live, freed, strict=True) if total >= excess)
                assert error.retry_after == pytest.approx(max(1.0, stamp + 60 - now))
            else:
                log.append([now, reserve, limiter.admit(key, reserve_tokens=reserve)])
        elif action < 0.8:
            pending = [entry for entry in log if entry[2] is not None]
            if pending:
                entry = rng.choice(pending)
                entry[1] = rng.randint(0, entry[1]) if entry[0] > now - 60 else entry[1]
                limiter.settle(entry[2], used_tokens=entry[1])
                entry[2] = None
        else:
            clock.advance(rng.choice([0.5, 1, 3, 7, 20]))
        now = clock()
        live = [entry for entry in log if entry[0] > now - 60]
        headers = limiter.headers(key)
        assert headers["x-ratelimit-remaining-requests"] == str(max(0, rpm - len(live)))
        remaining = max(0, 3000 - sum(entry[1] for entry in live))
        assert headers["x-ratelimit-remaining-tokens"] == str(remaining)
    assert refused == {"requests", "tokens"}  # both limits were reached along the way


# -- the budget ---------------------------------------------------------------------------


def test_an_exhausted_budget_is_its_own_error_that_clients_do_not_retry(make_limiter, clock):
    limiter = make_limiter()
    resets = START + 3 * 86400
    key = make_key(token_budget=1000, budget_used=900, budget_resets_at=resets)
    limiter.sync_keys([key])
    admission = limiter.admit(key, reserve_tokens=300)  # room left: admitted, may overshoot
    assert admission.headers["x-ratelimit-remaining-budget"] == "0"
    assert admission.headers["x-ratelimit-reset-budget"] == "72h0m0s"
    assert refusal(limiter, key, reserve=1).kind == "budget"  # the reservation counts
    limiter.settle(admission, used_tokens=50)
    last = limiter.admit(key, reserve_tokens=10)
    assert last.headers["x-ratelimit-remaining-budget"] == "40"
    limiter.settle(last, used_tokens=10)
    limiter.sync_keys([dataclasses.replace(key, budget_used=1000)])

    error = refusal(limiter, key)
    assert error.kind == "budget" and error.code == "insufficient_quota"
    assert not error.retryable and error.headers["x-should-retry"] == "false"
    assert error.retry_after == MAX_RETRY_AFTER  # capped: the real reset is days away
    assert error.headers["retry-after"] == "120"
    assert "1000 of 1000" in error.message
    assert "2027-01-18 08:00:00 UTC" in error.message  # the real reset time


def test_a_budget_resetting_soon_says_when(make_limiter, clock):
    limiter = make_limiter()
    key = make_key(token_budget=10, budget_used=10, budget_resets_at=START + 30.5)
    error = refusal(limiter, key)
    assert error.retry_after == pytest.approx(30.5)
    assert error.headers["retry-after"] == "31"


def test_the_budget_counts_again_once_its_period_ends(make_limiter, clock):
    limiter = make_limiter()
    key = make_key(token_budget=100, budget_used=100, budget_resets_at=START + 10)
    limiter.sync_keys([key])
    refusal(limiter, key)
    clock.advance(10)  # the period ended; the next snapshot has not come yet
    admission = limiter.admit(key, reserve_tokens=30)
    limiter.settle(admission, used_tokens=30)
    assert limiter.headers(key)["x-ratelimit-remaining-budget"] == "70"


def test_sync_keys_counts_local_usage_until_the_database_has_it(make_limiter, clock):
    limiter = make_limiter()
    key = make_key(token_budget=1000, budget_used=100)
    limiter.sync_keys([key])
    limiter.settle(limiter.admit(key, reserve_tokens=50), used_tokens=50)  # t = 0
    clock.advance(5)
    flushed_at = clock()  # the runner drains the records settled so far...
    clock.advance(1)
    limiter.settle(limiter.admit(key, reserve_tokens=20), used_tokens=20)  # t = 6: not in it
    in_flight = limiter.admit(key, reserve_tokens=200)
    assert limiter.headers(key)["x-ratelimit-remaining-budget"] == str(1000 - 100 - 50 - 20 - 200)

    # ...writes them (the database now says 150) and hands over the new snapshot.
    limiter.sync_keys([dataclasses.replace(key, budget_used=150)], usage_flushed_before=flushed_at)
    assert limiter.headers(key)["x-ratelimit-remaining-budget"] == str(1000 - 150 - 20 - 200)
    limiter.settle(in_flight, used_tokens=80)
    assert limiter.headers(key)["x-ratelimit-remaining-budget"] == str(1000 - 150 - 20 - 80)

    # A snapshot with everything flushed (the default: all settled so far) keeps only the
    # database's figure.
    limiter.sync_keys([dataclasses.replace(key, budget_used=250)])
    assert limiter.headers(key)["x-ratelimit-remaining-budget"] == "750"


def test_a_new_snapshot_brings_new_limits(make_limiter):
    limiter = make_limiter()
    key = make_key(requests_per_minute=1)
    limiter.sync_keys([key])
    limiter.admit(key, reserve_tokens=0)
    refusal(limiter, key)
    raised = dataclasses.replace(key, requests_per_minute=5)
    limiter.sync_keys([raised])
    assert limiter.admit(raised, reserve_tokens=0).headers["x-ratelimit-remaining-requests"] == "3"


def test_a_reservation_never_settled_stops_holding_the_budget_after_an_hour(make_limiter, clock):
    limiter = make_limiter()
    key = make_key(token_budget=1000)
    limiter.sync_keys([key])
    forgotten = limiter.admit(key, reserve_tokens=900)  # the caller never settles it
    clock.advance(1800)
    limiter.sync_keys([key])
    assert limiter.headers(key)["x-ratelimit-remaining-budget"] == "100"
    clock.advance(1801)
    limiter.sync_keys([key])
    assert limiter.headers(key)["x-ratelimit-remaining-budget"] == "1000"
    limiter.settle(forgotten, used_tokens=900)  # too late: dropped, not counted
    assert limiter.headers(key)["x-ratelimit-remaining-budget"] == "1000"


def test_a_key_gone_from_the_snapshot_settles_quietly(make_limiter):
    limiter = make_limiter()
    key = make_key(token_budget=100, tokens_per_minute=100)
    admission = limiter.admit(key, reserve_tokens=10)
    limiter.sync_keys([])
    limiter.settle(admission, used_tokens=10)


# -- headers ------------------------------------------------------------------------------


def test_headers_on_success_name_every_limit_the_key_has(make_limiter, clock):
    limiter = make_limiter()
    key = make_key(requests_per_minute=10, tokens_per_minute=5000, token_budget=100_000)
    limiter.admit(key, reserve_tokens=100)
    clock.advance(15)
    headers = limiter.admit(key, reserve_tokens=400).headers
    assert headers == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "8",
        "x-ratelimit-reset-requests": "1m0s",  # the window is empty a minute after the last
        "x-ratelimit-limit-tokens": "5000",
        "x-ratelimit-remaining-tokens": "4500",
        "x-ratelimit-reset-tokens": "1m0s",
        "x-ratelimit-limit-budget": "100000",
        "x-ratelimit-remaining-budget": "99500",
    }
    clock.advance(12.5)
    looked = limiter.headers(key)  # an answer that did not reach admit uses nothing
    assert looked["x-ratelimit-remaining-requests"] == "8"
    assert looked["x-ratelimit-reset-requests"] == "47.5s"


def test_unlimited_keys_are_always_admitted_without_headers(make_limiter):
    limiter = make_limiter()
    key = make_key()
    for _ in range(1000):
        admission = limiter.admit(key, reserve_tokens=10**6)
        assert admission.headers == {}
        limiter.settle(admission, used_tokens=10**6)
    assert limiter.headers(key) == {}


def test_an_unlimited_dimension_is_left_out_of_the_headers(make_limiter):
    limiter = make_limiter()
    headers = limiter.admit(make_key(tokens_per_minute=100), reserve_tokens=10).headers
    assert set(headers) == {
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    }
    only_requests = make_key(2, requests_per_minute=1)
    limiter.admit(only_requests, reserve_tokens=10**9)  # no token limit to exceed
    assert refusal(limiter, only_requests).kind == "requests"


def test_retry_after_never_exceeds_two_minutes(make_limiter, clock):
    limiter = make_limiter()
    for error in (
        refusal(limiter, make_key(1, token_budget=1, budget_used=1, budget_resets_at=START + 1e6)),
        refusal(limiter, make_key(2, token_budget=1, budget_used=5)),  # no reset at all
        refusal(limiter, make_key(3, tokens_per_minute=10), reserve=11),
    ):
        assert error.retry_after <= MAX_RETRY_AFTER
        assert int(error.headers["retry-after"]) <= 120
        assert int(error.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0ms"),
        (0.85, "850ms"),
        (1, "1s"),
        (12.25, "12.25s"),
        (59.9999, "1m0s"),
        (90.5, "1m30.5s"),
        (360, "6m0s"),
        (3 * 86400, "72h0m0s"),
    ],
)
def test_reset_durations_read_as_openai_writes_them(seconds, text):
    assert format_duration(seconds) == text
