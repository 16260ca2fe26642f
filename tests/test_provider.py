"""The provider as Airflow sees it: entry point, CLI listings, connection type, UI form metadata."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from importlib.metadata import distribution

import pytest

from airflow_dify.get_provider_info import CONN_FIELDS, get_provider_info

EXPECTED_EXTRAS = {
    "auth_type",
    "client_id",
    "client_secret",
    "token_url",
    "scope",
    "audience",
    "client_auth",
    "app_mode",
    "timeout",
    "connect_timeout",
    "verify_ssl",
    "max_attempts",
    "max_concurrency",
    "requests_per_minute",
    "tokens_per_minute",
    "rate_limit_backend",
}


def _airflow(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_entry_point_and_package_name_match_distribution() -> None:
    dist = distribution("airflow-provider-dify")
    eps = [ep for ep in dist.entry_points if ep.group == "apache_airflow_provider"]
    assert [ep.value for ep in eps] == ["airflow_dify.get_provider_info:get_provider_info"]
    info = eps[0].load()()
    assert info["package-name"] == dist.metadata["Name"]


def test_conn_fields_cover_every_extra_with_label_and_description() -> None:
    assert set(CONN_FIELDS) >= EXPECTED_EXTRAS
    for name, spec in CONN_FIELDS.items():
        assert spec["label"] and spec["description"], name
    assert CONN_FIELDS["client_secret"]["schema"]["format"] == "password"
    conn = get_provider_info()["connection-types"][0]
    assert conn["connection-type"] == "dify"
    assert conn["ui-field-behaviour"]["relabeling"] == {"host": "API base URL", "password": "API key"}


def test_cli_lists_provider_and_hook(airflow_db) -> None:
    providers = json.loads(_airflow("providers", "list", "-o", "json"))
    assert any(p["package_name"] == "airflow-provider-dify" for p in providers)
    hooks = json.loads(_airflow("providers", "hooks", "-o", "json"))
    dify = [h for h in hooks if h["connection_type"] == "dify"]
    assert dify and dify[0]["class"] == "airflow_dify.hooks.dify.DifyHook"
    assert dify[0]["conn_id_attribute_name"] == "dify_conn_id"


def test_connections_add_keeps_dify_type(airflow_db) -> None:
    _airflow(
        "connections",
        "add",
        "dify_cli_check",
        "--conn-type",
        "dify",
        "--conn-host",
        "https://dify.example.com/v1",
        "--conn-password",
        "app-AAAAAAAAAAAAAAAAAAAAAAAA",
        "--conn-extra",
        json.dumps({"max_concurrency": 4}),
    )
    got = json.loads(_airflow("connections", "get", "dify_cli_check", "-o", "json"))
    assert got[0]["conn_type"] == "dify"


def test_api_server_hook_meta_serves_dify_form(airflow_db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    # The unit-test config's generated secret is 22 bytes: PyJWT warns below 64 for HS512.
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(64))
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    response = TestClient(create_app()).get("/ui/connections/hook_meta")
    assert response.status_code == 200
    (meta,) = [h for h in response.json() if h["connection_type"] == "dify"]
    assert meta["hook_name"] == "Dify"
    std = meta["standard_fields"]
    assert std["host"]["title"] == "API base URL" and std["host"]["placeholder"] == "https://api.dify.ai/v1"
    assert std["password"]["title"] == "API key"
    assert all(std[name]["hidden"] for name in ("port", "url_schema", "login"))
    assert not std["host"]["hidden"] and not std["password"]["hidden"]
    extra = meta["extra_fields"]
    assert set(extra) >= EXPECTED_EXTRAS
    assert extra["client_secret"]["schema"]["format"] == "password"
    assert extra["max_concurrency"]["schema"]["title"] == "Max concurrency"
