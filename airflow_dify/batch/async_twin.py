"""The engine's client: the batch client's async twin, built from the same settings.

A batch is handed one sync client (the hook built it from the connection: URL, auth, timeouts,
TLS, pool, retry policy); pre-flight, file uploads and chat recovery keep using it. The engine's
generation calls go through :class:`~airflow_dify.client.async_client.AsyncDifyClient` built
from that client's settings, so both draw on the same rate-limit pool and token cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from airflow_dify.batch.calls import SupportsAsyncCall, SupportsCall
from airflow_dify.batch.errors import PreflightError
from airflow_dify.client.async_client import AsyncDifyClient
from airflow_dify.client.client import DifyClient
from airflow_dify.client.environment import SOCKS_UNSUPPORTED, socks_proxy_for
from airflow_dify.client.models import DifyResult
from airflow_dify.limits.base import RateLimitPool

Closer = Callable[[], Awaitable[None]]


def async_client_for(client: SupportsCall, concurrency: int) -> tuple[SupportsAsyncCall, Closer]:
    """The async client for ``client`` and the coroutine that closes it (on the engine's loop).

    A :class:`DifyClient` gets its twin. Any other client (a test double, a wrapper someone wrote)
    keeps working: its sync ``call`` runs on a thread pool of ``concurrency`` threads (a thread
    per call in flight), so only DifyClient gets the event loop's gains.
    """
    if isinstance(client, DifyClient):
        twin = AsyncDifyClient.twin(client, pool_size=concurrency)
        pool = client.pool

        async def close() -> None:
            await twin.aclose()
            await _close_pool(pool)

        return twin, close
    threaded = ThreadedCalls(client, concurrency)
    return threaded, threaded.aclose


def check_transport(client: SupportsCall) -> None:
    """Before pre-flight: what the engine's transport cannot do fails the run, not every row."""
    if isinstance(client, DifyClient) and socks_proxy_for(client.base_url) is not None:
        raise PreflightError(f"{SOCKS_UNSUPPORTED}; no row was called")


async def _close_pool(pool: RateLimitPool) -> None:
    closer = getattr(pool, "aclose", None)
    if closer is not None:
        await closer()


class ThreadedCalls:
    """A sync client's ``call`` awaited through its own thread pool (not the loop's small default
    executor, which would cap the run's concurrency at a handful of calls)."""

    def __init__(self, client: SupportsCall, concurrency: int) -> None:
        self._client = client
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="dify-call")

    async def call(self, family: str, **kwargs: Any) -> DifyResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._client.call, family, **kwargs))

    async def aclose(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True)


__all__ = ["ThreadedCalls", "async_client_for", "check_transport"]
