"""A lean HTTP/1.1 load generator: keep-alive connections, one request in flight on each.

Raw asyncio protocols (uvloop when installed) with one pre-encoded request and a minimal
response parser, so the generator costs a few tens of µs per request and the server under test
is what runs out of CPU first. Bounded in count and in time; loopback only.

``python -m bench.loadgen URL --key KEY [--requests N] [--seconds S] [--connections C] [--cpu N]``
(or one JSON spec with those keys, as the bench runs it) prints one ``BENCH_RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from bench.baselines.peer_report import RESULT_PREFIX

CHAT_BODY = {"query": "q", "inputs": {}, "user": "load", "response_mode": "blocking"}
_LOOPBACK = ("127.", "localhost", "[::1]", "::1")


def chat_request(url: str, key: str) -> tuple[str, int, bytes]:
    """(host, port, the bytes of one blocking chat POST) for a FakeDify ``url`` ending in /v1."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if not host.startswith(_LOOPBACK):
        raise ValueError(f"the load generator only targets loopback, not {host}")
    body = json.dumps(CHAT_BODY).encode()
    head = (
        f"POST {parts.path.rstrip('/')}/chat-messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return host, port, head.encode() + body


class _Load:
    """Shared counters and the stop condition of one run."""

    def __init__(self, total: int, seconds: float) -> None:
        self.total, self.deadline = total, time.monotonic() + seconds
        self.sent = self.ok = self.errors = 0
        self.reconnects = 0
        self.done = asyncio.get_running_loop().create_future()
        self.open = 0

    def take(self) -> bool:
        """Whether another request may be sent (count and time bounds)."""
        if self.sent >= self.total or time.monotonic() >= self.deadline:
            return False
        self.sent += 1
        return True

    def closed(self) -> None:
        self.open -= 1
        if self.open == 0 and not self.done.done():
            self.done.set_result(None)


class _Client(asyncio.Protocol):
    """One keep-alive connection: send, read one whole response (Content-Length), send again."""

    def __init__(self, load: _Load, request: bytes) -> None:
        self.load, self.request = load, request
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._next()

    def _next(self) -> None:
        assert self.transport is not None
        if self.load.take():
            self.transport.write(self.request)
        else:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].lower()
        at = head.find(b"content-length:")
        if at < 0:  # a stream: read to EOF (not used by the rate test)
            return
        length = int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None])
        if len(self.buf) < end + 4 + length:
            return
        if head.startswith(b"http/1.1 200"):
            self.load.ok += 1
        else:
            self.load.errors += 1
        self.buf = self.buf[end + 4 + length :]
        if b"connection: close" in head:
            assert self.transport is not None
            self.transport.close()
            return
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.closed()


async def _run(host: str, port: int, request: bytes, connections: int, total: int, seconds: float) -> _Load:
    loop = asyncio.get_running_loop()
    load = _Load(total, seconds)
    load.open = connections
    for _ in range(connections):
        await loop.create_connection(lambda: _Client(load, request), host, port)
    await asyncio.wait_for(load.done, timeout=seconds + 30)
    return load


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_load(url: str, key: str, requests: int, seconds: float, connections: int) -> dict[str, Any]:
    """Blocking chat calls as fast as ``connections`` keep-alive connections get answers."""
    host, port, request = chat_request(url, key)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # stdlib asyncio: slower, still far below the server's cost
        runner = asyncio.run
    cpu0, t0 = _cpu(), time.perf_counter()
    load = runner(_run(host, port, request, connections, requests, seconds))
    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    done = load.ok + load.errors
    return {
        "requests": done,
        "ok": load.ok,
        "errors": load.errors,
        "connections": connections,
        "wall_seconds": round(wall, 4),
        "requests_per_second": round(done / wall, 1) if wall > 0 else None,
        "loadgen_cpu_seconds": round(cpu, 4),
        "loadgen_cpu_us_per_request": round(cpu / done * 1e6, 1) if done else None,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].startswith("{"):
        spec = json.loads(argv[0])
    else:
        p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
        p.add_argument("url", help="FakeDify's /v1 URL on loopback")
        p.add_argument("--key", required=True, help="the chat app's API key")
        p.add_argument("--requests", type=int, default=20_000)
        p.add_argument("--seconds", type=float, default=10.0, help="stop sending after this long")
        p.add_argument("--connections", type=int, default=16)
        p.add_argument("--cpu", type=int, help="pin the generator to this core")
        spec = vars(p.parse_args(argv))
    if spec.get("cpu") is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(spec["cpu"])})
    result = run_load(
        spec["url"], spec["key"], int(spec["requests"]), float(spec["seconds"]), int(spec["connections"])
    )
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
