"""The loop users write today, re-implemented faithfully as the baseline.

Source: the seed article (shared/seed/000_60ac283521167e7a.txt) ("Python example for Dify API
Key authentication" and "Alternative: Implement rate limiter manually"): a bare ``requests.post``
per prompt with a ``Bearer`` header and a blocking JSON payload, the article's sliding-window
``RateLimiter`` (a list of timestamps filtered on every call) called before each request, and, as
users add to it, one ``UPDATE`` + commit per row to store the answer.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import time as time_module
from contextlib import closing
from typing import Any

import requests


class RateLimiter:
    """The seed's limiter, verbatim in behaviour (sliding window over a list of timestamps)."""

    def __init__(self, max_requests: int = 60, window: int = 60) -> None:
        self.max_requests = max_requests
        self.window = window
        self.requests: list[float] = []
        self.lock = threading.Lock()

    def wait_if_needed(self) -> None:
        with self.lock:
            now = time_module.time()
            # Remove expired timestamps
            self.requests = [t for t in self.requests if now - t < self.window]
            if len(self.requests) >= self.max_requests:
                sleep_time = self.window - (now - self.requests[0])
                if sleep_time > 0:
                    time_module.sleep(sleep_time)
            self.requests.append(now)


def run_seed_loop(
    base_url: str, api_key: str, db_path: str, *, max_requests: int, table: str = "prompts"
) -> dict[str, Any]:
    """Answer every row sequentially, the seed's way; returns counts and the loop's wall time."""
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    limiter = RateLimiter(max_requests=max_requests, window=60)
    ok = failed = 0
    with closing(sqlite3.connect(db_path)) as db:
        db.execute(f"ALTER TABLE {table} ADD COLUMN answer TEXT")
        db.execute(f"ALTER TABLE {table} ADD COLUMN total_tokens INTEGER")
        db.execute(f"ALTER TABLE {table} ADD COLUMN status TEXT")
        db.commit()
        rows = db.execute(f"SELECT id, prompt FROM {table} ORDER BY id").fetchall()
        started = time.perf_counter()
        for row_id, query in rows:
            limiter.wait_if_needed()
            payload = {"inputs": {}, "query": query, "response_mode": "blocking", "user": "user-12345"}
            try:
                response = requests.post(
                    f"{base_url}/chat-messages", headers=headers, json=payload, timeout=30
                )
            except requests.exceptions.RequestException:
                failed += 1
                continue
            if response.status_code == 200:
                result = response.json()
                answer = result.get("answer", "No answer returned")
                # As in the seed (Dify nests usage under "metadata", so this stores 0): kept faithful.
                tokens = result.get("usage", {}).get("total_tokens", 0)
                db.execute(
                    f"UPDATE {table} SET answer = ?, total_tokens = ?, status = 'succeeded' WHERE id = ?",
                    (answer, tokens, row_id),
                )
                db.commit()
                ok += 1
            else:
                failed += 1
        elapsed = time.perf_counter() - started
    return {"rows": len(rows), "succeeded": ok, "failed": failed, "wall_seconds": round(elapsed, 3)}
