"""Connection settings: every malformed extra fails with a message naming the field, and every
view of the settings table (parser, connection form, README) lists the same fields."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from airflow_dify.client.errors import DifyConfigError
from airflow_dify.get_provider_info import CONN_FIELDS
from airflow_dify.settings import KNOWN_EXTRAS, SETTINGS, ConnectionSettings, markdown_table, parse_settings

URL = "https://dify.example.com/v1"
KEY = "app-XYZ0123456789abcdefghijk"
README = Path(__file__).resolve().parents[1] / "README.md"


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


@pytest.mark.parametrize("pasted", [f"Bearer {KEY}", f"  {KEY}\n", f" bearer '{KEY}' ", f'"{KEY}"'])
def test_pool_key_comes_from_the_normalised_key(pasted: str) -> None:
    plain = parse_settings(URL, KEY, {})
    other = parse_settings(URL, "app-" + "Q" * 24, {})
    assert parse_settings(URL, pasted, {}).api_key == KEY
    assert parse_settings(URL, pasted, {}).pool_settings().key == plain.pool_settings().key
    assert other.pool_settings().key != plain.pool_settings().key


def test_extras_named_like_standard_fields_do_not_override_them() -> None:
    s = parse_settings(URL, KEY, {"host": "https://elsewhere.example/v1", "password": "app-other"})
    assert (s.base_url, s.api_key) == (URL, KEY)
    assert s.unknown_extras == ("host", "password")


def test_odd_keys_parse_and_are_checked_only_when_used() -> None:
    assert parse_settings(URL, "k", {}).api_key == "k"
    assert parse_settings(URL, "Bearer ", {}).api_key is None
    assert parse_settings(URL, None, {}).api_key is None


def test_oauth2_fields_are_normalised_once() -> None:
    extra = {
        "auth_type": " OAuth2 ",
        "token_url": " https://idp.example.com/oauth2/token/ ",
        "client_id": " airflow ",
        "client_secret": " s3cret\n",
        "scope": " dify.run ",
    }
    s = parse_settings(URL, None, extra)
    assert (s.auth_type, s.token_url, s.client_id, s.client_secret, s.scope) == (
        "oauth2",
        "https://idp.example.com/oauth2/token",
        "airflow",
        "s3cret",
        "dify.run",
    )
    assert s.secrets == ["s3cret"] and "s3cret" not in repr(s)
    moved = parse_settings(URL, None, {**extra, "token_url": "https://idp.example.com/oauth2/token"})
    assert moved.pool_settings().key == s.pool_settings().key
    # Unused OAuth2 fields under api_key are not checked: a leftover must not break the connection.
    assert parse_settings(URL, KEY, {"token_url": "not a url"}).token_url == "not a url"


def test_token_url_with_credentials_is_refused_without_echoing_them() -> None:
    extra = {"auth_type": "oauth2", "client_id": "a", "client_secret": "b"}
    with pytest.raises(DifyConfigError, match="'token_url' must not contain credentials") as exc:
        parse_settings(URL, None, {**extra, "token_url": "https://u:pw-secret@idp.example.com/t"})
    assert "pw-secret" not in str(exc.value)


def test_every_setting_maps_to_an_attribute_and_secrets_stay_out_of_repr() -> None:
    fields = {f.name: f for f in dataclasses.fields(ConnectionSettings)}
    assert {s.key for s in SETTINGS} | {"unknown_extras"} == set(fields)
    for s in SETTINGS:
        assert fields[s.key].repr is not s.secret, s.name
        assert s.label and s.help, s.name


def _readme_connection_table() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## The `dify` connection", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|")) + "\n"


def test_form_parser_and_readme_list_the_same_fields() -> None:
    table = _readme_connection_table()
    rows = [line.split("|")[1] for line in table.splitlines()[2:]]
    readme = {m.group(1) for cell in rows if (m := re.search(r"`(\w+)`", cell))}
    assert len(readme) == len(rows), rows
    assert set(CONN_FIELDS) == KNOWN_EXTRAS
    assert readme == KNOWN_EXTRAS | {"host", "password"}
    assert table == markdown_table(), "README table is stale: run python -m airflow_dify.settings"
