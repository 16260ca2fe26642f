"""``python -m airflow_dify doctor`` against FakeDify: one test per kind of broken connection."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from airflow_dify.__main__ import from_uri, main
from airflow_dify.client import clear_token_cache
from airflow_dify.testing import FakeApp, FakeDify, Fault

GOOD_KEY = "app-" + "A1b2C3d4" * 3


def doctor(capsys: pytest.CaptureFixture[str], conn: dict, *args: str) -> tuple[int, dict[str, str]]:
    """Exit status and ``{check name: its line}`` of a doctor run on ``conn``."""
    code = main(["doctor", "--uri", json.dumps({"conn_type": "dify", **conn}), *args])
    out = capsys.readouterr().out
    lines = {}
    for line in out.splitlines():
        if line.startswith("["):
            verdict, rest = line[1:].split("]", 1)
            name = rest.strip().split("  ")[0]
            lines[name] = f"{verdict.strip()} {rest.strip()}"
    lines["_out"] = out
    return code, lines


@pytest.fixture
def fake() -> FakeDify:
    apps = [
        FakeApp(mode="chat", key=GOOD_KEY, inputs=[{"variable": "language", "required": True}]),
        FakeApp(mode="completion", key="app-" + "Z9y8X7w6" * 3, api_enabled=False),
    ]
    with FakeDify(apps=apps) as server:
        yield server


def test_a_good_connection_passes_every_check(fake: FakeDify, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = doctor(
        capsys, {"host": fake.url, "password": GOOD_KEY, "extra": {"max_concurrency": 4}}, "--probe"
    )
    assert code == 0, lines["_out"]
    assert lines["GET /info"].startswith("ok") and "'Fake Chatbot', mode chat" in lines["GET /info"]
    assert "language (required)" in lines["GET /parameters"]
    assert lines["probe call"].startswith("ok") and "tokens" in lines["probe call"]
    assert lines["budget"].startswith("ok") and "max_concurrency=4" in lines["budget"]
    assert GOOD_KEY not in lines["_out"]  # never the key, at most its first 4 characters
    assert fake.calls() == 1  # only the probe spent a call


def test_missing_v1(fake: FakeDify, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = doctor(capsys, {"host": fake.base_url, "password": GOOD_KEY})
    assert code == 1
    assert lines["URL shape"].startswith("warn") and "does not end with /v1" in lines["URL shape"]
    assert lines["GET /info"].startswith("FAIL") and "404" in lines["GET /info"]
    assert "fix: the host must be the API base URL ending with /v1" in lines["_out"]


def test_a_bearer_prefixed_key_works_with_a_warning(
    fake: FakeDify, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = doctor(capsys, {"host": fake.url, "password": f"  Bearer {GOOD_KEY}\n"})
    assert code == 0
    assert lines["API key shape"].startswith("warn") and "'Bearer ' prefix" in lines["API key shape"]
    assert "whitespace" in lines["API key shape"] and lines["GET /info"].startswith("ok")


def test_a_wrong_key(fake: FakeDify, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = doctor(capsys, {"host": fake.url, "password": "app-" + "Q" * 24})
    assert code == 1 and lines["GET /info"].startswith("FAIL") and "401" in lines["GET /info"]
    assert "fix: use this app's own API key" in lines["_out"]


def test_a_disabled_app(fake: FakeDify, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = doctor(capsys, {"host": fake.url, "password": fake.app("completion").key})
    assert code == 1 and lines["GET /info"].startswith("FAIL") and "403" in lines["GET /info"]
    assert "fix: enable the app's API access" in lines["_out"]


def test_the_oauth2_token_endpoint_down(fake: FakeDify, capsys: pytest.CaptureFixture[str]) -> None:
    clear_token_cache()
    fake.add_oauth_client("doctor", "doctor-secret-123", app_mode="chat")
    extra = {
        "auth_type": "oauth2",
        "token_url": fake.token_url,
        "client_id": "doctor",
        "client_secret": "doctor-secret-123",
    }
    code, lines = doctor(capsys, {"host": fake.url, "extra": extra})
    assert code == 0 and lines["OAuth2 token"].startswith("ok") and "valid for" in lines["OAuth2 token"]
    clear_token_cache()
    fake.faults.add(Fault("token_down"))
    code, lines = doctor(capsys, {"host": fake.url, "extra": extra})
    assert code == 1 and lines["OAuth2 token"].startswith("FAIL") and "503" in lines["OAuth2 token"]
    assert "doctor-secret-123" not in lines["_out"]


def test_redis_unreachable(fake: FakeDify, capsys: pytest.CaptureFixture[str]) -> None:
    extra = {"rate_limit_backend": "redis://:hunter2@127.0.0.1:1/0", "max_concurrency": 2}
    code, lines = doctor(capsys, {"host": fake.url, "password": GOOD_KEY, "extra": extra})
    assert code == 1 and lines["rate-limit backend"].startswith("FAIL")
    assert "unreachable" in lines["rate-limit backend"] and "hunter2" not in lines["_out"]


def test_uri_forms_and_an_airflow_connection_id(fake: FakeDify, monkeypatch: pytest.MonkeyPatch) -> None:
    host, password, extra = from_uri(f"dify+http://:{GOOD_KEY}@127.0.0.1:{fake.port}/v1?max_concurrency=3")
    assert (host, password, extra) == (fake.url, GOOD_KEY, {"max_concurrency": "3"})
    conn = json.dumps({"conn_type": "dify", "host": fake.url, "password": GOOD_KEY})
    env = {"AIRFLOW_CONN_DIFY_DOCTOR": conn}
    done = subprocess.run(
        [sys.executable, "-m", "airflow_dify", "doctor", "--conn-id", "dify_doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Dify connection 'dify_doctor' (from Airflow)" in done.stdout and "[  ok] GET /info" in done.stdout
