"""The ``dify`` connection's settings: one table, parsed and normalised in one pass.

Every view of the connection derives from :data:`SETTINGS`: the parser here, :data:`KNOWN_EXTRAS`,
the Airflow connection form (``get_provider_info``) and the README's connection table
(:func:`markdown_table`), so a field cannot be accepted by one and missing from another. Values
leave :func:`parse_settings` normalised; callers use them as they are. Airflow-free: the hook feeds
it the connection's host, password and extras, and a plain script can do the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_dify.client.auth import clean_api_key
from airflow_dify.client.errors import DifyConfigError
from airflow_dify.client.urls import DIFY_URL_EXAMPLE, TOKEN_URL_EXAMPLE, normalize_base_url, normalize_url
from airflow_dify.limits.base import PoolSettings, derive_pool_key

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_OAUTH2 = ("auth_type", "oauth2")
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


@dataclass(frozen=True)
class Setting:
    """One connection field and every rule about it.

    :param source: where Airflow keeps it: ``host``, ``password`` or ``extra`` (a key of the extra JSON).
    :param attr: the :class:`ConnectionSettings` attribute, when it differs from ``name``.
    :param expected: wording of the choice error when "one of ..." would read worse.
    :param required_with: ``(setting, value)``: required, and normalised, only when that setting has
        that value (OAuth2 fields are ignored under ``api_key``).
    :param normalize: turns the stripped value into the one every caller uses; may raise.
    """

    name: str
    value_type: type
    label: str
    help: str
    default: Any = None
    source: str = "extra"
    attr: str = ""
    choices: tuple[str, ...] = ()
    expected: str = ""
    minimum: float | None = None
    required: bool = False
    required_with: tuple[str, str] | None = None
    secret: bool = False
    url: bool = False
    placeholder: str | None = None
    normalize: Callable[[Any], Any] | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return self.attr or self.name

    @property
    def json_type(self) -> str:
        return _JSON_TYPES[self.value_type]

    def bad(self, problem: str) -> DifyConfigError:
        where = "connection extra" if self.source == "extra" else "connection"
        return DifyConfigError(f"{where} '{self.name}' {problem}")


def _api_key(value: str | None) -> str | None:
    return clean_api_key(value) or None


def _token_url(value: object) -> str:
    return normalize_url(value, "token_url", TOKEN_URL_EXAMPLE)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "host",
        str,
        "API base URL",
        f"Dify API base URL including /v1, e.g. {DIFY_URL_EXAMPLE} or https://dify.internal/v1.",
        source="host",
        attr="base_url",
        required=True,
        url=True,
        placeholder=DIFY_URL_EXAMPLE,
        normalize=normalize_base_url,
    ),
    Setting(
        "password",
        str,
        "API key",
        "The app API key (app-...) for auth_type api_key. "
        "Surrounding whitespace, quotes and a pasted Bearer prefix are removed.",
        source="password",
        attr="api_key",
        secret=True,
        placeholder="app-xxxxxxxxxxxxxxxxxxxxxxxx",
        normalize=_api_key,
    ),
    Setting(
        "auth_type",
        str,
        "Auth type",
        "api_key (default): the app API key in the API key field. "
        "oauth2: client credentials against a gateway in front of Dify.",
        default="api_key",
        choices=("api_key", "oauth2"),
    ),
    Setting(
        "token_url",
        str,
        "OAuth2 token URL",
        f"Token endpoint of the gateway, e.g. {TOKEN_URL_EXAMPLE}.",
        required_with=_OAUTH2,
        url=True,
        normalize=_token_url,
    ),
    Setting(
        "client_id",
        str,
        "OAuth2 client ID",
        "Client ID for the client-credentials grant (oauth2 only).",
        required_with=_OAUTH2,
    ),
    Setting(
        "client_secret",
        str,
        "OAuth2 client secret",
        "Client secret for the client-credentials grant (oauth2 only).",
        required_with=_OAUTH2,
        secret=True,
    ),
    Setting("scope", str, "OAuth2 scope", "Space-separated scopes to request (optional)."),
    Setting("audience", str, "OAuth2 audience", "Audience/resource to request the token for (optional)."),
    Setting(
        "client_auth",
        str,
        "OAuth2 client authentication",
        "basic (default): HTTP Basic header; body: client_id/client_secret in the form body.",
        default="basic",
        choices=("basic", "body"),
        expected="basic or body",
    ),
    Setting(
        "app_mode",
        str,
        "App mode",
        "chat, completion or workflow. Empty: asked from Dify (GET /info) at run time.",
        choices=("chat", "completion", "workflow"),
        expected="one of chat, completion, workflow (or empty to ask Dify)",
    ),
    Setting(
        "timeout",
        float,
        "Timeout (s)",
        "Read timeout per call. Blocking calls longer than ~60 s may hit a gateway 504: use streaming.",
        default=300.0,
        minimum=0.001,
    ),
    Setting(
        "connect_timeout",
        float,
        "Connect timeout (s)",
        "Time allowed to open a connection to Dify before the attempt fails.",
        default=10.0,
        minimum=0.001,
    ),
    Setting(
        "verify_ssl",
        bool,
        "Verify TLS",
        "Verify the server certificate (turn off only for self-signed test setups).",
        default=True,
    ),
    Setting(
        "max_attempts",
        int,
        "Max attempts",
        "Attempts per call, retries of transient errors included (1: no retry).",
        default=5,
        minimum=1,
    ),
    Setting(
        "max_concurrency",
        int,
        "Max concurrency",
        "Concurrent calls to this app across all tasks sharing the pool.",
        minimum=1,
    ),
    Setting(
        "requests_per_minute",
        float,
        "Requests per minute",
        "Request budget per minute for this app (set ~5% under the real quota).",
        minimum=0,
    ),
    Setting(
        "tokens_per_minute",
        int,
        "Tokens per minute",
        "Token budget per minute (estimated before a call, settled after).",
        minimum=0,
    ),
    Setting(
        "rate_limit_backend",
        str,
        "Rate-limit backend",
        "memory (one task), sqlite:////abs/path.db (tasks on one machine), "
        "redis://host:6379/0 (workers on many machines).",
        default="memory",
    ),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
EXTRAS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.source == "extra")
KNOWN_EXTRAS: frozenset[str] = frozenset(s.name for s in EXTRAS)


@dataclass(frozen=True)
class ConnectionSettings:
    """A ``dify`` connection, normalised: one attribute per :data:`SETTINGS` entry (see there)."""

    base_url: str
    api_key: str | None = field(repr=False)
    auth_type: str
    token_url: str | None
    client_id: str | None
    client_secret: str | None = field(repr=False)
    scope: str | None
    audience: str | None
    client_auth: str
    app_mode: str | None
    timeout: float
    connect_timeout: float
    verify_ssl: bool
    max_attempts: int
    max_concurrency: int | None
    requests_per_minute: float | None
    tokens_per_minute: int | None
    rate_limit_backend: str
    unknown_extras: tuple[str, ...] = ()

    @property
    def secrets(self) -> list[str]:
        """Values to mask in logs: every secret setting that is set."""
        return [v for s in SETTINGS if s.secret and (v := getattr(self, s.key))]

    def pool_settings(self, name: str | None = None) -> PoolSettings:
        """Same app -> same budget: the key hashes base URL + credential identity, unless named.

        The identity is the normalised credential, so one key pasted two ways shares one budget.
        """
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


def _as_str(s: Setting, value: object) -> str | None:
    if not isinstance(value, str):
        raise s.bad(f"must be a string, got {type(value).__name__}")
    return value.strip() or None


def _as_number(s: Setting, value: Any) -> float | int:
    if isinstance(value, bool):
        raise s.bad("must be a number, got a boolean")
    try:
        number = int(str(value).strip()) if s.value_type is int else float(value)
    except (TypeError, ValueError):
        kind = "an integer" if s.value_type is int else "a number"
        raise s.bad(f"must be {kind}, got {value!r}") from None
    if s.minimum is not None and number < s.minimum:
        raise s.bad(f"must be >= {s.minimum:g}, got {number}")
    return number


def _as_bool(s: Setting, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise s.bad(f"must be true or false, got {value!r}")


def _coerce(s: Setting, value: object) -> Any:
    """The typed value, or the default when empty: None, blank, or 0 (budgets: 0 means unlimited)."""
    if value is None or value == "":
        return s.default
    if s.value_type is bool:
        return _as_bool(s, value)
    if s.value_type in (int, float):
        return _as_number(s, value) or s.default
    text = _as_str(s, value)
    if text is None:
        return s.default
    if s.choices:
        text = text.lower()
        if text not in s.choices:
            raise s.bad(f"must be {s.expected or 'one of ' + ', '.join(s.choices)}, got {text!r}")
    return text


def _in_use(s: Setting, values: dict[str, Any]) -> bool:
    return s.required_with is None or values[s.required_with[0]] == s.required_with[1]


def _load_extra(extra: str | dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(extra, str):
        try:
            extras = json.loads(extra) if extra.strip() else {}
        except json.JSONDecodeError as exc:
            raise DifyConfigError(f"connection extra is not valid JSON ({exc.msg})") from None
    else:
        extras = dict(extra or {})
    if not isinstance(extras, dict):
        raise DifyConfigError("connection extra must be a JSON object")
    return extras


def parse_settings(
    host: str | None, password: str | None, extra: str | dict[str, Any] | None
) -> ConnectionSettings:
    """Build normalised settings from an Airflow-style connection (host, password, extra JSON).

    Errors name the field at fault and never show a secret; unknown extras are reported in
    ``unknown_extras``, not refused (a typo should warn, not stop a pipeline).
    """
    extras = _load_extra(extra)
    fields = {"host": host, "password": password}
    values = {
        s.name: _coerce(s, extras.get(s.name) if s.source == "extra" else fields[s.source]) for s in SETTINGS
    }
    conditions = {s.required_with for s in SETTINGS if s.required_with}
    for condition in sorted(conditions):
        missing = [s.name for s in SETTINGS if s.required_with == condition and values[s.name] is None]
        if missing and values[condition[0]] == condition[1]:
            raise DifyConfigError(
                f"{condition[0]} '{condition[1]}' needs connection extra(s) {', '.join(missing)}"
            )
    for s in SETTINGS:
        if s.normalize and _in_use(s, values) and (s.required or values[s.name] is not None):
            values[s.name] = s.normalize(values[s.name])
    return ConnectionSettings(
        **{s.key: values[s.name] for s in SETTINGS},
        unknown_extras=tuple(sorted(set(extras) - KNOWN_EXTRAS)),
    )


def _type_cell(s: Setting) -> str:
    if s.choices:
        return ", ".join(f"`{c}`" for c in s.choices)
    kind = "URL" if s.url else "secret" if s.secret else s.json_type
    return kind if s.minimum is None else f"{kind} >= {s.minimum:g}"


def _default_cell(s: Setting) -> str:
    if s.required:
        return "required"
    if s.required_with:
        return f"required when `{s.required_with[0]}` is `{s.required_with[1]}`"
    if s.default is None:
        return ""
    if isinstance(s.default, str):
        return f"`{s.default}`"
    return f"`{str(s.default).lower()}`" if isinstance(s.default, bool) else f"`{s.default:g}`"


def markdown_table() -> str:
    """The README's connection table, one row per setting.

    Regenerate it with ``python -m airflow_dify.settings``; a test keeps the README in step.
    """
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        name = f"`{s.name}`" if s.source != "extra" else f"extra `{s.name}`"
        cells = (name, _type_cell(s), _default_cell(s), s.help.replace("|", "\\|"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
