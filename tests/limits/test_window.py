"""The send window: the GCRA's per-second promise kept on the wire after a stall."""

from __future__ import annotations

import asyncio
import bisect
import time
import uuid

import pytest

from airflow_dify.limits import PoolSettings, open_pool
from airflow_dify.limits.window import SKEW, SendWindow


def _admit_all(window: SendWindow, asks: list[float]) -> list[float]:
    """Admission times for requests asking at ``asks`` (sorted), each waiting as told."""
    admitted: list[float] = []
    for ask in asks:
        now = max(ask, admitted[-1] if admitted else ask)  # time only moves forward
        while (wait := window.admit(now)) > 0:
            now += wait
        admitted.append(now)
    return admitted


def _worst(times: list[float], span: float) -> int:
    """Most admissions in any half-open window of ``span`` (less a nanosecond of float rounding)."""
    return max(bisect.bisect_left(times, t + span - 1e-9) - i for i, t in enumerate(times))


def test_for_rpm_is_one_short_of_the_gcra_burst_over_a_slightly_longer_span() -> None:
    window = SendWindow.for_rpm(6000)
    assert (window.limit, window.span) == (100, 1.0 + SKEW)
    slow = SendWindow.for_rpm(90)  # 1.5 per second: one send per GCRA interval (+ skew)
    assert (slow.limit, slow.span) == (1, pytest.approx(60 / 90 + SKEW))
    with pytest.raises(ValueError, match="limit >= 1"):
        SendWindow(0, 1.0)


def test_a_steady_gcra_stream_is_never_held() -> None:
    window = SendWindow.for_rpm(6000)
    asks = [k * 0.0102 for k in range(500)]  # 10.2 ms apart: 100 of them span 1.0 s + 20 ms
    assert _admit_all(window, asks) == asks


def test_a_backlog_after_a_stall_is_spread_not_burst() -> None:
    """Reservations due during a 300 ms stall all wake at its end: at most 100 go out in any
    1.01 s, so a server stamping each up to 10 ms late still counts at most 100 per second."""
    window = SendWindow.for_rpm(6000)
    asks = [k * 0.01 for k in range(100)] + [1.3] * 30 + [1.3 + k * 0.01 for k in range(30, 200)]
    admitted = _admit_all(window, sorted(asks))
    assert len(admitted) == len(asks)
    assert _worst(admitted, 1.0 + SKEW) <= 100
    skewed = sorted(t + (SKEW if i % 2 else 0.0) for i, t in enumerate(admitted))
    assert _worst(skewed, 1.0) <= 100
    assert admitted == sorted(admitted) and all(a >= b for a, b in zip(admitted, sorted(asks), strict=True))


def test_the_pool_sends_through_its_window() -> None:
    """A coroutine's permit waits for the window: 100 sends in the last 0.9 s hold it ~0.1 s."""
    pool = open_pool("memory", PoolSettings(key=f"w:{uuid.uuid4().hex}", requests_per_minute=6000))
    window = pool._window  # type: ignore[attr-defined]
    assert window is not None
    recent = time.monotonic() - 0.9
    for _ in range(100):
        assert window.admit(recent) == 0.0

    async def acquire() -> float:
        t0 = time.monotonic()
        permit = await pool.acquire_async()
        await permit.settle_async()
        return time.monotonic() - t0

    waited = asyncio.run(acquire())
    pool.close()
    assert 0.07 <= waited <= 0.5
