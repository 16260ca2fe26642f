"""The FakeDify object itself: settings assigned live, and the lifecycle around its server."""

from __future__ import annotations

import pytest
import requests

from airflow_dify.testing import FakeDify

from .fakedify_helpers import bearer


def test_settings_are_read_and_assigned_live() -> None:
    fake = FakeDify(latency=0.5, max_active_requests=3, requests_per_minute=60, token_ttl=10)
    assert (fake.latency, fake.max_active_requests, fake.requests_per_minute, fake.token_ttl) == (
        0.5,
        3,
        60,
        10,
    )
    fake.latency, fake.max_active_requests, fake.requests_per_minute, fake.token_ttl = 0.0, 0, 0, None
    assert (fake.latency, fake.max_active_requests, fake.requests_per_minute, fake.token_ttl) == (
        0.0,
        0,
        0,
        None,
    )
    assert FakeDify.latency.__doc__


def test_lifecycle() -> None:
    fake = FakeDify()
    assert repr(fake).startswith("FakeDify(stopped") and fake.connections == 0
    with pytest.raises(RuntimeError):
        _ = fake.port
    with fake:
        assert fake.start() is fake  # starting twice is harmless
        fake.requests_per_minute = 1
        key = fake.app().key
        body = {"query": "q", "inputs": {}, "user": "u"}
        statuses = [
            requests.post(f"{fake.url}/chat-messages", json=body, headers=bearer(key), timeout=10).status_code
            for _ in range(2)
        ]
        assert statuses == [200, 429]
    fake.stop()  # stopping twice is harmless
    with fake:  # and it starts again, with its state kept
        assert len(fake.requests) == 2
