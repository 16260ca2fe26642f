"""Retry policy: tenacity controllers built once per policy, attempts counted on new errors."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from airflow_dify.client import DifyServerError, RetryPolicy
from airflow_dify.client.errors import DifyError, DifyTimeoutError
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


def _error(policy: RetryPolicy, n: int) -> DifyError:
    """A plain server error, or (for a policy that keeps maybe-billed calls) a read timeout."""
    return DifyServerError(f"f{n}") if policy.resend_maybe_billed else DifyTimeoutError(f"timeout {n}")


@pytest.mark.parametrize(
    "policy, fail_times, slow",
    [
        (POLICY, 0, 0.0),  # the bare first attempt succeeds
        (POLICY, 2, 0.0),
        (POLICY, 5, 0.0),  # stop after max_attempts
        (RetryPolicy(max_attempts=9, initial_wait=0.0, max_wait=0.0, max_elapsed=0.05), 9, 0.03),
        (RetryPolicy(max_attempts=3, initial_wait=0.0, max_wait=0.0, resend_maybe_billed=False), 5, 0.0),
    ],
    ids=["first-try", "two-failures", "exhausted", "max-elapsed-from-first-start", "maybe-billed-kept"],
)
def test_async_retries_decide_as_the_sync_controller_does(
    policy: RetryPolicy, fail_times: int, slow: float, caplog: pytest.LogCaptureFixture
) -> None:
    """The asyncio path runs its first attempt outside tenacity: attempts, stops (max_elapsed counts
    the first attempt's time), what is not re-sent and the retry log must match the sync path."""
    import time

    def outcome(run: object) -> tuple[object, ...]:
        caplog.clear()
        try:
            value = run()  # type: ignore[operator]
        except DifyError as err:
            made = (type(err).__name__, err.attempts, err.message)
        else:
            made = ("ok", value)
        return (*made, [r.getMessage()[:30] for r in caplog.records])

    def sync_run() -> str:
        count = [0]

        def fn() -> str:
            time.sleep(slow)
            count[0] += 1
            if count[0] <= fail_times:
                raise _error(policy, count[0])
            return "ok"

        return call_with_retries(policy, "chat", fn)

    def async_run() -> str:
        count = [0]

        async def fn() -> str:
            await asyncio.sleep(slow)
            count[0] += 1
            if count[0] <= fail_times:
                raise _error(policy, count[0])
            return "ok"

        return asyncio.run(acall_with_retries(policy, "chat", fn))

    caplog.set_level("WARNING", logger="airflow_dify.client")
    expected = outcome(sync_run)
    assert outcome(async_run) == expected
    if fail_times and policy.max_elapsed < 1:
        assert expected[1] == 2  # 0.03 s + 0.03 s passes 0.05 s: the stop counted the first attempt
