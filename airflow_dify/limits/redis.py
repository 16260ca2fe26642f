"""Redis backend: workers on many machines share a budget.

Each grant, settle and 429 is ONE Lua script call (``gcra.lua``, EVALSHA with loading on first
use) that reads the Redis server clock, so worker clock skew does not matter: the script returns
how long to wait, and the worker sleeps that long on its own clock. Slots are a ZSET scored by
lease expiry (expired ones are dropped first); all keys carry a TTL so abandoned budgets vanish.
Redis unreachable at open -> :class:`PoolError` within ~2 s (fail closed: the task's own retries
decide what to do, no silent unlimited fallback).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import redis as redis_py
import redis.asyncio as redis_async
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from airflow_dify.limits.base import PoolError, PoolSettings
from airflow_dify.limits.penalty import PENALTY_FIRST, PENALTY_MAX, PENALTY_QUIET
from airflow_dify.limits.pool import Busy, Clock, Grant, ReservingPool, Sleep, poll_delay

CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 5.0
_LUA = resources.files(__package__).joinpath("gcra.lua").read_text(encoding="utf-8")


def redis_keys(pool_key: str) -> tuple[str, str]:
    """(state hash, slot zset); the ``{...}`` hash tag keeps both on one Redis Cluster node."""
    return f"airflow_dify:pool:{{{pool_key}}}:state", f"airflow_dify:pool:{{{pool_key}}}:slots"


def _where(url: str) -> str:
    """host:port/db for messages: the URL itself may hold a password."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


class RedisPool(ReservingPool):
    """Budget shared through Redis.

    :param url: ``redis://[user:password@]host:port/db`` or ``rediss://...``.
    :param settings: limits; ``settings.key`` names the Redis keys.
    :param clock: tests only: replaces the server clock inside the script (deterministic runs).
    :param sleep: defaults to ``time.sleep``.
    """

    def __init__(
        self, url: str, settings: PoolSettings, *, clock: Clock | None = None, sleep: Sleep | None = None
    ) -> None:
        super().__init__(settings, clock=clock or time.monotonic, sleep=sleep or time.sleep)
        self._fixed_clock = clock is not None
        self._where = _where(url)
        self._url = url
        self._common: dict[str, Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "socket_timeout": SOCKET_TIMEOUT_S,
        }
        common = self._common
        # The coroutine path's client, bound to the loop that first used it (redis.asyncio's rule).
        self._async: tuple[asyncio.AbstractEventLoop, redis_async.Redis, Any] | None = None
        self._keys = list(redis_keys(settings.key))
        try:
            # Probe without retries so an unreachable server fails in ~CONNECT_TIMEOUT_S, not N times.
            probe = redis_py.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **common)
            try:
                probe.ping()
            finally:
                probe.close()
            self._client = redis_py.Redis.from_url(
                url, retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2), **common
            )
        except (redis_py.RedisError, OSError, ValueError) as exc:
            raise PoolError(
                f"rate_limit_backend redis at {self._where} is unreachable: {type(exc).__name__}"
            ) from None
        self._script = self._client.register_script(_LUA)

    def _args(self, op: str, *args: str | int | float) -> list[str | int | float]:
        return [op, repr(self._clock()) if self._fixed_clock else "", *args]

    def _failed(self, exc: Exception) -> PoolError:
        return PoolError(f"rate_limit_backend redis at {self._where}: {type(exc).__name__}: {exc}")

    def _call(self, op: str, *args: str | int | float) -> list[str]:
        try:
            reply = self._script(keys=self._keys, args=self._args(op, *args))
        except redis_py.RedisError as exc:
            raise self._failed(exc) from None
        return _decoded(reply)

    async def _call_async(self, op: str, *args: str | int | float) -> list[str]:
        """The same script call on ``redis.asyncio``: one round trip, the loop keeps running."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            client = redis_async.Redis.from_url(
                self._url, retry=AsyncRetry(ExponentialBackoff(cap=0.2, base=0.02), 2), **self._common
            )
            self._async = (loop, client, client.register_script(_LUA))
        try:
            reply = await self._async[2](keys=self._keys, args=self._args(op, *args))
        except redis_py.RedisError as exc:
            raise self._failed(exc) from None
        return _decoded(reply)

    def _grant_args(self, tokens: int, max_wait: float) -> tuple[str, list[str | int | float]]:
        r, cap = self.rates, self.settings.max_concurrency
        slot_id = uuid.uuid4().hex if cap is not None else ""
        return slot_id, [
            repr(r.request_interval or 0.0),
            repr(r.token_interval or 0.0),
            repr(r.token_burst),
            tokens,
            repr(max_wait) if math.isfinite(max_wait) else "-1",
            cap or 0,
            repr(float(self.settings.lease_seconds)),
            slot_id,
        ]

    def _try_grant(self, tokens: int, max_wait: float) -> Grant | Busy | None:
        slot_id, args = self._grant_args(tokens, max_wait)
        return _outcome(slot_id, self._call("grant", *args))

    async def _try_grant_async(self, tokens: int, max_wait: float) -> Grant | Busy | None:
        slot_id, args = self._grant_args(tokens, max_wait)
        return _outcome(slot_id, await self._call_async("grant", *args))

    def _settle_args(self, slot_id: str | None, token_delta: int) -> list[str | int | float]:
        return [slot_id or "", repr(self.rates.token_interval or 0.0), token_delta]

    def _release(self, slot_id: str | None, token_delta: int) -> None:
        self._call("settle", *self._settle_args(slot_id, token_delta))

    async def _release_async(self, slot_id: str | None, token_delta: int) -> None:
        await self._call_async("settle", *self._settle_args(slot_id, token_delta))

    def _penalise(self) -> float:
        return float(self._call("throttle", PENALTY_FIRST, PENALTY_MAX, PENALTY_QUIET)[1])

    async def _penalise_async(self) -> float:
        return float((await self._call_async("throttle", PENALTY_FIRST, PENALTY_MAX, PENALTY_QUIET))[1])

    def _wait_for_slot(self, busy: Busy, seconds: float) -> None:
        self._sleep(poll_delay(seconds))

    async def aclose(self) -> None:
        held, self._async = self._async, None
        if held is not None:
            await held[1].aclose()

    def close(self) -> None:
        self._client.close()


def _decoded(reply: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in reply]


def _outcome(slot_id: str, reply: list[str]) -> Grant | Busy | None:
    status, value = reply
    if status == "busy":
        return Busy(float(value))
    if status == "late":
        return None
    return Grant(slot_id or None, float(value))
