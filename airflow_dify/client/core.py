"""What the sync and the asyncio client share: URL, auth, settings, retry policy, pool, contexts.

:class:`~airflow_dify.client.client.DifyClient` (hook, Test button, pre-flight, ``doctor``,
uploads) and :class:`~airflow_dify.client.async_client.AsyncDifyClient` (the batch engine's
generation calls) differ only in how they wait; their settings are read and normalised once, here.
"""

from __future__ import annotations

from typing import Any

from airflow_dify.client.auth import ApiKeyAuth, DifyAuth
from airflow_dify.client.responses import CallContext
from airflow_dify.client.retry import RetryPolicy
from airflow_dify.client.transport import USER_AGENT
from airflow_dify.client.urls import normalize_base_url
from airflow_dify.limits.base import RateLimitPool, UnlimitedPool


class ClientCore:
    """The settings both clients take (see :class:`~airflow_dify.client.client.DifyClient`)."""

    def __init__(
        self,
        base_url: str,
        auth: DifyAuth | str,
        *,
        timeout: float | tuple[float, float] = (10.0, 300.0),
        verify_ssl: bool = True,
        pool_size: int = 16,
        retry: RetryPolicy | None = None,
        pool: RateLimitPool | None = None,
        completion_token_estimate: int = 256,
        user_agent: str | None = None,
        stream_recovery_polls: int = 5,
        stream_recovery_interval: float = 2.0,
    ) -> None:
        self.auth: DifyAuth = ApiKeyAuth(auth) if isinstance(auth, str) or auth is None else auth
        self.base_url = normalize_base_url(base_url)
        #: What the client was built with: its asyncio twin (``AsyncDifyClient.twin``) takes the same.
        self.settings: dict[str, Any] = {
            "timeout": timeout,
            "verify_ssl": verify_ssl,
            "pool_size": pool_size,
            "retry": retry,
            "pool": pool,
            "completion_token_estimate": completion_token_estimate,
            "user_agent": user_agent,
            "stream_recovery_polls": stream_recovery_polls,
            "stream_recovery_interval": stream_recovery_interval,
        }
        self.timeout = timeout
        self.user_agent = user_agent or USER_AGENT
        self.retry = retry or RetryPolicy()
        self.pool: RateLimitPool = pool or UnlimitedPool()
        self.completion_token_estimate = int(completion_token_estimate)
        self.stream_recovery_polls = max(1, int(stream_recovery_polls))
        self.stream_recovery_interval = float(stream_recovery_interval)
        self._contexts: dict[str, CallContext] = {}

    def _ctx(self, endpoint: str, *, hint_base_url_on_404: bool = True) -> CallContext:
        ctx = self._contexts.get(endpoint)
        if ctx is None:
            ctx = CallContext(self.base_url, endpoint, self.auth.kind, hint_base_url_on_404)
            self._contexts[endpoint] = ctx
        return ctx


__all__ = ["ClientCore"]
