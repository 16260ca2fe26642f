"""DifyHook: an Airflow ``dify`` connection -> an authenticated DifyClient and a rate-limit pool."""

from __future__ import annotations

import json
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from airflow_dify.client import DifyClient, DifyError
from airflow_dify.client.errors import (
    DifyAuthError,
    DifyConfigError,
    DifyForbiddenError,
    DifyNotFoundError,
    DifyTransportError,
)
from airflow_dify.clients import client_for, pool_for
from airflow_dify.settings import EXTRAS, ConnectionSettings, parse_settings

if TYPE_CHECKING:
    from airflow_dify.client.models import AppInfo, DifyResult
    from airflow_dify.limits.base import RateLimitPool

_masked: set[int] = set()


def _extras(extra: str | None) -> dict[str, Any] | str:
    """The extra JSON as a dict; text that is not JSON goes to the parser, which names the error."""
    if not extra:
        return {}
    try:
        value = json.loads(extra)
    except ValueError:
        return extra
    return value if isinstance(value, dict) else extra


def mask_locally(secret: str) -> None:
    """Mask ``secret`` in this task's logs without ever printing it, once per process.

    Airflow's ``mask_secret`` also sends the value to the supervisor; the in-process supervisor of
    ``airflow dags test`` / ``airflow tasks test`` logs that message at DEBUG, secret included
    (task SDK 1.3, ``InProcessSupervisorComms.send``). There the task's own masker is the one that
    redacts output, so it is given the value directly; with a real supervisor (which omits the
    value from its DEBUG line) ``mask_secret`` is right and is used.
    """
    if not secret or hash(secret) in _masked:
        return
    _masked.add(hash(secret))
    try:
        from airflow.sdk._shared.secrets_masker import mask_secret as in_process
        from airflow.sdk.execution_time import task_runner
    except ImportError:  # another task SDK layout: the public call
        mask_secret(secret)
        return
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    if comms is not None and type(comms).__name__ == "InProcessSupervisorComms":
        in_process(secret)
    else:
        mask_secret(secret)


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
        # Not conn.extra_dejson: each call of it registers the extras for masking once more, and
        # the in-process supervisor prints every registration at DEBUG.
        extras = _extras(conn.extra)
        # Airflow masks the password and the extra JSON as a whole (when it fetches the connection),
        # not each extra value, nor the normalised forms (a key pasted with "Bearer " is sent
        # without it): those are masked here.
        raw = [extras.get(s.name) for s in EXTRAS if s.secret] if isinstance(extras, dict) else []
        settings = parse_settings(conn.host, conn.password, extras)
        for secret in [*raw, *settings.secrets]:
            if isinstance(secret, str) and secret.strip() and secret != conn.password:
                mask_locally(secret)
        if settings.unknown_extras:
            self.log.warning(
                "Connection %s: ignoring unknown extra field(s) %s",
                self.dify_conn_id,
                list(settings.unknown_extras),
            )
        return settings

    def get_pool(self, **limits: Any) -> RateLimitPool:
        """The connection's shared budget; ``limits`` are :func:`~airflow_dify.clients.pool_for`'s
        (``max_concurrency``, ``requests_per_minute``, ``tokens_per_minute``: tighten only;
        ``pool_name``, ``backend``)."""
        return pool_for(self.settings, **limits)

    def get_client(
        self,
        *,
        pool: RateLimitPool | None = None,
        pool_size: int | None = None,
        resend_maybe_billed: bool = False,
    ) -> DifyClient:
        """A new client (own connections) using ``pool`` for every attempt; see :func:`client_for`."""
        client = client_for(
            self.settings,
            pool=pool,
            pool_size=pool_size,
            max_attempts=self._max_attempts,
            resend_maybe_billed=resend_maybe_billed,
            on_token=mask_locally,
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
