"""Server-side limits (concurrency cap, RPM) and their stats windows."""

from __future__ import annotations

import threading

import requests

from airflow_dify.testing import FakeApp, FakeDify
from airflow_dify.testing.limits import Limits, worst_window

from .fakedify_helpers import bearer, fixture

CHAT = {"query": "q", "inputs": {}, "user": "u"}


def test_worst_window_exact() -> None:
    assert worst_window([], 1.0) == 0
    assert worst_window([5.0], 1.0) == 1
    # Half-open [t, t+1): 0.0 and 1.0 are not in one window, 0.0..0.999 are.
    assert worst_window([0.0, 1.0, 2.0], 1.0) == 1
    assert worst_window([0.0, 0.5, 0.999, 1.0, 1.2], 1.0) == 4  # 0.5, 0.999, 1.0, 1.2
    assert worst_window([0.0, 0.1, 0.2, 30.0, 59.9, 60.0, 60.05], 60.0) == 6  # [0.1, 60.1)
    assert worst_window([0.0, 60.0, 120.0], 60.0) == 1


def test_limits_stats_per_app_with_clock() -> None:
    now = [0.0]
    limits = Limits(max_active_requests=2, requests_per_minute=3, clock=lambda: now[0])
    assert limits.admit("a") is None and limits.admit("a") is None
    assert "maximum concurrent requests allowed for a is 2" in limits.admit("a")
    limits.release("a")
    limits.release("a")
    now[0] = 0.5
    assert limits.admit("a") is None
    limits.release("a")
    assert "3 requests per minute" in limits.admit("a")  # 3 admitted within 60 s
    now[0] = 60.0  # the first two fell out of the window [0.0, 60.0)
    assert limits.admit("a") is None
    assert limits.admit("b") is None
    stats = limits.stats()
    assert stats["per_app"]["a"] == {
        "max_concurrency_seen": 2,
        "worst_1s": 3,
        "worst_60s": 3,
        "admitted": 4,
        "rejected_429": 2,
        "in_flight": 1,
    }
    assert (stats["admitted"], stats["rejected_429"], stats["worst_1s"], stats["max_concurrency_seen"]) == (
        5,
        2,
        3,
        2,
    )


def test_concurrency_cap_returns_dify_429() -> None:
    app = FakeApp(mode="chat")
    with FakeDify(apps=[app], latency=1.0, max_active_requests=2) as fake:
        barrier = threading.Barrier(6)
        results: list[requests.Response] = []
        lock = threading.Lock()

        def call() -> None:
            barrier.wait(timeout=10)
            resp = requests.post(f"{fake.url}/chat-messages", json=CHAT, headers=bearer(app.key), timeout=20)
            with lock:
                results.append(resp)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        stats = fake.stats()
    statuses = sorted(r.status_code for r in results)
    assert len(statuses) == 6 and statuses.count(200) >= 2 and statuses.count(429) >= 1
    rejected = next(r for r in results if r.status_code == 429)
    assert "Retry-After" not in rejected.headers
    body = rejected.json()
    assert set(body) == set(fixture("error_429_too_many_requests.json"))
    assert body["code"] == "too_many_requests" and body["message"] == (
        "Too many requests. Please try again later. The current maximum concurrent requests allowed for "
        f"{app.id} is 2."
    )
    assert stats["max_concurrency_seen"] == 2
    assert stats["rejected_429"] == statuses.count(429) and stats["admitted"] == statuses.count(200)
    assert fake.calls("/chat-messages") == 6


def test_requests_per_minute() -> None:
    with FakeDify(requests_per_minute=3) as fake, requests.Session() as http:
        key = fake.app().key
        statuses = [
            http.post(f"{fake.url}/chat-messages", json=CHAT, headers=bearer(key), timeout=10).status_code
            for _ in range(5)
        ]
        last = fake.requests[-1]
        # Other apps have their own window.
        other = http.post(
            f"{fake.url}/workflows/run",
            json={"inputs": {}, "user": "u"},
            headers=bearer(fake.app("workflow").key),
            timeout=10,
        )
    assert statuses == [200, 200, 200, 429, 429]
    assert last.response["code"] == "too_many_requests"
    assert other.status_code == 200
    stats = fake.stats()
    assert stats["worst_60s"] == 3 and stats["rejected_429"] == 2 and stats["admitted"] == 4
