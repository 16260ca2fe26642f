"""Each row of the README's troubleshooting table: the situation, and the message our code prints."""

from __future__ import annotations

import pytest

from airflow_dify.client import DifyClient, RetryPolicy, normalize_api_key
from airflow_dify.client.errors import DifyConfigError, DifyError
from airflow_dify.testing import FakeApp, FakeDify, Fault

ONE = RetryPolicy(max_attempts=1)


def _err(fake: FakeDify, call, base: str | None = None, key: str | None = None) -> DifyError:
    client = DifyClient(base or fake.url, key or fake.app("chat").key, retry=ONE)
    with pytest.raises(DifyError) as exc:
        call(client)
    client.close()
    return exc.value


def test_key_pasted_with_bearer_or_whitespace_is_normalised() -> None:
    key = "app-" + "a" * 24
    assert normalize_api_key(f"  Bearer {key}\n") == key
    with pytest.raises(DifyConfigError, match="contains whitespace inside it"):
        normalize_api_key("app-aaaa aaaa")


def test_401_wrong_key_explains_bearer_and_app_key() -> None:
    with FakeDify() as fake:
        err = _err(fake, lambda c: c.chat("q", user="u"), key="app-" + "Q" * 24)
    assert err.status == 401
    assert "the API key was refused" in str(err) and "'Authorization: Bearer <key>'" in str(err)


def test_403_app_api_disabled() -> None:
    app = FakeApp(mode="chat", name="Off", api_enabled=False)
    with FakeDify(apps=[app]) as fake:
        err = _err(fake, lambda c: c.info(), key=app.key)
    assert err.status == 403 and "Enable the app's API access in Dify" in str(err)


def test_404_base_url_without_v1() -> None:
    with FakeDify() as fake:
        err = _err(fake, lambda c: c.info(), base=fake.base_url)
    assert err.status == 404 and "check that the base URL ends with /v1" in str(err)


def test_429_concurrency_cap_vs_plan_quota() -> None:
    with FakeDify() as fake:
        fake.faults.add(Fault("status", status=429, code="too_many_requests", times=1))
        busy = _err(fake, lambda c: c.chat("q", user="u"))
        fake.faults.clear()
        fake.faults.add(Fault("status", status=429, code="rate_limit_error", times=1))
        quota = _err(fake, lambda c: c.chat("q", user="u"))
    assert busy.retryable and busy.code == "too_many_requests"
    assert not quota.retryable and "plan quota on Dify's side: retrying will not clear it" in str(quota)


def test_504_on_long_blocking_call() -> None:
    with FakeDify() as fake:
        fake.faults.add(Fault("billed_504", on=[1]))
        err = _err(fake, lambda c: c.run_workflow({"q": "x"}, user="u"), key=fake.app("workflow").key)
    assert err.maybe_billed and "Dify may still have run (and billed) the request" in str(err)


def test_agent_app_needs_streaming() -> None:
    with FakeDify() as fake:
        err = _err(
            fake, lambda c: c.chat("q", user="u", response_mode="blocking"), key=fake.app("agent-chat").key
        )
    assert err.status == 400 and "this app mode needs response_mode='streaming'" in str(err)
