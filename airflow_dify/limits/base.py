"""The rate-limit pool contract shared by the client, the batch engine and every backend.

A *permit* is one concurrency slot + one request + an estimated token count, reserved together.
The caller holds it for exactly one HTTP attempt, then ``settle()``s it with the tokens the call
really used (the estimate is corrected) and the slot goes back. Retries take a new permit, so they
spend from the same budget as first attempts.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Protocol

from airflow_dify.errors import AirflowDifyError


class PoolError(AirflowDifyError, RuntimeError):
    """The pool cannot be used (bad backend URL, backend unreachable)."""


class PoolTimeout(PoolError):
    """No permit could be granted within the caller's timeout."""


@dataclass(frozen=True)
class PoolSettings:
    """Limits of one budget. ``None`` means unlimited for that dimension."""

    key: str
    max_concurrency: int | None = None
    requests_per_minute: float | None = None
    tokens_per_minute: int | None = None
    #: A concurrency slot held longer than this is presumed dead (crashed worker) and reclaimed.
    lease_seconds: float = 900.0

    def tightened(
        self,
        *,
        max_concurrency: int | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: int | None = None,
    ) -> PoolSettings:
        """Operator arguments may only lower the connection's limits, never raise them."""

        def lower(base, new):
            if new is None:
                return base
            return new if base is None else min(base, new)

        return PoolSettings(
            key=self.key,
            max_concurrency=lower(self.max_concurrency, max_concurrency),
            requests_per_minute=lower(self.requests_per_minute, requests_per_minute),
            tokens_per_minute=lower(self.tokens_per_minute, tokens_per_minute),
            lease_seconds=self.lease_seconds,
        )


class Permit(Protocol):
    def settle(self, actual_tokens: int | None = None) -> None:
        """Release the slot; charge ``actual_tokens`` instead of the estimate (None: keep it)."""


class RateLimitPool(Protocol):
    settings: PoolSettings

    def acquire(self, tokens: int = 0, *, timeout: float | None = None) -> Permit:
        """Block until a slot, a request and ``tokens`` are free, FIFO. Raises PoolTimeout."""

    def throttled(self) -> None:
        """Dify said 429 too_many_requests: slow the whole pool (all threads/processes) briefly."""

    def close(self) -> None: ...


def derive_pool_key(base_url: str, credential: str) -> str:
    """Same app -> same budget: a hash of base URL + key (or OAuth2 client), never the secret itself."""
    digest = hashlib.sha256(f"{base_url.rstrip('/')}\0{credential}".encode()).hexdigest()
    return f"dify:{digest[:24]}"


async def acquire_permit(pool: RateLimitPool, tokens: int = 0, *, timeout: float | None = None) -> Permit:
    """``pool.acquire`` for a coroutine: the pool's own ``acquire_async`` (memory, SQLite, Redis),
    else the sync acquire in a worker thread (a pool from elsewhere, a test double)."""
    own = getattr(pool, "acquire_async", None)
    if own is not None:
        permit: Permit = await own(tokens, timeout=timeout)
        return permit
    return await asyncio.to_thread(pool.acquire, tokens, timeout=timeout)


async def settle_permit(permit: Permit, actual_tokens: int | None = None) -> None:
    """``permit.settle`` without blocking the loop on a store round trip (SQLite, Redis)."""
    own = getattr(permit, "settle_async", None)
    if own is not None:
        await own(actual_tokens)
    else:
        permit.settle(actual_tokens)


async def report_throttled(pool: RateLimitPool) -> None:
    """``pool.throttled`` without blocking the loop on a store round trip."""
    own = getattr(pool, "throttled_async", None)
    if own is not None:
        await own()
    else:
        pool.throttled()


class _NullPermit:
    __slots__ = ()

    def settle(self, actual_tokens: int | None = None) -> None:
        return None


class UnlimitedPool:
    """No limits at all: used when no setting is given (one attribute check per call)."""

    _PERMIT = _NullPermit()

    def __init__(self, settings: PoolSettings | None = None) -> None:
        self.settings = settings or PoolSettings(key="unlimited")

    def acquire(self, tokens: int = 0, *, timeout: float | None = None) -> Permit:
        return self._PERMIT

    async def acquire_async(self, tokens: int = 0, *, timeout: float | None = None) -> Permit:
        return self._PERMIT

    def throttled(self) -> None:
        return None

    def close(self) -> None:
        return None
