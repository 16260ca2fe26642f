"""Retry policy: tenacity controllers built once per policy, attempts counted on new errors."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from airflow_dify.client import DifyServerError, RetryPolicy
from airflow_dify.client.retry import acall_with_retries, call_with_retries

POLICY = RetryPolicy(max_attempts=3, initial_wait=0.0, max_wait=0.0)


def _failing(made: list[DifyServerError], fail_times: int, value: str = "ok"):
    def fn() -> str:
        if len(made) < fail_times:
            made.append(DifyServerError(f"fail {len(made) + 1}"))
            raise made[-1]
        return value

    return fn


def test_controller_is_built_once_per_policy_and_label() -> None:
    assert POLICY.retrying("chat") is POLICY.retrying("chat")
    assert RetryPolicy(max_attempts=3, initial_wait=0.0, max_wait=0.0).retrying("chat") is POLICY.retrying(
        "chat"
    )
    assert POLICY.retrying("info") is not POLICY.retrying("chat")


def test_final_error_counts_attempts_and_leaves_the_raised_ones_alone() -> None:
    made: list[DifyServerError] = []
    with pytest.raises(DifyServerError) as info:
        call_with_retries(POLICY, "chat", _failing(made, 5))
    assert info.value.attempts == 3 and info.value.message == "fail 3"
    assert [e.attempts for e in made] == [1, 1, 1]  # what fn raised was not patched
    assert info.value is not made[-1]


def test_success_after_failures() -> None:
    made: list[DifyServerError] = []
    assert call_with_retries(POLICY, "chat", _failing(made, 2)) == "ok"
    assert len(made) == 2


def test_a_call_nested_in_an_attempt_on_the_same_thread() -> None:
    """A workflow look-up inside a streamed attempt shares the controller without confusing it."""
    outer: list[DifyServerError] = []
    inner_results: list[str] = []

    def attempt() -> str:
        inner_results.append(call_with_retries(POLICY, "chat", _failing([], 2, "inner")))
        return _failing(outer, 2)()

    assert call_with_retries(POLICY, "chat", attempt) == "ok"
    assert inner_results == ["inner"] * 3 and len(outer) == 2


def test_threads_share_one_controller() -> None:
    barrier = threading.Barrier(8)

    def run(i: int) -> int:
        made: list[DifyServerError] = []
        barrier.wait(timeout=10)
        try:
            call_with_retries(POLICY, "chat", _failing(made, 1 if i % 2 else 5))
        except DifyServerError as err:
            return err.attempts
        return len(made) + 1

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(run, range(8))) == [3, 2] * 4


def test_async_controller_is_built_once_and_shares_the_strategies() -> None:
    controller = POLICY.async_retrying("chat")
    assert controller is POLICY.async_retrying("chat") and controller is not POLICY.async_retrying("info")
    sync = POLICY.retrying("chat")
    assert type(controller.retry) is type(sync.retry) and type(controller.wait) is type(sync.wait)


def test_coroutines_interleaving_on_one_loop_share_one_controller() -> None:
    """64 calls on one loop, each suspending inside every attempt and between them (back-off),
    keep their own attempt counts: the shared AsyncRetrying holds no per-call state."""
    policy = RetryPolicy(max_attempts=3, initial_wait=0.001, max_wait=0.002)

    async def one(i: int) -> int:
        made: list[DifyServerError] = []

        async def fn() -> str:
            await asyncio.sleep(0.001 * (i % 3))  # interleave attempts of different calls
            return _failing(made, 1 if i % 2 else 5)()

        try:
            await acall_with_retries(policy, "chat", fn)
        except DifyServerError as err:
            assert err.message == "fail 3"
            return err.attempts
        return len(made) + 1

    async def run_all() -> list[int]:
        return list(await asyncio.gather(*(one(i) for i in range(64))))

    assert asyncio.run(run_all()) == [3, 2] * 32
