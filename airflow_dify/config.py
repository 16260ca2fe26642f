"""Connection settings: parsed and validated once, with errors that name the field at fault.

Airflow-free so it is unit-testable and reusable from a plain script; the hook feeds it the
Airflow connection's host, password and extras.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_dify.client.errors import DifyConfigError
from airflow_dify.limits.base import PoolSettings, derive_pool_key

AUTH_TYPES = ("api_key", "oauth2")
APP_MODES = ("chat", "completion", "workflow")
KNOWN_EXTRAS = frozenset(
    {
        "auth_type",
        "client_id",
        "client_secret",
        "token_url",
        "scope",
        "audience",
        "client_auth",
        "app_mode",
        "timeout",
        "verify_ssl",
        "max_concurrency",
        "requests_per_minute",
        "tokens_per_minute",
        "rate_limit_backend",
        "connect_timeout",
        "max_attempts",
    }
)


@dataclass(frozen=True)
class ConnectionSettings:
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    auth_type: str = "api_key"
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    token_url: str | None = None
    scope: str | None = None
    audience: str | None = None
    client_auth: str = "basic"
    app_mode: str | None = None
    timeout: float = 300.0
    connect_timeout: float = 10.0
    verify_ssl: bool = True
    max_attempts: int = 5
    max_concurrency: int | None = None
    requests_per_minute: float | None = None
    tokens_per_minute: int | None = None
    rate_limit_backend: str = "memory"
    unknown_extras: tuple[str, ...] = ()

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.api_key, self.client_secret) if s]

    def pool_settings(self, name: str | None = None) -> PoolSettings:
        """Same app -> same budget: the key hashes base URL + credential identity, unless named."""
        if name:
            key = f"dify:{name}"
        else:
            ident = self.api_key if self.auth_type == "api_key" else f"{self.token_url}|{self.client_id}"
            key = derive_pool_key(self.base_url, ident or "")
        return PoolSettings(
            key=key,
            max_concurrency=self.max_concurrency,
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
        )


def _bad(name: str, problem: str) -> DifyConfigError:
    return DifyConfigError(f"connection extra '{name}' {problem}", code="config_error")


def _opt_str(extras: dict[str, Any], name: str) -> str | None:
    value = extras.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad(name, f"must be a string, got {type(value).__name__}")
    return value.strip() or None


def _opt_number(extras: dict[str, Any], name: str, *, integer: bool, minimum: float) -> Any:
    value = extras.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _bad(name, "must be a number, got a boolean")
    try:
        number = float(value) if not integer else int(str(value).strip())
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise _bad(name, f"must be {kind}, got {value!r}") from None
    if number < minimum:
        raise _bad(name, f"must be >= {minimum:g}, got {number}")
    return number


def _opt_bool(extras: dict[str, Any], name: str, default: bool) -> bool:
    value = extras.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (
        "true",
        "1",
        "yes",
        "on",
        "false",
        "0",
        "no",
        "off",
    ):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise _bad(name, f"must be true or false, got {value!r}")


def validate_url(url: str | None, setting: str = "host", example: str = "https://api.dify.ai/v1") -> str:
    """A usable http(s) URL; the /v1 suffix is hinted by the client, not enforced (gateways differ)."""
    if not url or not url.strip():
        raise DifyConfigError(
            f"connection '{setting}' is empty: set it to e.g. {example}", code="config_error"
        )
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DifyConfigError(
            f"connection '{setting}' must be an http(s) URL like {example}, got {url!r}", code="config_error"
        )
    return url


def parse_settings(
    host: str | None, password: str | None, extra: str | dict[str, Any] | None
) -> ConnectionSettings:
    """Build settings from an Airflow-style connection (host, password, extra JSON)."""
    if isinstance(extra, str):
        try:
            extras = json.loads(extra) if extra.strip() else {}
        except json.JSONDecodeError as exc:
            raise DifyConfigError(
                f"connection extra is not valid JSON ({exc.msg})", code="config_error"
            ) from None
    else:
        extras = dict(extra or {})
    if not isinstance(extras, dict):
        raise DifyConfigError("connection extra must be a JSON object", code="config_error")

    auth_type = (_opt_str(extras, "auth_type") or "api_key").lower()
    if auth_type not in AUTH_TYPES:
        raise _bad("auth_type", f"must be one of {', '.join(AUTH_TYPES)}, got {auth_type!r}")
    app_mode = _opt_str(extras, "app_mode")
    if app_mode is not None and app_mode not in APP_MODES:
        raise _bad(
            "app_mode", f"must be one of {', '.join(APP_MODES)} (or empty to ask Dify), got {app_mode!r}"
        )
    client_auth = (_opt_str(extras, "client_auth") or "basic").lower()
    if client_auth not in ("basic", "body"):
        raise _bad("client_auth", f"must be basic or body, got {client_auth!r}")

    settings = ConnectionSettings(
        base_url=validate_url(host),
        api_key=password or None,
        auth_type=auth_type,
        client_id=_opt_str(extras, "client_id"),
        client_secret=_opt_str(extras, "client_secret"),
        token_url=_opt_str(extras, "token_url"),
        scope=_opt_str(extras, "scope"),
        audience=_opt_str(extras, "audience"),
        client_auth=client_auth,
        app_mode=app_mode,
        timeout=_opt_number(extras, "timeout", integer=False, minimum=0.001) or 300.0,
        connect_timeout=_opt_number(extras, "connect_timeout", integer=False, minimum=0.001) or 10.0,
        verify_ssl=_opt_bool(extras, "verify_ssl", True),
        max_attempts=_opt_number(extras, "max_attempts", integer=True, minimum=1) or 5,
        max_concurrency=_opt_number(extras, "max_concurrency", integer=True, minimum=1),
        requests_per_minute=_opt_number(extras, "requests_per_minute", integer=False, minimum=0) or None,
        tokens_per_minute=_opt_number(extras, "tokens_per_minute", integer=True, minimum=0) or None,
        rate_limit_backend=_opt_str(extras, "rate_limit_backend") or "memory",
        unknown_extras=tuple(sorted(set(extras) - KNOWN_EXTRAS)),
    )
    if auth_type == "oauth2":
        missing = [n for n in ("token_url", "client_id", "client_secret") if not getattr(settings, n)]
        if missing:
            raise DifyConfigError(
                f"auth_type 'oauth2' needs connection extra(s) {', '.join(missing)}", code="config_error"
            )
        validate_url(settings.token_url, "token_url", "https://idp.example.com/oauth2/token")
    return settings
