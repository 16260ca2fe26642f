"""The reserving GCRA on every backend, with an injected clock (Redis: the script's now override).

The same expectations run against memory, SQLite and the Redis Lua script, so the Python math and
its Lua twin are checked against each other.
"""

from __future__ import annotations

import math

import pytest

from airflow_dify.limits import PoolTimeout

from .pool_helpers import FakeClock, PoolFactory, max_in_window


def test_no_one_or_sixty_second_window_over_the_limit(make_pool: PoolFactory) -> None:
    clock = FakeClock()
    pool = make_pool(clock, requests_per_minute=120)
    grants = []
    for _ in range(200):  # 100 s of demand from a caller that is always waiting
        pool.acquire().settle()
        grants.append(clock())
    assert max_in_window(grants, 1.0) <= math.ceil(120 / 60) + 1
    assert max_in_window(grants, 60.0) <= 120 + 1  # burst tolerance: one request
    assert grants[-1] - grants[0] == pytest.approx(199 * 0.5)  # and nothing slower either


def test_token_windows_bounded_by_rate_plus_burst(make_pool: PoolFactory) -> None:
    clock = FakeClock()
    pool = make_pool(clock, tokens_per_minute=6000)
    grants, weights = [], []
    for i in range(120):
        n = 100 + (i % 5) * 100  # 100..500 tokens
        pool.acquire(n).settle()
        grants.append(clock())
        weights.append(n)
    largest = max(max(weights), 6000 / 60)
    assert max_in_window(grants, 60.0, weights) <= 6000 + largest
    assert max_in_window(grants, 1.0, weights) <= 6000 / 60 + largest
    rate = sum(weights[:-1]) / (grants[-1] - grants[0]) * 60
    assert rate == pytest.approx(6000, rel=0.05)


def test_rpm_and_tpm_reserved_together(make_pool: PoolFactory) -> None:
    clock = FakeClock(advancing=False)
    pool = make_pool(clock, requests_per_minute=60, tokens_per_minute=600)
    starts = [pool.acquire(50).start for _ in range(6)]
    # tokens are the tighter budget here: 50 tokens at 10/s = 5 s apart, not the 1 s of the RPM
    assert [round(s - starts[0], 6) for s in starts] == [0, 5, 10, 15, 20, 25]
    # the request TAT followed the delayed starts, so a token-free call queues behind them, not at t+6
    free = pool.acquire(0)
    assert free.start - starts[0] >= 25 + 1 - 1e-6


def test_grants_are_fifo_and_evenly_spaced(make_pool: PoolFactory) -> None:
    clock = FakeClock(advancing=False)  # all callers arrive at once; each reserves the next slot
    pool = make_pool(clock, requests_per_minute=600)
    starts = [pool.acquire().start for _ in range(10)]
    assert starts == sorted(starts)
    assert [round(b - a, 6) for a, b in zip(starts, starts[1:], strict=False)] == [0.1] * 9
    assert clock.slept == pytest.approx([0.1 * i for i in range(1, 10)])


@pytest.mark.parametrize(("actual", "expected_next"), [(20, 2.0), (100, 10.0), (200, 20.0), (None, 10.0)])
def test_settle_corrects_the_token_estimate(
    make_pool: PoolFactory, actual: int | None, expected_next: float
) -> None:
    clock = FakeClock(advancing=False)
    pool = make_pool(clock, tokens_per_minute=600)  # 10 tokens/s
    t0 = clock()
    pool.acquire(100).settle(actual)
    assert pool.acquire(100).start - t0 == pytest.approx(expected_next)


def test_settle_is_idempotent(make_pool: PoolFactory) -> None:
    clock = FakeClock(advancing=False)
    pool = make_pool(clock, tokens_per_minute=600, max_concurrency=1, lease_seconds=1000)
    t0 = clock()
    permit = pool.acquire(100)
    permit.settle(20)
    permit.settle(0)  # ignored: no second refund, no second release
    assert permit.settled
    nxt = pool.acquire(100)
    assert nxt.start - t0 == pytest.approx(2.0)
    clock.advancing = True  # slot waits poll through the fake sleep
    with pytest.raises(PoolTimeout):
        pool.acquire(0, timeout=5)  # the one slot is held by `nxt`


