"""A tuned asyncio + aiohttp batch peer: what a careful engineer writes after the cookbook script.

* uvloop, one ``aiohttp.ClientSession`` whose connection pool is the concurrency cap;
* no polling loop: the launcher sleeps until something changes (a call finished, or the bucket
  has a token again) and on each wake-up launches **all** the capacity there is (free slots,
  bucket tokens, rows left) at once;
* requests/min as a **1-second bucket**: ``rpm / 60`` tokens, refilled continuously, starting
  full (so the first second may carry up to two seconds' budget: its known burst);
* transient failures (429, 5xx, network) retried up to ``max_attempts`` after a short backoff,
  terminal ones recorded as failures;
* requests read from the same JSONL file as the cookbook peer; results written to one JSONL file
  kept open (buffered writes), ``[request, response, metadata]`` per line as the cookbook does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any

import aiohttp

from bench.baselines.peer_report import CHAT_PATH, ThreadWatch, count_results, main, report, timed

TRANSIENT = frozenset({429, 500, 502, 503, 504, 524})
BACKOFF_SECONDS = 0.25


class SecondBucket:
    """``rate`` tokens per second, at most ``rate`` held (one second's worth), starting full."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.tokens = self.rate
        self.stamp = time.monotonic()

    def available(self) -> int:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return int(self.tokens)

    def take(self, n: int) -> None:
        self.tokens -= n

    def seconds_to_next(self) -> float:
        return max(0.0005, (1.0 - self.tokens) / self.rate)


class Batch:
    """Launch everything the slots and the bucket allow, whenever either frees up."""

    def __init__(self, spec: dict[str, Any], session: aiohttp.ClientSession, out: Any) -> None:
        self.url = spec["url"].rstrip("/") + CHAT_PATH
        self.headers = {"Authorization": f"Bearer {spec['key']}"}
        self.slots = int(spec["concurrency"])
        self.max_attempts = int(spec.get("max_attempts", 5))
        rpm = spec.get("rpm")
        self.bucket = SecondBucket(float(rpm)) if rpm else None
        self.session, self.out = session, out
        self.retry: deque[tuple[dict[str, Any], Any, int]] = deque()
        self.rows = 0
        self.in_flight = 0
        self.succeeded = self.failed = self.retries = 0
        self.launches: list[float] = []
        self._wake: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _next(self, lines: Any) -> tuple[dict[str, Any], Any, int] | None:
        """A retry first, else the next line of the file (read lazily, as rows are needed)."""
        if self.retry:
            return self.retry.popleft()
        line = next(lines, None)
        if line is None:
            return None
        self.rows += 1
        request = json.loads(line)
        return request, request.pop("metadata", None), self.max_attempts

    async def run(self, lines: Any) -> None:
        loop = asyncio.get_running_loop()
        pending = self._next(lines)
        while pending is not None or self.in_flight:
            n = self.slots - self.in_flight if pending is not None else 0
            if self.bucket is not None and n > 0:
                n = min(n, self.bucket.available())
            now = time.monotonic()
            launched = 0
            while launched < n and pending is not None:
                request, metadata, attempts = pending
                self.in_flight += 1
                launched += 1
                self.launches.append(now)
                task = loop.create_task(self.call(request, metadata, attempts))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                pending = self._next(lines)
            if self.bucket is not None:
                self.bucket.take(launched)
            if pending is None and not self.in_flight:
                break
            if pending is None:
                pending = self._next(lines)  # a retry may have come back meanwhile
                if pending is not None:
                    continue
            timer = None
            if pending is not None and self.in_flight < self.slots and self.bucket is not None:
                timer = loop.call_later(self.bucket.seconds_to_next(), self.poke)
            self._wake = loop.create_future()
            await self._wake
            if timer is not None:
                timer.cancel()

    async def call(self, request: dict[str, Any], metadata: Any, attempts: int) -> None:
        retry = False
        try:
            async with self.session.post(self.url, headers=self.headers, json=request) as resp:
                body = await resp.json()
                status = resp.status
            if status == 200:
                self.out.write(json.dumps([request, body, metadata]) + "\n")
                self.succeeded += 1
            elif status in TRANSIENT and attempts > 1:
                retry = True
            else:
                self.out.write(json.dumps([request, [str(body)], metadata]) + "\n")
                self.failed += 1
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as err:
            if attempts > 1:
                retry = True
            else:
                self.out.write(json.dumps([request, [repr(err)], metadata]) + "\n")
                self.failed += 1
        finally:
            self.in_flight -= 1
        if retry:
            self.retries += 1
            self.in_flight += 1  # the row keeps its slot through the backoff
            await asyncio.sleep(BACKOFF_SECONDS * (self.max_attempts - attempts + 1))
            self.in_flight -= 1
            self.retry.append((request, metadata, attempts - 1))
        self.poke()


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import uvloop

    launches: list[float] = []
    threads = ThreadWatch()
    counts: dict[str, int] = {}

    async def go() -> None:
        threads.start()
        connector = aiohttp.TCPConnector(limit=int(spec["concurrency"]))
        timeout = aiohttp.ClientTimeout(total=float(spec.get("call_timeout", 60)))
        try:
            with open(spec["requests"]) as lines, open(spec["results"], "w") as out:
                async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                    batch = Batch(spec, session, out)
                    await asyncio.wait_for(batch.run(lines), timeout=float(spec.get("timeout", 600)))
            launches.extend(batch.launches)
            counts.update(rows=batch.rows, retries=batch.retries)
        finally:
            threads.stop()

    _, started, wall, cpu = timed(uvloop.run, go)
    ok, bad = count_results(spec["results"])
    return report(
        peer="tuned",
        rows=counts["rows"],
        succeeded=ok,
        failed=bad,
        wall=wall,
        cpu=cpu,
        threads_peak=threads.peak,
        launches=launches,
        started=started,
        extra={"retries": counts["retries"], "event_loop": "uvloop"},
    )


if __name__ == "__main__":
    raise SystemExit(main(run))
