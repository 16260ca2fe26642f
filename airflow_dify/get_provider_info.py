"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

The connection form is declared the Airflow 3.2+ way (``conn-fields`` + ``ui-field-behaviour``):
the React UI renders it without WTForms, and ``/ui/connections/hook_meta`` serves it.
"""

from __future__ import annotations

from typing import Any

from airflow_dify import __version__


def _field(label: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"label": label, "description": description, "schema": schema}


def _str(**extra: Any) -> dict[str, Any]:
    return {"type": ["string", "null"], **extra}


def _int(**extra: Any) -> dict[str, Any]:
    return {"type": ["integer", "null"], **extra}


CONN_FIELDS: dict[str, dict[str, Any]] = {
    "auth_type": _field(
        "Auth type",
        "api_key (default): the app API key in the API key field. "
        "oauth2: client credentials against a gateway in front of Dify.",
        _str(enum=["api_key", "oauth2"], default="api_key"),
    ),
    "client_id": _field(
        "OAuth2 client ID", "Client ID for the client-credentials grant (oauth2 only).", _str()
    ),
    "client_secret": _field(
        "OAuth2 client secret",
        "Client secret for the client-credentials grant (oauth2 only).",
        _str(format="password"),
    ),
    "token_url": _field(
        "OAuth2 token URL",
        "Token endpoint of the gateway, e.g. https://idp.example.com/oauth2/token.",
        _str(format="url"),
    ),
    "scope": _field("OAuth2 scope", "Space-separated scopes to request (optional).", _str()),
    "audience": _field("OAuth2 audience", "Audience/resource to request the token for (optional).", _str()),
    "client_auth": _field(
        "OAuth2 client authentication",
        "basic (default): HTTP Basic header; body: client_id/client_secret in the form body.",
        _str(enum=["basic", "body"], default="basic"),
    ),
    "app_mode": _field(
        "App mode",
        "chat, completion or workflow. Empty: asked from Dify (GET /info) at run time.",
        _str(enum=["chat", "completion", "workflow"]),
    ),
    "timeout": _field(
        "Timeout (s)",
        "Read timeout per call. Blocking calls longer than ~60 s may hit a gateway 504: use streaming.",
        {"type": ["number", "null"], "minimum": 1, "default": 300},
    ),
    "verify_ssl": _field(
        "Verify TLS",
        "Verify the server certificate (turn off only for self-signed test setups).",
        {"type": ["boolean", "null"], "default": True},
    ),
    "max_concurrency": _field(
        "Max concurrency",
        "Concurrent calls to this app across all tasks sharing the pool.",
        _int(minimum=1),
    ),
    "requests_per_minute": _field(
        "Requests per minute",
        "Request budget per minute for this app (set ~5% under the real quota).",
        {"type": ["number", "null"], "minimum": 0},
    ),
    "tokens_per_minute": _field(
        "Tokens per minute",
        "Token budget per minute (estimated before a call, settled after).",
        _int(minimum=0),
    ),
    "rate_limit_backend": _field(
        "Rate-limit backend",
        "memory (one task), sqlite:////abs/path.db (tasks on one machine), "
        "redis://host:6379/0 (workers on many machines).",
        _str(default="memory"),
    ),
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-dify",
        "name": "Dify",
        "description": "Bulk LLM calls against Dify apps: SQL rows in, answers, usage and cost out.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Dify",
                "external-doc-url": "https://docs.dify.ai/",
                "tags": ["software"],
            }
        ],
        "hooks": [{"integration-name": "Dify", "python-modules": ["airflow_dify.hooks.dify"]}],
        "operators": [{"integration-name": "Dify", "python-modules": ["airflow_dify.operators.dify"]}],
        "connection-types": [
            {
                "connection-type": "dify",
                "hook-class-name": "airflow_dify.hooks.dify.DifyHook",
                "hook-name": "Dify",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "API base URL", "password": "API key"},
                    "placeholders": {
                        "host": "https://api.dify.ai/v1",
                        "password": "app-xxxxxxxxxxxxxxxxxxxxxxxx",
                        "extra": '{"max_concurrency": 8, "requests_per_minute": 600}',
                    },
                },
                "conn-fields": CONN_FIELDS,
            }
        ],
    }
