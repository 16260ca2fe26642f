"""What every asyncio peer reports, with nothing but the standard library imported, so a peer's
peak RSS and thread count are its own (aiohttp and the event loop), not the bench's.

A peer runs as ``python -m bench.baselines.<peer> '<json spec>'`` and prints one
``BENCH_RESULT {json}`` line: rows, rows/s, CPU per row (user + sys of the whole process, all
threads), peak RSS, peak thread count (sampled on the loop, no extra thread), and its launches
per second (monotonic, the clock the bench's server log uses).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

RESULT_PREFIX = "BENCH_RESULT "
CHAT_PATH = "/chat-messages"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM, which starts afresh at exec. (``ru_maxrss`` does not: Linux
    carries the parent's high-water mark over fork + exec, so every worker the bench spawned would
    report at least the bench process's own RSS.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def threads_now() -> int:
    """OS threads of this process (Python's and native ones), from /proc; 0 elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def worst_window(times: Sequence[float], width: float) -> int:
    """Most of the sorted ``times`` inside any window ``[t, t + width)``."""
    best = left = 0
    for right, t in enumerate(times):
        while t - times[left] >= width:
            left += 1
        best = max(best, right - left + 1)
    return best


def per_second(times: Sequence[float], start: float) -> list[int]:
    """Counts per whole second since ``start``: the shape of a burst at a glance."""
    if not times:
        return []
    counts = [0] * (int(max(times) - start) + 1)
    for t in times:
        counts[max(0, int(t - start))] += 1
    return counts


class ThreadWatch:
    """The peak OS thread count, sampled by a loop timer every ``interval`` s (no thread of its own)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak = threads_now()
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> ThreadWatch:
        self._tick()
        return self

    def _tick(self) -> None:
        self.peak = max(self.peak, threads_now())
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def stop(self) -> None:
        self.peak = max(self.peak, threads_now())
        if self._timer is not None:
            self._timer.cancel()


R = TypeVar("R")


class Timed(NamedTuple, Generic[R]):
    """What :func:`timed` returns: the coroutine's result and the span it took."""

    result: R
    started: float
    wall: float
    cpu: float


def timed(run: Callable[[Coroutine[Any, Any, R]], R], go: Callable[[], Coroutine[Any, Any, R]]) -> Timed[R]:
    """``run(go())`` (``asyncio.run``, ``uvloop.run``) and the span every peer reports: monotonic
    start (the server log's clock), wall seconds, CPU seconds of the whole process."""
    started, cpu0, t0 = time.monotonic(), cpu_seconds(), time.perf_counter()
    result = run(go())
    return Timed(result, started, time.perf_counter() - t0, cpu_seconds() - cpu0)


def report(
    *,
    peer: str,
    rows: int,
    succeeded: int,
    failed: int,
    wall: float,
    cpu: float,
    threads_peak: int,
    launches: Sequence[float],
    started: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    launches = sorted(launches)
    return {
        "peer": peer,
        "rows": rows,
        "succeeded": succeeded,
        "failed": failed,
        "wall_seconds": round(wall, 4),
        "rows_per_second": round(succeeded / wall, 2) if wall > 0 else None,
        "cpu_seconds": round(cpu, 4),
        "cpu_us_per_row": round(cpu / rows * 1e6, 1) if rows else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "threads_peak": threads_peak,
        "launches": len(launches),
        "launch_worst_1s": worst_window(launches, 1.0),
        "launch_worst_60s": worst_window(launches, 60.0),
        "launches_per_second": per_second(launches, started),
        "monotonic_start": started,
        "monotonic_end": time.monotonic(),
        **(extra or {}),
    }


def main(run: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """``python -m bench.baselines.<peer> '<json spec>'``: run and print the result line."""
    spec = json.loads(sys.argv[1])
    result = run(spec)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def chat_payload(query: str) -> dict[str, Any]:
    """Dify's blocking chat call, as the project sends it."""
    return {"inputs": {}, "query": query, "response_mode": "blocking", "user": "bench"}


def write_requests(path: str, prompts: Sequence[tuple[int, str]]) -> None:
    """The peers' input: one request per line with the row id in ``metadata`` (the cookbook's format)."""
    with open(path, "w") as f:
        for row_id, query in prompts:
            f.write(json.dumps({**chat_payload(query), "metadata": {"row_id": row_id}}) + "\n")


def count_results(path: str) -> tuple[int, int]:
    """(lines whose answer came back, lines that record errors) of a results JSONL file."""
    ok = bad = 0
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            answer = entry[1]
            if isinstance(answer, dict) and "answer" in answer:
                ok += 1
            else:
                bad += 1
    return ok, bad
