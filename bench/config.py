"""Bench sizes and limits: the issue's numbers by default, tiny ones for the smoke test."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

SCENARIOS = ("server", "peers", "bound", "cost", "memory", "baselines", "pool")
#: Issue 17's side-by-side scenarios (scenario "peers"): latency s, concurrency, RPM (0 = none).
PEER_SCENARIOS = {
    "a": (0.05, 16, 0),
    "b": (0.0, 16, 0),
    "c": (2.0, 1024, 0),
    "d": (0.05, 16, 6000),
}
PEERS = ("cookbook", "tuned", "project")
#: The project's transport alone (``bench/baselines/transport_floor.py``): in scenario b it shows
#: how much of the CPU per row is moving bytes; in scenario a, the rows/s a client that does
#: nothing else reaches against this fake on this machine (the ceiling under the bound).
FLOOR = "floor"
#: The project's DataFrame path (``answer_dataframe``): the same engine and per-row path with no
#: SQL table, so the table's share of scenario b's CPU per row shows in every run.
FRAME = "frame"
#: Clients that break a scenario down, and the only scenarios they run in.
BREAKDOWN_CLIENTS = {FLOOR: ("a", "b"), FRAME: ("b",)}
#: Every client scenario "peers" can run (``--peers``).
PEER_CLIENTS = (*PEERS, *BREAKDOWN_CLIENTS)


@dataclass(frozen=True)
class BenchConfig:
    """Every size of every scenario. Defaults are the target sizes except ``memory_rows`` (see README: at
    the measured 700-1,500 rows/s on 2 cores, 1,000,000 rows take 15-25 min, over the 10 min budget)."""

    scenarios: tuple[str, ...] = SCENARIOS
    # 0. FakeDify's own rate: blocking chat calls at latency 0, server pinned to one core
    server_kinds: tuple[str, ...] = ("threaded", "asyncio")
    server_seconds: float = 5.0
    server_requests: int = 60_000
    server_connections: int = 16
    server_repeats: int = 3
    # peers: the cookbook-style and tuned asyncio peers and the project, interleaved, per scenario
    peer_scenarios: tuple[str, ...] = tuple(PEER_SCENARIOS)
    peer_rows: tuple[tuple[str, int], ...] = (("a", 2000), ("b", 5000), ("c", 4096), ("d", 6600))
    peer_repeats: tuple[tuple[str, int], ...] = (("a", 2), ("b", 2), ("c", 2), ("d", 1))
    peer_clients: tuple[str, ...] = PEER_CLIENTS
    # 1. bound ratio
    bound_rows: int = 2000
    bound_latency: float = 0.05
    bound_concurrency: int = 16
    bound_rpm: int = 6000
    # 2. client cost (+ profile)
    cost_rows: int = 20_000
    cost_concurrency: int = 16
    profile: bool = True
    profile_rows: int = 2000
    profile_calls: int = 500
    # 3. memory in table size
    memory_rows: tuple[int, ...] = (10_000, 100_000)
    memory_concurrency: int = 16
    # 4. baselines
    baseline_rows: int = 300
    baseline_latency: float = 0.2
    operator_concurrency: int = 32
    seed_rpm: int = 6000  # the seed limiter's max_requests per 60 s; above the loop's pace on purpose
    airflow_home: Path | None = None  # None: a fresh, migrated home under bench/.work
    airflow_migrate: bool = True
    # 5. shared pool across processes
    pool_rows: int = 600
    pool_rpm: int = 1200
    pool_processes: int = 4
    pool_threads: int = 4
    pool_concurrency: int = 8
    pool_latency: float = 0.05
    pool_backends: tuple[str, ...] = ("sqlite", "redis")
    redis_url: str = "redis://127.0.0.1:6379/15"
    pool_start_delay: float = 6.0  # seconds for the worker processes to import before the common start
    # whole suite
    deadline_seconds: float = 1200.0

    @classmethod
    def smoke(cls, **overrides: object) -> BenchConfig:
        """Seconds-sized runs of every scenario: the shape of the results, not the numbers."""
        small = cls(
            server_seconds=0.5,
            server_requests=300,
            server_repeats=1,
            peer_rows=(("a", 30), ("b", 60), ("c", 64), ("d", 40)),
            peer_repeats=(("a", 1), ("b", 1), ("c", 1), ("d", 1)),
            bound_rows=40,
            cost_rows=200,
            profile_rows=200,
            profile_calls=50,
            memory_rows=(200, 1000),
            baseline_rows=5,
            baseline_latency=0.05,
            pool_rows=24,
            pool_start_delay=3.0,
            deadline_seconds=300.0,
        )
        return replace(small, **overrides)  # type: ignore[arg-type]