def test_estimate_above_the_whole_budget_is_clamped_not_deadlocked(make_pool: PoolFactory) -> None:
    clock = FakeClock(advancing=False)
    pool = make_pool(clock, tokens_per_minute=600)
    t0 = clock()
    big = pool.acquire(10**6)
    assert big.tokens == 600 and big.start == t0
    assert pool.acquire(10).start - t0 == pytest.approx(60.0)


def test_timeout_does_not_consume_budget(make_pool: PoolFactory) -> None:
    clock = FakeClock(advancing=False)
    pool = make_pool(clock, requests_per_minute=6)  # one per 10 s
    t0 = clock()
    pool.acquire()
    with pytest.raises(PoolTimeout):
        pool.acquire(timeout=5)
    assert pool.acquire(timeout=10).start - t0 == pytest.approx(10.0)


def test_tightened_settings_only_lower(make_pool: PoolFactory) -> None:
    clock = FakeClock(advancing=False)
    base = make_pool(clock, requests_per_minute=600).settings
    assert base.tightened(requests_per_minute=1200).requests_per_minute == 600
    tight = base.tightened(requests_per_minute=300, max_concurrency=2)
    assert (tight.requests_per_minute, tight.max_concurrency) == (300, 2)
    pool = make_pool(clock, requests_per_minute=tight.requests_per_minute)
    starts = [pool.acquire().start for _ in range(3)]
    assert starts[2] - starts[0] == pytest.approx(0.4)


def test_throttled_delays_every_pool_on_the_key(make_pool: PoolFactory) -> None:
    clock = FakeClock(advancing=False)
    first = make_pool(clock, requests_per_minute=6000)
    other = make_pool(clock, key=first.settings.key, requests_per_minute=6000)
    t0 = clock()
    first.throttled()
    assert other.acquire().start == pytest.approx(t0 + 0.5)
    first.throttled()  # still inside the pause: a late 429 from an older call, no escalation
    clock.now = t0 + 1.0
    other.throttled()  # after the pause ended: doubles
    assert first.acquire().start == pytest.approx(t0 + 2.0)
    clock.now = t0 + 2.5
    first.throttled()
    assert other.acquire().start == pytest.approx(t0 + 4.5)
    clock.now = t0 + 100  # a quiet period resets it
    other.throttled()
    assert first.acquire().start == pytest.approx(t0 + 100.5)


def test_penalty_caps_at_eight_seconds(make_pool: PoolFactory) -> None:
    clock = FakeClock(advancing=False)
    pool = make_pool(clock, requests_per_minute=6000)
    steps = []
    for _ in range(7):
        before = clock()
        pool.throttled()
        clock.now = pool.acquire().start
        steps.append(round(clock.now - before, 6))
    assert steps == [0.5, 1, 2, 4, 8, 8, 8]


def test_concurrency_slot_released_by_settle(make_pool: PoolFactory) -> None:
    clock = FakeClock()
    pool = make_pool(clock, max_concurrency=2, lease_seconds=60)
    a, b = pool.acquire(), pool.acquire()
    with pytest.raises(PoolTimeout):
        pool.acquire(timeout=1)
    a.settle()
    c = pool.acquire(timeout=1)
    with pytest.raises(PoolTimeout):
        pool.acquire(timeout=1)
    b.settle()
    c.settle()
    pool.acquire(timeout=0).settle()


def test_expired_lease_reclaims_a_crashed_holders_slot(make_pool: PoolFactory) -> None:
    clock = FakeClock()
    pool = make_pool(clock, max_concurrency=1, lease_seconds=5)
    pool.acquire()  # never settled: its holder "crashed"
    t0 = clock()
    with pytest.raises(PoolTimeout):
        pool.acquire(timeout=2)
    permit = pool.acquire(timeout=10)  # waits (polling the fake clock) until the lease runs out
    assert 5 - 1e-6 <= permit.start - t0 + 0 <= 5.1
    permit.settle()


def test_slot_is_taken_before_the_rate(make_pool: PoolFactory) -> None:
    clock = FakeClock()
    pool = make_pool(clock, max_concurrency=1, requests_per_minute=60, lease_seconds=100)
    t0 = clock()
    held = pool.acquire()
    with pytest.raises(PoolTimeout):
        pool.acquire(timeout=3)  # waited for the slot: no rate slot was booked meanwhile
    clock.now = t0 + 30
    held.settle()
    assert pool.acquire(timeout=0).start == pytest.approx(t0 + 30)
