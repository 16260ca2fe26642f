"""Server-side limits (per-app concurrency cap, requests per minute) and what they observed."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

RPM_WINDOW = 60.0


def worst_window(times: Sequence[float], width: float) -> int:
    """Most timestamps inside any half-open window ``[t, t + width)``; ``times`` sorted ascending.

    Two pointers: for each right end j, drop left entries at least ``width`` older.
    """
    best = left = 0
    for right, t in enumerate(times):
        while t - times[left] >= width:
            left += 1
        best = max(best, right - left + 1)
    return best


class _AppCounters:
    __slots__ = ("in_flight", "max_in_flight", "starts", "recent", "admitted", "rejected")

    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.starts: list[float] = []  # admitted start times, appended in admission order (monotonic)
        self.recent: deque[float] = deque()  # admissions inside the last RPM window
        self.admitted = 0
        self.rejected = 0


class Limits:
    """Admits or rejects generation requests per app, like Dify's RateLimit(app_id).enter().

    :param max_active_requests: in-flight cap per app (0 = unlimited).
    :param requests_per_minute: admissions per app in any sliding 60 s window (0 = unlimited).
    """

    def __init__(
        self,
        max_active_requests: int = 0,
        requests_per_minute: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_active_requests = max_active_requests
        self.requests_per_minute = requests_per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._apps: dict[str, _AppCounters] = {}

    def _get(self, app_id: str) -> _AppCounters:
        counters = self._apps.get(app_id)
        if counters is None:
            counters = self._apps[app_id] = _AppCounters()
        return counters

    def admit(self, app_id: str) -> str | None:
        """Take an in-flight slot; returns None when admitted, else the 429 message."""
        with self._lock:
            c = self._get(app_id)
            now = self._clock()
            cap = self.max_active_requests
            if cap and c.in_flight >= cap:
                c.rejected += 1
                return (
                    "Too many requests. Please try again later. The current maximum concurrent "
                    f"requests allowed for {app_id} is {cap}."
                )
            rpm = self.requests_per_minute
            if rpm:
                while c.recent and now - c.recent[0] >= RPM_WINDOW:
                    c.recent.popleft()
                if len(c.recent) >= rpm:
                    c.rejected += 1
                    return (
                        "Too many requests. Please try again later. The model rate limit of "
                        f"{rpm} requests per minute for {app_id} is reached."
                    )
                c.recent.append(now)
            c.in_flight += 1
            c.max_in_flight = max(c.max_in_flight, c.in_flight)
            c.starts.append(now)
            c.admitted += 1
            return None

    def release(self, app_id: str) -> None:
        with self._lock:
            c = self._get(app_id)
            c.in_flight = max(0, c.in_flight - 1)

    def in_flight(self, app_id: str) -> int:
        with self._lock:
            return self._get(app_id).in_flight

    def reset(self) -> None:
        """Forget history; requests still in flight keep their slots."""
        with self._lock:
            for c in self._apps.values():
                c.max_in_flight = c.in_flight
                c.starts.clear()
                c.recent.clear()
                c.admitted = c.rejected = 0

    def stats(self) -> dict[str, Any]:
        """Totals (worst values are the max over apps) plus a ``per_app`` breakdown by app id."""
        with self._lock:
            per_app = {}
            for app_id, c in self._apps.items():
                starts = sorted(c.starts)
                per_app[app_id] = {
                    "max_concurrency_seen": c.max_in_flight,
                    "worst_1s": worst_window(starts, 1.0),
                    "worst_60s": worst_window(starts, RPM_WINDOW),
                    "admitted": c.admitted,
                    "rejected_429": c.rejected,
                    "in_flight": c.in_flight,
                }
        values = list(per_app.values())
        return {
            "max_concurrency_seen": max((v["max_concurrency_seen"] for v in values), default=0),
            "worst_1s": max((v["worst_1s"] for v in values), default=0),
            "worst_60s": max((v["worst_60s"] for v in values), default=0),
            "admitted": sum(v["admitted"] for v in values),
            "rejected_429": sum(v["rejected_429"] for v in values),
            "per_app": per_app,
        }
