"""DifyHook against FakeDify: client building, Test button answers, secrets registered for masking."""

from __future__ import annotations

import json
import socket

import pytest
from airflow.sdk._shared.secrets_masker.secrets_masker import redact

from airflow_dify.hooks.dify import DifyHook
from airflow_dify.testing import FakeApp, FakeDify


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **conn: object) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "dify", **conn}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chat_through_hook_with_pasted_key(fake_dify: FakeDify, monkeypatch: pytest.MonkeyPatch) -> None:
    app = fake_dify.app("chat")
    set_conn(monkeypatch, "dify_x", host=fake_dify.url, password=f"  Bearer {app.key}\n")
    hook = DifyHook(dify_conn_id="dify_x")
    result = hook.chat("What is 2+2?", user="u1")
    assert result.answer == "Answer: What is 2+2?"
    (rec,) = [r for r in fake_dify.requests if r.path == "/chat-messages"]
    assert rec.auth == "key" and rec.body["user"] == "u1"
    assert hook.info().mode == "chat"
    hook.close()


def test_test_connection_success_names_the_app(fake_dify: FakeDify, monkeypatch: pytest.MonkeyPatch) -> None:
    app = fake_dify.app("workflow")
    set_conn(monkeypatch, "dify_ok", host=fake_dify.url, password=app.key)
    ok, message = DifyHook(dify_conn_id="dify_ok").test_connection()
    assert ok, message
    assert app.name in message and "workflow" in message
    assert [r.path for r in fake_dify.requests] == ["/info"]  # no tokens spent


def test_test_connection_failures_are_actionable(monkeypatch: pytest.MonkeyPatch) -> None:
    disabled = FakeApp(mode="chat", name="Disabled", api_enabled=False)
    with FakeDify(apps=[FakeApp(mode="chat", name="Live"), disabled]) as fake:
        live = fake.app("chat")
        cases = {
            "dify_401": (
                {"host": fake.url, "password": "app-" + "Z" * 24},
                ["401", "Access token is invalid"],
            ),
            "dify_403": ({"host": fake.url, "password": disabled.key}, ["403", "disabled"]),
            "dify_404": ({"host": fake.url.removesuffix("/v1"), "password": live.key}, ["404", "/v1"]),
            "dify_down": (
                {"host": f"http://127.0.0.1:{free_port()}/v1", "password": live.key},
                ["Cannot reach"],
            ),
            "dify_nokey": ({"host": fake.url}, ["API key"]),
            "dify_badextra": (
                {"host": fake.url, "password": live.key, "extra": {"auth_type": "saml"}},
                ["auth_type"],
            ),
        }
        for conn_id, (conn, needles) in cases.items():
            set_conn(monkeypatch, conn_id, **conn)
            ok, message = DifyHook(dify_conn_id=conn_id, max_attempts=1).test_connection()
            assert not ok, conn_id
            for needle in needles:
                assert needle in message, (conn_id, message)
            assert live.key not in message and disabled.key not in message


def test_oauth2_secrets_and_tokens_are_masked(fake_dify: FakeDify, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dify.add_oauth_client("airflow-client", "s3cret-client-value", app_mode="chat", scope="dify.run")
    set_conn(
        monkeypatch,
        "dify_oauth",
        host=fake_dify.url,
        extra={
            "auth_type": "oauth2",
            "token_url": fake_dify.token_url,
            "client_id": "airflow-client",
            "client_secret": "s3cret-client-value",
            "scope": "dify.run",
        },
    )
    hook = DifyHook(dify_conn_id="dify_oauth")
    assert hook.chat("hi", user="u").answer == "Answer: hi"
    (rec,) = [r for r in fake_dify.requests if r.path == "/chat-messages"]
    assert rec.auth == "token"
    token = hook.client.auth.token()
    assert token
    text = f"secret=s3cret-client-value token={token}"
    assert redact(text) == "secret=*** token=***"
    hook.close()


def test_one_key_pasted_three_ways_shares_one_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "app-" + "XYZ" * 8
    pasted = {"dify_plain": key, "dify_bearer": f"Bearer {key}", "dify_spaced": f"  {key}\n"}
    keys = {}
    for conn_id, password in {**pasted, "dify_other": "app-" + "Q" * 24}.items():
        set_conn(monkeypatch, conn_id, host="https://dify.example.com/v1", password=password)
        hook = DifyHook(dify_conn_id=conn_id)
        assert hook.settings.api_key in (key, "app-" + "Q" * 24)
        pool = hook.get_pool()
        keys[conn_id] = pool.settings.key
        pool.close()
    assert len({keys[c] for c in pasted}) == 1
    assert keys["dify_other"] != keys["dify_plain"]
    assert redact(f"sent {key}") == "sent ***"  # the normalised key is masked, not only the raw value
