"""Shared fixtures of the operator tests: a ``dify_test`` connection pointing at FakeDify."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from airflow_dify.testing import FakeDify


@pytest.fixture
def dify_conn(fake_dify: FakeDify, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``AIRFLOW_CONN_DIFY_TEST`` for the chat app; call the fixture's value to switch app or extras."""

    def use(mode: str = "chat", **extra: object) -> None:
        conn = {
            "conn_type": "dify",
            "host": fake_dify.url,
            "password": fake_dify.app(mode).key,
            "extra": extra,
        }
        monkeypatch.setenv("AIRFLOW_CONN_DIFY_TEST", json.dumps(conn))

    use()
    return use
