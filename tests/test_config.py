"""Connection settings: every malformed extra fails with a message naming the field."""

from __future__ import annotations

import pytest

from airflow_dify.client.errors import DifyConfigError
from airflow_dify.config import parse_settings

URL = "https://dify.example.com/v1"


def test_defaults_and_types_coerced() -> None:
    s = parse_settings(
        URL + "/",
        "app-abc",
        {"max_concurrency": "4", "requests_per_minute": 600, "verify_ssl": "false", "timeout": "30"},
    )
    assert s.base_url == URL
    assert s.auth_type == "api_key"
    assert (s.max_concurrency, s.requests_per_minute, s.verify_ssl, s.timeout) == (4, 600.0, False, 30.0)
    assert s.rate_limit_backend == "memory"
    assert "app-abc" not in repr(s)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"auth_type": "kerberos"}, "'auth_type' must be one of api_key, oauth2"),
        ({"app_mode": "agent"}, "'app_mode' must be one of chat, completion, workflow"),
        ({"max_concurrency": "many"}, "'max_concurrency' must be an integer"),
        ({"max_concurrency": 0}, "'max_concurrency' must be >= 1"),
        ({"requests_per_minute": True}, "'requests_per_minute' must be a number, got a boolean"),
        ({"verify_ssl": "perhaps"}, "'verify_ssl' must be true or false"),
        ({"scope": 5}, "'scope' must be a string"),
        ({"auth_type": "oauth2"}, "needs connection extra(s) token_url, client_id, client_secret"),
        (
            {"auth_type": "oauth2", "token_url": "ftp://x", "client_id": "a", "client_secret": "b"},
            "'token_url'",
        ),
        ({"client_auth": "mtls"}, "'client_auth' must be basic or body"),
    ],
)
def test_malformed_extras_name_the_field(extra: dict, needle: str) -> None:
    with pytest.raises(DifyConfigError) as exc:
        parse_settings(URL, "app-abc", extra)
    assert needle in str(exc.value)


@pytest.mark.parametrize("host", [None, "", "api.dify.ai/v1", "mailto:x"])
def test_bad_host(host: str | None) -> None:
    with pytest.raises(DifyConfigError, match="'host'"):
        parse_settings(host, "app-abc", None)


def test_extra_json_string_and_unknown_keys() -> None:
    s = parse_settings(URL, "k", '{"app_mode": "workflow", "colour": "blue"}')
    assert s.app_mode == "workflow"
    assert s.unknown_extras == ("colour",)
    with pytest.raises(DifyConfigError, match="not valid JSON"):
        parse_settings(URL, "k", "{nope")


def test_pool_key_is_per_app_and_secret_free() -> None:
    a = parse_settings(URL, "app-secretkey-1", {"max_concurrency": 3})
    b = parse_settings(URL + "/", "app-secretkey-1", {})
    c = parse_settings(URL, "app-secretkey-2", {})
    assert a.pool_settings().key == b.pool_settings().key != c.pool_settings().key
    assert "secretkey" not in a.pool_settings().key
    assert a.pool_settings("shared").key == "dify:shared"
    tight = a.pool_settings().tightened(max_concurrency=10, requests_per_minute=100)
    assert tight.max_concurrency == 3  # operator may not loosen the connection's limit
    assert tight.requests_per_minute == 100
