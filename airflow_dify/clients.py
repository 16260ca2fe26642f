"""From connection settings to the objects that use them: auth, client, rate-limit pool.

Airflow-free, so the hook, the ``doctor`` command and plain scripts build them the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from airflow_dify.client import ApiKeyAuth, DifyClient, OAuth2ClientCredentials, RetryPolicy
from airflow_dify.limits import RateLimitPool, open_pool
from airflow_dify.settings import ConnectionSettings

#: Called with every secret value a client learns at run time (OAuth2 access tokens).
OnSecret = Callable[[str], None]


def auth_for(
    settings: ConnectionSettings, on_token: OnSecret | None = None
) -> ApiKeyAuth | OAuth2ClientCredentials:
    """The connection's credential: its app key, or an OAuth2 client-credentials token source."""
    s = settings
    if s.auth_type == "oauth2":
        # parse_settings refuses oauth2 without these; the assert tells the type checker.
        assert s.token_url and s.client_id and s.client_secret
        return OAuth2ClientCredentials(
            s.token_url,
            s.client_id,
            s.client_secret,
            scope=s.scope,
            audience=s.audience,
            client_auth=s.client_auth,
            timeout=(s.connect_timeout, min(s.timeout, 60.0)),
            verify_ssl=s.verify_ssl,
            on_token=on_token,
        )
    return ApiKeyAuth(s.api_key)


def client_for(
    settings: ConnectionSettings,
    *,
    pool: RateLimitPool | None = None,
    pool_size: int | None = None,
    max_attempts: int | None = None,
    resend_maybe_billed: bool = False,
    on_token: OnSecret | None = None,
) -> DifyClient:
    """A new client whose every generation attempt draws on ``pool``.

    ``resend_maybe_billed`` is off by default: after a timeout or 504 Dify may still be running
    (and billing) the request, so it is reported instead of paid for twice.
    """
    s = settings
    retry = RetryPolicy(max_attempts=max_attempts or s.max_attempts, resend_maybe_billed=resend_maybe_billed)
    return DifyClient(
        s.base_url,
        auth_for(s, on_token),
        timeout=(s.connect_timeout, s.timeout),
        verify_ssl=s.verify_ssl,
        pool_size=pool_size or max(s.max_concurrency or 0, 16),
        retry=retry,
        pool=pool,
    )


def pool_for(
    settings: ConnectionSettings,
    *,
    max_concurrency: int | None = None,
    requests_per_minute: float | None = None,
    tokens_per_minute: int | None = None,
    pool_name: str | None = None,
    backend: str | None = None,
) -> RateLimitPool:
    """The connection's shared budget, optionally tightened (never loosened) by the caller."""
    pool_settings = settings.pool_settings(pool_name).tightened(
        max_concurrency=max_concurrency,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
    )
    return open_pool(backend or settings.rate_limit_backend, pool_settings)


__all__ = ["OnSecret", "auth_for", "client_for", "pool_for"]
