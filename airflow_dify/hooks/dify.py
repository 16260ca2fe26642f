"""DifyHook: an Airflow ``dify`` connection -> an authenticated DifyClient and a rate-limit pool."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from airflow_dify.client import (
    ApiKeyAuth,
    DifyClient,
    DifyError,
    OAuth2ClientCredentials,
    RetryPolicy,
)
from airflow_dify.client.errors import (
    DifyAuthError,
    DifyConfigError,
    DifyForbiddenError,
    DifyNotFoundError,
    DifyTransportError,
)
from airflow_dify.limits import open_pool
from airflow_dify.settings import EXTRAS, ConnectionSettings, parse_settings

if TYPE_CHECKING:
    from airflow_dify.client.models import AppInfo, DifyResult
    from airflow_dify.limits.base import RateLimitPool

# What the Test button says per failure, most specific class first: the user's next step, in words.
_TEST_ANSWERS: tuple[tuple[type[DifyError], str], ...] = (
    (DifyConfigError, "Connection settings are invalid: {message}"),
    (DifyAuthError, "Dify refused the credentials (401 {code}): {message}"),
    (DifyForbiddenError, "Dify forbids this app (403 {code}): {message}"),
    (DifyNotFoundError, "Wrong base URL (404): {message}"),
    (DifyTransportError, "Cannot reach {base_url}: {message}"),
)


class DifyHook(BaseHook):
    """Interact with a Dify app through its service API (``/v1``).

    :param dify_conn_id: Airflow connection of type ``dify``: host = API base URL with ``/v1``,
        password = the app API key (or ``auth_type: oauth2`` extras for a gateway).
    :param max_attempts: attempts per call, retries included (default: connection extra or 5).
    """

    conn_name_attr = "dify_conn_id"
    default_conn_name = "dify_default"
    conn_type = "dify"
    hook_name = "Dify"

    def __init__(
        self, dify_conn_id: str = default_conn_name, *, max_attempts: int | None = None, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.dify_conn_id = dify_conn_id
        self._max_attempts = max_attempts
        self._clients: list[DifyClient] = []

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The connection, parsed and normalised once; every other method reads these values."""
        conn = self.get_connection(self.dify_conn_id)
        extras = conn.extra_dejson or {}
        # Airflow masks the password and the extra JSON as a whole, not each extra value, nor the
        # normalised forms (a key pasted with "Bearer " is sent without it): mask both.
        raw = [conn.password, *(extras.get(s.name) for s in EXTRAS if s.secret)]
        for secret in raw:
            if isinstance(secret, str) and secret.strip():
                mask_secret(secret)
        settings = parse_settings(conn.host, conn.password, extras)
        for secret in settings.secrets:
            mask_secret(secret)
        if settings.unknown_extras:
            self.log.warning(
                "Connection %s: ignoring unknown extra field(s) %s",
                self.dify_conn_id,
                list(settings.unknown_extras),
            )
        return settings

    def _auth(self) -> ApiKeyAuth | OAuth2ClientCredentials:
        s = self.settings
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
                verify_ssl=s.verify_ssl,
                on_token=mask_secret,
            )
        return ApiKeyAuth(s.api_key)

    def get_pool(
        self,
        *,
        max_concurrency: int | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: int | None = None,
        pool_name: str | None = None,
        backend: str | None = None,
    ) -> RateLimitPool:
        """The connection's shared budget, optionally tightened (never loosened) by the caller."""
        pool_settings = self.settings.pool_settings(pool_name).tightened(
            max_concurrency=max_concurrency,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
        )
        return open_pool(backend or self.settings.rate_limit_backend, pool_settings)

    def get_client(
        self,
        *,
        pool: RateLimitPool | None = None,
        pool_size: int | None = None,
        resend_maybe_billed: bool = False,
    ) -> DifyClient:
        """A new client (own HTTP session) using ``pool`` for every attempt.

        ``resend_maybe_billed`` is off by default: after a timeout or 504 Dify may still be
        running (and billing) the request, so it is reported instead of paid for twice.
        """
        s = self.settings
        client = DifyClient(
            s.base_url,
            self._auth(),
            timeout=(s.connect_timeout, s.timeout),
            verify_ssl=s.verify_ssl,
            pool_size=pool_size or max(s.max_concurrency or 0, 16),
            retry=RetryPolicy(
                max_attempts=self._max_attempts or s.max_attempts, resend_maybe_billed=resend_maybe_billed
            ),
            pool=pool,
        )
        self._clients.append(client)
        return client

    @cached_property
    def client(self) -> DifyClient:
        return self.get_client()

    def get_conn(self) -> DifyClient:
        return self.client

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()

    # Thin conveniences for single calls from PythonOperator/@task code.
    def info(self) -> AppInfo:
        return self.client.info()

    def chat(self, query: str, inputs: dict[str, Any] | None = None, *, user: str, **kw: Any) -> DifyResult:
        return self.client.chat(query, inputs, user=user, **kw)

    def complete(self, inputs: dict[str, Any] | None = None, *, user: str, **kw: Any) -> DifyResult:
        return self.client.complete(inputs, user=user, **kw)

    def run_workflow(self, inputs: dict[str, Any] | None = None, *, user: str, **kw: Any) -> DifyResult:
        return self.client.run_workflow(inputs, user=user, **kw)

    def test_connection(self) -> tuple[bool, str]:
        """Backs the UI's Test button: GET /info (no tokens spent), answered in actionable words."""
        try:
            info = self.get_client().info()
        except DifyError as err:
            return False, self._explain(err)
        finally:
            self.close()
        return True, f"Connected to Dify app '{info.name}' (mode: {info.mode})."

    def _explain(self, err: DifyError) -> str:
        for kind, template in _TEST_ANSWERS:
            if isinstance(err, kind):
                # Only read settings where they parsed: a DifyConfigError may come from them.
                base_url = self.settings.base_url if kind is DifyTransportError else ""
                return template.format(code=err.code, message=err.message, base_url=base_url)
        return f"Dify answered an error: {err}"
