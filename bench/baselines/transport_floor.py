"""The project's transport alone: what scenario b's CPU per row cannot go below.

The same requests as the peers, sent ``concurrency`` at a time through the project's
:class:`~airflow_dify.client.http1_transport.Http1Transport` on uvloop, each answer decoded and
appended to a JSONL file as the peers do; nothing else: no table, claims, permits, retries,
prompt building, hashing or outcomes. The project's CPU per row minus this is the price of
everything a batch does besides moving bytes, so the report can say how much of a gap to the
tuned peer any change to the rest could still close.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench.baselines.peer_report import CHAT_PATH, ThreadWatch, count_results, main, report, timed


async def _drain(spec: dict[str, Any], lines: Any, out: Any) -> tuple[int, list[float]]:
    from airflow_dify.client.http1_transport import Http1Transport  # imported by run(), before the clock
    from airflow_dify.client.transport import Request, as_timeout

    concurrency = int(spec["concurrency"])
    transport = Http1Transport(pool_size=concurrency)
    url = spec["url"].rstrip("/") + CHAT_PATH
    headers = {"Authorization": f"Bearer {spec['key']}", "Content-Type": "application/json"}
    timeout = as_timeout(float(spec.get("call_timeout", 60)))
    launches: list[float] = []
    rows = 0

    async def worker() -> None:
        nonlocal rows
        for line in lines:  # one shared iterator: each line goes to one worker
            rows += 1
            request = json.loads(line)
            metadata = request.pop("metadata", None)
            launches.append(time.monotonic())
            try:
                answer = await transport.send(
                    Request("POST", url, headers, json.dumps(request).encode(), timeout, "floor")
                )
                body: Any = json.loads(answer.body) if answer.status == 200 else [answer.status]
            except Exception as exc:  # noqa: BLE001 - a failed row is recorded, as the peers do
                body = [repr(exc)]
            out.write(json.dumps([request, body, metadata]) + "\n")

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await transport.close()
    return rows, launches


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import uvloop

    import airflow_dify.client.http1_transport  # noqa: F401 - imports are not the floor's CPU

    threads = ThreadWatch()
    counts: dict[str, Any] = {}

    async def go() -> None:
        threads.start()
        try:
            with open(spec["requests"]) as lines, open(spec["results"], "w") as out:
                drained = _drain(spec, lines, out)
                counts["rows"], counts["launches"] = await asyncio.wait_for(
                    drained, timeout=float(spec.get("timeout", 600))
                )
        finally:
            threads.stop()

    _, started, wall, cpu = timed(uvloop.run, go)
    ok, bad = count_results(spec["results"])
    return report(
        peer="floor",
        rows=counts["rows"],
        succeeded=ok,
        failed=bad,
        wall=wall,
        cpu=cpu,
        threads_peak=threads.peak,
        launches=counts["launches"],
        started=started,
        extra={"event_loop": "uvloop"},
    )


if __name__ == "__main__":
    raise SystemExit(main(run))
