"""Retry policy for Dify calls, built from small named tenacity strategies.

Dify's 429 carries no Retry-After, so we back off exponentially with full jitter (many workers
hitting one app's concurrency cap must not retry in lockstep); gateways that do send Retry-After
are honoured. A request that may already have run is only re-sent when the policy allows it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity
from tenacity import RetryAction, RetryCallState
from tenacity.wait import wait_base

from airflow_dify.client.errors import DifyError

log = logging.getLogger("airflow_dify.client")
T = TypeVar("T")
#: One generator for every back-off: seeding a new Random costs more than a successful call's retry
#: bookkeeping, and jitter needs no per-call state.
_JITTER = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried.

    :param max_attempts: attempts in total, the first one included.
    :param max_elapsed: no new attempt starts (and no sleep is begun) past this many seconds.
    :param initial_wait: back-off base in seconds; attempt n waits up to ``initial_wait * 2**(n-1)``.
    :param max_wait: cap for one wait, Retry-After included.
    :param resend_maybe_billed: re-send requests that may already have run (timeouts, 504, broken
        streams). True favours finishing the batch; False favours never paying twice.
    """

    max_attempts: int = 5
    max_elapsed: float = 300.0
    initial_wait: float = 1.0
    max_wait: float = 60.0
    resend_maybe_billed: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.max_elapsed <= 0 or self.initial_wait < 0 or self.max_wait < 0:
            raise ValueError("max_elapsed must be > 0; initial_wait and max_wait >= 0")

    def retrying(self, label: str) -> tenacity.Retrying:
        """The tenacity controller for calls named ``label`` in logs, built once and shared.

        Sharing is safe: tenacity keeps each run's state in its ``RetryCallState`` and per-thread
        storage, and a run nested in another on one thread (a workflow look-up inside a streamed
        attempt) only resets the informational ``statistics``.
        """
        return _controller(self, label)

    def async_retrying(self, label: str) -> tenacity.AsyncRetrying:
        """The asyncio twin of :meth:`retrying`: the same strategies, built once and shared.

        Use it by calling it (``await controller(fn)``), never with ``async for``: a call keeps its
        run's state in its own ``RetryCallState``, and tenacity's per-thread ``iter_state`` is only
        used inside ``iter()``, which never suspends with our (sync) strategies, so coroutines
        interleaving on one loop cannot see each other's state. ``async for`` keeps the run on
        the controller itself.
        """
        return _async_controller(self, label)


def _strategies(policy: RetryPolicy, label: str) -> dict[str, Any]:
    """One policy's tenacity strategies, for the sync and the asyncio controller alike."""
    return {
        "retry": retry_if_retryable(policy.resend_maybe_billed),
        "wait": wait_retry_after_or_backoff(policy.initial_wait, policy.max_wait),
        "stop": tenacity.stop_after_attempt(policy.max_attempts)
        | tenacity.stop_before_delay(policy.max_elapsed),
        "before_sleep": log_retry(label, policy.max_attempts),
        "reraise": True,
    }


@functools.lru_cache(maxsize=256)
def _controller(policy: RetryPolicy, label: str) -> tenacity.Retrying:
    return tenacity.Retrying(**_strategies(policy, label))


@functools.lru_cache(maxsize=256)
def _async_controller(policy: RetryPolicy, label: str) -> tenacity.AsyncRetrying:
    return tenacity.AsyncRetrying(**_strategies(policy, label))


NO_RETRY = RetryPolicy(max_attempts=1)


class retry_if_retryable(tenacity.retry_base):  # noqa: N801 - tenacity's naming style
    """Retry DifyErrors marked retryable; skip maybe-billed ones unless re-sending them is allowed."""

    def __init__(self, resend_maybe_billed: bool = True) -> None:
        self.resend_maybe_billed = resend_maybe_billed

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None or not outcome.failed:
            return False
        exc = outcome.exception()
        if not isinstance(exc, DifyError) or not exc.retryable:
            return False
        return self.resend_maybe_billed or not exc.maybe_billed


class wait_retry_after_or_backoff(wait_base):  # noqa: N801
    """The server's Retry-After (capped), else exponential back-off with full jitter."""

    def __init__(self, initial: float = 1.0, maximum: float = 60.0, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or _JITTER

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.maximum)
        ceiling = min(self.maximum, self.initial * 2 ** (retry_state.attempt_number - 1))
        return self._rng.uniform(0.0, ceiling)


def log_retry(label: str, max_attempts: int) -> Callable[[RetryCallState], None]:
    """One WARNING per retry; the error's summary is secret-free by construction."""

    def before_sleep(retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        sleep = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.warning(
            "%s attempt %d/%d failed (%s); retrying in %.1f s",
            label,
            retry_state.attempt_number,
            max_attempts,
            exc,
            sleep,
        )

    return before_sleep


def call_with_retries(policy: RetryPolicy, label: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` under ``policy``; the final failure is the last DifyError, counting the attempts."""
    for attempt in policy.retrying(label):
        with attempt:
            try:
                return fn()
            except DifyError as err:
                number = attempt.retry_state.attempt_number
                if err.attempts == number:
                    raise
                # A new error per counted attempt; its cause is the original cause, not a chain of copies.
                raise err.evolve(attempts=number) from err.__cause__
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


async def acall_with_retries(policy: RetryPolicy, label: str, fn: Callable[[], Awaitable[T]]) -> T:
    """:func:`call_with_retries` for a coroutine function, under the shared asyncio controller.

    The first attempt runs bare: a success (nearly every call of a batch) costs no retry
    bookkeeping. A failure is judged by the controller's own strategies in tenacity's order
    (retry?, wait, stop?, before_sleep, sleep), on one ``RetryCallState`` timed from the first
    attempt's start, so ``max_elapsed`` and the attempt count mean what they mean in the sync path.
    """
    started = time.monotonic()
    state: RetryCallState | None = None
    number = 0
    while True:
        number += 1
        try:
            return await fn()
        except DifyError as err:
            failure = err if err.attempts == number else err.evolve(attempts=number)
            cause = err.__cause__
        if state is None:  # the first failure: only now is the controller looked up
            controller = policy.async_retrying(label)
            state = RetryCallState(controller, fn, (), {})
            state.start_time = started
        state.attempt_number = number
        state.set_exception((type(failure), failure, failure.__traceback__))
        if not controller.retry(state):
            raise failure from cause
        state.upcoming_sleep = sleep = controller.wait(state)
        if controller.stop(state):
            raise failure from cause
        state.next_action = RetryAction(sleep)
        state.idle_for += sleep
        if controller.before_sleep is not None:
            controller.before_sleep(state)
        await asyncio.sleep(sleep)
        state.prepare_for_next_attempt()
