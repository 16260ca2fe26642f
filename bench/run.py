"""Run the scenarios, print the table and write bench/results.json."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench.common import REPO, machine_info, work_dir
from bench.config import PEER_CLIENTS, PEER_SCENARIOS, SCENARIOS, BenchConfig
from bench.scenario_baselines import baselines
from bench.scenario_peers import peers
from bench.scenario_server import server_rate
from bench.scenarios import bound_ratio, client_cost, memory, shared_pool
from bench.targets import format_table, targets

RUNNERS: dict[str, Callable[[BenchConfig], dict[str, Any]]] = {
    "server": server_rate,
    "peers": peers,
    "bound": bound_ratio,
    "cost": client_cost,
    "memory": memory,
    "baselines": baselines,
    "pool": shared_pool,
}
DEFAULT_OUT = REPO / "bench" / "results.json"


def run_suite(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every selected scenario in order; a failing one records its error and the rest still run."""
    work_dir()
    machine = machine_info()
    started = time.monotonic()
    results: dict[str, Any] = {}
    for name in cfg.scenarios:
        if time.monotonic() - started > cfg.deadline_seconds:
            results[name] = {"error": f"skipped: suite deadline of {cfg.deadline_seconds:.0f} s passed"}
            continue
        log(f"[bench] {name} ...")
        t0, load0 = time.monotonic(), os.getloadavg()[0]
        try:
            data = RUNNERS[name](cfg)
        except Exception as exc:  # record and go on: the other scenarios' numbers still count
            data = {"error": f"{type(exc).__name__}: {exc}"}
        data["seconds"] = round(time.monotonic() - t0, 1)
        # Other work on the machine skews every number: keep the 1-minute load next to them.
        data["loadavg_1m"] = {"start": round(load0, 2), "end": round(os.getloadavg()[0], 2)}
        data["machine"] = machine
        results[name] = data
        log(
            f"[bench] {name} done in {data['seconds']} s"
            + (f" (ERROR {data['error']})" if "error" in data else "")
        )
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "elapsed_seconds": round(time.monotonic() - started, 1),
        "scenarios": results,
        "targets": targets(results, cfg),
    }


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None) -> tuple[BenchConfig, Path]:
    p = argparse.ArgumentParser(prog="python -m bench", description="airflow-provider-dify benchmarks")
    p.add_argument(
        "--smoke", "--quick", action="store_true", help="tiny sizes (seconds): checks the bench runs"
    )
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}")
    p.add_argument("--memory-rows", type=_ints, help="table sizes for scenario 3, e.g. 100000,1000000")
    p.add_argument("--bound-rows", type=int)
    p.add_argument("--cost-rows", type=int)
    p.add_argument("--baseline-rows", type=int)
    p.add_argument("--pool-rows", type=int)
    p.add_argument("--peer-scenarios", help="comma list of a, b, c, d (scenario peers)")
    p.add_argument("--peer-repeats", type=int, help="repetitions of every peer scenario")
    p.add_argument("--peers", help="comma list of cookbook, tuned, project (scenario peers' clients)")
    p.add_argument("--server-repeats", type=int, help="repetitions of each FakeDify server's rate run")
    p.add_argument("--pool-backends", help="comma list of sqlite, redis")
    p.add_argument("--redis-url")
    p.add_argument("--no-profile", action="store_true", help="skip the cProfile/breakdown of scenario 2")
    p.add_argument("--deadline", type=float, help="seconds after which remaining scenarios are skipped")
    p.add_argument("--airflow-home", type=Path, help="reuse this AIRFLOW_HOME for scenario 4")
    p.add_argument("--no-migrate", action="store_true", help="the --airflow-home DB is already migrated")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    cfg = BenchConfig.smoke() if a.smoke else BenchConfig()
    names = tuple(s.strip() for s in a.scenarios.split(",") if s.strip())
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    changes: dict[str, Any] = {"scenarios": names, "profile": cfg.profile and not a.no_profile}
    for field_name, value in (
        ("memory_rows", a.memory_rows),
        ("bound_rows", a.bound_rows),
        ("cost_rows", a.cost_rows),
        ("baseline_rows", a.baseline_rows),
        ("pool_rows", a.pool_rows),
        ("redis_url", a.redis_url),
        ("deadline_seconds", a.deadline),
    ):
        if value is not None:
            changes[field_name] = value
    if a.airflow_home is not None:
        changes["airflow_home"] = a.airflow_home
    changes["airflow_migrate"] = not a.no_migrate
    if a.peer_scenarios:
        chosen = tuple(x.strip() for x in a.peer_scenarios.split(",") if x.strip())
        if set(chosen) - set(PEER_SCENARIOS):
            p.error(f"unknown peer scenario(s) in {a.peer_scenarios!r}; choose from a, b, c, d")
        changes["peer_scenarios"] = chosen
    if a.peers:
        clients = tuple(x.strip() for x in a.peers.split(",") if x.strip())
        if set(clients) - set(PEER_CLIENTS):
            p.error(f"unknown peer client(s) in {a.peers!r}; choose from {', '.join(PEER_CLIENTS)}")
        changes["peer_clients"] = clients
    if a.peer_repeats is not None:
        changes["peer_repeats"] = tuple((name, a.peer_repeats) for name in PEER_SCENARIOS)
    if a.server_repeats is not None:
        changes["server_repeats"] = a.server_repeats
    if a.pool_backends:
        changes["pool_backends"] = tuple(b.strip() for b in a.pool_backends.split(",") if b.strip())
    if a.memory_rows is not None and len(a.memory_rows) < 2:
        p.error("--memory-rows needs at least two sizes")
    return replace(cfg, **changes), a.out


def main(argv: list[str] | None = None) -> int:
    cfg, out = parse_args(argv)
    report = run_suite(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(format_table(report))
    print(f"results: {out}")
    failed = any("error" in v for v in report["scenarios"].values())
    return 1 if failed else 0
