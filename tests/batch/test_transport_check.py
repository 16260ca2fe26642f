"""What the engine's transport cannot do fails the run before pre-flight, naming the setting."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_dify.batch.dataframe import answer_dataframe
from airflow_dify.batch.errors import PreflightError
from airflow_dify.client import DifyClient
from airflow_dify.testing import FakeDify


@pytest.mark.parametrize("variable", ["ALL_PROXY", "HTTP_PROXY", "all_proxy"])
def test_a_socks_proxy_fails_the_run_before_any_request(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    with FakeDify() as fake:
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.setenv(variable, "socks5://127.0.0.1:9")
        client = DifyClient(fake.url, fake.app("chat").key)
        frame = pd.DataFrame({"prompt": ["a", "b"]})
        with pytest.raises(PreflightError, match="SOCKS proxy is configured .* NO_PROXY; no row was called"):
            answer_dataframe(frame, client, app_mode="chat")
        assert fake.requests == []  # not even pre-flight went out
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # the documented way out: the run goes direct
        answered, summary = answer_dataframe(frame, client, app_mode="chat")
        assert summary.succeeded == 2 and list(answered["answer"]) == ["Answer: a", "Answer: b"]
