"""Helpers for the client tests: a fast retry policy and a pool that counts calls."""

from __future__ import annotations

import threading
from typing import Any

from airflow_dify.client import DifyClient, DifyResult, RetryPolicy
from airflow_dify.client.async_client import AsyncDifyClient
from airflow_dify.client.loop import LoopThread
from airflow_dify.limits.base import PoolSettings

#: Real back-off shape, tiny waits: retry tests stay fast but still sleep between attempts.
FAST = RetryPolicy(max_attempts=5, max_elapsed=30.0, initial_wait=0.01, max_wait=0.05)


class CountingPermit:
    def __init__(self, pool: CountingPool) -> None:
        self.pool = pool

    def settle(self, actual_tokens: int | None = None) -> None:
        with self.pool.lock:
            self.pool.settled.append(actual_tokens)


class CountingPool:
    """Records acquire/settle/throttled calls to prove the client uses one permit per attempt."""

    def __init__(self) -> None:
        self.settings = PoolSettings(key="counting")
        self.lock = threading.Lock()
        self.acquired: list[int] = []
        self.settled: list[int | None] = []
        self.throttles = 0

    def acquire(self, tokens: int = 0, *, timeout: float | None = None) -> CountingPermit:
        with self.lock:
            self.acquired.append(tokens)
        return CountingPermit(self)

    def throttled(self) -> None:
        with self.lock:
            self.throttles += 1

    def close(self) -> None:
        return None


class AsyncDriven:
    """A DifyClient whose generation calls run on its :class:`AsyncDifyClient` twin, driven from
    sync test bodies through a loop thread: one test body checks both clients' behaviour.

    Lookups the async client does not have (info, parameters, feedback, uploads) stay sync.
    """

    def __init__(self, sync: DifyClient) -> None:
        self.sync = sync
        self.loop = LoopThread("test-client")
        self.aclient = AsyncDifyClient.twin(sync)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sync, name)

    def call(self, family: str, **kwargs: Any) -> DifyResult:
        return self.loop.run(self.aclient.call(family, **kwargs))

    def chat(
        self,
        query: str,
        inputs: dict[str, Any] | None = None,
        *,
        user: str,
        conversation_id: str | None = None,
        response_mode: str = "blocking",
        trace_id: str | None = None,
    ) -> DifyResult:
        return self.call(
            "chat",
            query=query,
            inputs=inputs,
            user=user,
            conversation_id=conversation_id,
            response_mode=response_mode,
            trace_id=trace_id,
        )

    def complete(
        self,
        inputs: dict[str, Any] | None = None,
        *,
        user: str,
        query: str | None = None,
        response_mode: str = "blocking",
        trace_id: str | None = None,
    ) -> DifyResult:
        return self.call(
            "completion",
            inputs=inputs,
            user=user,
            query=query,
            response_mode=response_mode,
            trace_id=trace_id,
        )

    def run_workflow(
        self,
        inputs: dict[str, Any] | None = None,
        *,
        user: str,
        workflow_id: str | None = None,
        response_mode: str = "blocking",
        trace_id: str | None = None,
    ) -> DifyResult:
        return self.call(
            "workflow",
            inputs=inputs,
            user=user,
            workflow_id=workflow_id,
            response_mode=response_mode,
            trace_id=trace_id,
        )

    def get_workflow_run(self, run_id: str) -> DifyResult:
        return self.loop.run(self.aclient.get_workflow_run(run_id))

    def close(self) -> None:
        if not self.loop.loop.is_closed():
            self.loop.run(self.aclient.aclose())
            self.loop.close()
        self.sync.close()

    def __enter__(self) -> AsyncDriven:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client_class(engine: str) -> Any:
    """``DifyClient`` itself, or a constructor of the same signature for its async-driven twin."""
    if engine == "sync":
        return DifyClient
    return lambda *args, **kwargs: AsyncDriven(DifyClient(*args, **kwargs))
